"""Crash-safe incremental recording: a WAV that is valid on disk while it grows.

A `SpoolWriter` appends blocks to a WAV file it frames itself (a plain 44-byte RIFF header),
and at least every ``sync_every_s`` seconds of audio it makes everything written so far
durable *and* readable: data fsync'd first, then the RIFF and ``data`` sizes rewritten and
fsync'd, so that the header never claims a byte the disk may not hold. After a SIGKILL or a
power cut the file decodes as is, up to the last sync; `recover` also takes in the frames
written after it.

Next to ``take.wav`` lives ``take.spool.json``, the sidecar: who and what the recording is
(ids, device-clock start, format). It is written before the WAV exists and is the last thing
to go, so every spooled byte of audio is always accounted for:

- ``state: "recording"``: unfinished; `recover` repairs it and finishes it as WAV.
- ``state: "finished"``: `SpoolWriter.finalize` (or `recover`) is done, but nobody has taken
  the file yet; `recover` returns it again, and `release` (which `Outbox.add` calls once the
  file is in the outbox) removes the sidecar.

File work happens in worker threads, never on the event loop.

Why one module of about 750 lines: it writes the spool's on-disk format and is the only
code that reads it back after a crash (`recover`). Kept together, a change to how a
byte is framed or synced cannot miss the code that must repair it.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import soundfile as sf

from .. import durable

__all__ = [
    "FORMATS",
    "SUBTYPES",
    "FinishedRecording",
    "SpoolWriter",
    "recover",
    "release",
    "sidecar_path",
]

log = logging.getLogger(__name__)

#: Formats a recording can be finalized to (what the agent offers and accepts in START).
FORMATS = ("wav", "flac")
#: Sample formats a spool can hold: WAV format tag and bytes per sample.
SUBTYPES: Mapping[str, tuple[int, int]] = {
    "PCM_16": (1, 2), "PCM_24": (1, 3), "PCM_32": (1, 4), "FLOAT": (3, 4),
}
_FLAC_SUBTYPES = ("PCM_16", "PCM_24")
_SIDECAR_SUFFIX = ".spool.json"
_HEADER_BYTES = 44
_MAX_DATA_BYTES = 0xFFFFFFFF - 36  # the RIFF size field is 32 bits
_CONVERT_FRAMES = 65536
_SPOOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class FinishedRecording:
    """A complete recording file and what it is.

    Attributes
    ----------
    path : Path
        The audio file.
    recording_id : str
        Unique id of this recording.
    take_id : str or None
        The take (one START..STOP across devices) it belongs to.
    device_id : str or None
        The device that recorded it.
    started_at : float
        Device-clock time of the first frame.
    sample_rate : int
        Frames per second.
    channels : int
        Channel count.
    frames : int
        Frames in the file.
    bytes : int
        File size.
    sha256 : str
        Hex SHA-256 of the file's bytes.
    format : str
        ``"wav"`` or ``"flac"``.
    recovered : bool
        True if the file was repaired by `recover` after a crash.
    audio_clock : dict or None
        The source's audio clock fitted over the take (`CaptureClock.report`:
        ``source``, ``rate_hz``, ``ppm``, ``residual_us``, ``points``); ``None`` for a
        source without one, or a take recovered after a crash.
    """

    path: Path
    recording_id: str
    take_id: str | None
    device_id: str | None
    started_at: float
    sample_rate: int
    channels: int
    frames: int
    bytes: int
    sha256: str
    format: str
    recovered: bool = False
    audio_clock: dict[str, Any] | None = None

    @property
    def duration_s(self) -> float:
        """``frames / sample_rate``."""
        return self.frames / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (``path`` as a string)."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def sidecar_path(path: str | Path) -> Path:
    """The sidecar of a spool or finished file: ``take.wav`` → ``take.spool.json``.

    Parameters
    ----------
    path : str or Path
        The spool WAV, or the FLAC it was finalized to (they share a stem).

    Returns
    -------
    Path
        Where its sidecar is, whether it exists or not.
    """
    path = Path(path)
    return path.with_name(path.stem + _SIDECAR_SUFFIX)


class SpoolWriter:
    """Write a WAV incrementally, durable and readable up to the last sync at any moment.

    Use it from one task: `open` (or the first `write`), `write` each block, then
    `finalize`. ``async with SpoolWriter(...) as spool:`` opens it and, if the block exits
    without `finalize`, syncs and closes it as an unfinished spool for `recover`.

    Parameters
    ----------
    path : str or Path
        The WAV to create, ``*.wav``. It must not exist: a spool never overwrites audio.
    sample_rate : int
        Frames per second.
    channels : int
        Channel count.
    subtype : str, default "PCM_16"
        Sample format, one of `SUBTYPES`. FLAC needs PCM_16 or PCM_24.
    sync_every_s : float, default 1.0
        Seconds of audio between syncs: at most this much (plus one sync's duration) is lost
        to a crash.
    recording_id : str, optional
        A fresh UUID (hex) if omitted.
    take_id, device_id : str, optional
        Recorded in the sidecar and the result.
    started_at : float, optional
        Device-clock time of the first frame (pass the first block's ``t0``); ``time.time()``
        at `open` if omitted.
    format : {"wav", "flac"}, default "wav"
        Format `finalize` produces unless told otherwise; stored in the sidecar.
    max_buffer_s : float, default 30.0
        If the disk falls this far behind, `write` waits for it instead of buffering more.

    Notes
    -----
    Float samples become PCM as ``rint(x * 2**(bits-1))``, clipped, which is the exact inverse
    of soundfile's reading (``int / 2**(bits-1)``): what was read from a PCM file is written
    back bit for bit. int16 arrays are taken as is for PCM_16.
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        channels: int,
        subtype: str = "PCM_16",
        *,
        sync_every_s: float = 1.0,
        recording_id: str | None = None,
        take_id: str | None = None,
        device_id: str | None = None,
        started_at: float | None = None,
        format: str = "wav",
        max_buffer_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".wav":
            raise ValueError(f"a spool is a WAV file, named *.wav, not {self.path.name!r}")
        if subtype not in SUBTYPES:
            raise ValueError(f"subtype must be one of {sorted(SUBTYPES)}, not {subtype!r}")
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"sample_rate and channels must be positive, not "
                             f"{sample_rate} and {channels}")
        if not sync_every_s > 0:
            raise ValueError(f"sync_every_s must be positive, not {sync_every_s}")
        _check_format(format, subtype)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.subtype = subtype
        self.recording_id = recording_id or uuid.uuid4().hex
        self.take_id = take_id
        self.device_id = device_id
        self.started_at = started_at
        self.format = format.lower()
        self.sync_every_s = float(sync_every_s)
        self._block_align = SUBTYPES[subtype][1] * self.channels
        self._sync_frames = max(1, round(sync_every_s * self.sample_rate))
        self._max_buffer_frames = max(self._sync_frames, round(max_buffer_s * self.sample_rate))
        # Loop side: frames accepted, and where the latest sync started.
        self._frames = 0
        self._sync_mark = 0
        # Shared with the worker threads: encoded chunks in order; deque appends and pops are
        # atomic, so whichever thread job runs first writes everything queued so far, in order.
        self._chunks: collections.deque[tuple[bytes, int]] = collections.deque()
        self._file_lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._file_frames = 0
        self._synced_frames = 0
        self._state = "new"  # new -> open -> closed | finished
        self._sync_task: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._finished: FinishedRecording | None = None
        self._open_lock = asyncio.Lock()
        self._meta: dict[str, Any] = {}
        #: The source's audio clock (`FinishedRecording.audio_clock`): set it before
        #: `finalize`, which stores it in the finished sidecar and the result.
        self.audio_clock: dict[str, Any] | None = None

    @property
    def sidecar_path(self) -> Path:
        """The sidecar of this spool (``<stem>.spool.json``)."""
        return sidecar_path(self.path)

    @property
    def frames(self) -> int:
        """Frames accepted by `write` so far."""
        return self._frames

    @property
    def synced_frames(self) -> int:
        """Frames durable and readable on disk."""
        return self._synced_frames

    @property
    def duration_s(self) -> float:
        """Seconds of audio accepted so far."""
        return self._frames / self.sample_rate

    async def open(self) -> None:
        """Create the sidecar, then the WAV with an empty ``data`` chunk; idempotent.

        Raises
        ------
        FileExistsError
            The WAV or its sidecar exists already.
        """
        async with self._open_lock:
            if self._state != "new":
                return
            if self.started_at is None:
                self.started_at = time.time()
            await asyncio.to_thread(self._create)
            self._state = "open"

    async def write(self, samples: npt.ArrayLike) -> None:
        """Append frames; a sync starts in the background when one is due.

        Parameters
        ----------
        samples : array_like, shape=(frames, channels) or (frames,) when mono
            Float audio in [-1, 1] (clipped), or int16 for PCM_16.

        Raises
        ------
        OSError
            A previous background sync failed (e.g. the disk is full); the spool keeps what
            was synced before, for `recover`.
        """
        if self._state == "new":
            await self.open()
        self._check_writable()
        data, frames = _encode(samples, self.channels, self.subtype)
        if frames == 0:
            return
        if (self._frames + frames) * self._block_align > _MAX_DATA_BYTES:
            raise OSError(errno.EFBIG, f"{self.path.name} would exceed the 4 GiB a WAV can hold")
        self._chunks.append((data, frames))
        self._frames += frames
        running = self._sync_task is not None and not self._sync_task.done()
        if not running and self._frames - self._sync_mark >= self._sync_frames:
            self._start_sync()
        elif running and self._frames - self._synced_frames >= self._max_buffer_frames:
            assert self._sync_task is not None
            log.warning("%s: the disk is %.1f s behind; waiting for it", self.path.name,
                        (self._frames - self._synced_frames) / self.sample_rate)
            await asyncio.wait([self._sync_task])

    async def sync(self) -> None:
        """Make every frame written so far durable and readable now."""
        self._check_writable()
        if self._sync_task is not None:
            await asyncio.wait([self._sync_task])
        self._sync_mark = self._frames
        await asyncio.to_thread(self._sync_in_thread)
        self._check_writable()

    async def close(self) -> None:
        """Sync and close, leaving an unfinished spool for `recover`; idempotent.

        Use it when a recording must stop without being finished (shutdown, error).
        """
        if self._state != "open":
            self._state = "closed" if self._state == "new" else self._state
            return
        self._state = "closed"
        if self._sync_task is not None:
            await asyncio.wait([self._sync_task])
        await asyncio.to_thread(self._close_in_thread, self._error is None)

    async def finalize(self, format: str | None = None) -> FinishedRecording:
        """Finish the recording: final sync, close, convert if asked, hash.

        Parameters
        ----------
        format : {"wav", "flac"}, optional
            The format requested at construction if omitted. FLAC is encoded in a thread,
            block by block, next to the WAV (``take.flac``), which is then removed.

        Returns
        -------
        FinishedRecording
            The same object on a second call.
        """
        if self._finished is not None:
            return self._finished
        fmt = (format or self.format).lower()
        _check_format(fmt, self.subtype)
        if self._state == "new":
            await self.open()
        if self._state != "open":
            raise RuntimeError(f"{self.path.name} was closed unfinished; use recover()")
        self._check_writable()
        self._state = "closed"
        if self._sync_task is not None:
            await asyncio.wait([self._sync_task])
        await asyncio.to_thread(self._close_in_thread, True)
        if self._error is not None:
            raise self._error
        meta = self._meta if self.audio_clock is None else {
            **self._meta, "audio_clock": dict(self.audio_clock)}
        self._finished = await asyncio.to_thread(
            _finish, self.path, meta, fmt, frames=self._file_frames, recovered=False)
        self._state = "finished"
        return self._finished

    async def __aenter__(self) -> SpoolWriter:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (f"<SpoolWriter {self.path.name} {self._state} {self.duration_s:.2f} s, "
                f"{self.synced_frames / self.sample_rate:.2f} s synced>")

    # -- loop side ---------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._state != "open":
            raise RuntimeError(f"{self.path.name} is {self._state}, not open")

    def _start_sync(self) -> None:
        self._sync_mark = self._frames
        task = asyncio.ensure_future(asyncio.to_thread(self._sync_in_thread))
        task.add_done_callback(self._sync_done)
        self._sync_task = task

    def _sync_done(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._error is None:
            log.error("%s: sync failed; the spool keeps %.2f s for recover(): %s",
                      self.path.name, self._synced_frames / self.sample_rate, exc)
            self._error = exc

    def _sidecar(self) -> dict[str, Any]:
        return {
            "spool_version": _SPOOL_VERSION, "state": "recording", "file": self.path.name,
            "recording_id": self.recording_id, "take_id": self.take_id,
            "device_id": self.device_id, "started_at": self.started_at,
            "sample_rate": self.sample_rate, "channels": self.channels,
            "subtype": self.subtype, "format": self.format, "created_at": time.time(),
        }

    # -- worker threads ----------------------------------------------------------------

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.sidecar_path.exists():
            raise FileExistsError(f"{self.sidecar_path} exists: recover() it first")
        # The sidecar goes first, so that no spooled audio is ever without one.
        self._meta = self._sidecar()
        durable.write_json_atomic(self.sidecar_path, self._meta)
        try:
            f = open(self.path, "xb")  # noqa: SIM115 (held open across calls)
        except FileExistsError:
            os.unlink(self.sidecar_path)  # ours, just written; the audio there is not ours
            raise
        f.write(_header(self.sample_rate, self.channels, self.subtype, 0))
        f.flush()
        os.fsync(f.fileno())
        durable.fsync_dir(self.path.parent)
        self._file = f

    def _sync_in_thread(self) -> None:
        with self._file_lock:
            f = self._file
            if f is None:
                return
            while self._chunks:
                data, frames = self._chunks.popleft()
                f.write(data)
                self._file_frames += frames
            if self._file_frames == self._synced_frames:
                return
            # Data first, header second: the header must never claim bytes that a power cut
            # could lose. fdatasync also persists the new file size.
            f.flush()
            _fdatasync(f.fileno())
            data_bytes = self._file_frames * self._block_align
            f.seek(4)
            f.write(struct.pack("<I", 36 + data_bytes))
            f.seek(40)
            f.write(struct.pack("<I", data_bytes))
            f.seek(0, os.SEEK_END)
            f.flush()
            os.fsync(f.fileno())
            self._synced_frames = self._file_frames

    def _close_in_thread(self, sync: bool) -> None:
        if sync:
            self._sync_in_thread()
        with self._file_lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def recover(spool_path_or_dir: str | Path) -> list[FinishedRecording]:
    """Finish every spool a crash left behind. Blocking: run it in a thread.

    Meant for start-up, before recording resumes. For each sidecar:

    - unfinished (``recording``): the WAV's header sizes are set from the file's length (a
      partial last frame is cut off), it is synced, hashed and returned with
      ``recovered=True``, as WAV (a FLAC conversion that was under way is discarded; the WAV
      it came from is complete);
    - finished but not yet released (see `release`): returned as it was finalized;
    - unreadable, or its audio is missing: the leftovers are renamed ``*.corrupt``, logged
      and skipped. Audio is never deleted.

    Parameters
    ----------
    spool_path_or_dir : str or Path
        A directory of spools (not searched recursively), a spool WAV or a sidecar.

    Returns
    -------
    list of FinishedRecording
        Oldest first (by ``started_at``).
    """
    target = Path(spool_path_or_dir)
    if target.is_dir():
        sidecars = sorted(target.glob("*" + _SIDECAR_SUFFIX))
    elif target.name.endswith(_SIDECAR_SUFFIX):
        sidecars = [target]
    else:
        sidecars = [sidecar_path(target)]
    out = []
    for side in sidecars:
        if not side.exists():
            log.warning("%s: no sidecar, so not a spool; left alone", side)
            continue
        try:
            rec = _recover_one(side)
        except Exception:  # one broken spool must not keep the others from recovery
            log.exception("%s: recovery failed; files left as they are", side)
            continue
        if rec is not None:
            out.append(rec)
    out.sort(key=lambda r: r.started_at)
    return out


def release(path: str | Path) -> None:
    """Forget a finished recording's sidecar once its file has been handed over.

    `Outbox.add` calls it after moving the file into the outbox; until then `recover`
    keeps returning the recording, so that a crash in between loses nothing. Blocking.

    Parameters
    ----------
    path : str or Path
        Where the finished file was (`FinishedRecording.path` as returned).
    """
    side = sidecar_path(path)
    try:
        os.unlink(side)
    except FileNotFoundError:
        return
    durable.fsync_dir(side.parent)


# -- private -----------------------------------------------------------------------------


class _Corrupt(Exception):
    """A spool that cannot be made readable."""


def _check_format(fmt: str, subtype: str) -> None:
    if fmt.lower() not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if fmt.lower() == "flac" and subtype not in _FLAC_SUBTYPES:
        raise ValueError(f"FLAC holds {' or '.join(_FLAC_SUBTYPES)} samples, not {subtype}")


def _fdatasync(fd: int) -> None:
    sync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
    sync(fd)


def _header(sample_rate: int, channels: int, subtype: str, data_bytes: int) -> bytes:
    tag, width = SUBTYPES[subtype]
    align = channels * width
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16,
                       tag, channels, sample_rate, sample_rate * align, align, width * 8,
                       b"data", data_bytes)


def _encode(samples: npt.ArrayLike, channels: int, subtype: str) -> tuple[bytes, int]:
    """Interleaved little-endian sample bytes, and the frame count."""
    x = np.asarray(samples)
    if x.ndim == 1 and channels == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != channels:
        raise ValueError(f"expected samples of shape (frames, {channels}), not {x.shape}")
    frames = int(x.shape[0])
    if subtype == "PCM_16" and x.dtype == np.int16:
        return x.astype("<i2", copy=False).tobytes(), frames
    if x.dtype.kind not in "fiu":
        raise ValueError(f"expected numeric samples, not {x.dtype}")
    if subtype == "FLOAT":
        return x.astype("<f4", copy=False).tobytes(), frames
    bits = SUBTYPES[subtype][1] * 8
    scale = float(2 ** (bits - 1))
    v = np.nan_to_num(x.astype(np.float64) * scale)
    np.rint(v, out=v)
    np.clip(v, -scale, scale - 1, out=v)
    if subtype == "PCM_16":
        return v.astype("<i2").tobytes(), frames
    ints = v.astype("<i4")
    if subtype == "PCM_32":
        return ints.tobytes(), frames
    # PCM_24: the three low bytes of each little-endian int32.
    return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes(), frames


def _finish(wav: Path, meta: Mapping[str, Any], fmt: str, *, frames: int,
            recovered: bool) -> FinishedRecording:
    """Turn a complete, closed spool WAV into a finished recording (blocking)."""
    final = wav
    if fmt == "flac":
        final = wav.with_suffix(".flac")
        _to_flac(wav, final, subtype=str(meta["subtype"]), frames=frames)
    rec = FinishedRecording(
        path=final, recording_id=str(meta["recording_id"]), take_id=meta.get("take_id"),
        device_id=meta.get("device_id"), started_at=float(meta["started_at"]),
        sample_rate=int(meta["sample_rate"]), channels=int(meta["channels"]), frames=frames,
        bytes=final.stat().st_size, sha256=durable.file_sha256(final), format=fmt,
        recovered=recovered, audio_clock=_audio_clock(meta),
    )
    durable.write_json_atomic(sidecar_path(wav), {
        **meta, "state": "finished", "final_file": final.name, "final_format": fmt,
        "frames": rec.frames, "bytes": rec.bytes, "sha256": rec.sha256, "recovered": recovered,
        "finished_at": time.time(),
    })
    if final != wav:
        # Only now that the sidecar points at the FLAC may the WAV go.
        os.unlink(wav)
        durable.fsync_dir(wav.parent)
    return rec


def _to_flac(wav: Path, final: Path, *, subtype: str, frames: int) -> None:
    """Encode ``wav`` as FLAC into ``final``, streaming, via a ``.part`` file."""
    part = final.with_name(final.name + ".part")
    dtype = "int16" if subtype == "PCM_16" else "int32"  # integers: a lossless round trip
    with sf.SoundFile(str(wav)) as src, sf.SoundFile(
            str(part), "w", samplerate=src.samplerate, channels=src.channels,
            subtype=subtype, format="FLAC") as dst:
        for block in src.blocks(_CONVERT_FRAMES, dtype=dtype, always_2d=True):
            dst.write(block)
    written = sf.info(str(part)).frames
    if written != frames:
        raise OSError(f"FLAC encoding of {wav.name} wrote {written} frames, not {frames}")
    durable.fsync_file(part)
    durable.replace(part, final)


def _recover_one(side: Path) -> FinishedRecording | None:
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        wav = side.with_name(str(meta["file"]))
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        log.error("%s: unreadable sidecar (%s); renamed *.corrupt", side, exc)
        _rename_corrupt(side)
        return None
    if meta.get("state") == "finished":
        return _recover_finished(side, wav, meta)
    if not wav.exists():
        log.error("%s: its audio %s is missing; renamed *.corrupt", side, wav.name)
        _rename_corrupt(side)
        return None
    for leftover in (wav.with_suffix(".flac.part"), wav.with_suffix(".flac")):
        # An interrupted finalize(format="flac"): the WAV it was encoding is complete.
        if leftover.exists():
            log.info("%s: dropping %s, an unfinished conversion of the WAV kept",
                     side, leftover.name)
            os.unlink(leftover)
    try:
        frames = _repair_wav(wav)
    except _Corrupt as exc:
        log.error("%s: cannot be made readable (%s); renamed *.corrupt, with its sidecar",
                  wav, exc)
        _rename_corrupt(wav)
        _rename_corrupt(side)
        return None
    rec = _finish(wav, meta, "wav", frames=frames, recovered=True)
    log.warning("%s: recovered %.2f s after a crash", wav, rec.duration_s)
    return rec


def _recover_finished(side: Path, wav: Path, meta: Mapping[str, Any]) -> FinishedRecording | None:
    final = side.with_name(str(meta["final_file"]))
    if not final.exists():
        # Handed over (the outbox took it) just before the sidecar could be released.
        log.info("%s: finished and handed over; releasing the sidecar", side)
        release(final)
        return None
    if final != wav and wav.exists():
        os.unlink(wav)  # the FLAC was verified and synced before the sidecar named it
        durable.fsync_dir(wav.parent)
    size = final.stat().st_size
    sha = str(meta["sha256"])
    if size != meta["bytes"]:
        log.warning("%s: %d bytes, not the %d finalized; hashing again", final, size,
                    meta["bytes"])
        sha = durable.file_sha256(final)
    return FinishedRecording(
        path=final, recording_id=str(meta["recording_id"]), take_id=meta.get("take_id"),
        device_id=meta.get("device_id"), started_at=float(meta["started_at"]),
        sample_rate=int(meta["sample_rate"]), channels=int(meta["channels"]),
        frames=int(meta["frames"]), bytes=size, sha256=sha, format=str(meta["final_format"]),
        recovered=bool(meta.get("recovered", False)), audio_clock=_audio_clock(meta),
    )


def _audio_clock(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """A sidecar's ``audio_clock``, if it holds one (older sidecars do not)."""
    value = meta.get("audio_clock")
    return dict(value) if isinstance(value, Mapping) else None


def _repair_wav(path: Path) -> int:
    """Set the RIFF and data sizes from the file length; return the frame count."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            raise _Corrupt("no RIFF/WAVE header")
        pos, align, data_at = 12, 0, 0
        while pos + 8 <= size:
            f.seek(pos)
            cid, clen = struct.unpack("<4sI", f.read(8))
            if cid == b"fmt ":
                fmt = f.read(16)
                if len(fmt) < 16:
                    raise _Corrupt("truncated fmt chunk")
                align = struct.unpack("<HHIIHH", fmt)[4]
            elif cid == b"data":
                data_at = pos + 8
                break
            pos += 8 + clen + (clen & 1)
        if not align or not data_at:
            raise _Corrupt("no fmt or data chunk")
        data_bytes = (size - data_at) // align * align
        if data_at - 8 + data_bytes > 0xFFFFFFFF:
            raise _Corrupt("longer than a WAV can be")
        f.truncate(data_at + data_bytes)
        f.seek(4)
        f.write(struct.pack("<I", data_at - 8 + data_bytes))
        f.seek(data_at - 4)
        f.write(struct.pack("<I", data_bytes))
        f.flush()
        os.fsync(f.fileno())
    try:
        frames = int(sf.info(str(path)).frames)
    except (RuntimeError, TypeError) as exc:  # soundfile's errors are RuntimeErrors
        raise _Corrupt(f"soundfile cannot read it: {exc}") from exc
    if frames != data_bytes // align:
        raise _Corrupt(f"soundfile reads {frames} frames, not {data_bytes // align}")
    return frames


def _rename_corrupt(path: Path) -> Path:
    target = path.with_name(path.name + ".corrupt")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt{n}")
    durable.replace(path, target)
    return target
