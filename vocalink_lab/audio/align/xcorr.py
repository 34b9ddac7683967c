"""The cross-correlation core: the PHAT-beta weighted correlation peak between two signals.

`_gcc` finds the lag, within a range, that maximises the weighted circular
cross-correlation of two signals (one FFT of each, or a precomputed spectrum of the
first when it is correlated with many others), with a confidence (the peak against
the highest value outside its main lobe) and a sub-sample position: parabolic
interpolation of the correlation's samples, then Newton's method on its band-limited
(exactly interpolated) form, which is not biased towards integer lags. Everything
else in the package measures lags with these pieces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .signals import Array

_LOBE_S = 1e-3  # a correlation peak's main lobe: not "another peak" for the confidence


@dataclass(frozen=True, slots=True)
class _Peak:
    lag: float  # samples
    confidence: float


def _fast_len(n: int) -> int:
    """The smallest 5-smooth integer >= n (a fast FFT size)."""
    if n <= 16:
        return max(n, 1)
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _weight(g: npt.NDArray[np.complex128], beta: float) -> npt.NDArray[np.complex128]:
    """PHAT-beta: divide the cross-spectrum by its magnitude to the power ``beta``."""
    if beta == 0:
        return g
    mag = np.abs(g)
    top = float(mag.max()) if mag.size else 0.0
    if top == 0.0:
        return g
    return g / np.maximum(mag, 1e-9 * top) ** beta


def _xcorr(
    fa: npt.NDArray[np.complex128], b: Array, n: int, beta: float
) -> tuple[Array, npt.NDArray[np.complex128]]:
    """Weighted circular cross-correlation ``r[k] = sum a[m + k] b[m]`` and its spectrum."""
    g = _weight(fa * np.conj(np.fft.rfft(b, n)), beta)
    return np.fft.irfft(g, n), g


def _gcc(
    a: Array,
    b: Array,
    lo: int,
    hi: int,
    *,
    beta: float,
    refine: bool = True,
    fa: npt.NDArray[np.complex128] | None = None,
    n: int | None = None,
    lobe: int = 2,
) -> _Peak:
    """The lag ``k`` in ``lo..hi`` maximising ``sum a[m + k] b[m]`` (PHAT-beta weighted).

    ``fa`` (``rfft(a, n)``) may be passed when ``a`` is correlated with many ``b``.
    """
    la, lb = len(a), len(b)
    lo, hi = max(lo, -(lb - 1)), min(hi, la - 1)
    if hi < lo:
        return _Peak(0.0, 0.0)
    if n is None or fa is None:
        n = _fast_len(la + lb - 1)
        fa = np.fft.rfft(a, n)
    full, g = _xcorr(fa, b, n, beta)
    r = full[np.arange(lo, hi + 1) % n]
    i = int(np.argmax(r))
    peak = float(r[i])
    if peak <= 0.0 or not math.isfinite(peak):
        return _Peak(float(lo + i), 0.0)
    confidence = _confidence(r, i, lobe)
    if i == 0 or i == len(r) - 1:
        return _Peak(float(lo + i), 0.0)  # the true peak may lie outside the range
    frac = _parabolic(r[i - 1], r[i], r[i + 1])
    lag = lo + i + frac
    if refine:
        lag = _newton(g, n, lo + i, lag)
    return _Peak(lag, confidence)


def _confidence(r: Array, i: int, lobe: int) -> float:
    """``1 - next / peak``: ``next`` is the highest value outside the peak's main lobe."""
    left = i
    while left > 0 and (i - left < lobe or r[left - 1] < r[left]):
        left -= 1
    right = i
    while right < len(r) - 1 and (right - i < lobe or r[right + 1] < r[right]):
        right += 1
    rest = np.concatenate([r[:left], r[right + 1:]])
    if rest.size == 0:
        return 0.0
    return float(np.clip(1.0 - max(float(rest.max()), 0.0) / float(r[i]), 0.0, 1.0))


def _parabolic(ym: float, y0: float, yp: float) -> float:
    den = ym - 2 * y0 + yp
    if den >= 0:
        return 0.0
    return float(np.clip(0.5 * (ym - yp) / den, -0.5, 0.5))


def _newton(g: npt.NDArray[np.complex128], n: int, k0: int, start: float) -> float:
    """Maximise the band-limited (exactly interpolated) correlation near integer lag ``k0``.

    ``r(t) = Re sum_k w_k g_k exp(2j pi k t / n)`` is the continuous-lag correlation whose
    samples at integer ``t`` are the DFT's; parabolic interpolation of those samples is
    biased towards integers by up to about 0.1 sample, this is not.
    """
    omega = 2 * np.pi * np.arange(len(g)) / n
    wg = g.copy()
    wg[1:] *= 2.0
    if n % 2 == 0:
        wg[-1] /= 2.0
    t = start
    for _ in range(8):
        e = wg * np.exp(1j * omega * t)
        d1 = -float(np.dot(omega, e.imag))
        d2 = -float(np.dot(omega * omega, e.real))
        if d2 >= 0:
            return start
        step = d1 / d2
        t = float(np.clip(t - step, k0 - 1.0, k0 + 1.0))
        if abs(step) < 1e-5:
            break
    return t
