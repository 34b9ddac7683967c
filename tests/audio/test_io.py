"""Probing audio files: facts come from the file, and what does not decode is refused."""

from __future__ import annotations

import os
from pathlib import Path

import av
import pytest

from tests.support.audio import FORMATS, encode
from vocalink_lab.audio import AudioInfo, probe
from vocalink_lab.errors import AudioFormatError

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
    import numpy as np

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
