"""ClockTracker: bursts, the minimum-RTT point of each, and a robust drift line."""

from __future__ import annotations

import random

import pytest

from vocalink_lab.hub import ClockSample, ClockTracker


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
