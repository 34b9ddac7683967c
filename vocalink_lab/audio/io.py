"""Audio file I/O: what a file holds, read from the file itself.

soundfile (libsndfile) handles WAV, FLAC, OGG and MP3; PyAV (FFmpeg in its
wheels) handles what phones and browsers produce: M4A/AAC, WebM/Opus, 3GP (AMR
or AAC), Ogg/Opus. Nothing here trusts a file name or a client's claim.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import AudioFormatError

__all__ = ["FORMATS", "MEDIA_TYPES", "AudioInfo", "probe"]

log = logging.getLogger(__name__)

#: Accepted formats (the stored file's extension).
FORMATS = ("wav", "flac", "ogg", "opus", "mp3", "m4a", "webm", "3gp")
MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "webm": "audio/webm",
    "3gp": "audio/3gpp",
}
_SF_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "W64": "wav", "FLAC": "flac",
               "OGG": "ogg", "MP3": "mp3", "MPEG": "mp3"}
_CHECK_FRAMES = 4096


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What an audio file holds.

    Attributes
    ----------
    format : str
        Container, as a file extension (one of `FORMATS`).
    codec : str
        Audio codec (e.g. ``pcm_16``, ``flac``, ``opus``, ``aac``).
    sample_rate : int
        Samples per second.
    channels : int
        Channel count.
    frames : int
        Samples per channel.
    duration_s : float
        ``frames / sample_rate``.
    """

    format: str
    codec: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def probe(path: Path | str) -> AudioInfo:
    """Read a file's format, sample rate, channels and length, checking it decodes.

    Blocking (it reads the file): call it in a worker thread from the event loop.

    Parameters
    ----------
    path : Path or str
        The file.

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioFormatError
        The file is not audio in an accepted format, or does not decode.
    """
    path = Path(path)
    info = _probe_soundfile(path)
    if info is None:
        info = _probe_av(path)
    if info.frames <= 0 or info.sample_rate <= 0 or info.channels <= 0:
        raise AudioFormatError(f"{info.format} file holds no audio samples")
    return info


def _probe_soundfile(path: Path) -> AudioInfo | None:
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            fmt = _SF_FORMATS.get(f.format)
            if fmt is None:
                return None
            frames = f.frames
            # Decode the first and the last block: a valid header over broken data fails here.
            f.read(min(_CHECK_FRAMES, frames), dtype="float32")
            if frames > _CHECK_FRAMES:
                f.seek(frames - _CHECK_FRAMES)
                f.read(_CHECK_FRAMES, dtype="float32")
            if fmt == "ogg" and f.subtype == "OPUS":
                fmt = "opus"
            return AudioInfo(fmt, f.subtype.lower(), f.samplerate, f.channels, frames,
                             frames / f.samplerate)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        log.debug("soundfile cannot read %s: %s", path, exc)
        return None


def _probe_av(path: Path) -> AudioInfo:
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise AudioFormatError("the file is not audio in a format that can be decoded") from exc
    try:
        if not container.streams.audio:
            raise AudioFormatError("the file has no audio stream")
        fmt = _container_format(container)
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        channels = int(stream.codec_context.channels or 0)
        codec = stream.codec_context.name
        duration = _declared_duration(container, stream)
        decoded = 0
        # Decode some audio in every case; count every frame when no duration is declared
        # (MediaRecorder's WebM has none).
        for frame in container.decode(stream):
            decoded += frame.samples
            rate = rate or frame.sample_rate
            channels = channels or len(frame.layout.channels)
            if duration is not None and decoded >= _CHECK_FRAMES:
                break
        if decoded == 0:
            raise AudioFormatError(f"the {fmt} file's audio does not decode")
        frames = round(duration * rate) if duration is not None else decoded
        return AudioInfo(fmt, codec, rate, channels, frames, frames / rate)
    except av.error.FFmpegError as exc:
        raise AudioFormatError(f"the file's audio does not decode: {exc}") from exc
    finally:
        container.close()


def _container_format(container: Any) -> str:
    names = set(container.format.name.split(","))
    if "wav" in names:
        return "wav"
    if "flac" in names:
        return "flac"
    if "ogg" in names:
        return "ogg"
    if "mp3" in names:
        return "mp3"
    if "mp4" in names or "mov" in names:
        brand = str(container.metadata.get("major_brand", "")).lower()
        return "3gp" if brand.startswith("3g") else "m4a"
    if "webm" in names or "matroska" in names:
        return "webm"
    raise AudioFormatError(
        f"container '{container.format.name}' is not an accepted audio format "
        f"(accepted: {', '.join(FORMATS)})"
    )


def _declared_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / 1_000_000
    return None
