"""REST handlers for takes: list, one take, its name and notes, its ZIP archive, deletion.

A take is one synchronized recording session across devices. ``GET
/api/takes/{id}/archive`` streams a ZIP of its files: every original, every merge of
them, and a ``manifest.json``. The ZIP is written by the standard library's `zipfile`
to a sink that cannot seek (so each member carries a data descriptor, and ZIP64 records
when a member needs them), a block at a time in a worker thread, each block sent and
flushed before the next is read: neither the archive nor a member is ever held whole,
in memory or on disk, and a slow client slows the reading, not the server.
``DELETE /api/takes/{id}`` removes a stopped take with its recordings, files and rows,
announcing each recording as ``DELETE /api/audio/{id}`` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import msgspec
import tornado.iostream

from ..errors import Conflict, InvalidParameter, NotFound
from ..hub import Hub, Topic, skew_report
from ..protocol.codec import explain_validation_error
from ..storage import Catalog, Recording, RecordingStore, TranscriptStore
from .base import JsonHandler, check_id

__all__ = [
    "ARCHIVE_BLOCK",
    "Archive",
    "ArchiveMember",
    "TakeArchiveHandler",
    "TakeFiles",
    "TakeHandler",
    "TakeUpdate",
    "TakesHandler",
    "publish_take_updated",
    "write_zip",
]

log = logging.getLogger(__name__)

#: Bytes read (and sent) at a time while archiving: what one archive download holds.
ARCHIVE_BLOCK = 512 * 1024
#: What a file name in an archive keeps of a name; everything else becomes ``_``.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: The instants a ZIP header can hold (local time, two-second steps).
_ZIP_FIRST = (1980, 1, 1, 0, 0, 0)
_ZIP_LAST = (2107, 12, 31, 23, 59, 58)


class TakeUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of ``PUT /api/takes/{id}``."""

    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    notes: Annotated[str, msgspec.Meta(max_length=20_000)] | None = None


@dataclass(frozen=True, slots=True)
class ArchiveMember:
    """One recording's file in a take's archive.

    Attributes
    ----------
    recording : Recording
        Its catalog row.
    path : Path
        The file, absolute.
    name : str
        Its name in the archive (``<folder>/<device>-<recording id>.<ext>``).
    size : int
        Its size in bytes, read when the archive was planned.
    """

    recording: Recording
    path: Path
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class Archive:
    """What a take's archive holds, planned before its first byte is sent.

    Attributes
    ----------
    take : dict
        The take's row (as ``GET /api/takes/{id}`` has it, without its recordings).
    folder : str
        The folder every member sits in: the take's name, or its id, made file-safe.
    members : list of ArchiveMember
        The originals (by device name), then the merges (oldest first).
    manifest : bytes
        ``<folder>/manifest.json``: the take and every member's id, device, kind, file
        name, size and SHA-256 from the catalog.
    """

    take: dict[str, Any]
    folder: str
    members: list[ArchiveMember]
    manifest: bytes

    @property
    def filename(self) -> str:
        """The archive's own file name (``<folder>.zip``)."""
        return f"{self.folder}.zip"


