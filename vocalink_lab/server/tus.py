"""``/api/audio/uploads``: resumable uploads (tus 1.0).

Core protocol plus the creation, checksum, termination and expiration extensions. A device
creates an upload (``POST`` with ``Upload-Length`` and ``Upload-Metadata``), then sends its
bytes with ``PATCH`` from the offset ``HEAD`` reports, as many times as its connection
needs. Every acknowledged offset is fsynced first, and partial uploads live in
``uploads/tus/``, so they survive a server restart. The last byte turns the upload into a
recording through the same `Ingestor` as the one-shot upload; the answer (and any later
``HEAD``) carries ``Vocalink-Recording-Id`` and ``Vocalink-Sha256``, so a device knows the
server stored exactly its bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import logging
import time
import weakref
from typing import Any

import tornado.web

from .. import durable
from ..errors import (
    BadRequest,
    ChecksumMismatch,
    Conflict,
    Gone,
    InvalidParameter,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RequestTimeout,
    StorageError,
    UnsupportedMediaType,
    VocalinkError,
)
from ..storage import PartialUpload, ResumableStore, Spool, hash_file
from .auth import Access
from .base import IdleTimer, JsonHandler, grant_of
from .ingest import Ingestor, UploadMeta, check_uploader

__all__ = ["TUS_VERSION", "Resumable", "TusUploadHandler", "TusUploadsHandler"]

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,checksum,termination,expiration"
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
OFFSET_TYPE = "application/offset+octet-stream"
MAX_METADATA_BYTES = 4096
#: How long a request waits for another one on the same upload to finish.
LOCK_WAIT_S = 30.0
#: How long HEAD waits for a request that is still writing to the upload.
HEAD_WAIT_S = 2.0


class Resumable:
    """Resumable uploads: creation, locking, the running hash, completion, expiry.

    Loop-only. Disk work goes to worker threads.

    Parameters
    ----------
    store : ResumableStore
    ingestor : Ingestor
        Turns a completed upload into a recording.
    max_bytes : int
        Largest ``Upload-Length`` accepted.
    expiry_s : float
        Uploads untouched this long are removed by `sweep`.
    """

    def __init__(self, *, store: ResumableStore, ingestor: Ingestor, max_bytes: int,
                 expiry_s: float) -> None:
        self.store = store
        self.ingestor = ingestor
        self.max_bytes = max_bytes
        self.expiry_s = expiry_s
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        #: upload id -> (offset, SHA-256 of the bytes up to it): a running hash, so that
        #: completion need not read the file again (after a restart it must).
        self._hashes: dict[str, tuple[int, Any]] = {}

    def lock(self, upload_id: str) -> asyncio.Lock:
        """The lock that serialises the requests that change one upload."""
        return self._locks.setdefault(upload_id, asyncio.Lock())

    async def create(self, length: int, raw_metadata: str) -> PartialUpload:
        """A new upload; validates the length and the metadata first."""
        if length < 1:
            raise InvalidParameter("Upload-Length must be at least 1 byte")
        if length > self.max_bytes:
            raise PayloadTooLarge(
                f"Upload-Length {length} exceeds the limit of {self.max_bytes} bytes")
        metadata = parse_metadata(raw_metadata)
        UploadMeta.from_fields(metadata, original_name=metadata.get("filename"))
        upload = await asyncio.to_thread(self.store.create, length, metadata, raw_metadata)
        self._hashes[upload.id] = (0, hashlib.sha256())
        return upload

    async def get(self, upload_id: str) -> PartialUpload:
        """The upload; `NotFound` if unknown, `Gone` once expired."""
        upload = await asyncio.to_thread(self.store.load, upload_id)
        if upload is None:
            raise NotFound(f"no upload '{upload_id[:40]}'")
        if upload.state == "receiving" and upload.updated_at + self.expiry_s < time.time():
            raise Gone(f"upload '{upload_id}' expired after {self.expiry_s:g} s without data")
        return upload

    def expires(self, upload: PartialUpload) -> str:
        """The ``Upload-Expires`` value of an upload."""
        return email.utils.formatdate(upload.updated_at + self.expiry_s, usegmt=True)

    def running_hash(self, upload: PartialUpload) -> Any:
        """The SHA-256 of the upload so far, if this process saw every byte of it."""
        known = self._hashes.get(upload.id)
        if known is not None and known[0] == upload.offset:
            return known[1]
        self._hashes.pop(upload.id, None)
        return None

    def received(self, upload: PartialUpload, hasher: Any) -> None:
        """Remember the hash after a request (``None``: unknown, recompute at the end)."""
        if hasher is None:
            self._hashes.pop(upload.id, None)
        else:
            self._hashes[upload.id] = (upload.offset, hasher)

    async def complete(self, upload: PartialUpload, hasher: Any) -> None:
        """Every byte is here: catalog the file, record the outcome on the upload."""
        path = self.store.part_path(upload.id)
        if hasher is None:
            hasher = await asyncio.to_thread(hash_file, path)
        self._hashes.pop(upload.id, None)
        meta = UploadMeta.from_fields(upload.metadata,
                                      original_name=upload.metadata.get("filename"))
        try:
            recording, _ = await self.ingestor.ingest(path, size=upload.length,
                                                      sha256=hasher.hexdigest(), meta=meta)
        except VocalinkError as exc:
            if exc.status >= 500:
                # The server's fault (a full disk or catalog), not the file's: the upload
                # stays open, from offset 0 (its bytes went with the failed attempt), so
                # that the device sends it again once there is room. Never refused for it.
                self._hashes.pop(upload.id, None)
                with contextlib.suppress(VocalinkError, OSError):
                    await asyncio.to_thread(self.store.restart, upload)
                raise
            upload.state, upload.error = "failed", exc.message
            await asyncio.to_thread(self.store.save, upload)
            raise
        upload.state, upload.recording_id = "complete", recording.id
        upload.sha256 = recording.sha256
        await asyncio.to_thread(self.store.save, upload)

    async def sweep(self) -> int:
        """Remove the uploads untouched for longer than the expiry; return how many."""
        expired = await asyncio.to_thread(self.store.expired, time.time(), self.expiry_s)
        for upload_id in expired:
            if self.lock(upload_id).locked():
                continue  # a request is using it right now
            await asyncio.to_thread(self.store.remove, upload_id)
            self._hashes.pop(upload_id, None)
            log.info("removed expired upload %s", upload_id)
        return len(expired)


def _storage_error(exc: OSError) -> StorageError:
    """``exc`` as a `StorageError` naming no server path (507 for a full disk)."""
    if isinstance(exc, StorageError):
        return exc
    if durable.is_disk_full(exc):
        return durable.insufficient_storage(exc, "the upload")
    return StorageError(f"the upload could not be written: {exc.strerror or type(exc).__name__}")


def parse_metadata(raw: str) -> dict[str, str]:
    """Decode ``Upload-Metadata``: ``key base64value`` pairs separated by commas."""
    if len(raw) > MAX_METADATA_BYTES:
        raise BadRequest(f"Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes")
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = pair.partition(" ")
        if not key or key in out:
            raise BadRequest(f"Upload-Metadata has an empty or repeated key: '{pair[:40]}'")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):  # binascii.Error; a str not ASCII
            raise BadRequest(
                f"Upload-Metadata value of '{key[:40]}' is not base64-encoded UTF-8") from None
    return out


class _TusHandler(JsonHandler):
    """Tus headers on every answer, and the ``Tus-Resumable`` precondition.

    A device uploads with its key, in its own name only (an upload's id is a secret of
    the one who created it).
    """

    access = Access.DEVICE

    def initialize(self, resumable: Resumable, idle_timeout_s: float) -> None:
        self.resumable = resumable
        self.idle_timeout_s = idle_timeout_s

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Tus-Resumable", TUS_VERSION)

    def check_tus(self) -> None:
        if self.request.method == "OPTIONS":
            return
        version = self.request.headers.get("Tus-Resumable")
        if version != TUS_VERSION:
            raise PreconditionFailed(
                f"Tus-Resumable must be {TUS_VERSION}, got '{(version or 'nothing')[:40]}'",
                headers={"Tus-Version": TUS_VERSION})

    def options(self, *args: str) -> None:
        self.set_header("Tus-Version", TUS_VERSION)
        self.set_header("Tus-Extension", EXTENSIONS)
        self.set_header("Tus-Max-Size", str(self.resumable.max_bytes))
        self.set_header("Tus-Checksum-Algorithm", ",".join(CHECKSUMS))
        self.set_status(204)
        self.finish()


class TusUploadsHandler(_TusHandler):
    """``POST /api/audio/uploads`` creates an upload; ``OPTIONS`` says what is supported."""

    async def post(self) -> None:
        self.check_tus()
        if self.request.headers.get("Upload-Defer-Length"):
            raise BadRequest("Upload-Defer-Length is not supported: send Upload-Length")
        length = self.int_header("Upload-Length")
        if length is None:
            raise BadRequest("Upload-Length is required")
        if self.request.body:
            raise BadRequest("creation-with-upload is not supported: send the bytes with PATCH")
        metadata = self.request.headers.get("Upload-Metadata", "")
        grant = grant_of(self.request)
        if grant is not None and grant.device_id is not None:
            check_uploader(parse_metadata(metadata).get("device_id"), grant.device_id)
        upload = await self.resumable.create(length, metadata)
        location = f"{self.request.path.rstrip('/')}/{upload.id}"
        self.set_header("Location", location)
        self.set_header("Upload-Expires", self.resumable.expires(upload))
        self.write_json({"id": upload.id, "url": location, "offset": 0, "length": length},
                        status=201)


@tornado.web.stream_request_body
class TusUploadHandler(_TusHandler):
    """``HEAD`` (offset), ``PATCH`` (bytes from an offset), ``DELETE`` (terminate) one upload.

    ``DELETE`` of a completed upload forgets the upload, not the recording it became.
    """

    def initialize(self, resumable: Resumable, idle_timeout_s: float) -> None:
        super().initialize(resumable, idle_timeout_s)
        self.upload: PartialUpload | None = None
        self._spool: Spool | None = None
        self._lock: asyncio.Lock | None = None
        self._checksum: tuple[str, bytes, Any] | None = None
        self._hasher: Any = None
        self._before: Any = None
        self._start = 0
        self._failed = False
        self._closing: asyncio.Future[None] | None = None
        self._answering = False
        self._idle = IdleTimer(idle_timeout_s, self._on_idle)

    async def prepare(self) -> None:
        self.check_tus()
        if self.request.method != "PATCH":
            return
        media = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != OFFSET_TYPE:
            raise UnsupportedMediaType(f"PATCH must be {OFFSET_TYPE}, got '{media or 'nothing'}'")
        offset = self.int_header("Upload-Offset")
        if offset is None:
            raise BadRequest("Upload-Offset is required")
        self._checksum = self._parse_checksum()
        upload_id = self.path_args[0]
        lock = self.resumable.lock(upload_id)
        try:
            await asyncio.wait_for(lock.acquire(), LOCK_WAIT_S)
        except TimeoutError:
            raise Conflict("another request is still writing to this upload; retry") from None
        self._lock = lock  # only once held: `_unlock` must never release another's
        upload = self.upload = await self.resumable.get(upload_id)
        if upload.state == "failed":
            raise Conflict(f"upload was refused: {upload.error}")
        if offset != upload.offset:
            raise Conflict(f"Upload-Offset is {offset} but the upload is at {upload.offset}",
                           headers={"Upload-Offset": str(upload.offset)})
        declared = self.int_header("Content-Length")
        if declared is not None and offset + declared > upload.length:
            raise PayloadTooLarge(
                f"{declared} bytes from offset {offset} exceed Upload-Length {upload.length}")
        if upload.state == "complete":
            return  # a repeated last request: answered with the outcome, nothing written
        # Tornado's own limit only as a backstop, far above ours: it refuses a chunk that
        # crosses it with a bare 400 before `data_received` can answer 413 in our shape
        # (a declared Content-Length past Upload-Length was refused above).
        self.request.connection.set_max_body_size(  # type: ignore[union-attr]
            self.resumable.max_bytes + 1)
        # The idle timer below bounds a stalled body, not the server's body_timeout_s (a
        # total for the whole body, which a long upload would outlast).
        self.request.connection.set_body_timeout(None)  # type: ignore[union-attr]
        self._start = offset
        self._hasher = self.resumable.running_hash(upload)
        self._before = self._hasher.copy() if self._hasher is not None else None
        also = [self._checksum[2]] if self._checksum else []
        self._spool = Spool(self.resumable.store.part_path(upload_id), append=True,
                            hasher=self._hasher, also=also)
        self._idle.start()

    def _parse_checksum(self) -> tuple[str, bytes, Any] | None:
        raw = self.request.headers.get("Upload-Checksum")
        if raw is None:
            return None
        algorithm, _, encoded = raw.strip().partition(" ")
        if algorithm not in CHECKSUMS:
            raise BadRequest(f"unsupported checksum algorithm '{algorithm[:20]}' "
                             f"(supported: {', '.join(CHECKSUMS)})")
        try:
            expected = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:  # binascii.Error, or a str that is not ASCII
            raise BadRequest("Upload-Checksum value is not base64") from None
        return algorithm, expected, CHECKSUMS[algorithm]()

    async def data_received(self, chunk: bytes) -> None:
        if self._failed or self._spool is None or self.upload is None:
            return
        self._idle.touch()
        if self._start + self._spool.size + len(chunk) > self.upload.length:
            await self._fail(PayloadTooLarge(
                f"the body goes past Upload-Length {self.upload.length}"))
            return
        try:
            await self._spool.write(chunk)
        except OSError as exc:  # a full or failing disk (a StorageError is an OSError too)
            await self._fail(_storage_error(exc))

    async def patch(self, upload_id: str) -> None:
        self._answering = True
        upload = self.upload
        assert upload is not None
        if self._failed:
            return
        if upload.state != "complete":
            self._idle.cancel()
            await self._keep_received()
            if self._checksum is not None:
                await self._verify_checksum()
            if upload.offset == upload.length:
                await self.resumable.complete(upload, self._hasher)
        self._answer_with_offset(upload)
        self.set_status(204)
        self.finish()

    async def _keep_received(self) -> None:
        """Fsync what this request brought, and record the new offset."""
        upload, spool = self.upload, self._spool
        assert upload is not None and spool is not None
        self._spool = None
        try:
            await spool.finish()
            upload.offset = self._start + spool.size
            upload.updated_at = time.time()
            self.resumable.received(upload, self._hasher)
            await asyncio.to_thread(self.resumable.store.save, upload)
        except OSError as exc:
            # The file holds what reached the disk (its size is the offset a HEAD reports);
            # the running hash may count bytes that did not: the end hashes the file again.
            self.resumable.received(upload, None)
            raise _storage_error(exc) from exc

    async def _verify_checksum(self) -> None:
        upload = self.upload
        assert upload is not None and self._checksum is not None
        algorithm, expected, hasher = self._checksum
        if hasher.digest() == expected:
            return
        # The request's bytes are dropped: the upload goes back to where it was.
        await asyncio.to_thread(self.resumable.store.truncate, upload.id, self._start)
        upload.offset = self._start
        self.resumable.received(upload, self._before)
        raise ChecksumMismatch(f"the {algorithm} of the request body does not match "
                               "Upload-Checksum; its bytes were not kept")

    def _answer_with_offset(self, upload: PartialUpload) -> None:
        self.set_header("Upload-Offset", str(upload.offset))
        if upload.state == "complete":
            self.set_header("Vocalink-Recording-Id", upload.recording_id or "")
            self.set_header("Vocalink-Sha256", upload.sha256 or "")
        else:
            self.set_header("Upload-Expires", self.resumable.expires(upload))

    async def head(self, upload_id: str) -> None:
        # A PATCH cut a moment ago may still be saving what it got: wait for it (briefly;
        # a live transfer can hold the lock for long), so the offset is the final one.
        lock = self.resumable.lock(upload_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HEAD_WAIT_S):
                await lock.acquire()
                lock.release()
        upload = await self.resumable.get(upload_id)
        self.set_header("Upload-Length", str(upload.length))
        if upload.raw_metadata:
            self.set_header("Upload-Metadata", upload.raw_metadata)
        self._answer_with_offset(upload)
        self.set_header("Cache-Control", "no-store")
        self.finish()

    async def delete(self, upload_id: str) -> None:
        async with self.resumable.lock(upload_id):
            upload = await self.resumable.get(upload_id)
            await asyncio.to_thread(self.resumable.store.remove, upload.id)
            self.resumable.received(upload, None)
        self.set_status(204)
        self.finish()

    # -- interrupted requests: keep every byte that arrived --------------------------------

    async def _fail(self, error: VocalinkError) -> None:
        self._failed = True
        self._idle.cancel()
        if self._spool is not None:
            try:
                await self._keep_received()
            except StorageError as exc:
                log.error("could not keep the bytes of upload %s: %s", self.path_args[0], exc)
                error = exc  # the client must ask for the offset (HEAD) before going on
        if not self._finished:
            self.send_error(error.status, exc_info=(type(error), error, None))

    def on_connection_close(self) -> None:
        # The client went away mid-PATCH: what arrived stays, at a durable offset, and
        # the lock is released only then, so a retry's HEAD sees the true offset.
        self._failed = True
        self._idle.cancel()
        if self._closing is None:
            if self._spool is not None:
                self._closing = asyncio.ensure_future(self._keep_then_unlock())
            elif not self._answering:
                self._unlock()  # prepare took the lock, and no method will run to release it
        # Ends the request: else Tornado waits for the rest of the body forever.
        super().on_connection_close()

    async def _keep_then_unlock(self) -> None:
        try:
            await self._keep_received()
        except Exception:
            log.exception("could not keep the bytes of an interrupted upload")
        finally:
            self._unlock()

    def on_finish(self) -> None:
        self._idle.cancel()
        if self._closing is None:
            self._unlock()

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None and lock.locked():
            lock.release()

    def _on_idle(self) -> None:
        error = RequestTimeout(f"upload stalled: no data for {self.idle_timeout_s:g} s; "
                               "the bytes received so far are kept")
        self._closing = asyncio.ensure_future(self._fail_then_unlock(error))

    async def _fail_then_unlock(self, error: VocalinkError) -> None:
        try:
            await self._fail(error)
        finally:
            self._unlock()
