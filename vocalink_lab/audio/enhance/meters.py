"""What the pipeline measures of a stream, in constant memory: SNR, noise segments, hum.

The SNR estimate and the loudness are `vocalink_lab.audio.metrics`' meters
(`~vocalink_lab.audio.metrics.PowerHistogram`, `~vocalink_lab.audio.metrics.LoudnessMeter`):
the report's figures are those `metrics.snr_estimate` and `metrics.loudness_lufs` give.
"""

from __future__ import annotations

import math

import numpy as np

from ...levels import amplitude_dbfs
from ..metrics import Framer, LoudnessMeter, PowerHistogram

_FRAME_S = 0.02  # short frames for the SNR estimate (as metrics.snr_estimate)
_NOISE_PERCENTILE = 10.0  # share of the quietest frames taken as noise
_SEG_FRAMES = 8  # a noise-profile segment is 8 short frames (160 ms) ...
_SEG_HOP = 4  # ... on a grid of 80 ms
_NOISE_SEGMENT_MARGIN_DB = 6.0  # a segment counts as noise-only within this of the floor
_NOISE_MAX_GAIN_DB = 3.0  # the most the noise profile is raised to undo its selection bias
_HUM_PROMINENCE_DB = 10.0
_RUMBLE_BELOW_HZ = 50.0
_EPS = 1e-20


