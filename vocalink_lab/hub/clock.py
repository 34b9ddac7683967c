"""Clock offset between the server and one device, from SYNC exchanges (NTP-style)."""

from __future__ import annotations

import collections
from dataclasses import dataclass

__all__ = ["ClockEstimate", "ClockSample", "ClockTracker"]


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
    """The best current estimate of a device's clock."""

    offset_s: float
    rtt_s: float
    uncertainty_s: float
    measured_at: float
    samples: int

    def to_server(self, device_time: float) -> float:
        """Convert a device-clock instant to server time."""
        return device_time - self.offset_s

    def to_device(self, server_time: float) -> float:
        """Convert a server-clock instant to the device's clock."""
        return server_time + self.offset_s


class ClockTracker:
    """Keeps recent SYNC samples of one device; the estimate is the minimum-RTT sample.

    Loop-only. The minimum-RTT sample is the one least disturbed by queueing, so
    its offset error is bounded by half its RTT (the uncertainty reported).
    """

    def __init__(self, window: int = 32) -> None:
        self._samples: collections.deque[ClockSample] = collections.deque(maxlen=window)

    def add(self, sample: ClockSample) -> ClockEstimate | None:
        """Record one exchange (ignored if its RTT is negative: clocks misread)."""
        if sample.rtt >= 0:
            self._samples.append(sample)
        return self.estimate

    @property
    def estimate(self) -> ClockEstimate | None:
        """The current estimate, or ``None`` before the first exchange."""
        if not self._samples:
            return None
        best = min(self._samples, key=lambda s: s.rtt)
        return ClockEstimate(
            offset_s=best.offset,
            rtt_s=best.rtt,
            uncertainty_s=best.rtt / 2.0,
            measured_at=best.t3,
            samples=len(self._samples),
        )
