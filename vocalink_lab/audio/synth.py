"""Synthetic signals with known ground truth: speech-like voices, tones, clicks, hum, noise.

Noises of daily life too: `keyboard` (typing), `fan` (modulated, with a blade tone) and
`babble` (several talkers from given voices).

Tests, benchmarks and demos make their audio here, so that every figure they
report is checked against a truth they know (the clean signal, the offset, the SNR).
Every generator is seeded and returns float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import signal as sps

from ..errors import ParameterError
from .io import Audio

__all__ = ["babble", "clicks", "fan", "hum", "keyboard", "mix_at_snr", "noise", "speech_like",
           "tone"]

#: Formants (F1, F2, F3 in Hz) of a few vowels, adult voice (Peterson & Barney averages).
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410),
           (300, 870, 2240), (660, 1720, 2410), (440, 1020, 2240))


def _frames(seconds: float, sr: int) -> int:
    if seconds < 0 or sr <= 0:
        raise ParameterError(f"cannot make {seconds} s at {sr} Hz")
    return round(seconds * sr)


def tone(seconds: float, sr: int, hz: float, *, amplitude: float = 0.5,
         phase: float = 0.0) -> Audio:
    """A sine, shape ``(frames,)``."""
    t = np.arange(_frames(seconds, sr)) / sr
    return (amplitude * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32)


def hum(seconds: float, sr: int, *, base_hz: float = 50.0, harmonics: int = 5,
        amplitude: float = 0.05, seed: int = 0) -> Audio:
    """Mains hum: ``base_hz`` and its harmonics (amplitudes 1/k, random phases), ``(frames,)``.

    ``amplitude`` is the fundamental's; harmonics above Nyquist are left out.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(_frames(seconds, sr)) / sr
    out = np.zeros_like(t)
    for k in range(1, harmonics + 1):
        if k * base_hz < sr / 2:
            out += amplitude / k * np.sin(2 * np.pi * k * base_hz * t + rng.uniform(0, 2 * np.pi))
    return out.astype(np.float32)


def clicks(seconds: float, sr: int, *, period_s: float = 0.5, offset_s: float = 0.0,
           amplitude: float = 0.8) -> Audio:
    """Short decaying clicks (1 ms) every ``period_s``, the first at ``offset_s``, ``(frames,)``."""
    if period_s <= 0:
        raise ParameterError(f"period_s must be positive, not {period_s}")
    n = _frames(seconds, sr)
    out = np.zeros(n, np.float32)
    length = max(2, round(0.001 * sr))
    shape = (amplitude * np.exp(-np.arange(length) / (length / 5))).astype(np.float32)
    at = offset_s
    while at < seconds:
        i = round(at * sr)
        m = min(length, n - i)
        out[i:i + m] += shape[:m]
        at += period_s
    return out


def noise(frames: int, *, kind: str = "white", seed: int = 0,
          amplitude: float = 0.1) -> Audio:
    """Gaussian noise with RMS ``amplitude``, shape ``(frames,)``.

    Parameters
    ----------
    frames : int
        Length.
    kind : {"white", "pink", "brown"}
        Spectral slope: flat, -3 dB/octave (1/f power), -6 dB/octave (1/f² power).
    seed : int
        Random seed.
    amplitude : float
        RMS of the result.
    """
    if kind not in ("white", "pink", "brown"):
        raise ParameterError(f"noise kind must be white, pink or brown, not '{kind}'")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(frames)
    if kind != "white" and frames > 1:
        spectrum = np.fft.rfft(x)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        spectrum /= np.sqrt(f) if kind == "pink" else f
        x = np.fft.irfft(spectrum, n=frames)
    rms = float(np.sqrt(np.mean(np.square(x)))) or 1.0
    return (amplitude * x / rms).astype(np.float32)


def mix_at_snr(clean: npt.ArrayLike, noise: npt.ArrayLike, snr_db: float) -> Audio:
    """``clean`` plus ``noise`` scaled so that their power ratio is ``snr_db``.

    Parameters
    ----------
    clean : array_like, shape (frames,) or (channels, frames)
    noise : array_like
        Same shape as ``clean`` (or longer: it is cut).
    snr_db : float
        Power of ``clean`` over power of the added noise, over the whole signal.

    Returns
    -------
    np.ndarray, float32, the shape of ``clean``
    """
    c = np.asarray(clean, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)[..., :c.shape[-1]]
    if n.shape != c.shape:
        raise ParameterError(f"noise is shaped {n.shape}, the signal {c.shape}")
    pc = float(np.mean(np.square(c)))
    pn = float(np.mean(np.square(n))) or 1.0
    return (c + n * math.sqrt(pc / (pn * 10 ** (snr_db / 10)))).astype(np.float32)


