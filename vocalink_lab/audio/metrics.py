"""Measures of a recording and of an enhancement: levels, loudness, SNR, SI-SDR, STOI.

Every function takes ``(frames,)`` or ``(channels, frames)`` arrays and returns a
float; multi-channel input gives the mean over channels unless said otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ParameterError
from .io import as_channels

__all__ = ["loudness_lufs", "peak_dbfs", "rms_dbfs", "si_sdr", "snr_estimate", "stoi"]

_EPS = 1e-12
#: The floor every dB figure is clipped to: digital silence reads -120 dBFS, not -inf.
FLOOR_DB = -120.0
#: Cap of `snr_estimate` (a recording with silent pauses has no measurable noise).
MAX_SNR_DB = 100.0


def _db(power: float) -> float:
    return max(FLOOR_DB, 10.0 * math.log10(max(power, _EPS * _EPS)))


def rms_dbfs(audio: Any) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave reads 0 dBFS).

    Parameters
    ----------
    audio : array_like, shape (frames,) or (channels, frames)

    Returns
    -------
    float
        dBFS over all channels; -120 for digital silence.
    """
    x = as_channels(audio)
    return _db(float(np.mean(np.square(x, dtype=np.float64)))) if x.size else FLOOR_DB


def peak_dbfs(audio: Any) -> float:
    """Sample peak in dBFS (0 dBFS is a sample at ±1.0); -120 for digital silence."""
    x = as_channels(audio)
    return _db(float(np.max(np.abs(x))) ** 2) if x.size else FLOOR_DB


def loudness_lufs(audio: Any, sr: int) -> float:
    """Integrated loudness per ITU-R BS.1770-4 (pyloudnorm), in LUFS.

    Parameters
    ----------
    audio : array_like, shape (frames,) or (channels, frames)
    sr : int
        Sample rate.

    Returns
    -------
    float
        LUFS; ``nan`` when the audio is shorter than one 400 ms gating block, and
        -120 when every block is below the absolute gate (silence).
    """
    import pyloudnorm

    x = as_channels(audio)
    if x.shape[1] < round(0.4 * sr) + 1:
        return math.nan
    value = float(pyloudnorm.Meter(sr).integrated_loudness(x.T.astype(np.float64)))
    return value if math.isfinite(value) else FLOOR_DB


def _frame_powers(x: np.ndarray, sr: int, frame_s: float) -> np.ndarray:
    """Mean power of consecutive ``frame_s`` frames, over channels, shape (n_frames,)."""
    n = max(1, round(frame_s * sr))
    frames = x.shape[1] // n
    if frames == 0:
        return np.array([float(np.mean(np.square(x, dtype=np.float64)))])
    cut = x[:, :frames * n].astype(np.float64)
    powers: np.ndarray = np.mean(np.square(cut).reshape(x.shape[0], frames, n), axis=(0, 2))
    return powers


def snr_estimate(audio: Any, sr: int, *, frame_s: float = 0.02,
                 noise_percentile: float = 10.0) -> float:
    """Blind signal-to-noise estimate in dB, from the spread of short-frame powers.

    The noise power is the mean power of the quietest ``noise_percentile`` % of
    the frames (speech has pauses, where only the noise remains); the signal
    power is the mean power of all frames minus that noise.

    Parameters
    ----------
    audio : array_like, shape (frames,) or (channels, frames)
    sr : int
        Sample rate.
    frame_s : float
        Frame length in seconds.
    noise_percentile : float
        Share of the quietest frames taken as noise, in percent (0, 50].

    Returns
    -------
    float
        dB, capped to [-MAX_SNR_DB, MAX_SNR_DB]. A signal without pauses (a
        steady tone) has no noise-only frames: the estimate then reads low,
        so use it on speech-like material.
    """
    if not 0 < noise_percentile <= 50:
        raise ParameterError(f"noise_percentile must be in (0, 50], not {noise_percentile}")
    powers = _frame_powers(as_channels(audio), sr, frame_s)
    k = max(1, int(len(powers) * noise_percentile / 100))
    noise = float(np.mean(np.partition(powers, k - 1)[:k]))
    signal = float(np.mean(powers)) - noise
    if noise <= _EPS * _EPS:
        return MAX_SNR_DB if signal > 0 else 0.0
    if signal <= 0:
        return -MAX_SNR_DB
    return float(np.clip(10 * math.log10(signal / noise), -MAX_SNR_DB, MAX_SNR_DB))


def _paired(estimate: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    est = as_channels(estimate, name="estimate").astype(np.float64)
    ref = as_channels(reference, name="reference").astype(np.float64)
    if est.shape[0] != ref.shape[0]:
        raise ParameterError(f"estimate has {est.shape[0]} channels, the reference "
                             f"{ref.shape[0]}")
    n = min(est.shape[1], ref.shape[1])
    return est[:, :n], ref[:, :n]


def si_sdr(estimate: Any, reference: Any) -> float:
    """Scale-invariant signal-to-distortion ratio (Le Roux et al., 2019), in dB.

    Parameters
    ----------
    estimate, reference : array_like, shape (frames,) or (channels, frames)
        Both trimmed to the shorter length; the same channel count.

    Returns
    -------
    float
        dB, higher is better; the mean over channels.
    """
    est, ref = _paired(estimate, reference)
    values = []
    for e, r in zip(est, ref, strict=True):
        e = e - e.mean()
        r = r - r.mean()
        alpha = float(np.dot(e, r) / max(np.dot(r, r), _EPS))
        target = alpha * r
        residual = e - target
        values.append(10 * math.log10(max(float(np.dot(target, target)), _EPS)
                                      / max(float(np.dot(residual, residual)), _EPS)))
    return float(np.mean(values))


def stoi(estimate: Any, reference: Any, sr: int, *, extended: bool = False) -> float:
    """Short-time objective intelligibility (Taal et al., 2011; pystoi), 0 to 1.

    Parameters
    ----------
    estimate, reference : array_like, shape (frames,) or (channels, frames)
    sr : int
        Sample rate (pystoi resamples to 10 kHz itself).
    extended : bool
        ESTOI instead of STOI.

    Returns
    -------
    float
        Mean over channels.
    """
    from pystoi import stoi as _stoi

    est, ref = _paired(estimate, reference)
    return float(np.mean([_stoi(r, e, sr, extended=extended)
                          for e, r in zip(est, ref, strict=True)]))
