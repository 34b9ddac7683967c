"""Enhance: noise reduction, hum, rumble and loudness on synthetic signals with a known truth.

Every signal comes from `vocalink_lab.audio.synth` (speech-like voices with formants and
pauses, tones, hum, white/pink noise mixed at a known SNR); noisereduce and pyrnnoise run
for real. 16 kHz and a few seconds, except the hour-long file of the memory test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vocalink_lab.audio import AudioReader, AudioWriter, load, metrics, save, synth
from vocalink_lab.audio.enhance import (
    PRESETS,
    EnhanceParams,
    EnhanceReport,
    enhance,
    enhance_file,
    resolve_params,
)
from vocalink_lab.errors import ParameterError

SR = 16000
REPO = Path(__file__).resolve().parents[2]


def noisy_speech(snr_db: float, *, kind: str = "white", seed: int = 0, seconds: float = 4.0,
                 sr: int = SR) -> tuple[np.ndarray, np.ndarray]:
    clean = synth.speech_like(seconds, sr, seed=seed)
    noise = synth.noise(clean.size, kind=kind, seed=seed + 100)
    return clean, synth.mix_at_snr(clean, noise, snr_db)


def harmonic_amplitudes(y: np.ndarray, base_hz: float, sr: int, harmonics: int = 5) -> np.ndarray:
    """Least-squares amplitude of the sinusoids at ``k * base_hz`` in ``y``."""
    t = np.arange(y.size) / sr
    out = []
    for k in range(1, harmonics + 1):
        basis = np.stack([np.sin(2 * np.pi * k * base_hz * t), np.cos(2 * np.pi * k * base_hz * t)],
                         axis=1)
        coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
        out.append(float(np.hypot(*coef)))
    return np.array(out)


def band_power(y: np.ndarray, sr: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / sr)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


# -- noise reduction: what it does to SI-SDR ---------------------------------------------------


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [0, 5, 10])
def test_enhance_raises_si_sdr_of_noisy_speech(kind: str, snr_db: float) -> None:
    clean, noisy = noisy_speech(snr_db, kind=kind, seed=1)
    out, report = enhance(noisy, SR)
    gain = metrics.si_sdr(out, clean) - metrics.si_sdr(noisy, clean)
    assert gain > 3.0, (gain, report.decisions)
    assert report.channel_reports[0].params.reduce
    assert report.snr_out_db[0] > report.snr_in_db[0] + 10
    assert metrics.stoi(out, clean, SR) >= metrics.stoi(noisy, clean, SR) - 0.01


@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [20, 25, 30, None])
def test_auto_mode_never_lowers_si_sdr_of_clean_or_cleanish_speech(
        snr_db: float | None, kind: str, seed: int) -> None:
    if snr_db is None:
        clean = noisy = synth.speech_like(4.0, SR, seed=seed)
    else:
        clean, noisy = noisy_speech(snr_db, kind=kind, seed=seed)
    out, report = enhance(noisy, SR)
    before, after = metrics.si_sdr(noisy, clean), metrics.si_sdr(out, clean)
    assert after >= before, (before, after, report.decisions)
    if snr_db is None:
        # Clean: left exactly as it was, and the report says why.
        assert np.array_equal(out, noisy)
        assert "left as is" in report.channel_reports[0].decision
        assert not report.channel_reports[0].params.reduce


def test_auto_mode_beats_noisereduce_defaults_where_they_hurt() -> None:
    """At 20 dB SNR noisereduce's defaults lower SI-SDR; the auto mode raises it."""
    import noisereduce

    clean, noisy = noisy_speech(20, kind="pink", seed=4)
    defaults = noisereduce.reduce_noise(y=noisy, sr=SR)
    out, _ = enhance(noisy, SR)
    base = metrics.si_sdr(noisy, clean)
    assert metrics.si_sdr(defaults, clean) < base
    assert metrics.si_sdr(out, clean) > base + 3


