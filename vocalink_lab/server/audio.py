"""REST handlers for recordings: list, download (HTTP Range), metadata, delete."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import BinaryIO

from ..audio import MEDIA_TYPES
from ..errors import InvalidParameter, NotFound, RangeNotSatisfiable
from ..hub import Hub, Topic
from ..storage import Catalog, Recording, RecordingStore, TranscriptStore
from .base import MAX_HEADER_DIGITS, JsonHandler, check_id, header_int

__all__ = ["AudioFileHandler", "AudioListHandler", "AudioMetaHandler", "parse_range"]

log = logging.getLogger(__name__)

READ_BLOCK = 256 * 1024
_RANGE = re.compile(r"bytes=([^,-]*)-([^,-]*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse a single-range ``Range`` header into ``(start, end)`` (end exclusive).

    Returns ``None`` when the whole file should be sent: no header, a syntax we
    ignore as RFC 9110 allows (several ranges, another unit, garbage).

    Raises
    ------
    RangeNotSatisfiable
        The range lies outside the file, or its positions are digits but not 1 to 19
        ASCII ones (a superscript two, 5,000 digits; `header_int`): the error carries
        ``Content-Range: bytes */size`` for the response.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if not all(part == "" or part.isdigit() for part in (first, last)):
        return None  # not numbers at all: garbage, ignored
    start, stop = (None if part == "" else header_int(part) for part in (first, last))
    if (first and start is None) or (last and stop is None):
        raise RangeNotSatisfiable(
            f"range '{header[:80]}' must hold positions of at most {MAX_HEADER_DIGITS} "
            "ASCII digits", size=size)
    if start is None:  # the last N bytes
        assert stop is not None
        if stop == 0:
            raise RangeNotSatisfiable(f"range '{header}' is empty", size=size)
        return max(0, size - stop), size
    end = size if stop is None else min(stop + 1, size)
    if start >= size or end <= start:
        raise RangeNotSatisfiable(
            f"range '{header}' is outside the file's {size} bytes", size=size
        )
    return start, end


class AudioListHandler(JsonHandler):
    """``GET /api/audio/list?device_id=&take_id=&kind=&limit=&offset=&order=``."""

    def initialize(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def get(self) -> None:
        kind = self.get_query_argument("kind", None)
        order = self.get_query_argument("order", "newest")
        if order not in ("newest", "oldest"):
            raise InvalidParameter(f"order must be 'newest' or 'oldest', got '{order[:40]}'")
        page = await self.catalog.query(
            device_id=self.id_arg("device_id"),
            take_id=self.id_arg("take_id"),
            kind=kind,
            limit=self.int_arg("limit", 100, lo=1, hi=1000),
            offset=self.int_arg("offset", 0, lo=0, hi=2**62),
            newest_first=order == "newest",
        )
        self.write_json(page.to_dict())


class AudioMetaHandler(JsonHandler):
    """``GET /api/audio/{id}/meta``: the recording's catalog row."""

    def initialize(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def get(self, recording_id: str) -> None:
        recording = await self.catalog.get(check_id(recording_id, "recording id"))
        self.write_json(recording.to_dict())


class AudioFileHandler(JsonHandler):
    """``GET``/``HEAD /api/audio/{id}``: the file, with HTTP Range; ``DELETE`` removes it."""

    def initialize(self, catalog: Catalog, store: RecordingStore, hub: Hub,
                   transcripts: TranscriptStore) -> None:
        self.catalog = catalog
        self.store = store
        self.hub = hub
        self.transcripts = transcripts

    async def head(self, recording_id: str) -> None:
        await self._serve(recording_id, body=False)

    async def get(self, recording_id: str) -> None:
        await self._serve(recording_id, body=True)

    async def _serve(self, recording_id: str, *, body: bool) -> None:
        recording = await self.catalog.get(check_id(recording_id, "recording id"))
        path = self.store.absolute(recording.path)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise NotFound(
                f"recording '{recording.id}' is catalogued but its file {recording.path} is missing"
            ) from None
        etag = f'"{recording.sha256}"'
        self.set_header("ETag", etag)
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Cache-Control", "private, max-age=0")
        if self.request.headers.get("If-None-Match") == etag:
            self.set_status(304)
            self.finish()
            return
        byte_range = parse_range(self.request.headers.get("Range"), size)
        start, end = byte_range or (0, size)
        if byte_range is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        media_type = MEDIA_TYPES.get(recording.format, "application/octet-stream")
        self.set_header("Content-Type", media_type)
        self.set_header("Content-Disposition",
                        f'attachment; filename="{_download_name(recording)}"')
        self.set_header("Content-Length", str(end - start))
        if body:
            await self._stream(path, start, end)
        self.finish()

    async def _stream(self, path: Path, start: int, end: int) -> None:
        f: BinaryIO = await asyncio.to_thread(open, path, "rb")
        try:
            await asyncio.to_thread(f.seek, start)
            remaining = end - start
            while remaining > 0:
                block = await asyncio.to_thread(f.read, min(READ_BLOCK, remaining))
                if not block:
                    break
                remaining -= len(block)
                self.write(block)
                await self.flush()  # back-pressure: never buffer the whole file
        finally:
            await asyncio.to_thread(f.close)

    async def delete(self, recording_id: str) -> None:
        recording = await self.catalog.delete(check_id(recording_id, "recording id"))
        # The row goes first: a crash in between leaves an orphan file (reported), not a
        # row pointing at nothing.
        try:
            await asyncio.to_thread(self.store.remove, recording.path)
            await asyncio.to_thread(self.transcripts.remove_file, "recording", recording.id)
        except OSError as exc:
            log.warning("deleted row %s but could not remove %s or its transcript: %s",
                        recording.id, recording.path, exc)
        self.hub.events.publish(Topic.RECORDING_DELETED, recording=recording.to_dict())
        self.write_json({"deleted": recording.id, "recording": recording.to_dict()})


def _download_name(recording: Recording) -> str:
    return f"{recording.id}.{recording.format}"
