"""ClockTracker: bursts, the minimum-RTT point of each, a robust drift line, honest bounds."""

from __future__ import annotations

import random

import pytest

from vocalink_lab.hub import ClockEstimate, ClockSample, ClockTracker
from vocalink_lab.hub.clock import DRIFT_PRIOR_PPM
from vocalink_lab.hub.hub import SYNC_FIRST_GAP_S, SYNC_TIMEOUT_S, sync_gap


def exchange(t0: float, offset: float, drift_ppm: float, out_s: float, back_s: float,
             epoch: float = 1000.0) -> ClockSample:
    """One SYNC exchange with a device whose offset is ``offset`` at ``epoch``."""
    def device(t: float) -> float:
        return t + offset + drift_ppm * 1e-6 * (t - epoch)

    t1 = device(t0 + out_s)
    t2 = t1 + 0.00002
    t3 = t0 + out_s + 0.00002 + back_s
    return ClockSample(t0, t1, t2, t3)


def test_the_minimum_rtt_sample_of_a_burst_wins() -> None:
    tracker = ClockTracker()
    rng = random.Random(1)
    for i in range(8):
        calm = i == 5  # the one exchange that did not queue anywhere
        out = 0.0001 if calm else rng.uniform(0.001, 0.004)
        back = 0.0001 if calm else out * rng.uniform(1, 3)
        tracker.add(exchange(1000 + i * 0.01, 3.0, 0.0, out, back))
    estimate = tracker.estimate
    assert estimate is not None
    assert estimate.offset_s == pytest.approx(3.0, abs=0.0001)
    assert estimate.rtt_s == pytest.approx(0.0002, abs=1e-6) and estimate.bursts == 1


@pytest.mark.parametrize(("offset", "drift"), [(10.0, 200.0), (-10.0, -200.0), (0.5, 37.0)])
def test_drift_is_fitted_across_bursts(offset: float, drift: float) -> None:
    tracker = ClockTracker()
    rng = random.Random(2)
    for burst in range(10):
        tracker.begin_burst()
        for i in range(8):
            t0 = 1000 + burst * 5.0 + i * 0.002
            tracker.add(exchange(t0, offset, drift, rng.uniform(5e-5, 1e-3),
                                 rng.uniform(5e-5, 1e-3)))
    estimate = tracker.estimate
    assert estimate is not None and estimate.bursts == 10 and estimate.samples == 80
    assert estimate.drift_ppm == pytest.approx(drift, abs=5.0)
    for later in (0.0, 5.0, 30.0):  # between bursts, and well after the last
        t = 1045 + later
        truth = offset + drift * 1e-6 * (t - 1000)
        assert estimate.offset_at(t) == pytest.approx(truth, abs=0.0005)
        assert estimate.to_server(estimate.to_device(t)) == pytest.approx(t, abs=1e-9)


def test_one_disturbed_burst_does_not_bend_the_line() -> None:
    tracker = ClockTracker()
    for burst in range(9):
        tracker.begin_burst()
        # Burst 4 saw only long, lopsided round trips: its point is 20 ms off.
        out, back = (0.04, 0.0001) if burst == 4 else (0.0001, 0.0001)
        tracker.add(exchange(1000 + burst * 5.0, 2.0, 100.0, out, back))
    estimate = tracker.estimate
    assert estimate is not None
    assert estimate.drift_ppm == pytest.approx(100.0, abs=1.0)
    assert estimate.offset_at(1040) == pytest.approx(2.0 + 100e-6 * 40, abs=0.0002)


def test_samples_far_apart_start_new_bursts_by_themselves() -> None:
    tracker = ClockTracker(burst_gap_s=1.0)
    for k in range(3):
        tracker.add(exchange(1000 + k * 10.0, 1.0, 0.0, 0.0001, 0.0001))
    estimate = tracker.estimate
    assert estimate is not None and estimate.bursts == 3
    assert estimate.to_dict()["bursts"] == 3


def test_a_negative_round_trip_is_ignored() -> None:
    tracker = ClockTracker()
    assert tracker.add(ClockSample(10.0, 5.0, 9.0, 10.5)) is None  # rtt < 0


