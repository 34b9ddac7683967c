"""Measures of a recording and of an enhancement: levels, loudness, SNR, SI-SDR, STOI.

Every function takes ``(frames,)`` or ``(channels, frames)`` arrays and returns a
float; multi-channel input gives the mean over channels unless said otherwise.

The SNR estimate and the loudness are measured by streaming meters (`Framer`,
`PowerHistogram`, `LoudnessMeter`) in constant memory: `snr_estimate` and
`loudness_lufs` run them over an array, and `vocalink_lab.audio.enhance` over a
file, block by block, so that its report gives the figures these functions give
(the SNR per channel there).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import numpy.typing as npt

from ..errors import ParameterError
from ..levels import FLOOR_DBFS, amplitude_dbfs, power_dbfs
from .io import as_channels

__all__ = [
    "Framer",
    "LoudnessMeter",
    "PowerHistogram",
    "loudness_lufs",
    "peak_dbfs",
    "rms_dbfs",
    "si_sdr",
    "snr_estimate",
    "stoi",
]

_EPS = 1e-12
#: The floor every dB figure is clipped to: digital silence reads -120 dBFS, not -inf.
FLOOR_DB = FLOOR_DBFS
#: Cap of `snr_estimate` (a recording with silent pauses has no measurable noise).
MAX_SNR_DB = 100.0
#: Noise power at or below this is no noise at all (silent pauses): the SNR is capped.
_SILENT_NOISE = 1e-24
#: Blocks pushed into the loudness meter at a time: bounded temporaries for long arrays.
_BLOCK_FRAMES = 1 << 16

_Float64 = npt.NDArray[np.float64]


def rms_dbfs(audio: npt.ArrayLike) -> float:
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
    return power_dbfs(float(np.mean(np.square(x, dtype=np.float64)))) if x.size else FLOOR_DB


def peak_dbfs(audio: npt.ArrayLike) -> float:
    """Sample peak in dBFS (0 dBFS is a sample at ±1.0); -120 for digital silence.

    Parameters
    ----------
    audio : array_like, shape (frames,) or (channels, frames)

    Returns
    -------
    float
    """
    x = as_channels(audio)
    return amplitude_dbfs(float(np.max(np.abs(x)))) if x.size else FLOOR_DB


# -- streaming meters ------------------------------------------------------------------------


class Framer:
    """Cut a stream of ``(channels, n)`` blocks into consecutive frames of ``size`` samples.

    Parameters
    ----------
    channels : int
        Channels of the stream.
    size : int
        Samples per frame.
    """

    def __init__(self, channels: int, size: int) -> None:
        self.size = size
        self.count = 0  # frames handed out so far
        self._rest: _Float64 = np.zeros((channels, 0), np.float64)

    def push(self, x: npt.NDArray[np.floating]) -> _Float64:
        """The complete frames so far, shape ``(channels, n, size)``, float64."""
        data = np.concatenate([self._rest, x], axis=1) if self._rest.shape[1] else x
        n = data.shape[1] // self.size
        self._rest = np.array(data[:, n * self.size:], dtype=np.float64)
        self.count += n
        frames: _Float64 = np.asarray(data[:, :n * self.size], dtype=np.float64)
        return frames.reshape(data.shape[0], n, self.size)

    @property
    def rest(self) -> _Float64:
        """What did not make a whole frame yet, ``(channels, m)``."""
        return self._rest


class PowerHistogram:
    """Per-channel histogram of frame powers (0.05 dB bins, with their sums): O(1) memory.

    What `snr_estimate` measures, and what the enhance auto mode decides on; the mean
    power of the quietest frames is exact but for the one bin the share ends in.

    Parameters
    ----------
    channels : int
        Channels of the stream.
    """

    _LOW_DB, _HIGH_DB, _STEP_DB = -250.0, 30.0, 0.05

    def __init__(self, channels: int) -> None:
        n = int((self._HIGH_DB - self._LOW_DB) / self._STEP_DB) + 2  # bin 0: digital silence
        self.counts = np.zeros((channels, n), np.int64)
        self.sums = np.zeros((channels, n), np.float64)

    def add(self, powers: _Float64) -> None:
        """Add frame powers (mean squares) shaped ``(channels, n)``."""
        if powers.shape[1] == 0:
            return
        with np.errstate(divide="ignore"):
            db = 10 * np.log10(powers)
        idx = np.where(powers > 0,
                       np.clip((db - self._LOW_DB) / self._STEP_DB, 0, self.counts.shape[1] - 2)
                       .astype(np.int64) + 1, 0)
        for ch in range(powers.shape[0]):
            self.counts[ch] += np.bincount(idx[ch], minlength=self.counts.shape[1])
            self.sums[ch] += np.bincount(idx[ch], weights=powers[ch],
                                         minlength=self.counts.shape[1])

    def total(self) -> int:
        """Frames counted (per channel)."""
        return int(self.counts[0].sum()) if self.counts.size else 0

    def quietest_mean(self, ch: int, share: float) -> float:
        """Mean power of the quietest ``share`` (0 to 1) of the frames of channel ``ch``."""
        total = int(self.counts[ch].sum())
        k = max(1, int(total * share))
        cum = np.cumsum(self.counts[ch])
        i = int(np.searchsorted(cum, k))
        below = int(cum[i - 1]) if i else 0
        power = float(self.sums[ch, :i].sum())
        if self.counts[ch, i]:
            power += float(self.sums[ch, i]) / int(self.counts[ch, i]) * (k - below)
        return power / k

    def snr_db(self, ch: int = 0, *, noise_percentile: float = 10.0) -> float:
        """The blind SNR estimate of channel ``ch`` (see `snr_estimate`), in dB.

        Parameters
        ----------
        ch : int
            Channel.
        noise_percentile : float
            Share of the quietest frames taken as noise, in percent.

        Returns
        -------
        float
            dB in ``[-MAX_SNR_DB, MAX_SNR_DB]``; nan before any frame.
        """
        total = int(self.counts[ch].sum())
        if total == 0:
            return math.nan
        noise = self.quietest_mean(ch, noise_percentile / 100)
        signal = float(self.sums[ch].sum()) / total - noise
        if noise <= _SILENT_NOISE:
            return MAX_SNR_DB if signal > 0 else 0.0
        if signal <= 0:
            return -MAX_SNR_DB
        return float(np.clip(10 * math.log10(signal / noise), -MAX_SNR_DB, MAX_SNR_DB))


class LoudnessMeter:
    """Integrated loudness per ITU-R BS.1770-4, streaming, as pyloudnorm computes it.

    K-weighting (pyloudnorm's two biquads) with carried state; mean squares of
    100 ms steps; 400 ms gating blocks every 100 ms; block loudness kept in a
    0.01 LU histogram (with the blocks' power summed per bin) for the absolute
    (-70 LUFS) and relative (-10 LU) gates, so memory stays constant however long
    the stream.

    Parameters
    ----------
    channels : int
        Channels of the stream (the first five weighted as BS.1770 says: L, R, C,
        then the surrounds at 1.41).
    sr : int
        Sample rate.
    """

    _LOW, _HIGH, _STEP = -70.0, 10.0, 0.01
    _WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)

    def __init__(self, channels: int, sr: int) -> None:
        from scipy import signal as sps

        iir = importlib.import_module("pyloudnorm.iirfilter")
        shelf = iir.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sr, "high_shelf")
        highpass = iir.IIRfilter(0.0, 0.5, 38.0, sr, "high_pass")
        self._sos = np.vstack([sps.tf2sos(f.b, f.a) for f in (shelf, highpass)])
        self._zi = np.zeros((self._sos.shape[0], channels, 2))
        self._step = round(0.1 * sr)
        self._framer = Framer(channels, self._step)
        self._g = np.array([self._WEIGHTS[c] if c < 5 else 1.0 for c in range(channels)])
        self._last = np.zeros((0,))  # weighted power sums of the last three 100 ms steps
        n = int((self._HIGH - self._LOW) / self._STEP) + 1
        self._counts = np.zeros(n, np.int64)
        self._sums = np.zeros(n, np.float64)

    def push(self, x: npt.NDArray[np.floating]) -> None:
        """Add a block of samples, shape ``(channels, n)``."""
        from scipy import signal as sps

        if x.shape[1] == 0:
            return
        y, self._zi = sps.sosfilt(self._sos, x, axis=-1, zi=self._zi)
        steps = self._framer.push(y)
        if steps.shape[1] == 0:
            return
        energy = np.square(steps).sum(axis=2)  # (channels, n)
        weighted = self._g @ energy  # (n,)
        seq = np.concatenate([self._last, weighted])
        if seq.size >= 4:
            blocks = np.convolve(seq, np.ones(4), mode="valid") / (4 * self._step)
            with np.errstate(divide="ignore"):
                loud = -0.691 + 10 * np.log10(blocks)
            keep = loud >= self._LOW
            idx = np.clip(((loud[keep] - self._LOW) / self._STEP).astype(np.int64), 0,
                          self._counts.size - 1)
            self._counts += np.bincount(idx, minlength=self._counts.size)
            self._sums += np.bincount(idx, weights=blocks[keep], minlength=self._counts.size)
        self._last = seq[-3:]

    def lufs(self) -> float:
        """Integrated loudness; nan before one block, -120 when all blocks are gated."""
        if self._framer.count < 4:
            return math.nan
        if not self._counts.any():
            return FLOOR_DB
        gamma_r = -0.691 + 10 * math.log10(self._sums.sum() / self._counts.sum()) - 10.0
        centres = self._LOW + (np.arange(self._counts.size) + 0.5) * self._STEP
        above = centres > gamma_r
        count = int(self._counts[above].sum())
        if count == 0:
            return FLOOR_DB
        return -0.691 + 10 * math.log10(float(self._sums[above].sum()) / count)


# -- loudness and SNR of an array ------------------------------------------------------------


def loudness_lufs(audio: npt.ArrayLike, sr: int) -> float:
    """Integrated loudness per ITU-R BS.1770-4, in LUFS (`LoudnessMeter`).

    Parameters
    ----------
    audio : array_like, shape (frames,) or (channels, frames)
    sr : int
        Sample rate.

    Returns
    -------
    float
        LUFS; ``nan`` when the audio is not longer than one 400 ms gating block, and
        -120 when every block is below the absolute gate (silence).
    """
    x = as_channels(audio)
    if x.shape[1] < round(0.4 * sr) + 1:
        return math.nan
    meter = LoudnessMeter(x.shape[0], sr)
    for i in range(0, x.shape[1], _BLOCK_FRAMES):
        meter.push(x[:, i:i + _BLOCK_FRAMES])
    return meter.lufs()


def snr_estimate(audio: npt.ArrayLike, sr: int, *, frame_s: float = 0.02,
                 noise_percentile: float = 10.0) -> float:
    """Blind signal-to-noise estimate in dB, from the spread of short-frame powers.

    The noise power is the mean power of the quietest ``noise_percentile`` % of
    the frames (speech has pauses, where only the noise remains); the signal
    power is the mean power of all frames minus that noise. The frame powers
    are counted in a `PowerHistogram`, as the enhance auto mode counts them.

    Parameters
    ----------
    audio : array_like, shape (frames,) or (channels, frames)
        With several channels, each frame's power is the mean over channels.
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
    x = as_channels(audio)
    frames = Framer(x.shape[0], max(1, round(frame_s * sr))).push(x)
    powers = np.mean(np.square(frames), axis=2)
    if powers.shape[1] == 0 and x.shape[1]:  # shorter than a frame: all of it is one
        powers = np.mean(np.square(x, dtype=np.float64), axis=1, keepdims=True)
    histogram = PowerHistogram(1)
    histogram.add(powers.mean(axis=0, keepdims=True))
    return histogram.snr_db(0, noise_percentile=noise_percentile)


def _paired(estimate: npt.ArrayLike, reference: npt.ArrayLike
            ) -> tuple[_Float64, _Float64]:
    est = as_channels(estimate, name="estimate").astype(np.float64)
    ref = as_channels(reference, name="reference").astype(np.float64)
    if est.shape[0] != ref.shape[0]:
        raise ParameterError(f"estimate has {est.shape[0]} channels, the reference "
                             f"{ref.shape[0]}")
    n = min(est.shape[1], ref.shape[1])
    return est[:, :n], ref[:, :n]


def si_sdr(estimate: npt.ArrayLike, reference: npt.ArrayLike) -> float:
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


def stoi(estimate: npt.ArrayLike, reference: npt.ArrayLike, sr: int, *,
         extended: bool = False) -> float:
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