def test_the_report_measures_as_metrics_does() -> None:
    # One SNR estimate and one loudness meter: the report's figures are the metrics'.
    _, noisy = noisy_speech(10, kind="pink", seed=6)
    out, report = enhance(noisy, SR, resolve_params("auto", loudness_lufs=-20.0))
    assert report.snr_in_db[0] == metrics.snr_estimate(noisy, SR)
    assert report.snr_out_db[0] == pytest.approx(metrics.snr_estimate(out, SR), abs=0.05)
    assert report.loudness_in_lufs == metrics.loudness_lufs(noisy, SR)
    assert report.loudness_out_lufs == pytest.approx(metrics.loudness_lufs(out, SR), abs=0.01)


def test_auto_mode_reports_its_decisions() -> None:
    # The gate's own decisions (backend="auto" may choose a network: test_enhance_auto.py).
    _, noisy = noisy_speech(5, seed=5)
    out, report = enhance(noisy, SR, resolve_params("auto", backend="noisereduce"))
    channel = report.channel_reports[0]
    assert isinstance(report, EnhanceReport)
    assert 3 <= channel.snr_in_db <= 9  # a blind estimate of 5 dB
    assert channel.params.stationary and channel.params.prop_decrease == 0.9
    assert not channel.params.auto
    assert len(channel.noise_clips_s) >= 3
    for start, end in channel.noise_clips_s:  # each a pause of the voice: noise only
        assert 0 <= start < end <= 4.0
    assert "estimated SNR" in channel.decision and "noise profile" in channel.decision
    document = json.loads(json.dumps(report.to_dict()))
    assert document["snr_in_db"] == [channel.snr_in_db]
    assert document["channel_reports"][0]["params"]["stationary"] is True
    assert document["frames"] == noisy.size and document["duration_s"] == 4.0


def test_noise_clips_are_the_pauses() -> None:
    clean, noisy = noisy_speech(0, seed=6)
    _, report = enhance(noisy, SR, EnhanceParams(backend="noisereduce"))  # the gate's profile
    clips = report.channel_reports[0].noise_clips_s
    assert len(clips) >= 3
    for start, end in clips:  # the voice is (all but) silent there: 13 dB under the noise
        part = slice(round(start * SR), round(end * SR))
        voice = np.mean(np.square(clean[part]))
        assert voice < 0.05 * np.mean(np.square(noisy[part] - clean[part])), (start, end)


def test_a_given_noise_clip_is_the_noise_profile() -> None:
    clean = synth.speech_like(4.0, SR, seed=7)
    padded = np.concatenate([np.zeros(SR, np.float32), clean])  # 1 s of noise only first
    noisy = synth.mix_at_snr(padded, synth.noise(padded.size, kind="pink", seed=8), 5)
    params = EnhanceParams(auto=False, stationary=True, noise_clip=(0.0, 0.9), hum=None)
    out, report = enhance(noisy, SR, params)
    assert report.channel_reports[0].noise_clips_s == ((0.0, 0.9),)
    assert metrics.si_sdr(out, padded) > metrics.si_sdr(noisy, padded) + 5


# -- shapes and channels -------------------------------------------------------------------------


def test_output_has_the_input_shape_and_float32() -> None:
    _, noisy = noisy_speech(10, seconds=2.0)
    for audio in (noisy, noisy[np.newaxis, :], noisy.astype(np.float64)):
        out, report = enhance(audio, SR)
        assert out.shape == audio.shape and out.dtype == np.float32
        assert report.channels == 1 and report.frames == noisy.size


def test_stereo_with_different_noise_per_channel() -> None:
    clean_a, noisy_a = noisy_speech(3, kind="white", seed=10)
    clean_b, noisy_b = noisy_speech(15, kind="pink", seed=11)
    stereo = np.stack([noisy_a, noisy_b])
    gate = EnhanceParams(backend="noisereduce")  # the gate's settings differ per channel
    out, report = enhance(stereo, SR, gate)
    assert out.shape == (2, noisy_a.size) and out.dtype == np.float32
    # Each channel gets its own estimate, profile and strength...
    left, right = report.channel_reports
    assert left.snr_in_db < right.snr_in_db - 5
    assert left.params.n_std_thresh_stationary > right.params.n_std_thresh_stationary
    assert left.noise_clips_s != right.noise_clips_s
    # ...improves...
    assert metrics.si_sdr(out[0], clean_a) > metrics.si_sdr(noisy_a, clean_a) + 3
    assert metrics.si_sdr(out[1], clean_b) > metrics.si_sdr(noisy_b, clean_b) + 2
    # ...stays its own (no channel leaks into the other)...
    assert metrics.si_sdr(out[0], clean_a) > 5 > metrics.si_sdr(out[0], clean_b)
    # ...and is exactly what that channel alone would give.
    alone, _ = enhance(noisy_b, SR, gate)
    assert np.allclose(out[1], alone, atol=1e-6)