def early_bursts(rng: random.Random, offset: float, drift: float, times: list[float]
                 ) -> ClockTracker:
    """A tracker fed one burst of 8 probes at each of ``times``, with queueing both ways."""
    tracker = ClockTracker()
    for t in times:
        tracker.begin_burst()
        for i in range(8):
            # Loopback-like: 50 µs each way, plus queueing of up to a millisecond.
            out = 5e-5 + rng.expovariate(1 / 2e-4)
            back = 5e-5 + rng.expovariate(1 / 2e-4)
            tracker.add(exchange(t + i * 0.002, offset, drift, out, back))
    tracker.begin_burst()
    return tracker


def test_the_uncertainty_covers_the_error_from_the_first_burst_on() -> None:
    # The sync loop's early schedule: bursts 0.25 s apart, each next gap 1.4 times longer.
    rng = random.Random(14)
    gaps = [0.25 * 1.4 ** k for k in range(10)]
    times = [1000 + sum(gaps[:k]) for k in range(11)]
    misses = checks = 0
    for _ in range(60):
        offset, drift = rng.uniform(-5, 5), rng.uniform(-250, 250)
        for k in range(1, len(times) + 1):
            estimate = early_bursts(rng, offset, drift, times[:k]).estimate
            assert estimate is not None
            for ahead in (0.2, 1.0, 3.0):  # a START's lead, and later starts
                t = times[k - 1] + ahead
                error = abs(estimate.offset_at(t) - (offset + drift * 1e-6 * (t - 1000)))
                checks += 1
                misses += error > estimate.uncertainty_at(t)
    assert checks == 1980 and misses / checks <= 0.01, misses


def test_a_drift_is_not_believed_before_the_bursts_span_enough() -> None:
    # Two bursts 10 ms apart that disagree by a millisecond: a line through them would say
    # 100,000 ppm. Until the bursts span long enough, the drift is the prior's, zero.
    tracker = ClockTracker()
    tracker.add(exchange(1000.0, 1.0, 0.0, 0.0001, 0.0001))
    tracker.begin_burst()
    tracker.add(exchange(1000.01, 1.001, 0.0, 0.0001, 0.0001))
    estimate = tracker.estimate
    assert estimate is not None and estimate.bursts == 2
    assert estimate.drift_ppm == 0.0
    assert estimate.drift_uncertainty_ppm == DRIFT_PRIOR_PPM
    # Its uncertainty grows at the prior's rate away from the measurements.
    assert estimate.uncertainty_at(estimate.measured_at + 2.0) == pytest.approx(
        estimate.uncertainty_s + 2.0 * DRIFT_PRIOR_PPM * 1e-6)
    assert estimate.to_dict()["drift_uncertainty_ppm"] == DRIFT_PRIOR_PPM


def test_the_drift_uncertainty_shrinks_as_the_bursts_spread() -> None:
    rng = random.Random(3)
    widths = []
    for span_bursts in (3, 6, 11):
        times = [1000 + 0.25 * 1.4 ** k for k in range(span_bursts)]
        estimate = early_bursts(rng, 0.5, 120.0, times).estimate
        assert estimate is not None
        widths.append(estimate.drift_uncertainty_ppm)
        assert abs(estimate.drift_ppm - 120.0) <= max(estimate.drift_uncertainty_ppm, 1.0)
    assert widths[0] > widths[1] > widths[2] and widths[2] < 50, widths


def test_a_new_device_is_measured_often_until_its_drift_is_known() -> None:
    def after(bursts: int) -> ClockEstimate:
        return ClockEstimate(offset_s=0.0, rtt_s=1e-4, uncertainty_s=5e-5, measured_at=0.0,
                             samples=8 * bursts, bursts=bursts)

    assert sync_gap(None, 5.0) == SYNC_TIMEOUT_S  # no answer yet: tried again in a second
    gaps = [sync_gap(after(b), 5.0) for b in range(1, 17)]
    assert gaps[0] == SYNC_FIRST_GAP_S and gaps == sorted(gaps) and gaps[-1] == 5.0
    # Six bursts within the first 3 s (where one every 5 s would give one).
    assert sum(gaps[:5]) < 3.0
    assert sync_gap(after(16), 1.0) == 1.0  # never rarer than the interval asked for
