"""Audio file I/O: the only module of `vocalink_lab.audio` that touches files.

soundfile (libsndfile) handles WAV, FLAC, OGG and MP3; PyAV (FFmpeg in its
wheels) handles what phones and browsers produce: M4A/AAC, WebM/Opus, 3GP (AMR
or AAC), Ogg/Opus. Nothing here trusts a file name or a client's claim.

Audio in memory is always float32 shaped ``(channels, frames)`` (librosa's
convention, and the one noisereduce wants). `AudioReader` and `AudioWriter`
stream blocks so that hour-long files never need to fit in memory.

Why one module of about 650 lines: every file the audio lab reads or writes passes
here, and the formats it accepts and writes, with their limits, are one table that
both directions read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import AudioFormatError, ParameterError

__all__ = [
    "AAC_PRIMING_SPREAD",
    "AAC_UNDECLARED_PRIMING",
    "FORMATS",
    "MEDIA_TYPES",
    "WRITE_FORMATS",
    "Audio",
    "AudioInfo",
    "AudioReader",
    "AudioWriter",
    "aac_priming",
    "as_channels",
    "as_tracks",
    "load",
    "probe",
    "resample",
    "save",
    "write_problems",
]

log = logging.getLogger(__name__)

#: Samples in memory: float32, shaped ``(channels, frames)`` (or ``(frames,)``: one channel).
Audio = npt.NDArray[np.float32]

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


#: The encoder delay assumed for an AAC file that does not declare its own (no edit list):
#: FDK AAC-LC's, the encoder of Android's MediaRecorder. Encoders differ (1024 for
#: FFmpeg's, 2112 for Apple's): the caller bounds the guess by `AAC_PRIMING_SPREAD`.
AAC_UNDECLARED_PRIMING = 2048
AAC_PRIMING_SPREAD = 1024


def aac_priming(path: Path | str) -> tuple[int, bool]:
    """How many samples an AAC file's decoded audio holds before its first real sample.

    An AAC encoder starts with priming samples (its delay). An MP4 that declares them
    (an edit list: its first packet starts before zero) has them dropped by the decoder,
    so the decoded audio starts at the capture's first sample. One that does not (Android's
    MediaRecorder writes none) decodes with them in front, and their count is not in the
    file: `AAC_UNDECLARED_PRIMING` is assumed.

    Blocking (it reads the file): call it in a worker thread from the event loop.

    Parameters
    ----------
    path : Path or str
        An audio file (any format: a non-AAC one has no priming).

    Returns
    -------
    (int, bool)
        The samples to take off the start, and whether the file declared them (then 0).
    """
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        return 0, False
    try:
        if not container.streams.audio:
            return 0, False
        stream = container.streams.audio[0]
        if stream.codec_context.name != "aac":
            return 0, False
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            return (0, True) if packet.pts < 0 else (AAC_UNDECLARED_PRIMING, False)
        return 0, False
    except av.error.FFmpegError:
        return 0, False
    finally:
        container.close()


def _declared_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / 1_000_000
    return None


# -- reading and writing samples -------------------------------------------------------------

#: Formats `save` and `AudioWriter` write, with their default and allowed sample types.
WRITE_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "wav": ("PCM_24", ("PCM_16", "PCM_24", "PCM_32", "FLOAT")),
    "flac": ("PCM_24", ("PCM_16", "PCM_24")),
}


def as_channels(audio: npt.ArrayLike, *, name: str = "audio") -> Audio:
    """Return ``audio`` as float32 ``(channels, frames)``.

    Parameters
    ----------
    audio : array_like, shape (frames,) or (channels, frames)
        Samples; a 1-D array is one channel.
    name : str
        How error messages call the array.

    Returns
    -------
    np.ndarray, shape (channels, frames), float32

    Raises
    ------
    ParameterError
        Not 1-D or 2-D, not finite, or shaped like ``(frames, channels)``: more
        channels than frames almost always means the axes are swapped (and would
        make noisereduce try to allocate hundreds of GiB).
    """
    x = np.asarray(audio)
    if x.dtype.kind not in "fiu":
        raise ParameterError(f"{name} must hold numbers, not {x.dtype}")
    if x.ndim == 1:
        x = x[np.newaxis, :]
    elif x.ndim != 2:
        raise ParameterError(f"{name} must be shaped (frames,) or (channels, frames), "
                             f"not {x.shape}")
    channels, frames = x.shape
    if channels > frames or channels > 64:
        raise ParameterError(
            f"{name} is shaped {x.shape}: that is {channels} channels of {frames} frames; "
            "audio is (channels, frames), so pass audio.T if it is (frames, channels)")
    samples: Audio = x.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise ParameterError(f"{name} holds NaN or infinite samples")
    return samples


def as_tracks(tracks: Sequence[npt.ArrayLike], errors: list[str]) -> list[Audio]:
    """Check a sequence of tracks (as `as_channels` does each), appending problems to ``errors``.

    Parameters
    ----------
    tracks : sequence of array_like
        Each ``(frames,)`` or ``(channels, frames)``.
    errors : list of str
        Where every problem found is appended (the caller raises once, with all of them).

    Returns
    -------
    list of np.ndarray, each (channels, frames) float32
        The tracks that passed (fewer than given when some did not).
    """
    if isinstance(tracks, np.ndarray) and tracks.ndim == 1:
        errors.append("tracks must be a sequence of arrays, not one 1-D array")
        return []
    if len(tracks) == 0:
        errors.append("tracks is empty: give at least one track")
    arrays = []
    for i, t in enumerate(tracks):
        try:
            x = as_channels(t, name=f"tracks[{i}]")
        except ParameterError as exc:
            errors.extend(exc.errors)
            continue
        if x.shape[1] == 0:
            errors.append(f"tracks[{i}] is empty")
        arrays.append(x)
    return arrays


def resample(audio: npt.ArrayLike, *, orig_sr: float, target_sr: float,
             quality: str = "HQ") -> Audio:
    """Change the sample rate of ``audio`` (soxr).

    Parameters
    ----------
    audio : array_like, shape (frames,) or (channels, frames)
        Samples.
    orig_sr, target_sr : float
        Rates in Hz, by keyword (swapped, they would silently stretch the audio);
        they need not be integers (drift correction resamples by ratios such as
        48000 to 48000.96).
    quality : {"QQ", "LQ", "MQ", "HQ", "VHQ"}
        soxr's quality recipe.

    Returns
    -------
    np.ndarray, float32
        Same number of dimensions as ``audio``; about ``frames * target_sr / orig_sr``
        frames.
    """
    import soxr

    if not (orig_sr > 0 and target_sr > 0):
        raise ParameterError(f"sample rates must be positive, got {orig_sr} and {target_sr}")
    x = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr:
        return x.copy()
    if x.ndim == 1:
        return np.asarray(soxr.resample(x, orig_sr, target_sr, quality=quality),
                          dtype=np.float32)
    y = soxr.resample(np.ascontiguousarray(x.T), orig_sr, target_sr, quality=quality)
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).T)


class AudioReader:
    """Read an audio file's samples, whole or block by block, as ``(channels, frames)``.

    soundfile reads WAV/FLAC/OGG/MP3 with random access; the other formats decode
    with PyAV, in order (a `read` that goes backwards decodes from the start again).

    Parameters
    ----------
    path : Path or str
        An audio file in one of `FORMATS`.

    Examples
    --------
    >>> with AudioReader("take.flac") as reader:  # doctest: +SKIP
    ...     for block in reader.blocks(reader.sample_rate * 10):
    ...         print(block.shape)
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.info = probe(self.path)
        self.sample_rate = self.info.sample_rate
        self.channels = self.info.channels
        self.frames = self.info.frames
        self._sf: Any = None
        self._av: _AvStream | None = None
        if _probe_soundfile(self.path) is not None:
            import soundfile as sf

            self._sf = sf.SoundFile(self.path)

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        if self._sf is not None:
            self._sf.close()
        if self._av is not None:
            self._av.close()
            self._av = None

    @property
    def random_access(self) -> bool:
        """Whether `read` seeks (soundfile's formats) rather than decoding from the start."""
        return self._sf is not None

    def blocks(self, block_frames: int) -> Iterator[Audio]:
        """Yield the whole file in blocks of ``block_frames`` (the last one may be shorter).

        Yields
        ------
        np.ndarray, shape (channels, n), float32
        """
        if block_frames <= 0:
            raise ParameterError(f"block_frames must be positive, not {block_frames}")
        if self._sf is not None:
            self._sf.seek(0)
            for block in self._sf.blocks(blocksize=block_frames, dtype="float32",
                                         always_2d=True):
                yield np.ascontiguousarray(block.T)
            return
        stream = self._restart_av()
        while True:
            block = stream.take(block_frames)
            if block.shape[1] == 0:
                return
            yield block

    def read(self, start: int = 0, frames: int | None = None) -> Audio:
        """Read ``frames`` frames from frame ``start`` (to the end when ``frames`` is None).

        Returns
        -------
        np.ndarray, shape (channels, n), float32
            ``n`` is less than ``frames`` only at the end of the file.
        """
        if start < 0 or (frames is not None and frames < 0):
            raise ParameterError(f"cannot read {frames} frames from frame {start}")
        if self._sf is not None:
            self._sf.seek(min(start, self._sf.frames))
            data = self._sf.read(-1 if frames is None else frames, dtype="float32",
                                 always_2d=True)
            return np.ascontiguousarray(data.T)
        stream = self._av
        if stream is None or stream.position > start:
            stream = self._restart_av()
        stream.skip(start - stream.position)
        return stream.take(frames)

    def _restart_av(self) -> _AvStream:
        if self._av is not None:
            self._av.close()
        self._av = _AvStream(self.path, self.channels)
        return self._av