class TakeFiles:
    """A take's files as a whole: planned into an archive, or deleted.

    Parameters
    ----------
    catalog : Catalog
        Where takes and recordings are catalogued.
    store : RecordingStore
        Where their files are.
    hub : Hub
        Knows the take being recorded, and announces deletions.
    transcripts : TranscriptStore
        Where the take's and its recordings' transcripts are (deleted with them).
    """

    def __init__(self, *, catalog: Catalog, store: RecordingStore, hub: Hub,
                 transcripts: TranscriptStore) -> None:
        self.catalog = catalog
        self.store = store
        self.hub = hub
        self.transcripts = transcripts

    async def archive(self, take_id: str) -> Archive:
        """Plan a take's archive: its members, their names and sizes, its manifest.

        Raises
        ------
        TakeNotFound
            No such take (404).
        NotFound
            A member's file is catalogued but missing (404): nothing is sent.
        """
        take, recordings = await self.catalog.take_members(take_id)
        folder = _file_safe(take.get("name") or "") or take_id
        paths = [self.store.absolute(r.path) for r in recordings]
        sizes = await asyncio.to_thread(_sizes, paths)
        missing = [r.id for r, size in zip(recordings, sizes, strict=True) if size is None]
        if missing:
            raise NotFound(f"take '{take_id}': the file of recording(s) "
                           f"{', '.join(repr(m) for m in missing)} is catalogued but missing; "
                           "nothing was archived")
        members = [ArchiveMember(r, path, f"{folder}/{_member_name(r)}", size or 0)
                   for r, path, size in zip(recordings, paths, sizes, strict=True)]
        manifest = {
            "take": take,
            "archived_at": time.time(),
            "members": [{
                "file": m.name, "recording_id": m.recording.id, "kind": m.recording.kind,
                "device_id": m.recording.device_id, "device_name": m.recording.device_name,
                "format": m.recording.format, "bytes": m.recording.bytes,
                "sha256": m.recording.sha256, "parents": list(m.recording.parents),
                "started_at": m.recording.started_at, "duration_s": m.recording.duration_s,
                "sample_rate": m.recording.sample_rate, "channels": m.recording.channels,
            } for m in members],
        }
        body = json.dumps(manifest, indent=2, allow_nan=False, default=str).encode()
        return Archive(take=take, folder=folder, members=members, manifest=body)

    async def delete(self, take_id: str) -> dict[str, Any]:
        """Delete a stopped take: its recordings (rows, then files) and the take itself.

        Each recording is announced (``Topic.RECORDING_DELETED``), as a single
        deletion is. A file that cannot be removed is logged and left (an orphan, which
        the start-up check reports); its row is gone either way.

        Returns
        -------
        dict
            ``deleted`` (the take's id), ``take`` (its row) and ``recordings`` (the ids
            deleted).

        Raises
        ------
        TakeNotFound
            No such take (404).
        Conflict
            The take is still recording (the hub's open take, 409); nothing is deleted.
            A take a stopped server left open is not: it is deleted.
        """
        if take_id == self.hub.active_take_id:
            raise Conflict(f"take '{take_id}' is still recording; stop it before deleting it")
        # Not the hub's take: one left open by a server that stopped mid-take can go too.
        take, recordings = await self.catalog.delete_take(take_id, open_ok=True)
        failures = await asyncio.to_thread(_remove_all, self.store,
                                           [r.path for r in recordings])
        failures += await asyncio.to_thread(
            _remove_all, self.store,
            [self.transcripts.relative("take", take_id),
             *(self.transcripts.relative("recording", r.id) for r in recordings)])
        for path, exc in failures:
            log.warning("deleted take %s but could not remove %s: %s", take_id, path, exc)
        for recording in recordings:
            self.hub.events.publish(Topic.RECORDING_DELETED, recording=recording.to_dict())
        self.hub.events.publish(Topic.TAKE_DELETED, take_id=take_id)
        return {"deleted": take_id, "take": take, "recordings": [r.id for r in recordings]}

    async def describe(self, take_id: str, *, name: str | None,
                       notes: str | None) -> dict[str, Any]:
        """Set a take's name and notes; every client is told (``Topic.TAKE_UPDATED``).

        Returns
        -------
        dict
            The take, as ``GET /api/takes/{id}`` shows it (without its skew).
        """
        take = await self.catalog.describe_take(take_id, name=name, notes=notes)
        publish_take_updated(self.hub, take)
        return take


def publish_take_updated(hub: Hub, take: Mapping[str, Any]) -> None:
    """Tell every client a take's row changed (``Topic.TAKE_UPDATED``), without its files."""
    hub.events.publish(Topic.TAKE_UPDATED, take={
        k: v for k, v in take.items() if k != "recordings"})


async def write_zip(archive: Archive, send: Callable[[bytes], Awaitable[None]], *,
                    block: int = ARCHIVE_BLOCK) -> None:
    """Write ``archive`` as a ZIP, passing its bytes to ``send`` a piece at a time.

    Members are stored (not compressed), each followed by a data descriptor (the sink
    cannot seek), with ZIP64 records where a size or offset needs them. Reading, the CRC
    and the ZIP's own writes run in worker threads; ``send`` runs on the loop, and the
    next block is read only once it has returned (back-pressure).

    Parameters
    ----------
    archive : Archive
        What to write (`TakeFiles.archive`).
    send : callable
        ``await send(data)``: deliver the next bytes of the ZIP.
    block : int
        Bytes read at a time.

    Raises
    ------
    OSError
        A member could not be read (the ZIP is incomplete then), or ``send`` raised one
        (``tornado.iostream.StreamClosedError``: the client left).
    """
    sink = _Chunks()
    # A ZipFile on a sink that cannot tell writes data descriptors (it never seeks back).
    zf = zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)

    async def drain() -> None:
        data = sink.take()
        if data:
            await send(data)

    manifest = _zip_info(f"{archive.folder}/manifest.json", time.localtime(),
                         len(archive.manifest))
    await asyncio.to_thread(zf.writestr, manifest, archive.manifest)
    await drain()
    for member in archive.members:
        info = _zip_info(member.name, time.localtime(member.recording.created_at), member.size)
        source: BinaryIO = await asyncio.to_thread(open, member.path, "rb")
        try:
            writer = await asyncio.to_thread(zf.open, info, "w")
            while await asyncio.to_thread(_copy_block, source, writer, block):
                await drain()
            await asyncio.to_thread(writer.close)
            await drain()
        finally:
            await asyncio.to_thread(source.close)
    await asyncio.to_thread(zf.close)
    await drain()