def _resonate(x: np.ndarray, sr: int, formants: tuple[int, ...]) -> np.ndarray:
    """Filter through parallel two-pole resonators at the formants (bandwidth 80-120 Hz)."""
    out = np.zeros_like(x)
    for i, f in enumerate(formants):
        if f >= sr / 2:
            continue
        bw = 80 + 20 * i
        r = math.exp(-math.pi * bw / sr)
        a = [1.0, -2 * r * math.cos(2 * math.pi * f / sr), r * r]
        out += sps.lfilter([1 - r], a, x) / (1 + i)
    return out


def speech_like(seconds: float, sr: int, *, seed: int = 0, f0_hz: float = 120.0,
                pause_s: float = 0.25) -> Audio:
    """A voice-like signal: voiced syllables with formants, fricatives, pauses.

    Words of one to four syllables (120-260 ms each, a vowel's formants over a
    harmonic source whose pitch glides and jitters around ``f0_hz``), some with
    a fricative (high-passed noise), separated by pauses of about ``pause_s``;
    every few words a longer pause. Peak about 0.5.

    Parameters
    ----------
    seconds : float
        Length.
    sr : int
        Sample rate.
    seed : int
        Random seed: the same seed gives the same signal.
    f0_hz : float
        Mean pitch.
    pause_s : float
        Mean pause between words.

    Returns
    -------
    np.ndarray, shape (frames,), float32
    """
    n = _frames(seconds, sr)
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    hp = sps.butter(4, min(3000, 0.4 * sr), "highpass", fs=sr, output="sos")
    at = round(rng.uniform(0.05, 0.2) * sr)
    words = 0
    while at < n:
        for _ in range(int(rng.integers(1, 5))):
            length = round(rng.uniform(0.12, 0.26) * sr)
            if at + length > n:
                break
            if rng.random() < 0.3:  # a fricative before the vowel
                flen = round(rng.uniform(0.04, 0.09) * sr)
                fric = sps.sosfilt(hp, rng.standard_normal(flen)) * np.hanning(flen) * 0.15
                out[at:at + flen] += fric[:max(0, min(flen, n - at))]
                at += flen
                if at + length > n:
                    break
            t = np.arange(length) / sr
            f0 = f0_hz * rng.uniform(0.85, 1.2) * (1 + rng.uniform(-0.15, 0.1) * t / t[-1])
            f0 = f0 * (1 + 0.01 * rng.standard_normal(length).cumsum() / math.sqrt(length))
            phase = 2 * np.pi * np.cumsum(f0) / sr
            source = np.zeros(length)
            for k in range(1, int(min(4000, 0.45 * sr) / f0_hz) + 1):
                source += np.sin(k * phase) / k
            vowel = _VOWELS[int(rng.integers(len(_VOWELS)))]
            voiced = _resonate(source, sr, vowel)
            envelope = np.sin(np.pi * np.arange(length) / length) ** 0.6
            out[at:at + length] += voiced * envelope * rng.uniform(0.5, 1.0)
            at += length + round(rng.uniform(0.0, 0.04) * sr)
        words += 1
        gap = pause_s * rng.uniform(0.6, 1.6) * (3 if words % 5 == 0 else 1)
        at += round(gap * sr)
    peak = float(np.max(np.abs(out))) or 1.0
    return (0.5 * out / peak).astype(np.float32)


def keyboard(frames: int, sr: int, *, seed: int = 0, keys_per_s: float = 6.0,
             amplitude: float = 0.1) -> Audio:
    """Typing: key strokes (a click, then a softer release click) at random times.

    Each stroke is a 2-6 ms burst of band-passed noise (a plastic "tick", its colour
    varying from key to key) with a fast decay, followed 40-120 ms later by a
    weaker release; strokes come as a Poisson process of ``keys_per_s`` with
    random loudness, and the space bar (one stroke in eight) is duller and louder.
    A transient, non-stationary noise: hard for a spectral gate, easy to hear.

    Parameters
    ----------
    frames : int
        Length.
    sr : int
        Sample rate.
    seed : int
        Random seed.
    keys_per_s : float
        Mean typing rate.
    amplitude : float
        RMS of the result.

    Returns
    -------
    np.ndarray, shape (frames,), float32
    """
    if keys_per_s <= 0 or frames < 0:
        raise ParameterError(f"keys_per_s must be positive, not {keys_per_s}")
    rng = np.random.default_rng(seed)
    out = np.zeros(frames)
    at = rng.exponential(1 / keys_per_s)
    while round(at * sr) < frames:
        space = rng.random() < 0.125
        loud = rng.uniform(0.4, 1.0) * (1.5 if space else 1.0)
        for delay, gain in ((0.0, 1.0), (rng.uniform(0.04, 0.12), 0.4)):
            start = round((at + delay) * sr)
            length = round(rng.uniform(0.002, 0.006) * sr * (2 if space else 1)) + 8
            if start >= frames:
                break
            centre = rng.uniform(600, 1500) if space else rng.uniform(1500, 5000)
            low, high = centre / 1.6, min(centre * 1.6, 0.45 * sr)
            sos = sps.butter(2, (low, high), "bandpass", fs=sr, output="sos")
            burst = sps.sosfilt(sos, rng.standard_normal(length * 4))
            burst *= np.exp(-np.arange(burst.size) / length)
            m = min(burst.size, frames - start)
            out[start:start + m] += loud * gain * burst[:m]
        at += rng.exponential(1 / keys_per_s)
    rms = float(np.sqrt(np.mean(np.square(out)))) if frames else 0.0
    return (amplitude * out / (rms or 1.0)).astype(np.float32)


