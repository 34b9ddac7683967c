"""Synthetic audio in every accepted format, made by the tests (no committed blobs)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import soundfile as sf

#: format name → (PyAV container, codec, sample rate) for the formats soundfile cannot write.
_AV = {
    "opus": ("ogg", "libopus", 48000),
    "mp3": ("mp3", "libmp3lame", 44100),
    "m4a": ("ipod", "aac", 44100),
    "webm": ("webm", "libopus", 48000),
    "webm-live": ("webm", "libopus", 48000),  # like MediaRecorder: no duration in the header
    "3gp": ("3gp", "libopencore_amrnb", 8000),
    "3gp-aac": ("3gp", "aac", 16000),
}
_SF = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}
#: Every format a test can make, and the format the server must report for it.
FORMATS = {"wav": "wav", "flac": "flac", "ogg": "ogg", "opus": "opus", "mp3": "mp3",
           "m4a": "m4a", "webm": "webm", "webm-live": "webm", "3gp": "3gp", "3gp-aac": "3gp"}


def tone(seconds: float = 1.0, sr: int = 48000, channels: int = 1, freq: float = 440.0,
         seed: int = 0, *, amplitude: float = 0.3, noise: float = 0.01) -> np.ndarray:
    """A sine with a little seeded noise, shape ``(frames, channels)``, float32.

    The one tone generator of the tests; ``noise=0`` gives a pure sine.
    """
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = amplitude * np.sin(2 * np.pi * freq * t)[:, None]
    if noise:
        x = x + noise * rng.standard_normal((t.size, channels))
    else:
        x = np.repeat(x, channels, axis=1)
    return x.astype(np.float32)


def encode(fmt: str, seconds: float = 1.0, sr: int = 48000, channels: int = 1,
           freq: float = 440.0, seed: int = 0) -> bytes:
    """Bytes of a tone in ``fmt`` (a key of `FORMATS`)."""
    if fmt in _SF:
        buf = io.BytesIO()
        sf.write(buf, tone(seconds, sr, channels, freq, seed), sr, format=_SF[fmt])
        return buf.getvalue()
    container, codec, rate = _AV[fmt]
    x = tone(seconds, rate, 1, freq, seed)[:, 0]
    return _encode_av(container, codec, rate, x, seekable=not fmt.endswith("-live"))


class _Pipe(io.RawIOBase):
    """A write-only stream that cannot seek: muxers then leave out the duration."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def _encode_av(container: str, codec: str, rate: int, x: np.ndarray, seekable: bool) -> bytes:
    buf: io.BytesIO | _Pipe = io.BytesIO() if seekable else _Pipe()
    out = av.open(buf, "w", format=container)
    stream = out.add_stream(codec, rate=rate, layout="mono")
    frame_size = stream.codec_context.frame_size or 1024
    pts = 0
    for i in range(0, len(x), frame_size):
        chunk = np.ascontiguousarray(x[i:i + frame_size])[None, :]
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = pts
        pts += chunk.shape[1]
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return buf.getvalue() if isinstance(buf, io.BytesIO) else bytes(buf.data)


def dominant_hz(path: Path) -> float:
    """The strongest frequency of a file's first channel (a Hann-windowed FFT)."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    spectrum = np.abs(np.fft.rfft(data[:, 0] * np.hanning(len(data))))
    return float(np.argmax(spectrum) * rate / len(data))
