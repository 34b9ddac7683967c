"""The signals the alignment works on: mono, high-passed, cut into zero-padded segments.

Every track is reduced to one channel (the mean of its channels) and high-passed with
the same causal filter, so that no track is delayed against another; analysis
segments are cut with zero padding where they run off a track's ends, and a segment
whose mean square is below `_SILENCE` (-100 dBFS) holds nothing to correlate. `Array`
is the array type of everything here: float32 for whole tracks, float64 for windows.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ..io import Audio

Array = npt.NDArray[np.floating[Any]]  # float32 for whole tracks, float64 for windows

_SILENCE = 1e-10  # mean square below this (-100 dBFS): nothing to correlate


def _mono(x: Audio) -> Array:
    return np.asarray(x.mean(axis=0) if x.shape[0] > 1 else x[0], dtype=np.float32)


def _highpass(x: Array, sr: float, hz: float | None) -> Array:
    """4th-order Butterworth high-pass (the same causal filter on every track: no relative delay).

    Rumble, handling noise and DC carry no timing, but hold most of the energy of some
    recordings; in short analysis segments they leak into every bin with the same phase
    in both tracks, which pulls the fine lag towards whatever the coarse stage said.
    """
    if hz is None or hz <= 0 or hz >= 0.45 * sr or x.size == 0:
        return x
    from scipy import signal as sps

    sos = sps.butter(4, hz, "highpass", fs=sr, output="sos")
    return np.asarray(sps.sosfilt(sos, x), dtype=np.float32)


def _segment(x: Array, start: int, length: int) -> Array:
    """``x[start:start + length]``, zero-padded where it runs off either end."""
    out = np.zeros(length)
    lo, hi = max(start, 0), min(start + length, len(x))
    if hi > lo:
        out[lo - start:hi - start] = x[lo:hi]
    return out


def _loud(x: Array) -> bool:
    return x.size > 0 and float(np.mean(np.square(x))) > _SILENCE


_WARM_S = 0.5  # high-pass warm-up before a lazily read window: its transient is long gone
_PAD_C = 256  # coarse samples decimated on each side of a window: soxr's edges stay outside


@runtime_checkable
class TrackSource(Protocol):
    """A track `align` reads window by window instead of whole (`AudioReader` is one).

    Attributes
    ----------
    frames : int
        Its length in samples per channel.
    """

    frames: int

    def read(self, start: int = 0, frames: int | None = None) -> Audio:
        """``frames`` frames from frame ``start``, ``(channels, n)`` float32 (short at the end)."""
        ...


def _is_source(x: object) -> bool:
    return isinstance(x, TrackSource) and not isinstance(x, np.ndarray)


class _Highpass:
    """`_highpass` block by block: the filter state carries over, so blocks join seamlessly."""

    def __init__(self, sr: float, hz: float | None) -> None:
        self.sos: Array | None = None
        self.state: Array | None = None
        if hz is not None and 0 < hz < 0.45 * sr:
            from scipy import signal as sps

            self.sos = np.asarray(sps.butter(4, hz, "highpass", fs=sr, output="sos"))
            self.state = np.zeros((self.sos.shape[0], 2))

    def __call__(self, x: Array) -> Array:
        if self.sos is None or x.size == 0:
            return x
        from scipy import signal as sps

        y, self.state = sps.sosfilt(self.sos, x, zi=self.state)
        return np.asarray(y, dtype=np.float32)


class _Signal:
    """A prepared track (mono, high-passed, at the full or the coarse rate), read by range."""

    def __len__(self) -> int:
        raise NotImplementedError

    def slice(self, start: int, stop: int) -> Array:
        """``x[start:stop]`` for ``start >= 0`` (shorter past the end)."""
        raise NotImplementedError

    def whole(self) -> Array:
        """All of it (only the whole-reference search needs this)."""
        return self.slice(0, len(self))

    def segment(self, start: int, length: int) -> Array:
        """``x[start:start + length]``, zero-padded where it runs off either end (float64)."""
        out = np.zeros(length)
        lo, hi = max(start, 0), min(start + length, len(self))
        if hi > lo:
            out[lo - start:hi - start] = self.slice(lo, hi)
        return out


class _ArraySignal(_Signal):
    """A signal prepared whole, in memory."""

    def __init__(self, x: Array) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def slice(self, start: int, stop: int) -> Array:
        return self.x[start:stop]

    def whole(self) -> Array:
        return self.x

    def segment(self, start: int, length: int) -> Array:
        return _segment(self.x, start, length)


class _LazySignal(_Signal):
    """A signal prepared window by window from a `TrackSource`, as `_ArraySignal` would hold it.

    Each window is read with a high-pass warm-up (and, at the coarse rate, `_PAD_C`
    decimated samples on each side), so that it matches the whole-track preparation
    to within float rounding; nothing but the window stays in memory.
    """

    def __init__(self, source: TrackSource, sr: float, highpass_hz: float | None,
                 rate: float) -> None:
        self.source, self.sr, self.hz, self.rate = source, sr, highpass_hz, rate
        self.frames = int(source.frames)
        self.ratio = sr / rate
        self.length = (self.frames if rate == sr
                       else math.floor(self.frames * rate / sr + 0.5))  # soxr's output length

    def __len__(self) -> int:
        return self.length

    def _full(self, start: int, stop: int) -> Array:
        """Full-rate mono high-passed samples ``start:stop``."""
        lo = max(0, start - round(_WARM_S * self.sr))
        raw = self.source.read(lo, max(0, stop - lo))
        return _Highpass(self.sr, self.hz)(_mono(raw))[start - lo:]

    def slice(self, start: int, stop: int) -> Array:
        stop = min(stop, self.length)
        if stop <= start:
            return np.zeros(0, np.float64 if self.rate != self.sr else np.float32)
        if self.rate == self.sr:
            return self._full(start, stop)
        from ..io import resample

        first = max(0, start - _PAD_C)  # coarse index of the decimated chunk's sample 0
        lo = round(first * self.ratio)
        hi = min(self.frames, math.ceil((stop + _PAD_C) * self.ratio))
        y = resample(self._full(lo, hi), orig_sr=self.sr, target_sr=self.rate)
        out = np.zeros(stop - start)
        got = y[start - first:stop - first]
        out[:len(got)] = got
        return out

    def whole(self) -> Array:
        """Prepared block by block (state carried): 4 kHz float64 is 115 MB per hour."""
        import soxr

        block = max(1, round(60 * self.sr))
        highpass = _Highpass(self.sr, self.hz)
        stream = (None if self.rate == self.sr else
                  soxr.ResampleStream(self.sr, self.rate, 1, dtype="float32", quality="HQ"))
        parts = []
        for start in range(0, self.frames, block):
            y = highpass(_mono(self.source.read(start, block)))
            if stream is not None:
                y = stream.resample_chunk(np.asarray(y, np.float32),
                                          last=start + block >= self.frames)
            parts.append(np.asarray(y, np.float64 if stream is not None else np.float32))
        return np.concatenate(parts) if parts else np.zeros(0)
