"""A sound card's own clock: which monotonic instant each frame was captured at.

Timing on a device has two levels. The `DeviceClock` maps the CPU's monotonic clock to the
device's time; the sound card, though, samples on its own crystal, which runs some tens of
ppm away from the CPU's. Counting frames at the nominal rate from one anchor therefore
drifts: 50 ppm is 1 ms after 20 s, 48 samples at 48 kHz. An `AudioClock` is the second
level: a robust straight line, fitted over the whole take, from frame index to monotonic
time. Its slope is the card's real seconds per frame, its intercept the time of frame 0.

`CaptureClock` feeds it from what a capture stream offers, in order of preference:

``"adc"``
    The audio API's capture timestamps (PortAudio's ``inputBufferAdcTime``), mapped to the
    monotonic clock through ``currentTime`` (same stream clock) read in the callback. They
    are precise (µs) where the host API implements them, and zero or wrong where it does
    not; each one is checked, and the stream falls back to the callbacks when they fail.
``"callback"``
    When each block arrived. Scheduling only ever delays a callback, never advances it, so
    the points lie on or above the truth (plus a constant latency): the *lower envelope*
    is fitted, not a least-squares line, which the delays would bias.

Memory stays bounded over any take: the least-squares fit keeps running moments (O(1)),
the envelope keeps the lower convex hull of the points, thinned beyond ``max_vertices``.

Nothing here reads a clock: callers pass every instant in, so that tests can replay any
stream faster than real time.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_LATENCY_S", "MAX_PPM", "PRIOR_PPM", "AudioClock", "CaptureClock", "LineFit"]

log = logging.getLogger(__name__)

#: Largest rate error believed of a sound card against the CPU clock; fitted slopes beyond
#: it are clamped (early, short fits) or, for ADC timestamps, disbelieved.
MAX_PPM = 1000.0
#: Spread of real sound cards' rate errors (ppm): the prior that a slope measured over a
#: short span, or from noisy points, is pulled toward the nominal rate by.
PRIOR_PPM = 200.0
#: Longest plausible capture latency (``currentTime - inputBufferAdcTime``); beyond it the
#: two are not on the same clock.
MAX_LATENCY_S = 2.0


@dataclass(frozen=True, slots=True)
class LineFit:
    """A fitted map from frame index to monotonic time: ``t = intercept + period_s * index``.

    Attributes
    ----------
    intercept : float
        Monotonic time of frame 0.
    period_s : float
        Monotonic seconds per frame (the card's real sample period).
    residual_s : float
        How far the points lie from the line: their RMS distance (least squares), or their
        mean height above it (envelope: the mean scheduling delay).
    points : int
        Observations the fit is made of.
    """

    intercept: float
    period_s: float
    residual_s: float
    points: int

    @property
    def rate_hz(self) -> float:
        """Frames per monotonic second."""
        return 1.0 / self.period_s

    def time_of(self, index: float) -> float:
        """Monotonic time of frame ``index`` (fractional indices allowed)."""
        return self.intercept + self.period_s * index

    def index_at(self, t: float) -> float:
        """Fractional frame index captured at monotonic time ``t``."""
        return (t - self.intercept) / self.period_s


class AudioClock:
    """A robust linear fit of monotonic time against frame index, in bounded memory.

    Parameters
    ----------
    nominal_rate : float
        Frames per monotonic second the stream claims; the slope of a one-point fit, and the
        centre of the band (± ``max_ppm``) a fitted slope is clamped to.
    envelope : bool, default False
        Fit the lower envelope of the points (for arrival times, late by a non-negative
        delay) instead of least squares (for timestamps with symmetric noise).
    max_ppm : float, default `MAX_PPM`
        Clamp of the slope around the nominal period.
    prior_ppm : float, default `PRIOR_PPM`
        Expected spread of the rate error: a slope no better known than that (a few noisy
        points, a short span) is shrunk toward the nominal one, so that the first blocks
        of a stream do not take a jitter for a drift.
    noise_floor_s : float, optional
        Least noise assumed of a point, in seconds, while too few points show theirs:
        1 µs for timestamps (least squares), 100 µs for arrivals (envelope) by default.
    max_vertices : int, default 256
        Envelope only: hull vertices kept; beyond, every other interior one is dropped.

    Examples
    --------
    >>> clock = AudioClock(48000)
    >>> for k in range(10):
    ...     clock.add(960 * k, 100.0 + 960 * k / 48004.8)   # a card 100 ppm fast
    >>> round(clock.fit().rate_hz, 3), round(clock.index_at(100.1), 3)
    (48004.8, 4800.48)
    """

    def __init__(self, nominal_rate: float, *, envelope: bool = False,
                 max_ppm: float = MAX_PPM, prior_ppm: float = PRIOR_PPM,
                 noise_floor_s: float | None = None, max_vertices: int = 256) -> None:
        if not nominal_rate > 0:
            raise ValueError(f"nominal_rate must be positive, not {nominal_rate}")
        if max_vertices < 3:
            raise ValueError(f"max_vertices must be at least 3, not {max_vertices}")
        self.nominal_rate = float(nominal_rate)
        self.envelope = envelope
        self.max_ppm = float(max_ppm)
        self.prior_ppm = float(prior_ppm)
        self.noise_floor_s = float(noise_floor_s if noise_floor_s is not None else
                                   100e-6 if envelope else 1e-6)
        self.max_vertices = int(max_vertices)
        # Coordinates relative to the first point: monotonic times are ~1e5 s and indices
        # grow to 1e8, and their products must keep µs resolution.
        self._x0 = 0
        self._y0 = 0.0
        self._last_x: float | None = None
        # Welford moments of (x, y): exact least squares and means in O(1) memory.
        self._n = 0
        self._mx = 0.0
        self._my = 0.0
        self._cxx = 0.0
        self._cxy = 0.0
        self._cyy = 0.0
        # Lower convex hull, x increasing (Andrew's monotone chain: O(1) amortised per point).
        self._hx: list[float] = []
        self._hy: list[float] = []
        self._fit: LineFit | None = None

    @property
    def points(self) -> int:
        """Observations added so far."""
        return self._n

    def add(self, index: int, mono: float) -> None:
        """Add one observation: frame ``index`` is at (or, for arrivals, before) ``mono``.

        Parameters
        ----------
        index : int
            Frame index; strictly increasing from call to call.
        mono : float
            Monotonic time of that frame (a timestamp) or of a callback that delivered it.

        Raises
        ------
        ValueError
            ``index`` does not increase, or ``mono`` is not finite.
        """
        if not math.isfinite(mono):
            raise ValueError(f"mono must be finite, not {mono}")
        if self._n == 0:
            self._x0, self._y0 = int(index), float(mono)
        x, y = float(index - self._x0), mono - self._y0
        if self._last_x is not None and x <= self._last_x:
            raise ValueError(f"frame indices must increase: {index} after "
                             f"{int(self._last_x) + self._x0}")
        self._last_x = x
        self._n += 1
        dx, dy = x - self._mx, y - self._my
        self._mx += dx / self._n
        self._my += dy / self._n
        self._cxx += dx * (x - self._mx)
        self._cxy += dx * (y - self._my)
        self._cyy += dy * (y - self._my)
        if self.envelope:
            self._push_hull(x, y)
        self._fit = None

    def fit(self) -> LineFit | None:
        """The line through the points so far; ``None`` before the first one.

        Returns
        -------
        LineFit or None
            One point: the nominal period through it. More: least squares, or the line
            under every point that is closest to them on average (the envelope; it runs
            along the hull edge above the mean index). Either slope is shrunk toward the
            nominal one as far as it is uncertain (``prior_ppm``), and clamped to
            ``nominal ± max_ppm``.
        """
        if self._fit is not None or self._n == 0:
            return self._fit
        nominal = 1.0 / self.nominal_rate
        slope = nominal
        if self.envelope:
            if len(self._hx) >= 2:
                j = min(max(bisect.bisect_right(self._hx, self._mx), 1), len(self._hx) - 1)
                edge = self._hx[j] - self._hx[j - 1]
                raw = (self._hy[j] - self._hy[j - 1]) / edge
                # Its ends are the least delayed points, late by a few times the mean delay
                # over n, which tilts the edge by that over its length (3: a conservative
                # rule of thumb). Two or three points all lie on the envelope and show no
                # delay: hence the floor.
                delay = max(self._envelope_residual(raw), self.noise_floor_s)
                slope = self._shrink(raw, 3 * delay / self._n * math.sqrt(2) / edge)
        elif self._n >= 2 and self._cxx > 0:
            raw = self._cxy / self._cxx
            noise = max(math.sqrt(self._sse(raw) / max(self._n - 2, 1)), self.noise_floor_s)
            slope = self._shrink(raw, noise / math.sqrt(self._cxx))
        if self.envelope:
            # The highest line of that slope under every hull vertex (so under every point).
            a = min(y - slope * x for x, y in zip(self._hx, self._hy, strict=True))
            residual = self._envelope_residual(slope, a)
        else:
            a = self._my - slope * self._mx
            residual = math.sqrt(self._sse(slope) / self._n)
        self._fit = LineFit(intercept=self._y0 + a - slope * self._x0, period_s=slope,
                            residual_s=residual, points=self._n)
        return self._fit

    def _shrink(self, raw: float, sigma: float) -> float:
        """Slope ``raw`` (standard error ``sigma``) pulled toward nominal, then clamped."""
        nominal = 1.0 / self.nominal_rate
        prior = self.prior_ppm * 1e-6 * nominal
        # Normal prior around the nominal period, normal error: the posterior mean.
        weight = prior * prior / (prior * prior + sigma * sigma)
        slope = nominal + weight * (raw - nominal)
        limit = self.max_ppm * 1e-6 * nominal
        return min(max(slope, nominal - limit), nominal + limit)

    def _sse(self, slope: float) -> float:
        """Sum of squared distances of the points from the mean line of that slope."""
        return max(0.0, self._cyy - 2 * slope * self._cxy + slope * slope * self._cxx)

    def _envelope_residual(self, slope: float, a: float | None = None) -> float:
        """Mean height of all the points above the envelope line of that slope.

        From the running means, so exact (points left off the hull count too), in O(1)
        beyond the hull.
        """
        if a is None:
            a = min(y - slope * x for x, y in zip(self._hx, self._hy, strict=True))
        return max(0.0, self._my - (a + slope * self._mx))

    def time_of(self, index: float) -> float:
        """Monotonic time of frame ``index`` on the current fit.

        Raises
        ------
        LookupError
            No observation yet.
        """
        return self._require().time_of(index)

    def index_at(self, t: float) -> float:
        """Fractional frame index at monotonic time ``t`` on the current fit.

        Raises
        ------
        LookupError
            No observation yet.
        """
        return self._require().index_at(t)

    def _require(self) -> LineFit:
        fit = self.fit()
        if fit is None:
            raise LookupError("the audio clock has no observation yet")
        return fit

    def _push_hull(self, x: float, y: float) -> None:
        hx, hy = self._hx, self._hy
        while len(hx) >= 2:
            # Pop the last vertex while it is not strictly below the chord to the new point.
            cross = (hx[-1] - hx[-2]) * (y - hy[-2]) - (hy[-1] - hy[-2]) * (x - hx[-2])
            if cross > 0:
                break
            hx.pop()
            hy.pop()
        hx.append(x)
        hy.append(y)
        if len(hx) > self.max_vertices:
            # A subsequence of a convex chain is convex: the envelope stays one, only
            # coarser (it may pass a little above a dropped vertex).
            self._hx = [hx[0], *hx[2:-1:2], hx[-1]]
            self._hy = [hy[0], *hy[2:-1:2], hy[-1]]


class CaptureClock:
    """Frame times of one capture stream: ADC timestamps when sane, else callback arrivals.

    Feed `observe` once per block, in order; read each block's start with `block_time`.
    Both fits are kept from the first block on, so that a fall-back to the callbacks starts
    with all their history.

    Fall-back rules. The stream uses its ADC timestamps if the first block's are sane, and
    keeps them while they stay so. A block's timestamps are wrong when ``inputBufferAdcTime``
    or ``currentTime`` is missing, zero, negative or not finite; when the latency they
    imply (``currentTime - inputBufferAdcTime``) is shorter than 0.9 block (the whole block
    must have been captured before it is delivered) or longer than `MAX_LATENCY_S`; or when
    the capture time does not increase or strays from where the frame count puts it (the
    ADC fit) by more than ``tolerance_s`` (plus `MAX_PPM` of the time since the last good
    one). Wrong timestamps are left out of the fit; ``max_bad_run`` of them in a row, or
    more than 1 % (beyond the first ``max_bad_run``), switch the stream to the callback fit
    for good, shifted by the latency measured between the two fits so far so that block
    times do not jump.

    Parameters
    ----------
    nominal_rate : float
        Frames per monotonic second the stream should run at.
    max_slew_frames : float, default 0.1
        Largest step, in frames, by which a block's start may differ from the end of the
        previous block (at the fitted period): block times follow the fit smoothly.
    tolerance_s : float, default 0.5e-3
        See the fall-back rules.
    max_bad_run : int, default 5
        See the fall-back rules.
    """

    def __init__(self, nominal_rate: float, *, max_slew_frames: float = 0.1,
                 tolerance_s: float = 0.5e-3, max_bad_run: int = 5) -> None:
        self.nominal_rate = float(nominal_rate)
        self.max_slew_frames = float(max_slew_frames)
        self.tolerance_s = float(tolerance_s)
        self.max_bad_run = int(max_bad_run)
        self.adc = AudioClock(nominal_rate)
        self.callback = AudioClock(nominal_rate, envelope=True)
        #: ``"adc"`` or ``"callback"``: which fit block times come from; ``None`` before
        #: the first block.
        self.source: str | None = None
        #: Why the stream fell back to the callbacks, if it did.
        self.fallback_reason: str | None = None
        self.rejected = 0
        self._bad_run = 0
        self._last_good: int | None = None
        self._last_adc: float | None = None
        self._bias = 0.0  # callback fit minus ADC fit, when the stream fell back mid-way
        self._next: tuple[int, float] | None = None  # (index, time) the next block continues

    @property
    def ready(self) -> bool:
        """Whether a block has been observed (`time_of` and `index_at` answer)."""
        return self.source is not None

    def observe(self, index: int, frames: int, *, arrival: float, adc: float | None = None,
                current: float | None = None) -> None:
        """Take in one block: frames ``index .. index + frames``.

        Parameters
        ----------
        index : int
            Index of the block's first frame.
        frames : int
            Frames in the block (> 0).
        arrival : float
            Monotonic time at which the block was delivered (read in the callback).
        adc : float, optional
            Capture time of the block's first frame on the stream's clock
            (``inputBufferAdcTime``); ``None`` or 0 when the API gives none.
        current : float, optional
            The stream's clock read in the same callback (``currentTime``).
        """
        if frames <= 0:
            raise ValueError(f"frames must be positive, not {frames}")
        # A block is complete when it arrives: its end is captured no later than that.
        self.callback.add(index + frames, arrival)
        why = self._check(index, frames, arrival, adc, current)
        if self.source is None:
            self.source = "adc" if why is None else "callback"
            if why is not None:
                self.fallback_reason = why
                log.info("audio clock: no usable ADC timestamps (%s); fitting callback "
                         "arrivals", why)
        if self.source != "adc":
            return
        if why is None:
            assert adc is not None and current is not None
            mono = arrival - (current - adc)
            self.adc.add(index, mono)
            self._last_good, self._last_adc, self._bad_run = index, mono, 0
            return
        self.rejected += 1
        self._bad_run += 1
        if self._bad_run >= self.max_bad_run or \
                self.rejected > self.max_bad_run + 0.01 * self.adc.points:
            self._fall_back(index, why)

    def _check(self, index: int, frames: int, arrival: float, adc: float | None,
               current: float | None) -> str | None:
        """Why this block's ADC timestamps are wrong, or ``None`` if they are sane."""
        if adc is None or current is None or not (math.isfinite(adc) and math.isfinite(current)):
            return "no inputBufferAdcTime"
        if adc <= 0 or current <= 0:
            return f"zero or negative times (adc {adc!r}, current {current!r})"
        latency = current - adc
        block_s = frames / self.nominal_rate
        if not 0.9 * block_s <= latency <= MAX_LATENCY_S:
            return (f"implausible latency {latency * 1000:.3f} ms for a "
                    f"{block_s * 1000:.1f} ms block")
        mono = arrival - latency
        if self._last_adc is not None and mono <= self._last_adc:
            return "capture times do not increase"
        fit = self.adc.fit()
        if fit is not None and self._last_good is not None:
            since = (index - self._last_good) / self.nominal_rate
            allowed = self.tolerance_s + MAX_PPM * 1e-6 * since
            off = mono - fit.time_of(index)
            if abs(off) > allowed:
                return f"capture time {off * 1000:+.3f} ms off the frame count"
        return None

    def _fall_back(self, index: int, why: str) -> None:
        adc, cb = self.adc.fit(), self.callback.fit()
        if adc is not None and cb is not None:
            # The callback envelope runs a constant latency behind the ADC line: measured
            # now, taken off afterwards, so that the switch does not move block times.
            self._bias = cb.time_of(index) - adc.time_of(index)
        self.source, self.fallback_reason = "callback", why
        log.warning("audio clock: ADC timestamps went wrong (%s); fitting callback arrivals "
                    "from now on", why)

    def fit(self) -> LineFit | None:
        """The fit in use (`source`), before the callback latency is taken off."""
        return self.adc.fit() if self.source == "adc" else self.callback.fit()

    def time_of(self, index: float) -> float:
        """Best current estimate of the monotonic time of frame ``index``.

        Raises
        ------
        LookupError
            No block observed yet.
        """
        return self._fitted().time_of(index) - self._bias

    def index_at(self, t: float) -> float:
        """Best current estimate of the fractional frame index at monotonic time ``t``.

        Raises
        ------
        LookupError
            No block observed yet.
        """
        return self._fitted().index_at(t + self._bias)

    def _fitted(self) -> LineFit:
        fit = self.fit()
        if fit is None:
            raise LookupError("no block observed yet")
        return fit

    def block_time(self, index: int, frames: int) -> float:
        """Monotonic time of the first frame of the block just observed, smoothed.

        The block starts where the previous one ended (at the fitted period), moved toward
        the current fit by at most ``max_slew_frames``: block times follow the fit without
        jumping when it improves. Call once per block, in order, after `observe`.

        Parameters
        ----------
        index, frames : int
            The block, as given to `observe`.

        Returns
        -------
        float
            Monotonic time of frame ``index``.
        """
        fit = self.fit()
        assert fit is not None, "observe() the block first"
        target = self.time_of(index)
        if self._next is None or self._next[0] != index:
            t = target  # the first block (or a gap: nothing to be continuous with)
        else:
            step = self.max_slew_frames / self.nominal_rate
            t = self._next[1] + min(max(target - self._next[1], -step), step)
        self._next = (index + frames, t + frames * fit.period_s)
        return t

    def report(self, device_rate: float = 1.0,
               sample_rate: float | None = None) -> dict[str, Any] | None:
        """What a recording stores of its audio clock (its ``audio_clock`` metadata).

        Parameters
        ----------
        device_rate : float, default 1.0
            Device seconds per monotonic second (`DeviceClock.rate`): the rate is measured
            against the device clock, as the recording's ``started_at`` is.
        sample_rate : float, optional
            The nominal rate in frames per device second, which ``ppm`` is relative to;
            ``nominal_rate / device_rate`` if omitted.

        Returns
        -------
        dict or None
            ``{"source": "adc" | "callback", "rate_hz": frames per device second,
            "ppm": its deviation from nominal, "residual_us": fit residual in µs,
            "points": observations fitted}``; ``None`` before the first block.
        """
        fit = self.fit()
        if fit is None or self.source is None:
            return None
        rate = 1.0 / (fit.period_s * device_rate)
        nominal = sample_rate if sample_rate is not None else self.nominal_rate / device_rate
        return {"source": self.source, "rate_hz": round(rate, 6),
                "ppm": round((rate / nominal - 1) * 1e6, 3),
                "residual_us": round(fit.residual_s * 1e6, 3), "points": fit.points}
