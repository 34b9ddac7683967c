"""The signals the alignment works on: mono, high-passed, cut into zero-padded segments.

Every track is reduced to one channel (the mean of its channels) and high-passed with
the same causal filter, so that no track is delayed against another; analysis
segments are cut with zero padding where they run off a track's ends, and a segment
whose mean square is below `_SILENCE` (-100 dBFS) holds nothing to correlate. `Array`
is the array type of everything here: float32 for whole tracks, float64 for windows.
"""

from __future__ import annotations

from typing import Any

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