class _AvStream:
    """Sequential float32 planar decoding with PyAV, handed out in exact frame counts."""

    def __init__(self, path: Path, channels: int) -> None:
        import av

        self.channels = channels
        self.position = 0
        self._container = av.open(str(path), mode="r")
        stream = self._container.streams.audio[0]
        self._frames = self._container.decode(stream)
        self._resampler: Any = None
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._done = False

    def close(self) -> None:
        self._container.close()

    def _decode_more(self) -> bool:
        import av

        if self._done:
            return False
        try:
            frame = next(self._frames)
        except (StopIteration, av.error.EOFError):
            self._done = True
            return False
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout=frame.layout.name,
                                                rate=frame.sample_rate)
        for out in self._resampler.resample(frame):
            data = np.asarray(out.to_ndarray(), dtype=np.float32).reshape(self.channels, -1)
            self._pending.append(data)
            self._pending_frames += data.shape[1]
        return True

    def take(self, frames: int | None) -> Audio:
        while (frames is None or self._pending_frames < frames) and self._decode_more():
            pass
        data = (np.concatenate(self._pending, axis=1) if self._pending
                else np.zeros((self.channels, 0), np.float32))
        n = data.shape[1] if frames is None else min(frames, data.shape[1])
        out, rest = data[:, :n], data[:, n:]
        self._pending = [rest] if rest.shape[1] else []
        self._pending_frames = rest.shape[1]
        self.position += n
        return np.ascontiguousarray(out)

    def skip(self, frames: int) -> None:
        while frames > 0:
            got = self.take(min(frames, 1 << 20)).shape[1]
            if got == 0:
                return
            frames -= got


