"""Probing audio files: facts come from the file, and what does not decode is refused."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf

from tests.support.audio import FORMATS, encode
from vocalink_lab.audio import AudioInfo, AudioReader, AudioWriter, load, probe, resample, save
from vocalink_lab.errors import AudioFormatError, ParameterError

EXPECTED_RATE = {"opus": 48000, "mp3": 44100, "m4a": 44100, "webm": 48000, "webm-live": 48000,
                 "3gp": 8000, "3gp-aac": 16000}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("seconds", [0.5, 2.0])
def test_probe_every_format(tmp_path: Path, fmt: str, seconds: float) -> None:
    path = tmp_path / "x.bin"  # no extension to lean on
    path.write_bytes(encode(fmt, seconds=seconds))
    info = probe(path)
    assert isinstance(info, AudioInfo)
    assert info.format == FORMATS[fmt] and info.channels == 1
    assert info.sample_rate == EXPECTED_RATE.get(fmt, 48000)
    assert abs(info.duration_s - seconds) < 0.03, info
    assert info.frames == round(info.duration_s * info.sample_rate)


def test_webm_without_declared_duration_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "live.webm"
    path.write_bytes(encode("webm-live", seconds=2.0))
    with av.open(str(path)) as container:
        assert container.duration is None and container.streams.audio[0].duration is None
    assert probe(path).frames == 96000


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_channels_and_rate_of_wav_and_flac(tmp_path: Path, channels: int) -> None:
    for fmt in ("wav", "flac"):
        path = tmp_path / f"x.{fmt}"
        path.write_bytes(encode(fmt, seconds=1.0, sr=22050, channels=channels))
        info = probe(path)
        assert (info.sample_rate, info.channels, info.frames) == (22050, channels, 22050)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not audio"),
        (os.urandom(20_000), "not audio"),
        (b"hello, this is a text file\n" * 100, "no audio stream"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not audio"),
        (b"%PDF-1.4\n" + os.urandom(5000), "not audio"),
    ],
    ids=["empty", "random", "text", "wav-header-only", "pdf"],
)
def test_what_is_not_audio_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFormatError) as info:
        probe(path)
    assert info.value.status == 415
    assert message in str(info.value) or "audio" in str(info.value)


def test_wav_with_no_samples_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(encode("wav", seconds=0.0))
    with pytest.raises(AudioFormatError, match="no audio samples"):
        probe(path)


def test_video_container_without_audio_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "video.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height = 32, 32
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(AudioFormatError, match="no audio stream"):
        probe(path)


# -- decoding samples, writing, resampling ---------------------------------------------------

def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "opus", "mp3", "m4a", "webm", "webm-live",
                                 "3gp-aac"])
def test_load_decodes_every_format_to_channels_by_frames(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(encode(fmt, seconds=1.0, freq=1000.0))
    audio, rate = load(path)
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[0] == 1
    assert rate == EXPECTED_RATE.get(fmt, 48000)
    # Lossy codecs add priming and padding; the length is within one codec frame or two.
    assert abs(audio.shape[1] / rate - 1.0) < 0.08, audio.shape
    assert peak_hz(audio[0], rate) == pytest.approx(1000.0, abs=15)
    assert 0.2 < float(np.max(np.abs(audio))) < 0.45


def test_streaming_blocks_and_random_reads_agree_with_load(tmp_path: Path) -> None:
    for fmt in ("flac", "webm"):  # soundfile's path and PyAV's
        path = tmp_path / f"x.{fmt}"
        path.write_bytes(encode(fmt, seconds=2.0, channels=1))
        whole, _ = load(path)
        with AudioReader(path) as reader:
            blocks = list(reader.blocks(7777))
            assert all(b.shape[1] == 7777 for b in blocks[:-1])
            assert np.array_equal(np.concatenate(blocks, axis=1), whole)
            assert np.array_equal(reader.read(50_000, 1000), whole[:, 50_000:51_000])
            assert np.array_equal(reader.read(10, 5), whole[:, 10:15])  # backwards
        part, _ = load(path, start_s=0.5, duration_s=0.25)
        assert np.array_equal(part, whole[:, 24_000:36_000])


@pytest.mark.parametrize(("ext", "subtype", "tolerance"),
                         [("wav", None, 2e-7), ("wav", "FLOAT", 0.0), ("wav", "PCM_16", 4e-5),
                          ("flac", None, 2e-7), ("flac", "PCM_16", 4e-5)])
def test_save_then_load_round_trips(tmp_path: Path, ext: str, subtype: str | None,
                                    tolerance: float) -> None:
    x = (0.3 * np.random.default_rng(1).standard_normal((3, 12_345))).clip(-0.99, 0.99)
    x = x.astype(np.float32)
    path = tmp_path / f"y.{ext}"
    save(path, x, 32000, subtype=subtype)
    y, rate = load(path)
    assert rate == 32000 and y.shape == (3, 12_345)
    assert float(np.max(np.abs(y - x))) <= tolerance + 1e-9


def test_integer_files_clip_instead_of_wrapping(tmp_path: Path) -> None:
    path = tmp_path / "loud.wav"
    save(path, np.array([0.5, 1.7, -3.0, 0.25], np.float32), 8000, subtype="PCM_16")
    y, _ = load(path)
    assert y[0, 1] > 0.99 and y[0, 2] < -0.99 and abs(y[0, 0] - 0.5) < 1e-4


def test_writer_streams_blocks(tmp_path: Path) -> None:
    path = tmp_path / "stream.flac"
    with AudioWriter(path, 16000, 2) as writer:
        for i in range(5):
            writer.write(np.full((2, 1000), i / 10, np.float32))
        with pytest.raises(ParameterError, match="block has 1 channels, the file 2"):
            writer.write(np.zeros(10, np.float32))
    y, _ = load(path)
    assert y.shape == (2, 5000) and abs(float(y[1, 4500]) - 0.4) < 1e-5


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: save(p / "x.mp3", np.zeros(10), 8000), "cannot write '.mp3'"),
    (lambda p: save(p / "x.flac", np.zeros(10), 8000, subtype="FLOAT"), "PCM_16, PCM_24"),
    (lambda p: save(p / "x.wav", np.zeros((48000, 2)), 8000), "pass audio.T"),
    (lambda p: save(p / "x.wav", np.zeros((2, 2, 2)), 8000), "(frames,) or (channels, frames)"),
    (lambda p: save(p / "x.wav", np.array([0.0, np.nan]), 8000), "NaN"),
    (lambda p: resample(np.zeros(10), orig_sr=0, target_sr=8000), "positive"),
    (lambda p: load(p / "missing.wav", start_s=-1), "cannot read"),
])
def test_bad_io_parameters_say_what_is_wrong(tmp_path: Path, call: Any, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        call(tmp_path)
    assert message in str(info.value) and info.value.status == 422


def test_resample_keeps_the_pitch_and_takes_fractional_ratios() -> None:
    rate = 48000
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    y = resample(x, orig_sr=rate, target_sr=16000)
    assert y.shape == (16000,) and peak_hz(y, 16000) == pytest.approx(440, abs=2)
    stereo = resample(np.stack([x, -x]), orig_sr=rate, target_sr=44100)
    assert stereo.shape == (2, 44100) and np.allclose(stereo[0], -stereo[1])
    # A clock running 200 ppm fast: 48000 → 48009.6 frames per second.
    drifted = resample(x, orig_sr=rate, target_sr=rate * (1 + 200e-6))
    assert abs(drifted.size - 48009.6) <= 1
    with pytest.raises(TypeError):  # the rates are keywords: they cannot be swapped unseen
        resample(x, rate, 16000)  # type: ignore[call-arg]


@pytest.mark.parametrize(("fmt", "sr", "channels", "problem"), [
    ("flac", 48000, 2, None),
    ("flac", 65535, 1, None),
    ("flac", 192000, 8, None),
    ("flac", 655350, 1, None),
    ("flac", 192001, 1, "FLAC cannot hold 192001 Hz"),
    ("flac", 655360, 1, "FLAC cannot hold 655360 Hz"),
    ("flac", 48000, 9, "FLAC holds at most 8 channels, not 9"),
    ("wav", 192001, 9, None),
    ("wav", 48000, 1025, "at most 1024 channels"),
    ("wav", 0, 1, "cannot write 1 channels at 0 Hz"),
])
def test_write_problems_are_the_ones_libsndfile_has(tmp_path: Path, fmt: str, sr: int,
                                                    channels: int, problem: str | None) -> None:
    from vocalink_lab.audio.io import write_problems

    found = write_problems(fmt, sr, channels)
    assert (found == []) if problem is None else any(problem in p for p in found), found
    target = tmp_path / f"x.{fmt}"
    if problem is None:  # what passes the check really writes
        save(target, np.zeros((channels, 64), np.float32), sr)
        assert sf.info(target).samplerate == sr and sf.info(target).channels == channels
    else:  # and what it refuses is refused the same way when writing, before any file
        with pytest.raises(ParameterError, match=re.escape(found[0])):
            AudioWriter(target, sr, channels)
        assert not target.exists()
