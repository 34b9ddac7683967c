"""The delay between two signals (`gcc_phat`), refined below a sample by weighted GCC.

`gcc_phat` is the public measurement: a PHAT-beta cross-correlation peak over the
searched range, then the sub-sample refinement `_fine_lag` on the overlapping parts
re-aligned at that lag. `_fine_lag` (and `_welch_lag` under it) is also the fine stage's
measurement of each window: the cross-spectrum is averaged over short segments
(Welch), which estimates each frequency's coherence, weighted by the
maximum-likelihood (Hannan-Thomson) weighting, and the peak placed by Newton's method;
the coherence also gives each measurement's Cramér-Rao precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ...errors import ParameterError
from ..io import as_channels
from .signals import Array, _ArraySignal, _highpass, _loud, _mono, _Signal
from .xcorr import _LOBE_S, _gcc, _newton, _parabolic


@dataclass(frozen=True, slots=True)
class Lag:
    """The delay between two signals found by `gcc_phat`.

    Attributes
    ----------
    lag_s : float
        ``d`` such that ``a[n] ≈ g * b[n - d * sr]``: positive when the common content
        comes later in ``a`` than in ``b``.
    samples : float
        The same in samples (``lag_s * sr``), sub-sample precision.
    confidence : float
        0..1: ``1 - next / peak``, where ``peak`` is the weighted cross-correlation's
        maximum and ``next`` the highest value within the searched range but more than
        1 ms from it and outside its main lobe (clipped at 0). About 0-0.15 for
        unrelated signals, 0.5-0.9 for one signal recorded twice with noise; 0 when the
        peak sits on the edge of the range or the range is too narrow to hold anything
        but the main lobe.
    """

    lag_s: float
    samples: float
    confidence: float


def gcc_phat(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    sr: float,
    *,
    max_lag_s: float | None = None,
    center_s: float = 0.0,
    beta: float = 0.8,
    highpass_hz: float | None = 60.0,
) -> Lag:
    """Delay of ``a`` relative to ``b`` by generalised cross-correlation (PHAT-beta).

    The cross-spectrum ``A(f) B*(f)`` is divided by its magnitude to the power ``beta``
    before the inverse FFT. ``beta = 1`` is classic PHAT: it whitens the signals, so the
    correlation peak is sharp whatever their spectra (speech is dominated by its low
    frequencies, whose broad correlation peak is hard to place), and gains and
    microphone colouring do not matter. But PHAT also gives full weight to frequency
    bins that hold only each device's own noise; ``beta = 0.8`` (the default, "PHAT-beta",
    Donohue et al. 2007) keeps most of the sharpening while letting bins with more
    energy count more. Measured here on 3 s of speech at 48 kHz with white noise at
    10 dB SNR, it separated the confidence of related pairs (0.76-0.79) from unrelated
    ones (0.01-0.03) best among beta = 1, 0.8, 0.6, 0.4 and 0.

    The peak is then refined below one sample on the overlapping parts of ``a`` and
    ``b``, re-aligned at that lag: their cross-spectrum is averaged over short segments
    (Welch), which estimates each frequency's coherence, and weighted by
    ``γ² / (1 - γ²)`` (the maximum-likelihood weighting, which PHAT cannot apply without
    aligned segments); the lag maximising the band-limited (exactly interpolated)
    correlation is found by Newton's method.

    Parameters
    ----------
    a, b : array_like, shape (frames,) or (channels, frames)
        Signals at the same rate; channels are averaged.
    sr : float
        Sample rate in Hz.
    max_lag_s : float, optional
        Search only ``center_s - max_lag_s <= lag <= center_s + max_lag_s``; every lag
        with some overlap by default.
    center_s : float
        Centre of the searched range.
    beta : float
        Weighting exponent, 0 (plain cross-correlation) to 1 (PHAT).
    highpass_hz : float or None
        Both signals are high-passed here first (4th-order Butterworth): rumble and DC
        carry no timing. None: no filter.

    Returns
    -------
    Lag
        ``lag_s`` such that ``a[n] ≈ g * b[n - lag_s * sr]``, and a confidence in 0..1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> b = rng.standard_normal(8000)
    >>> a = np.concatenate([np.zeros(100), b])[:8000]
    >>> round(gcc_phat(a, b, 8000).samples, 3)
    100.0
    """
    errors = []
    if not sr > 0:
        errors.append(f"sr must be positive, not {sr}")
    if max_lag_s is not None and not max_lag_s >= 0:
        errors.append(f"max_lag_s must be >= 0, not {max_lag_s}")
    if not 0 <= beta <= 1:
        errors.append(f"beta must be in 0..1, not {beta}")
    xa: Array = np.zeros(0)
    xb: Array = np.zeros(0)
    if errors:
        highpass_hz = None
    for name, x in (("a", a), ("b", b)):
        try:
            mono = _highpass(_mono(as_channels(x, name=name)), float(sr), highpass_hz)
        except ParameterError as exc:
            errors.extend(exc.errors)
            continue
        if mono.size == 0:
            errors.append(f"{name} is empty")
        if name == "a":
            xa = mono
        else:
            xb = mono
    if errors:
        raise ParameterError("invalid gcc_phat parameters", errors=errors)
    lo, hi = -(len(xb) - 1), len(xa) - 1
    if max_lag_s is not None:
        lo = max(lo, math.floor((center_s - max_lag_s) * sr))
        hi = min(hi, math.ceil((center_s + max_lag_s) * sr))
    lobe = max(2, math.ceil(_LOBE_S * sr))
    peak = _gcc(xa, xb, lo, hi, beta=beta, lobe=lobe)
    lag = peak.lag
    if peak.confidence > 0:
        refined = _fine_lag(_ArraySignal(xa), xb, peak.lag, lobe, sr)
        if refined is not None and abs(refined[0] - peak.lag) <= lobe:
            lag = refined[0]
    return Lag(lag / sr, lag, peak.confidence)


def _fine_lag(
    ref: _Signal, w: Array, predicted: float, guard: int, sr: float
) -> tuple[float, float] | None:
    """Reference position of ``w[0]`` within ``guard`` samples of ``predicted``, and its std.

    The windows are already aligned to a few samples, so the cross-spectrum can be
    averaged over short segments (Welch), which estimates each frequency's coherence
    ``γ²``; weighting by ``γ² / (1 - γ²) / |G|`` (Hannan-Thomson, the maximum-likelihood
    GCC weighting) counts bins where the two recordings share a signal and ignores bins
    holding only each device's noise. PHAT cannot tell those apart: on speech (energy
    below 4 kHz) with white noise at 48 kHz, most bins are noise, and PHAT's sub-sample
    estimate erred by up to 2-5 samples at 10 dB SNR where this one stays within 0.3.
    A second pass, re-centred on the first answer, removes the small bias of a residual
    shift within the segments. None when the two share no significant coherence.
    """
    if not _loud(w):
        return None
    nseg = 1 << max(6, math.ceil(math.log2(max(4 * guard, 0.005 * sr))))
    r0, search = round(predicted), guard
    found = None
    for _ in range(2):
        seg = ref.segment(r0, len(w))
        if not _loud(seg):
            return None
        measured = _welch_lag(seg, w, search, nseg)
        if measured is None:
            return None
        found = (r0 + measured[0], measured[1])
        r0, search = round(found[0]), 2
    return found


def _welch_lag(a: Array, b: Array, search: int, nseg: int) -> tuple[float, float] | None:
    """The lag in ``-search..search`` of ``a`` relative to ``b`` (equal lengths), and its std.

    The std is the Cramér-Rao bound of the delay given the measured coherence,
    ``1 / sqrt(K * sum(w^2 γ² / (1 - γ²)))`` over ``K`` segments (Carter 1987): it
    weights the windows in the line fit. Only bins whose coherence is significant
    (above ``4 / K``, where unrelated signals reach less than 2% of the time) count:
    noise-only bins would otherwise add up to a false precision.
    """
    hop = nseg // 2
    count = (len(a) - nseg) // hop + 1 if len(a) >= nseg else 0
    if count < 8:  # too short to average: PHAT-weighted GCC, precision unknown
        peak = _gcc(a, b, -search, search, beta=1.0, lobe=2)
        return None if peak.confidence == 0.0 else (peak.lag, 0.5)
    index = np.arange(count)[:, None] * hop + np.arange(nseg)
    window = np.hanning(nseg)
    fa = np.fft.rfft(a[index] * window, axis=1)
    fb = np.fft.rfft(b[index] * window, axis=1)
    g = (fa * np.conj(fb)).mean(axis=0)
    saa = np.square(np.abs(fa)).mean(axis=0)
    sbb = np.square(np.abs(fb)).mean(axis=0)
    mag = np.abs(g)
    tiny = 1e-30 + 1e-12 * float(mag.max())
    biased = np.square(mag) / (saa * sbb + tiny)
    # unbiased: unrelated bins average to 1 / count, not 0
    coherence = np.clip((count * biased - 1) / (count - 1), 0.0, 0.99)
    coherence[biased < 4 / count] = 0.0
    snr = coherence / (1 - coherence)
    omega = np.pi * np.arange(len(g)) / (len(g) - 1)
    information = 2 * count * float(np.sum(omega * omega * snr))
    if information <= 0:
        return None
    g = g * (snr / (mag + tiny))
    r = np.fft.irfft(g, nseg)[np.arange(-search, search + 1) % nseg]
    i = int(np.argmax(r))
    if i == 0 or i == len(r) - 1 or r[i] <= 0:
        return None
    k0 = i - search
    lag = _newton(g, nseg, k0, k0 + _parabolic(r[i - 1], r[i], r[i + 1]))
    return lag, 1 / math.sqrt(information)