class TakesHandler(JsonHandler):
    """``GET /api/takes``: takes, newest first (``?limit=&offset=``), with their skew reports.

    Each take also says how many recordings it has.
    """

    def initialize(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def get(self) -> None:
        limit = self.int_arg("limit", 50, lo=1, hi=1000)
        offset = self.int_arg("offset", 0, lo=0, hi=2**62)
        items, total = await self.catalog.takes(limit, offset, originals=True)
        for take in items:
            take["skew"] = skew_report(take["started_at"], take.pop("originals"))
        self.write_json({"items": items, "total": total, "limit": limit, "offset": offset})


class TakeHandler(JsonHandler):
    """``GET /api/takes/{id}``: one take, its recordings and its start skew.

    ``PUT`` sets its name and notes; ``DELETE`` removes a stopped take with its
    recordings (409 while it records).
    """

    def initialize(self, catalog: Catalog, take_files: TakeFiles) -> None:
        self.catalog = catalog
        self.take_files = take_files

    async def get(self, take_id: str) -> None:
        take = await self.catalog.take(check_id(take_id, "take id"))
        take["skew"] = skew_report(take["started_at"], take["recordings"])
        self.write_json(take)

    async def put(self, take_id: str) -> None:
        try:
            update = msgspec.convert(self.json_body(), TakeUpdate)
        except msgspec.ValidationError as exc:
            raise InvalidParameter(f"invalid take: {explain_validation_error(str(exc))}") from None
        take = await self.take_files.describe(check_id(take_id, "take id"), name=update.name,
                                              notes=update.notes)
        take["skew"] = skew_report(take["started_at"], take["recordings"])
        self.write_json(take)

    async def delete(self, take_id: str) -> None:
        self.write_json(await self.take_files.delete(check_id(take_id, "take id")))


class TakeArchiveHandler(JsonHandler):
    """``GET /api/takes/{id}/archive``: the take's files and manifest as one streamed ZIP.

    A client that leaves mid-way ends the stream quietly; a member that cannot be read
    once the ZIP has begun cuts the connection, so that no client takes a truncated
    archive for a whole one.
    """

    def initialize(self, take_files: TakeFiles) -> None:
        self.take_files = take_files

    async def get(self, take_id: str) -> None:
        archive = await self.take_files.archive(check_id(take_id, "take id"))
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", f'attachment; filename="{archive.filename}"')
        self.set_header("Cache-Control", "private, no-store")
        try:
            await write_zip(archive, self._send)
        except tornado.iostream.StreamClosedError:
            log.debug("the client left during the archive of take %s", archive.take["id"])
        except OSError as exc:
            log.warning("the archive of take %s is cut short: %s", archive.take["id"], exc)
            connection = self.request.connection
            if connection is not None and hasattr(connection, "close"):
                connection.close()
        # Tornado finishes the response: a closed connection is written nothing.

    async def _send(self, data: bytes) -> None:
        self.write(data)
        await self.flush()  # back-pressure: the next block waits for this one to leave


class _Chunks:
    """A write-only sink that cannot tell or seek: it keeps what `zipfile` wrote until taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _copy_block(source: BinaryIO, writer: Any, size: int) -> int:
    """Read one block of ``source`` into the ZIP member ``writer``; its length (0: the end)."""
    data = source.read(size)
    if data:
        writer.write(data)
    return len(data)


def _zip_info(name: str, when: time.struct_time, size: int) -> zipfile.ZipInfo:
    stamp = (when.tm_year, when.tm_mon, when.tm_mday, when.tm_hour, when.tm_min, when.tm_sec)
    info = zipfile.ZipInfo(name, date_time=min(max(stamp, _ZIP_FIRST), _ZIP_LAST))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    info.file_size = size  # decides whether the member needs ZIP64 records
    return info


def _sizes(paths: Sequence[Path]) -> list[int | None]:
    """Each file's size, ``None`` for a missing one."""
    out: list[int | None] = []
    for path in paths:
        try:
            out.append(path.stat().st_size)
        except FileNotFoundError:
            out.append(None)
    return out


def _remove_all(store: RecordingStore, paths: Sequence[str]) -> list[tuple[str, OSError]]:
    """Remove catalogued files; the ones that could not be, with why."""
    failures = []
    for path in paths:
        try:
            store.remove(path)
        except OSError as exc:
            failures.append((path, exc))
    return failures


def _file_safe(text: str) -> str:
    """``text`` as a portable file name part: ASCII letters, digits, ``.``, ``_``, ``-``."""
    return _UNSAFE.sub("_", text).strip("._-")[:80]


def _member_name(recording: Recording) -> str:
    label = (_file_safe(recording.device_name or "") or _file_safe(recording.device_id or "")
             or recording.kind)
    if recording.kind == "merged":
        label = "merged"
    return f"{label}-{recording.id}.{_file_safe(recording.format) or 'bin'}"
