"""Clock offset between the server and one device, from SYNC exchanges (NTP-style)."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

from ..protocol import json_number

__all__ = ["DRIFT_PRIOR_PPM", "ClockEstimate", "ClockSample", "ClockTracker"]

#: How fast a device clock may drift, at most, before its drift is measured: quartz in
#: phones and computers is within about 100 ppm; this leaves room for the cheapest. Until
#: the bursts span long enough to pin the drift better, the estimate assumes none and its
#: uncertainty grows at this rate away from the last measurement.
DRIFT_PRIOR_PPM = 250.0


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One SYNC exchange, NTP-style.

    The server sent the probe at ``t0``; the device got it at ``t1`` and answered at
    ``t2`` (device clock); the server got the answer at ``t3``.
    """

    t0: float
    t1: float
    t2: float
    t3: float

    @property
    def rtt(self) -> float:
        """Round trip minus the device's own processing time, in seconds."""
        return (self.t3 - self.t0) - (self.t2 - self.t1)

    @property
    def offset(self) -> float:
        """Device clock minus server clock, in seconds."""
        return ((self.t1 - self.t0) + (self.t2 - self.t3)) / 2.0


@dataclass(frozen=True, slots=True)
class ClockEstimate:
    """The best current estimate of a device's clock: an offset and how it drifts.

    ``offset_s`` is the device clock minus the server clock at server time
    ``measured_at``; it changes by ``drift_ppm`` microseconds per second after that.
    ``uncertainty_s`` bounds the offset's error at ``measured_at`` and
    ``drift_uncertainty_ppm`` the drift's, so that `uncertainty_at` bounds it at any
    other instant (the bound grows with the distance from the measurements).
    """

    offset_s: float
    rtt_s: float
    uncertainty_s: float
    measured_at: float
    samples: int
    drift_ppm: float = 0.0
    bursts: int = 1
    drift_uncertainty_ppm: float = 0.0

    def offset_at(self, server_time: float) -> float:
        """Device minus server clock at ``server_time`` (drift included)."""
        return self.offset_s + self.drift_ppm * 1e-6 * (server_time - self.measured_at)

    def uncertainty_at(self, server_time: float) -> float:
        """How far the true offset at ``server_time`` may be from `offset_at`, in seconds.

        Parameters
        ----------
        server_time : float
            Any instant, server clock; before or after the measurements.

        Returns
        -------
        float
            ``uncertainty_s`` plus the drift's uncertainty over the distance from
            ``measured_at``.
        """
        return self.uncertainty_s + (self.drift_uncertainty_ppm * 1e-6
                                     * abs(server_time - self.measured_at))

    def to_server(self, device_time: float) -> float:
        """Convert a device-clock instant to server time."""
        server_time = device_time - self.offset_s
        for _ in range(2):  # the drift term depends (very weakly) on the answer itself
            server_time = device_time - self.offset_at(server_time)
        return server_time

    def to_device(self, server_time: float) -> float:
        """Convert a server-clock instant to the device's clock."""
        return server_time + self.offset_at(server_time)

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready form (a value that is not finite, which no sound sample gives: ``None``)."""
        return {"offset_s": json_number(self.offset_s), "rtt_s": json_number(self.rtt_s),
                "uncertainty_s": json_number(self.uncertainty_s),
                "drift_ppm": json_number(self.drift_ppm),
                "drift_uncertainty_ppm": json_number(self.drift_uncertainty_ppm),
                "measured_at": json_number(self.measured_at), "samples": self.samples,
                "bursts": self.bursts}


class ClockTracker:
    """SYNC samples of one device, in bursts; one point per burst; a line through them.

    Loop-only. Within a burst (a few probes in quick succession) the minimum-RTT sample
    is the one least disturbed by queueing: its offset error is at most half its RTT.
    Across bursts, a robust line fit (Theil-Sen: the median of pairwise slopes) of those
    offsets over time gives the drift, so that the estimate holds between bursts.

    The estimate says how sure it is: the offset within the median half round trip of
    the points (or their spread about the line, if more), the drift within what two points
    that far off, as far apart as the first and last, allow. While that is wider than
    `DRIFT_PRIOR_PPM` (the first second or so of a device) the drift is taken as zero
    within the prior: a line through points a few hundred milliseconds apart would say
    more than it knows.

    Parameters
    ----------
    window : int
        Bursts kept for the line fit.
    burst_gap_s : float
        A sample this long after the previous one starts a new burst (when the caller
        does not mark bursts with `begin_burst`).
    resolution_s : float
        How coarsely the device's clock reads (the Android app's reads whole
        milliseconds): added to the offset's uncertainty, which the round trips alone
        would understate (a loopback round trip of "0 ms" is no proof of a 0 ms error).
    """

    def __init__(self, window: int = 16, burst_gap_s: float = 1.0,
                 resolution_s: float = 0.0) -> None:
        self.resolution_s = resolution_s
        self._points: collections.deque[ClockSample] = collections.deque(maxlen=window)
        self._burst: list[ClockSample] = []
        self._burst_gap_s = burst_gap_s
        self._count = 0
        #: The estimate of the samples so far: read on every ACK and SYNC answer (to check
        #: a device's instants), it is computed again only after a change.
        self._estimate: ClockEstimate | None = None
        self._stale = False

    def begin_burst(self) -> None:
        """Close the burst in progress; the next samples form a new one."""
        if self._burst:
            self._points.append(min(self._burst, key=lambda s: s.rtt))
            self._burst = []
            self._stale = True

    def add(self, sample: ClockSample) -> ClockEstimate | None:
        """Record one exchange.

        Ignored if its RTT is negative (clocks misread) or its RTT or offset is not
        finite (NaN, or a sum that overflowed): one such point would spoil every
        estimate after it.
        """
        rtt, offset = sample.rtt, sample.offset
        if not (math.isfinite(rtt) and math.isfinite(offset)) or rtt < 0:
            return self.estimate
        if self._burst and sample.t0 - self._burst[-1].t3 > self._burst_gap_s:
            self.begin_burst()
        self._burst.append(sample)
        self._count += 1
        self._stale = True
        return self.estimate

    @property
    def estimate(self) -> ClockEstimate | None:
        """The current estimate, or ``None`` before the first exchange."""
        if self._stale:
            self._estimate = self._fit()
            self._stale = False
        return self._estimate

    def _fit(self) -> ClockEstimate | None:
        points = list(self._points)
        if self._burst:
            points.append(min(self._burst, key=lambda s: s.rtt))
        if not points:
            return None
        latest = points[-1]
        at = _mid(latest)
        # Each point's offset is off by at most half its round trip (NTP's bound): the
        # median of those half round trips is the scale of one point's error.
        error = _median([p.rtt / 2 for p in points]) + self.resolution_s
        span = at - _mid(points[0])
        slope, drift_uncertainty = 0.0, DRIFT_PRIOR_PPM * 1e-6
        if len(points) >= 2 and span > 0:
            # Two points each within ``error`` give a slope within 2 * error / span; the
            # median of the pairwise slopes is steadier than that, so this bound is honest.
            fitted_uncertainty = 2 * error / span
            if fitted_uncertainty < drift_uncertainty:
                slope, drift_uncertainty = _theil_sen_slope(points), fitted_uncertainty
        # The offset at `at`: the median of every point carried along the slope.
        carried = [p.offset + slope * (at - _mid(p)) for p in points]
        offset = _median(carried)
        spread = _median([abs(c - offset) for c in carried])
        return ClockEstimate(
            offset_s=offset,
            rtt_s=latest.rtt,
            uncertainty_s=max(error, spread),
            measured_at=at,
            samples=self._count,
            drift_ppm=slope * 1e6,
            bursts=len(points),
            drift_uncertainty_ppm=drift_uncertainty * 1e6,
        )


def _mid(sample: ClockSample) -> float:
    """The server-time middle of an exchange, where its offset applies."""
    return (sample.t0 + sample.t3) / 2


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _theil_sen_slope(points: list[ClockSample]) -> float:
    """Median of the pairwise slopes of offset over (mid-exchange) server time."""
    slopes = []
    for i, a in enumerate(points):
        ta = _mid(a)
        for b in points[i + 1:]:
            tb = _mid(b)
            if tb - ta > 1e-3:
                slopes.append((b.offset - a.offset) / (tb - ta))
    return _median(slopes) if slopes else 0.0
