"""Metrics and synthetic signals: each figure checked against a truth the test knows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vocalink_lab.audio import metrics, synth
from vocalink_lab.errors import ParameterError

SR = 16000


def test_levels_of_known_signals() -> None:
    sine = synth.tone(2.0, SR, 1000.0, amplitude=1.0)
    assert metrics.peak_dbfs(sine) == pytest.approx(0.0, abs=0.01)
    assert metrics.rms_dbfs(sine) == pytest.approx(-3.01, abs=0.02)
    assert metrics.rms_dbfs(np.zeros(100)) == metrics.FLOOR_DB
    # BS.1770: a full-scale 1 kHz sine, one channel, reads -3.01 LUFS.
    assert metrics.loudness_lufs(sine, SR) == pytest.approx(-3.01, abs=0.1)
    assert math.isnan(metrics.loudness_lufs(sine[:1000], SR))
    assert metrics.loudness_lufs(np.zeros(SR), SR) == metrics.FLOOR_DB


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_mix_at_snr_sets_the_power_ratio(kind: str) -> None:
    clean = synth.speech_like(5.0, SR, seed=3)
    noise = synth.noise(clean.size, kind=kind, seed=4)
    for snr in (-5.0, 0.0, 10.0):
        noisy = synth.mix_at_snr(clean, noise, snr)
        added = noisy - clean
        measured = 10 * math.log10(np.mean(clean.astype(np.float64) ** 2)
                                   / np.mean(added.astype(np.float64) ** 2))
        assert measured == pytest.approx(snr, abs=0.01)
        # SI-SDR of the noisy mix against the clean signal is about the SNR itself (less
        # exactly for brown noise, whose few strong low bins correlate with the signal).
        assert metrics.si_sdr(noisy, clean) == pytest.approx(snr, abs=1.0)


def test_noise_colours_have_their_slopes() -> None:
    for kind, slope in (("white", 0.0), ("pink", -3.0), ("brown", -6.0)):
        x = synth.noise(SR * 8, kind=kind, seed=1)
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.size, 1 / SR)

        def band(lo: float, s: np.ndarray = spectrum, f: np.ndarray = freqs) -> float:
            return float(np.mean(s[(f >= lo) & (f < 2 * lo)]))

        per_octave = 10 * math.log10(band(2000) / band(1000))
        assert per_octave == pytest.approx(slope, abs=0.5), kind


def test_snr_estimate_tracks_the_true_snr_on_speech() -> None:
    clean = synth.speech_like(20.0, SR, seed=5)
    noise = synth.noise(clean.size, kind="pink", seed=6)
    estimates = [metrics.snr_estimate(synth.mix_at_snr(clean, noise, snr), SR)
                 for snr in (0, 10, 20, 30)]
    assert estimates == sorted(estimates)  # monotonic
    assert all(abs(e - t) < 6 for e, t in zip(estimates, (0, 10, 20, 30), strict=True))
    assert metrics.snr_estimate(clean, SR) == metrics.MAX_SNR_DB  # pauses are silent


def test_si_sdr_is_scale_invariant_and_stoi_ranks_noise() -> None:
    clean = synth.speech_like(4.0, SR, seed=7)
    noise = synth.noise(clean.size, seed=8)
    assert metrics.si_sdr(0.3 * clean, clean) > 80
    stereo = np.stack([synth.mix_at_snr(clean, noise, 10), synth.mix_at_snr(clean, noise, 0)])
    assert metrics.si_sdr(stereo, np.stack([clean, clean])) == pytest.approx(
        (metrics.si_sdr(stereo[0], clean) + metrics.si_sdr(stereo[1], clean)) / 2)
    good = metrics.stoi(synth.mix_at_snr(clean, noise, 20), clean, SR)
    bad = metrics.stoi(synth.mix_at_snr(clean, noise, -5), clean, SR)
    assert metrics.stoi(clean, clean, SR) == pytest.approx(1.0, abs=1e-6)
    assert 0.75 < good < 1.0 and bad < good - 0.2
    with pytest.raises(ParameterError, match="channels"):
        metrics.si_sdr(stereo, clean)


def test_speech_like_is_seeded_voiced_and_has_pauses() -> None:
    a = synth.speech_like(6.0, SR, seed=1)
    assert a.dtype == np.float32 and a.shape == (6 * SR,)
    assert np.array_equal(a, synth.speech_like(6.0, SR, seed=1))
    assert not np.array_equal(a, synth.speech_like(6.0, SR, seed=2))
    assert float(np.max(np.abs(a))) == pytest.approx(0.5, abs=1e-6)
    frames = a[: a.size // 320 * 320].reshape(-1, 320)
    silent = np.mean(np.max(np.abs(frames), axis=1) < 1e-4)
    assert 0.15 < silent < 0.7  # pauses between words
    spectrum = np.abs(np.fft.rfft(a)) ** 2
    freqs = np.fft.rfftfreq(a.size, 1 / SR)
    assert spectrum[(freqs > 80) & (freqs < 1000)].sum() > spectrum[freqs > 4000].sum() * 5


def test_clicks_and_hum_are_where_they_should_be() -> None:
    x = synth.clicks(2.0, SR, period_s=0.5, offset_s=0.1)
    onsets = np.flatnonzero((np.abs(x) > 0.5) & (np.abs(np.roll(x, 1)) <= 0.5))
    assert list(onsets) == [round(t * SR) for t in (0.1, 0.6, 1.1, 1.6)]
    h = synth.hum(2.0, SR, base_hz=60.0, harmonics=3, amplitude=0.1)
    spectrum = np.abs(np.fft.rfft(h))
    top = sorted(np.argsort(spectrum)[-3:] / 2.0)
    assert top == [60.0, 120.0, 180.0]
    with pytest.raises(ParameterError, match="white, pink or brown"):
        synth.noise(10, kind="blue")