@pytest.mark.parametrize(("shape", "message"), [
    ((SR, 2), "pass audio.T"),
    ((2, 3, 100), "must be shaped"),
    ((100, 50), "pass audio.T"),
])
def test_audio_in_the_wrong_orientation_is_refused(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        enhance(np.zeros(shape, np.float32), SR)


def test_nan_samples_and_bad_rates_are_refused() -> None:
    x = np.zeros(SR, np.float32)
    x[100] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        enhance(x, SR)
    with pytest.raises(ParameterError, match="sr must be"):
        enhance(np.zeros(SR, np.float32), 0)


# -- chunks: bounded memory without seams ----------------------------------------------------------


@pytest.mark.parametrize("stationary", [True, False])
def test_chunked_processing_matches_whole_file_and_has_no_seams(stationary: bool) -> None:
    clean, noisy = noisy_speech(5, kind="pink", seed=12, seconds=14.0)
    params = EnhanceParams(auto=False, hum=None, stationary=stationary,
                           noise_clip=(0.0, 0.1) if stationary else None)
    whole, _ = enhance(noisy, SR, params.replace(chunk_s=60.0))
    chunked, _ = enhance(noisy, SR, params.replace(chunk_s=3.0))
    inner = slice(SR, -SR)
    error = chunked[inner] - whole[inner]
    sdr = 10 * np.log10(np.sum(whole[inner] ** 2) / max(np.sum(error ** 2), 1e-30))
    # The stationary gate is exact on whole hops; the non-stationary one follows a running
    # average over 2 s, which sees a chunk's context and not the whole file.
    assert sdr > (100 if stationary else 20), sdr
    # No step at any chunk boundary: the sample-to-sample change there is the whole file's.
    hop = 256
    chunk = -(-3 * SR // hop) * hop
    for b in range(chunk, noisy.size - SR, chunk):
        for i in range(b - 800, b + 800, 100):  # around the cross-fade too
            step = (chunked[i] - chunked[i - 1]) - (whole[i] - whole[i - 1])
            assert abs(step) < 2e-3, (b, i, step)


def test_non_auto_mode_is_noisereduce() -> None:
    """Without the auto mode, the gate is noisereduce's own, with its parameters."""
    import noisereduce

    _, noisy = noisy_speech(5, kind="white", seed=13, seconds=6.0)
    params = EnhanceParams(auto=False, hum=None, prop_decrease=0.8, n_fft=512,
                           thresh_n_mult_nonstationary=1.5, time_constant_s=1.0)
    ours, report = enhance(noisy, SR, params)
    theirs = noisereduce.reduce_noise(y=noisy, sr=SR, prop_decrease=0.8, n_fft=512,
                                      thresh_n_mult_nonstationary=1.5, time_constant_s=1.0)
    inner = slice(SR // 2, -SR // 2)
    error = ours[inner] - theirs[inner]
    assert 10 * np.log10(np.sum(theirs[inner] ** 2) / np.sum(error ** 2)) > 20
    # The effective settings: backend "auto" without the auto mode is the gate.
    assert report.channel_reports[0].params == params.replace(auto=False, backend="noisereduce")


# -- files -----------------------------------------------------------------------------------------


def test_enhance_file_streams_to_the_same_result(tmp_path: Path) -> None:
    clean, noisy = noisy_speech(5, kind="pink", seed=14, seconds=6.0)
    stereo = np.stack([noisy, noisy[::-1].copy()])
    save(tmp_path / "in.wav", stereo, SR, subtype="FLOAT")
    params = resolve_params("auto", chunk_s=2.0, loudness_lufs=-20.0)
    fractions: list[float] = []
    report = enhance_file(tmp_path / "in.wav", tmp_path / "out.wav", params,
                          progress=fractions.append, subtype="FLOAT")
    from_file, rate = load(tmp_path / "out.wav")
    in_memory, memory_report = enhance(stereo, SR, params)
    assert rate == SR and from_file.shape == stereo.shape
    assert np.allclose(from_file, in_memory, atol=1e-6)
    assert report.gain_db == pytest.approx(memory_report.gain_db, abs=1e-6)
    assert report.snr_in_db == memory_report.snr_in_db
    assert abs(metrics.loudness_lufs(from_file, SR) + 20.0) < 0.5
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and len(fractions) >= 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.wav"]  # no temp left


def test_enhance_file_writes_flac(tmp_path: Path) -> None:
    clean, noisy = noisy_speech(5, seed=15, seconds=3.0)
    save(tmp_path / "in.wav", noisy, SR, subtype="PCM_16")
    report = enhance_file(tmp_path / "in.wav", tmp_path / "out.flac", "auto")
    with AudioReader(tmp_path / "out.flac") as reader:
        assert (reader.info.format, reader.channels, reader.frames) == ("flac", 1, noisy.size)
        out = reader.read()
    assert metrics.si_sdr(out, clean) > metrics.si_sdr(noisy, clean) + 3
    assert report.frames == noisy.size


HOUR_SCRIPT = textwrap.dedent("""
    import json, re, sys
    import psutil
    from vocalink_lab.audio.enhance import EnhanceParams, enhance_file
    from vocalink_lab.audio import save, synth

    def peak_rss():
        status = open("/proc/self/status").read()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024

    src, dst, warm = sys.argv[1:4]
    voice = synth.speech_like(2.0, 8000)  # noisy, so that the warm-up imports noisereduce
    save(warm, synth.mix_at_snr(voice, synth.noise(voice.size, seed=1), 10.0), 8000)
    # The gate: backend="auto" would run networks over the hour (minutes of CPU); their
    # memory is measured by benchmarks/enhance.py.
    params = EnhanceParams(chunk_s=5.0, loudness_lufs=-23.0, backend="noisereduce")
    enhance_file(warm, dst, params)
    before = psutil.Process().memory_info().rss
    with open("/proc/self/clear_refs", "w") as f:  # restart the peak RSS (VmHWM) from here
        f.write("5")
    report = enhance_file(src, dst, params)
    print(json.dumps({"growth": peak_rss() - before, "before": before,
                      "seconds": report.seconds, "frames": report.frames,
                      "lufs": report.loudness_out_lufs, "decisions": report.decisions}))
""")


@pytest.mark.slow
def test_an_hour_long_file_enhances_in_bounded_memory(tmp_path: Path) -> None:
    sr, minute = 8000, 60 * 8000
    clean = synth.speech_like(60.0, sr, seed=16)
    block = synth.mix_at_snr(clean, synth.noise(minute, kind="pink", seed=17), 10.0)
    with AudioWriter(tmp_path / "hour.wav", sr, 1, subtype="PCM_16") as writer:
        for _ in range(60):
            writer.write(block)
    frames = 60 * minute
    result = subprocess.run(
        [sys.executable, "-c", HOUR_SCRIPT, str(tmp_path / "hour.wav"),
         str(tmp_path / "out.wav"), str(tmp_path / "warm.wav")],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    float32_size = frames * 4  # 115 MB
    assert measured["frames"] == frames
    assert measured["growth"] < float32_size / 5, measured  # about 12 MB here
    assert abs(measured["lufs"] + 23.0) < 0.5
    with AudioReader(tmp_path / "out.wav") as reader:
        assert reader.frames == frames


# -- hum, rumble, loudness ------------------------------------------------------------------------


@pytest.mark.parametrize("base_hz", [50.0, 60.0])
def test_hum_is_detected_and_notched(base_hz: float) -> None:
    clean = synth.speech_like(4.0, SR, seed=18)
    hum = synth.hum(4.0, SR, base_hz=base_hz, harmonics=5, amplitude=0.05, seed=19)
    noisy = clean + hum + synth.noise(clean.size, seed=20, amplitude=0.003)
    out, report = enhance(noisy, SR, "hum")
    assert report.hum_hz == pytest.approx(base_hz, abs=0.1)
    assert report.channel_reports[0].hum_notched
    assert any(f"hum detected at {report.hum_hz:g} Hz" in d for d in report.decisions)
    settled = slice(SR, None)  # the notches ring in over the first few hundred ms
    before = harmonic_amplitudes(noisy[settled], base_hz, SR)
    after = harmonic_amplitudes(out[settled], base_hz, SR)
    assert np.all(20 * np.log10(after / before) < -25), 20 * np.log10(after / before)
    assert metrics.si_sdr(out, clean) > metrics.si_sdr(noisy, clean) + 2


@pytest.mark.parametrize("signal", ["speech", "tones 120+240 Hz", "tone 100 Hz"])
def test_no_hum_is_found_where_there_is_none(signal: str) -> None:
    if signal == "speech":
        x = synth.speech_like(4.0, SR, seed=21)
    elif signal == "tone 100 Hz":
        x = synth.tone(4.0, SR, 100.0, amplitude=0.3)
    else:  # even harmonics of 60 Hz, but no 60 Hz line: a voice, not the mains
        x = synth.tone(4.0, SR, 120.0, amplitude=0.3) + synth.tone(4.0, SR, 240.0, amplitude=0.2)
    x = x + synth.noise(x.size, seed=22, amplitude=0.003)
    out, report = enhance(x, SR, EnhanceParams(auto=False, reduce=False, hum="auto"))
    assert report.hum_hz is None and not report.channel_reports[0].hum_notched
    assert np.array_equal(out, x)


def test_highpass_removes_rumble() -> None:
    clean = synth.speech_like(4.0, SR, seed=23)
    rumble = synth.tone(4.0, SR, 12.0, amplitude=0.2) + synth.tone(4.0, SR, 25.0, amplitude=0.1)
    out, report = enhance(clean + rumble, SR,
                          EnhanceParams(auto=False, reduce=False, hum=None, highpass_hz=80.0))
    settled = slice(SR // 2, None)
    below = band_power(out[settled], SR, 5, 40) / band_power((clean + rumble)[settled], SR, 5, 40)
    kept = band_power(out[settled], SR, 300, 3400) / band_power(clean[settled], SR, 300, 3400)
    assert 10 * np.log10(below) < -30  # 4th order at 80 Hz: -40 dB at 25 Hz
    assert abs(10 * np.log10(kept)) < 0.5
    assert report.highpass_hz == 80.0


def test_auto_mode_reports_rumble_without_filtering_it() -> None:
    clean = synth.speech_like(4.0, SR, seed=24)
    x = clean + synth.tone(4.0, SR, 20.0, amplitude=0.3)
    _, report = enhance(x, SR)
    assert report.rumble_share is not None and report.rumble_share > 0.5
    assert report.highpass_hz is None
    assert any("set highpass_hz" in d for d in report.decisions)


@pytest.mark.parametrize("target", [-40.0, -30.0, -23.0])
@pytest.mark.parametrize("channels", [1, 2])
def test_loudness_normalisation_hits_the_target(target: float, channels: int) -> None:
    voices = [synth.speech_like(5.0, SR, seed=25 + c) * 0.1 for c in range(channels)]
    x = voices[0] if channels == 1 else np.stack(voices)
    params = EnhanceParams(auto=False, reduce=False, hum=None, loudness_lufs=target)
    out, report = enhance(x, SR, params)
    assert abs(metrics.loudness_lufs(out, SR) - target) < 0.5
    assert report.loudness_out_lufs == pytest.approx(metrics.loudness_lufs(out, SR), abs=0.05)
    assert report.loudness_in_lufs == pytest.approx(metrics.loudness_lufs(x, SR), abs=0.05)
    assert not report.gain_limited and metrics.peak_dbfs(out) <= -1.0


def test_loudness_normalisation_never_clips() -> None:
    x = synth.speech_like(5.0, SR, seed=27) * 0.5  # peaky: -16 LUFS needs a peak over 0 dBFS
    out, report = enhance(x, SR, EnhanceParams(auto=False, reduce=False, hum=None,
                                               loudness_lufs=-6.0))
    assert report.gain_limited
    assert metrics.peak_dbfs(out) <= -1.0 and metrics.peak_dbfs(out) > -1.01
    assert metrics.loudness_lufs(out, SR) < -6.5
    assert any("would put the peak above" in d for d in report.decisions)


# -- RNNoise ---------------------------------------------------------------------------------------


def test_rnnoise_output_lines_up_with_the_input() -> None:
    pytest.importorskip("pyrnnoise")
    from scipy import signal as sps

    sr = 48000
    clean, noisy = noisy_speech(5, seed=28, seconds=3.0, sr=sr)
    params = EnhanceParams(auto=False, hum=None, backend="rnnoise")
    out, report = enhance(noisy, sr, params)
    assert out.shape == noisy.shape and out.dtype == np.float32
    correlation = sps.correlate(out, clean, mode="full", method="fft")
    lag = int(np.argmax(correlation)) - (clean.size - 1)
    assert abs(lag) <= 5, lag  # RNNoise's own 960-sample delay is compensated
    assert metrics.si_sdr(out, clean) > metrics.si_sdr(noisy, clean) + 4
    assert report.channel_reports[0].decision == "RNNoise, as requested"


def test_rnnoise_resamples_other_rates_and_keeps_the_length() -> None:
    pytest.importorskip("pyrnnoise")
    clean, noisy = noisy_speech(5, seed=29, seconds=2.0)
    _, other = noisy_speech(10, kind="pink", seed=30, seconds=2.0)
    stereo = np.stack([noisy, other])
    params = EnhanceParams(auto=False, hum=None, backend="rnnoise")
    out, _ = enhance(stereo, SR, params)
    assert out.shape == stereo.shape and out.dtype == np.float32
    alone, _ = enhance(noisy, SR, params)  # each channel has its own RNNoise state
    assert np.allclose(out[0], alone, atol=1e-5)
    assert metrics.si_sdr(out[0], clean) > 5 > metrics.si_sdr(out[1], clean)


def test_rnnoise_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyrnnoise.rnnoise", None)  # as if not installed
    with pytest.raises(ParameterError, match=r"pip install 'vocalink-lab\[rnnoise\]'"):
        enhance(np.zeros(SR, np.float32), SR, EnhanceParams(backend="rnnoise"))


# -- parameters ---------------------------------------------------------------------------------


def test_every_preset_is_valid_and_named() -> None:
    assert {"auto", "speech", "gentle", "strong", "hum"} <= set(PRESETS)
    for name, params in PRESETS.items():
        assert EnhanceParams.from_dict(params.to_dict()) == params, name
        assert resolve_params(name) is params
    assert resolve_params() == EnhanceParams()
    assert resolve_params("strong", prop_decrease=0.7).prop_decrease == 0.7
    assert PRESETS["auto"].auto and not PRESETS["strong"].auto


def test_params_round_trip_and_replace() -> None:
    params = EnhanceParams(noise_clip=(0.5, 1.5), hum=60, loudness_lufs=-23.0)
    document = json.loads(json.dumps(params.to_dict()))
    assert document["noise_clip"] == [0.5, 1.5]
    assert EnhanceParams.from_dict(document) == params
    assert params.replace(hum="50").hum == 50
    assert params.replace(hum=None).hum is None
    assert EnhanceParams.from_dict({"n_fft": 512.0}).n_fft == 512


@pytest.mark.parametrize(("values", "context", "fields"), [
    ({"prop_decrease": 1.5}, pytest.raises(ParameterError), ["prop_decrease"]),
    ({"prop_decreas": 0.5}, pytest.raises(ParameterError), ["did you mean 'prop_decrease'"]),
    ({"hum": 55}, pytest.raises(ParameterError), ["hum must be"]),
    ({"backend": "deepfilter"}, pytest.raises(ParameterError), ["backend must be"]),
    ({"n_fft": "big"}, pytest.raises(ParameterError), ["n_fft must be a whole number"]),
    ({"n_fft": 1000.5}, pytest.raises(ParameterError), ["n_fft"]),
    ({"noise_clip": [2.0, 1.0]}, pytest.raises(ParameterError), ["noise_clip"]),
    ({"noise_clip": [1.0]}, pytest.raises(ParameterError), ["noise_clip"]),
    ({"stationary": "yes"}, pytest.raises(ParameterError), ["stationary must be true or false"]),
    ({"loudness_lufs": 3.0}, pytest.raises(ParameterError), ["loudness_lufs"]),
    ({"chunk_s": 0.1}, pytest.raises(ParameterError), ["chunk_s"]),
    ({"time_constant_s": float("nan")}, pytest.raises(ParameterError), ["time_constant_s"]),
    ({"win_length": 2048}, pytest.raises(ParameterError), ["win_length must be at most"]),
    ({"prop_decrease": True}, pytest.raises(ParameterError), ["prop_decrease"]),
    ({"prop_decrease": 0.0, "hum": "60", "noise_clip": [0, 1]}, nullcontext(), []),
    ({"freq_mask_smooth_hz": None, "highpass_hz": 40}, nullcontext(), []),
])
def test_bad_parameters_are_refused(values: dict[str, Any], context: AbstractContextManager[Any],
                                    fields: list[str]) -> None:
    with context as info:
        EnhanceParams.from_dict(values)
    if fields:
        assert len(info.value.errors) == 1
        assert all(f in info.value.errors[0] for f in fields), info.value.errors
        assert info.value.status == 422


def test_every_bad_field_is_listed_in_one_error() -> None:
    with pytest.raises(ParameterError) as info:
        EnhanceParams.from_dict({"prop_decrease": -1, "n_fft": 0, "hum": 55,
                                 "backend": "x", "colour": "blue"})
    errors = info.value.errors
    assert len(errors) == 5
    for name in ("prop_decrease", "n_fft", "hum", "backend", "colour"):
        assert sum(name in e for e in errors) >= 1, name
    assert "5 invalid enhance parameters" in str(info.value)
    with pytest.raises(ParameterError, match="prop_decrease"):
        EnhanceParams(prop_decrease=2.0)  # the constructor checks too
    with pytest.raises(ParameterError, match="unknown parameter 'colour'"):
        PRESETS["auto"].replace(colour="blue")


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ParameterError) as info:
        resolve_params("loud")
    assert all(name in str(info.value) for name in PRESETS)


@pytest.mark.parametrize(("params", "message"), [
    (EnhanceParams(auto=False, hum=None, freq_mask_smooth_hz=10.0),
     "freq_mask_smooth_hz must be at least 31.25 Hz"),
    (EnhanceParams(auto=False, hum=None, time_mask_smooth_ms=5.0),
     "time_mask_smooth_ms must be at least 16 ms"),
    (EnhanceParams(highpass_hz=9000.0), "highpass_hz must be below 7200 Hz"),
    (EnhanceParams(noise_clip=(5.0, 6.0)), "noise_clip .* is outside the audio"),
])
def test_parameters_that_do_not_fit_the_audio_are_refused(params: EnhanceParams,
                                                          message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        enhance(np.zeros(2 * SR, np.float32), SR, params)


def test_progress_runs_from_zero_to_one() -> None:
    _, noisy = noisy_speech(5, seed=30, seconds=10.0)
    fractions: list[float] = []
    enhance(noisy, SR, resolve_params(chunk_s=2.0), progress=fractions.append)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and len(fractions) >= 3


def test_short_and_silent_audio_pass_through() -> None:
    silence = np.zeros((2, SR), np.float32)
    out, report = enhance(silence, SR, resolve_params(loudness_lufs=-23.0))
    assert np.array_equal(out, silence)
    assert any("silent" in d for d in report.decisions)
    blip = synth.tone(0.02, SR, 440.0)  # 320 samples: less than one STFT window
    out, report = enhance(blip, SR, EnhanceParams(auto=False, hum=None))
    assert np.array_equal(out, blip)
    assert "fewer than one STFT window" in report.channel_reports[0].decision


@pytest.fixture(autouse=True)
def _no_stray_files(tmp_path: Path) -> Iterator[None]:
    yield
    assert not list(tmp_path.glob("*.pre.wav"))
