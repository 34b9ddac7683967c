"""Envelope, spectrogram, levels and plots: right shapes, right values, fast paths agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from vocalink_lab.audio import analysis, save, synth
from vocalink_lab.errors import ParameterError

SR = 16000


def test_envelope_holds_min_and_max_of_each_column() -> None:
    x = np.zeros((2, 1000), np.float32)
    x[0, 123], x[0, 456], x[1, 999] = 0.9, -0.7, 0.5
    env = analysis.envelope(x, SR, width=10)
    assert env.lo.shape == env.hi.shape == (2, 10)
    assert env.hi[0, 1] == pytest.approx(0.9) and env.lo[0, 4] == pytest.approx(-0.7)
    assert env.hi[1, 9] == pytest.approx(0.5) and env.hi[0, 0] == 0.0
    assert env.times[1] == pytest.approx(100 / SR)
    short = analysis.envelope(np.arange(5, dtype=np.float32) / 10, SR, width=100)
    assert short.width == 5  # never more columns than frames


def test_envelope_of_a_file_equals_the_envelope_of_its_samples(tmp_path: Path) -> None:
    x = np.stack([synth.speech_like(7.3, SR, seed=1), synth.noise(int(7.3 * SR), seed=2)])
    path = tmp_path / "x.wav"
    save(path, x, SR, subtype="FLOAT")
    seen: list[float] = []
    from_file = analysis.envelope_file(path, width=777, progress=seen.append)
    in_memory = analysis.envelope(x, SR, width=777)
    assert np.array_equal(from_file.lo, in_memory.lo)
    assert np.array_equal(from_file.hi, in_memory.hi)
    assert seen[-1] == 1.0


def test_spectrogram_puts_a_tone_in_its_bin_at_its_level() -> None:
    x = synth.tone(2.0, SR, 1000.0, amplitude=0.5)
    spec = analysis.spectrogram(np.stack([x, 0.1 * x]), SR, n_fft=1024)
    assert spec.db.shape[:2] == (2, 513) and spec.freqs.shape == (513,)
    middle = spec.db[:, :, spec.db.shape[2] // 2]
    assert spec.freqs[int(np.argmax(middle[0]))] == pytest.approx(1000, abs=16)
    assert float(middle[0].max()) == pytest.approx(-6.0, abs=1.5)  # 0.5 is -6 dBFS
    assert float(middle[0].max() - middle[1].max()) == pytest.approx(20.0, abs=0.1)
    long = analysis.spectrogram(np.zeros(SR * 600, np.float32), SR, max_frames=2000)
    assert long.db.shape[2] <= 2002  # an hour-long file stays plottable
    with pytest.raises(ParameterError, match="power of two"):
        analysis.spectrogram(x, SR, n_fft=1000)


def test_levels_report_loudness_snr_and_clipping() -> None:
    clean = synth.speech_like(10.0, SR, seed=3)
    noisy = synth.mix_at_snr(clean, synth.noise(clean.size, seed=4), 10)
    quiet, loud = analysis.levels(0.1 * noisy, SR), analysis.levels(noisy, SR)
    assert loud.lufs - quiet.lufs == pytest.approx(20.0, abs=0.1)
    assert loud.rms_dbfs - quiet.rms_dbfs == pytest.approx(20.0, abs=0.01)
    assert abs(loud.snr_db - quiet.snr_db) < 0.01 and 5 < loud.snr_db < 16
    assert loud.clipped == 0.0
    clipped = analysis.levels(np.clip(4 * noisy, -1, 1), SR)
    assert clipped.clipped > 0.001 and clipped.peak_dbfs == pytest.approx(0.0, abs=0.01)
    assert analysis.levels(clean[:1000], SR).to_dict()["lufs"] is None  # too short: nan


def test_plots_draw_one_row_per_channel() -> None:
    x = np.stack([synth.speech_like(3.0, SR, seed=1), synth.tone(3.0, SR, 300.0)])
    wave = analysis.plot_waveform(x, SR, labels=["phone", "laptop"], title="take 1")
    assert isinstance(wave, Figure) and len(wave.axes) == 2
    assert wave.axes[0].get_title() == "take 1" and wave.axes[1].get_ylabel() == "laptop"
    spec = analysis.plot_spectrogram(x, SR, max_hz=4000)
    assert len(spec.axes) == 3  # two channels and a colour bar
    assert spec.axes[0].get_ylim() == (0.0, 4000.0)
    from_envelope = analysis.plot_waveform(analysis.envelope(x, SR, width=300))
    assert len(from_envelope.axes) == 2
    with pytest.raises(ParameterError, match="sample rate"):
        analysis.plot_waveform(x)
