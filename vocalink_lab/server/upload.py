"""``POST /api/audio/upload``: one-shot multipart upload, streamed to disk.

Tornado's own multipart handling holds about four times the file in memory; here
the body is parsed as it arrives (``multipart.PushMultipartParser``, strict, with
limits) and the file part goes straight into a `Spool` that writes and hashes
off the event loop. Memory stays at a few MiB whatever the file size.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import multipart
import tornado.web

from ..errors import (
    BadRequest,
    InvalidParameter,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    VocalinkError,
)
from ..storage import RecordingStore, Spool
from .auth import Access
from .base import IdleTimer, JsonHandler, grant_of
from .ingest import UPLOAD_FIELDS, Ingestor, UploadMeta, check_uploader

__all__ = ["UploadHandler"]

#: Form fields besides the file, and their largest accepted size in bytes.
FIELDS = UPLOAD_FIELDS
FILE_FIELD = "file"
MAX_FIELD_BYTES = 1024
#: Room for the form's own bytes (boundaries, part headers, fields) beyond the file.
FORM_OVERHEAD = 128 * 1024


@tornado.web.stream_request_body
class UploadHandler(JsonHandler):
    """Receive ``multipart/form-data`` with a ``file`` part and recording metadata.

    Responds 201 with the new recording, or 200 with the stored one when the same
    ``recording_id`` was already uploaded with the same bytes (a retry). A device uploads
    with its key, in its own name only.
    """

    access = Access.DEVICE
    #: The form fields it takes besides the file.
    fields: tuple[str, ...] = FIELDS

    @property
    def uploader(self) -> str | None:
        """The device whose key this request presented (``None``: a controller)."""
        grant = grant_of(self.request)
        return grant.device_id if grant is not None else None

    def initialize(
        self, ingestor: Ingestor, store: RecordingStore, max_bytes: int, idle_timeout_s: float
    ) -> None:
        self.ingestor = ingestor
        self.store = store
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s
        self._parser: multipart.PushMultipartParser | None = None
        self._spool: Spool | None = None
        self._segment: multipart.MultipartSegment | None = None
        self._fields: dict[str, bytearray] = {}
        self._filename: str | None = None
        self._file_complete = False
        self._idle = IdleTimer(idle_timeout_s, self._on_idle)
        self._received = 0
        self._failed = False
        self._answering = False

    async def prepare(self) -> None:
        if self.request.method != "POST":
            return
        media, options = multipart.parse_options_header(
            self.request.headers.get("Content-Type", "")
        )
        if media.lower() != "multipart/form-data":
            raise UnsupportedMediaType(
                f"upload must be multipart/form-data, got '{media or 'no Content-Type'}'"
            )
        boundary = options.get("boundary")
        if not boundary:
            raise BadRequest("multipart/form-data Content-Type has no boundary")
        length = self._content_length()
        if length is not None and length > self.max_bytes + FORM_OVERHEAD:
            raise PayloadTooLarge(
                f"upload of {length} bytes exceeds the limit of {self.max_bytes} bytes"
            )
        # This request gets its own body limit. Tornado's is set above ours, because
        # Tornado drops the connection without an answer when its limit is crossed,
        # while `data_received` answers 413 at ours.
        self.request.connection.set_max_body_size(self.max_bytes + 2 * FORM_OVERHEAD)  # type: ignore[union-attr]
        # The idle timer bounds a stalled body, not the server's body_timeout_s (a total
        # for the whole body, which a long upload would outlast).
        self.request.connection.set_body_timeout(None)  # type: ignore[union-attr]
        try:
            self._parser = multipart.PushMultipartParser(
                boundary,
                content_length=-1 if length is None else length,
                max_header_size=4096,
                max_header_count=8,
                max_segment_count=len(self.fields) + 1,
                strict=True,
            )
        except (multipart.MultipartError, ValueError) as exc:
            raise BadRequest(f"invalid multipart boundary: {exc}") from None
        self._idle.start()

    def _content_length(self) -> int | None:
        return self.int_header("Content-Length")

    async def data_received(self, chunk: bytes) -> None:
        if self._failed or self._parser is None:
            return  # a refused request: Tornado drops the rest and closes
        self._idle.touch()
        self._received += len(chunk)
        try:
            for event in self._parser.parse(chunk):
                if self._failed:
                    return  # timed out or disconnected while a block was being written
                if isinstance(event, multipart.MultipartSegment):
                    self._start_segment(event)
                elif event is None:
                    self._end_segment()
                else:
                    await self._segment_data(event)
            # The file part has its own, more precise check; this one bounds the rest.
            if self._received > self.max_bytes + FORM_OVERHEAD:
                raise PayloadTooLarge(
                    f"upload body exceeds the limit of {self.max_bytes} bytes "
                    f"(+{FORM_OVERHEAD} for the form)"
                )
        except multipart.ParserLimitReached as exc:
            await self._fail(BadRequest(f"multipart body exceeds a limit: {exc}"))
        except multipart.MultipartError as exc:
            await self._fail(BadRequest(f"malformed multipart body: {exc}"))
        except VocalinkError as exc:
            await self._fail(exc)

    def _start_segment(self, segment: multipart.MultipartSegment) -> None:
        name = segment.name or ""
        self._segment = segment
        if name == FILE_FIELD:
            if self._spool is not None:
                raise BadRequest("the upload has more than one 'file' part")
            self._filename = _safe_filename(segment.filename)
            self._spool = self.store.spool()
        elif name in self.fields:
            if name in self._fields:
                raise BadRequest(f"form field '{name}' appears twice")
            self._fields[name] = bytearray()
        else:
            others = f" and any of {', '.join(self.fields)}" if self.fields else " only"
            raise BadRequest(
                f"unknown form field '{name[:64]}' (expected '{FILE_FIELD}'{others})")

    async def _segment_data(self, data: bytes) -> None:
        assert self._segment is not None
        name = self._segment.name
        if name == FILE_FIELD:
            assert self._spool is not None
            if self._spool.size + len(data) > self.max_bytes:
                raise PayloadTooLarge(f"file exceeds the limit of {self.max_bytes} bytes")
            await self._spool.write(data)
        else:
            buffer = self._fields[str(name)]
            buffer += data
            if len(buffer) > MAX_FIELD_BYTES:
                raise BadRequest(f"form field '{name}' is longer than {MAX_FIELD_BYTES} bytes")

    def _end_segment(self) -> None:
        if self._segment is not None and self._segment.name == FILE_FIELD:
            self._file_complete = True
        self._segment = None

    async def post(self) -> None:
        if self._failed or self._finished:
            return
        self._answering = True  # the whole body is here: it is stored, client or not
        self._idle.cancel()
        assert self._parser is not None
        try:
            try:
                self._parser.close()
            except multipart.MultipartError as exc:
                raise BadRequest(
                    f"multipart body is truncated or malformed after {self._received} bytes: {exc}"
                ) from None
            if self._spool is None or not self._file_complete:
                raise BadRequest(f"the upload has no '{FILE_FIELD}' part")
            meta = self._metadata()
            check_uploader(meta.device_id, self.uploader)
            size, digest = await self._spool.finish()
            meta = await self._before_ingest(meta, self._spool.path)
        except BaseException:
            await self._discard()
            raise
        recording, created = await self.ingestor.ingest(
            self._spool.path, size=size, sha256=digest, meta=meta
        )
        self._stored(recording.id)
        self.write_json(
            {
                "file_id": recording.id,
                "created": created,
                "duplicate": not created,
                "recording": recording.to_dict(),
            },
            status=201 if created else 200,
        )

    async def _before_ingest(self, meta: UploadMeta, path: Path) -> UploadMeta:
        """What to catalogue the received file with, once it is whole (a hook)."""
        return meta

    def _stored(self, recording_id: str) -> None:
        """The file is in the catalog as ``recording_id`` (a hook)."""

    def _metadata(self) -> UploadMeta:
        fields: dict[str, str] = {}
        problems: list[str] = []
        for name, raw in self._fields.items():
            try:
                fields[name] = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"form field '{name}' is not UTF-8 text")
        if problems:
            raise InvalidParameter("; ".join(problems), errors=problems)
        return UploadMeta.from_fields(fields, original_name=self._filename)

    # -- failure paths ---------------------------------------------------------------------

    async def _fail(self, error: VocalinkError) -> None:
        """Answer now, before the rest of the body; Tornado then closes the connection."""
        self._failed = True
        self._idle.cancel()
        await self._discard()
        if not self._finished:
            self.send_error(error.status, exc_info=(type(error), error, None))

    def _on_idle(self) -> None:
        declared = self.request.headers.get("Content-Length", "unknown")
        error = RequestTimeout(
            f"upload stalled: no data for {self.idle_timeout_s:g} s after {self._received} "
            f"of {declared} bytes"
        )
        _in_background(self._fail(error))

    async def _discard(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            await spool.discard()

    def on_connection_close(self) -> None:
        # The client went away mid-body: the partial file goes, and the request ends (the
        # base class fails Tornado's wait for the rest of the body; without it the handler
        # would wait for ever). Once `post` runs, the body was whole: it goes on.
        if self._answering:
            return
        self._failed = True
        self._idle.cancel()
        if self._spool is not None:
            _in_background(self._discard())
        super().on_connection_close()

    def on_finish(self) -> None:
        self._idle.cancel()


_BACKGROUND: set[asyncio.Task[None]] = set()


def _in_background(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` as a task that is kept alive until it is done."""
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _safe_filename(filename: str | None) -> str | None:
    """The client's file name, kept only as a label (never used as a path)."""
    if not filename:
        return None
    base = posixpath.basename(filename.replace("\\", "/"))
    cleaned = "".join(c for c in base if c.isprintable())[:255]
    return cleaned or None