def load(path: Path | str, *, sr: int | None = None, start_s: float = 0.0,
         duration_s: float | None = None) -> tuple[Audio, int]:
    """Decode an audio file (any of `FORMATS`) to float32 samples.

    Parameters
    ----------
    path : Path or str
        The file.
    sr : int, optional
        Resample to this rate (soxr); the file's own rate by default.
    start_s, duration_s : float
        Read only this part (seconds; ``duration_s=None`` reads to the end).

    Returns
    -------
    audio : np.ndarray, shape (channels, frames), float32
    sample_rate : int

    Raises
    ------
    AudioFormatError
        The file is not audio in an accepted format, or does not decode.

    Examples
    --------
    >>> audio, rate = load("take.m4a", sr=16000)  # doctest: +SKIP
    """
    if start_s < 0 or (duration_s is not None and duration_s < 0):
        raise ParameterError(f"cannot read {duration_s} s from {start_s} s")
    with AudioReader(path) as reader:
        rate = reader.sample_rate
        start = round(start_s * rate)
        frames = None if duration_s is None else round(duration_s * rate)
        audio = reader.read(start, frames)
    if sr is not None and sr != rate:
        return resample(audio, orig_sr=rate, target_sr=sr), int(sr)
    return audio, rate


def _write_format(path: Path, subtype: str | None) -> tuple[str, str]:
    ext = path.suffix.lower().lstrip(".")
    if ext not in WRITE_FORMATS:
        raise ParameterError(f"cannot write '.{ext}' files; write one of "
                             + ", ".join(f".{f}" for f in WRITE_FORMATS))
    default, allowed = WRITE_FORMATS[ext]
    subtype = (subtype or default).upper()
    if subtype not in allowed:
        raise ParameterError(f"{ext} files take the sample types {', '.join(allowed)}, "
                             f"not '{subtype}'")
    return ext, subtype