class _NoiseSegments:
    """Candidate noise-only segments of each channel: a uniform sample, O(1) memory.

    Every segment of `_SEG_FRAMES` short frames on a grid of `_SEG_HOP` frames is a
    candidate, with its loudest and its mean frame power. All are kept until there
    are ``keep``; then every other one is dropped and the stride doubles, so that the
    sample stays evenly spread over the recording, however long it is.
    """

    def __init__(self, channels: int, keep: int = 4096) -> None:
        self._keep = keep
        self._stride = 1  # keep the candidates whose index is a multiple of this
        self._carry = np.zeros((channels, 0))
        self._carry_start = 0  # index (in short frames) of the first carried frame
        self.start = np.zeros(0, np.int64)  # segment starts, in short frames
        self.loudest = np.zeros((channels, 0))
        self.mean = np.zeros((channels, 0))

    def push(self, powers: np.ndarray) -> None:
        """Add short-frame powers ``(channels, n)``."""
        data = np.concatenate([self._carry, powers], axis=1)
        first = self._carry_start
        offset = (-first) % _SEG_HOP  # segments start on the grid of _SEG_HOP frames
        starts = np.arange(offset, data.shape[1] - _SEG_FRAMES + 1, _SEG_HOP)
        if starts.size:
            windows = np.lib.stride_tricks.sliding_window_view(data, _SEG_FRAMES, axis=1)
            chosen = starts[((starts + first) // _SEG_HOP) % self._stride == 0]
            self.start = np.concatenate([self.start, chosen + first])
            self.loudest = np.concatenate([self.loudest, windows[:, chosen].max(axis=2)],
                                          axis=1)
            self.mean = np.concatenate([self.mean, windows[:, chosen].mean(axis=2)], axis=1)
            while self.start.size > self._keep:
                self._stride *= 2
                keep = (self.start // _SEG_HOP) % self._stride == 0
                self.start, self.loudest, self.mean = (self.start[keep], self.loudest[:, keep],
                                                       self.mean[:, keep])
            cut = int(starts[-1]) + _SEG_HOP
        else:
            cut = offset if data.shape[1] >= offset else 0
            cut = 0 if data.shape[1] < _SEG_FRAMES else cut
        self._carry = data[:, cut:]
        self._carry_start = first + cut

    def pick(self, ch: int, count: int, floor: float) -> tuple[list[int], float]:
        """Up to ``count`` quiet, non-overlapping segment starts (in short frames), and a gain.

        The segments are those whose loudest frame is lowest: the surest to hold no
        voice. But the quietest of many noise segments under-state the noise (by 2-3 dB
        in pink noise, whose power swings), and a gate fed with them lets noise
        through; the gain (at most +3 dB) brings them to the typical power of the
        noise-only segments (loudest frame within `_NOISE_SEGMENT_MARGIN_DB` of
        ``floor``).
        """
        loudest, mean = self.loudest[ch], self.mean[ch]
        chosen: list[int] = []
        powers: list[float] = []
        for i in np.argsort(loudest, kind="stable"):
            start = int(self.start[i])
            if all(abs(start - c) >= _SEG_FRAMES for c in chosen):
                chosen.append(start)
                powers.append(float(mean[i]))
                if len(chosen) == count:
                    break
        quiet = mean[loudest <= floor * 10 ** (_NOISE_SEGMENT_MARGIN_DB / 10)]
        gain = 1.0
        if quiet.size >= 2 * len(chosen) and chosen and np.mean(powers) > 0:
            gain = float(np.clip(np.sqrt(np.median(quiet) / np.mean(powers)), 1.0,
                                 10 ** (_NOISE_MAX_GAIN_DB / 20)))
        return sorted(chosen), gain


class _HumSpectrum:
    """Mean log-power spectrum of 1 s Hann-windowed segments (1 Hz bins), and rumble power."""

    def __init__(self, channels: int, sr: int, fmax: float) -> None:
        self._framer = Framer(channels, sr)
        self._window = np.hanning(sr)
        self._bins = int(min(sr // 2, fmax + 20)) + 1
        self._rumble = int(_RUMBLE_BELOW_HZ)
        self.log_sum = np.zeros((channels, self._bins))
        self.rumble = np.zeros(channels)
        self.power = np.zeros(channels)
        self.segments = 0

    def push(self, x: np.ndarray) -> None:
        segments = self._framer.push(x)
        for k in range(segments.shape[1]):
            spectrum = np.abs(np.fft.rfft(segments[:, k] * self._window, axis=-1)) ** 2
            self.log_sum += 10 * np.log10(spectrum[:, :self._bins] + _EPS)
            self.rumble += spectrum[:, 1:self._rumble].sum(axis=1)
            self.power += spectrum[:, 1:].sum(axis=1)
            self.segments += 1

    def rumble_share(self) -> float:
        total = float(self.power.sum())
        return float(self.rumble.sum()) / total if total > 0 else 0.0

    def detect(self, harmonics: int) -> tuple[float | None, float, list[bool]]:
        """The mains frequency (or None), its prominence in dB, and which channels hum."""
        if self.segments < 1:
            return None, math.nan, []
        mean = self.log_sum / self.segments  # (channels, bins), dB
        threshold = _HUM_PROMINENCE_DB + 12.0 / math.sqrt(self.segments) - 12.0 / 3.0
        threshold = max(_HUM_PROMINENCE_DB, threshold)
        best: tuple[float, float, float, list[bool]] | None = None  # score, hz, prom, channels
        for base in (50.0, 60.0):
            ks = [k for k in range(1, min(harmonics, 5) + 1) if k * base + 16 < self._bins]
            if not ks:
                continue
            prom = np.array([[_prominence(mean[ch], k * base) for k in ks]
                             for ch in range(mean.shape[0])])  # (channels, harmonics)
            hums = [(p[0] >= threshold) or (int((p >= threshold).sum()) >= 2 and bool(
                (p[0::2] >= threshold).any())) for p in prom]
            score = float(np.max(prom[:, 0]))
            if any(hums):
                score = 1000.0 + float(np.max(np.sum(np.clip(prom, 0, None), axis=1)))
            if best is None or score > best[0]:
                best = (score, base, float(np.max(prom)), hums)
        if best is None:
            return None, math.nan, []
        _, base, prominence, hums = best
        if not any(hums):
            return None, prominence, hums
        return _refine(mean[[i for i, h in enumerate(hums) if h]].mean(axis=0), base,
                       harmonics, self._bins), prominence, hums


def _prominence(spectrum_db: np.ndarray, hz: float) -> float:
    """How far the peak at ``hz`` (±1 bin) stands above the median 5-15 Hz around it."""
    b = int(round(hz))
    peak = float(spectrum_db[b - 1:b + 2].max())
    around = np.concatenate([spectrum_db[b - 15:b - 4], spectrum_db[b + 5:b + 16]])
    return peak - float(np.median(around))


def _refine(spectrum_db: np.ndarray, base: float, harmonics: int, bins: int) -> float:
    """The mains frequency to 0.01 Hz: parabolic peaks of the harmonics, weighted."""
    estimates, weights = [], []
    for k in range(1, harmonics + 1):
        b = int(round(k * base))
        if b + 16 >= bins:
            break
        i = b - 1 + int(np.argmax(spectrum_db[b - 1:b + 2]))
        y0, y1, y2 = spectrum_db[i - 1], spectrum_db[i], spectrum_db[i + 1]
        denom = y0 - 2 * y1 + y2
        delta = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
        weight = max(0.0, _prominence(spectrum_db, k * base))
        estimates.append((i + float(np.clip(delta, -0.5, 0.5))) / k)
        weights.append(weight)
    if not weights or sum(weights) == 0:
        return base
    hz = float(np.average(estimates, weights=weights))
    return round(hz, 2) if abs(hz - base) <= 0.5 else base


class _Meters:
    """What the pipeline measures of a stream: SNR histogram, loudness, peak."""

    def __init__(self, channels: int, sr: int) -> None:
        self.framer = Framer(channels, max(1, round(_FRAME_S * sr)))
        self.powers = PowerHistogram(channels)
        self.loudness = LoudnessMeter(channels, sr)
        self.peak = np.zeros(channels)
        self.quiet: _NoiseSegments | None = None
        self.spectrum: _HumSpectrum | None = None

    def push(self, x: np.ndarray) -> None:
        if x.shape[1] == 0:
            return
        frames = self.framer.push(x)
        powers = np.mean(np.square(frames), axis=2)
        self.powers.add(powers)
        if self.quiet is not None:
            self.quiet.push(powers)
        if self.spectrum is not None:
            self.spectrum.push(x)
        self.loudness.push(x)
        np.maximum(self.peak, np.abs(x).max(axis=1), out=self.peak)

    def finish(self) -> None:
        """Count a last partial short frame (a file shorter than one frame has one)."""
        rest = self.framer.rest
        if rest.shape[1] and self.powers.total() == 0:
            self.powers.add(np.mean(np.square(rest), axis=1, keepdims=True))

    def snr_db(self, ch: int) -> float:
        return self.powers.snr_db(ch, noise_percentile=_NOISE_PERCENTILE)

    def peak_dbfs(self) -> float:
        return amplitude_dbfs(float(self.peak.max()) if self.peak.size else 0.0)
