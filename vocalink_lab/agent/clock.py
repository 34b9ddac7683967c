"""A device's own clock: wall-clock-like seconds that may be offset and drift.

Every timestamp a device reports (a block's ``t0``, a recording's ``started_at``, a
scheduled ``start_at``) is on its `DeviceClock`. A real device uses the defaults, which
track ``time.time()`` but never jump when NTP steps the system clock; a simulated one
gets an offset and a drift so that the hub has something to synchronise.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["DeviceClock"]


class DeviceClock:
    """Seconds since the epoch, as one device believes them.

    ``now() = wall0 + (time.monotonic() - mono0) * (1 + drift_ppm * 1e-6) + offset_s``,
    where ``wall0`` and ``mono0`` are read once, at construction. Being built on the
    monotonic clock, it advances smoothly even when the system clock is stepped.

    Parameters
    ----------
    offset_s : float, default 0.0
        Constant error added to the wall clock, in seconds.
    drift_ppm : float, default 0.0
        Rate error in parts per million: ``+50`` gains 50 µs every second.

    Examples
    --------
    >>> clock = DeviceClock(offset_s=0.25, drift_ppm=100)
    >>> t = clock.now() + 0.5
    >>> abs(clock.from_monotonic(clock.to_monotonic(t)) - t) < 1e-9
    True
    """

    def __init__(self, offset_s: float = 0.0, drift_ppm: float = 0.0) -> None:
        # Read the two clocks back to back so that their pairing is off by ~1 µs at most.
        self._mono0 = time.monotonic()
        self._wall0 = time.time()
        self.offset_s = float(offset_s)
        self.drift_ppm = float(drift_ppm)

    @property
    def rate(self) -> float:
        """Device seconds per monotonic second (``1 + drift_ppm * 1e-6``)."""
        return 1.0 + self.drift_ppm * 1e-6

    def now(self) -> float:
        """The device's current time, in seconds since the epoch."""
        return self.from_monotonic(time.monotonic())

    def from_monotonic(self, mono: float) -> float:
        """Device time at the instant ``time.monotonic()`` read ``mono``.

        Parameters
        ----------
        mono : float
            A value of ``time.monotonic()``, past or future.

        Returns
        -------
        float
            The matching device time.
        """
        return self._wall0 + (mono - self._mono0) * self.rate + self.offset_s

    def to_monotonic(self, t: float) -> float:
        """The ``time.monotonic()`` value at which `now` will equal ``t``.

        Parameters
        ----------
        t : float
            A device time (the `now` scale).

        Returns
        -------
        float
            The matching monotonic time; in the past if ``t`` already is.
        """
        return self._mono0 + (t - self.offset_s - self._wall0) / self.rate

    def true_time(self, t: float) -> float:
        """The undistorted wall time (``time.time()`` scale) at which this clock reads ``t``.

        What a simulation calls reality: a sound made at one true instant reaches every
        simulated device then, whatever its clock says.
        """
        return self._wall0 + (self.to_monotonic(t) - self._mono0)

    async def sleep_until(self, t: float) -> None:
        """Sleep until the device time ``t``; return at once if it has passed.

        Parameters
        ----------
        t : float
            A device time (the `now` scale), e.g. a scheduled ``start_at``.
        """
        delay = self.to_monotonic(t) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def __repr__(self) -> str:
        return f"DeviceClock(offset_s={self.offset_s!r}, drift_ppm={self.drift_ppm!r})"