#: FLAC's limits (libsndfile refuses the rest when the encoder starts, mid-job).
FLAC_MAX_CHANNELS = 8
FLAC_MAX_RATE = 655350
#: libsndfile's most channels in one file.
MAX_CHANNELS = 1024


def write_problems(fmt: str, sr: int, channels: int) -> list[str]:
    """What stops a file of ``fmt`` at ``sr`` Hz with ``channels`` channels being written.

    Check it before any work: libsndfile refuses these only when the file is opened,
    after a job has decoded and processed everything.

    Parameters
    ----------
    fmt : {"wav", "flac"}
        The file format.
    sr : int
        Sample rate, Hz.
    channels : int
        Channel count.

    Returns
    -------
    list of str
        One line per problem; empty when the file can be written.
    """
    problems = []
    if sr <= 0 or channels <= 0:
        problems.append(f"cannot write {channels} channels at {sr} Hz")
    elif fmt == "flac":
        if sr > FLAC_MAX_RATE or (sr > 65535 and sr % 10):
            problems.append(f"FLAC cannot hold {sr} Hz (at most {FLAC_MAX_RATE} Hz, and above "
                            "65535 Hz only multiples of 10): choose another sample_rate or "
                            "format 'wav'")
        if channels > FLAC_MAX_CHANNELS:
            problems.append(f"FLAC holds at most {FLAC_MAX_CHANNELS} channels, not {channels}: "
                            "use format 'wav'")
    elif channels > MAX_CHANNELS:
        problems.append(f"a file holds at most {MAX_CHANNELS} channels, not {channels}")
    return problems


class AudioWriter:
    """Write ``(channels, frames)`` blocks to a WAV or FLAC file, in order.

    Integer sample types are clipped to [-1, 1] first (libsndfile would wrap
    around). The caller makes the file durable and moves it into place.

    Parameters
    ----------
    path : Path or str
        The file to write; its extension (``.wav``, ``.flac``) picks the format.
    sr : int
        Sample rate.
    channels : int
        Channel count.
    subtype : str, optional
        ``PCM_16``, ``PCM_24`` (the default), ``PCM_32`` or ``FLOAT`` (WAV only).
    """

    def __init__(self, path: Path | str, sr: int, channels: int, *,
                 subtype: str | None = None) -> None:
        import soundfile as sf

        self.path = Path(path)
        ext, self.subtype = _write_format(self.path, subtype)
        problems = write_problems(ext, sr, channels)
        if problems:
            raise ParameterError("; ".join(problems), errors=problems)
        self.channels = channels
        self.frames = 0
        self._clip = self.subtype != "FLOAT"
        self._file = sf.SoundFile(self.path, "w", samplerate=int(sr), channels=channels,
                                  subtype=self.subtype, format=ext.upper())

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, block: npt.ArrayLike) -> None:
        """Append a block, shape ``(channels, n)`` (or ``(n,)`` for one channel)."""
        x = as_channels(block, name="block") if np.asarray(block).shape[-1] else None
        if x is None:
            return
        if x.shape[0] != self.channels:
            raise ParameterError(f"block has {x.shape[0]} channels, the file {self.channels}")
        if self._clip:
            x = np.clip(x, -1.0, 1.0)
        self._file.write(x.T)
        self.frames += x.shape[1]

    def close(self) -> None:
        """Finish the file (flushes it; idempotent)."""
        if not self._file.closed:
            self._file.close()


def save(path: Path | str, audio: npt.ArrayLike, sr: int, *,
         subtype: str | None = None) -> None:
    """Write samples to a WAV or FLAC file.

    Parameters
    ----------
    path : Path or str
        Target; the extension picks the format.
    audio : array_like, shape (frames,) or (channels, frames)
        Samples in [-1, 1] (integer sample types clip outside it).
    sr : int
        Sample rate.
    subtype : str, optional
        See `AudioWriter`.
    """
    x = as_channels(audio)
    with AudioWriter(path, sr, x.shape[0], subtype=subtype) as writer:
        writer.write(x)