def fan(frames: int, sr: int, *, seed: int = 0, blade_hz: float | None = None,
        modulation_hz: float | None = None, depth: float = 0.6,
        amplitude: float = 0.1) -> Audio:
    """A fan: low-passed broadband noise and a blade tone, amplitude-modulated.

    The noise (brown-ish below about 1 kHz, pink above) and a tone at the blade-pass
    frequency (with two harmonics) are modulated together by a slow sine (the fan's
    beating, or an oscillating fan), so the noise level swings by ``depth``: a
    stationary gate's noise profile, taken where it is quiet, under-states it.

    Parameters
    ----------
    frames : int
        Length.
    sr : int
        Sample rate.
    seed : int
        Random seed.
    blade_hz : float, optional
        Blade-pass frequency (default: random, 80 to 200 Hz).
    modulation_hz : float, optional
        Modulation rate (default: random, 0.3 to 3 Hz).
    depth : float
        Modulation depth, 0 (steady) to 1 (the level falls to zero).
    amplitude : float
        RMS of the result.

    Returns
    -------
    np.ndarray, shape (frames,), float32
    """
    if not 0.0 <= depth <= 1.0:
        raise ParameterError(f"depth must be from 0 to 1, not {depth}")
    rng = np.random.default_rng(seed)
    blade = float(rng.uniform(80, 200)) if blade_hz is None else blade_hz
    rate = float(rng.uniform(0.3, 3.0)) if modulation_hz is None else modulation_hz
    t = np.arange(frames) / sr
    broadband = noise(frames, kind="pink", seed=int(rng.integers(2**31)), amplitude=1.0)
    rumble = noise(frames, kind="brown", seed=int(rng.integers(2**31)), amplitude=1.0)
    lp = sps.butter(2, min(1000.0, 0.4 * sr), "lowpass", fs=sr, output="sos")
    x = 0.6 * broadband + sps.sosfilt(lp, rumble)
    for k in range(1, 4):
        if k * blade < sr / 2:
            x += 0.5 / k * np.sin(2 * np.pi * k * blade * t + rng.uniform(0, 2 * np.pi))
    x = x * (1 - depth / 2 + depth / 2 * np.sin(2 * np.pi * rate * t
                                                  + rng.uniform(0, 2 * np.pi)))
    rms = float(np.sqrt(np.mean(np.square(x)))) if frames else 0.0
    out: Audio = (amplitude * x / (rms or 1.0)).astype(np.float32)
    return out


def babble(voices: Sequence[npt.ArrayLike], frames: int, *, seed: int = 0,
           talkers: int = 6, amplitude: float = 0.1) -> Audio:
    """Babble: ``talkers`` voices at once, each a random voice from ``voices``.

    Each talker is one of ``voices`` (looped to ``frames``, from a random start, at
    a random level within 6 dB): overlapping speech, the hardest noise for a speech
    enhancer since it is speech itself.

    Parameters
    ----------
    voices : sequence of 1-D arrays
        Recordings (or `speech_like` signals) of single talkers, at the target rate.
    frames : int
        Length.
    seed : int
        Random seed.
    talkers : int
        How many talk at once.
    amplitude : float
        RMS of the result.

    Returns
    -------
    np.ndarray, shape (frames,), float32
    """
    pool = [np.asarray(v, dtype=np.float64).ravel() for v in voices]
    if not pool or any(v.size == 0 for v in pool) or talkers < 1:
        raise ParameterError("babble needs at least one non-empty voice and one talker")
    rng = np.random.default_rng(seed)
    out = np.zeros(frames)
    for _ in range(talkers):
        v = pool[int(rng.integers(len(pool)))]
        v = v / (float(np.sqrt(np.mean(np.square(v)))) or 1.0)
        looped = np.resize(np.roll(v, -int(rng.integers(v.size))), frames)
        out += looped * 10 ** (rng.uniform(-6, 0) / 20)
    rms = float(np.sqrt(np.mean(np.square(out)))) if frames else 0.0
    return (amplitude * out / (rms or 1.0)).astype(np.float32)
