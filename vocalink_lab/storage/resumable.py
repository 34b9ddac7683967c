"""Resumable uploads on disk (tus): partial files that survive a server restart.

``uploads/tus/<id>.part`` holds the bytes received so far (its size is the upload's
offset) and ``<id>.json`` what the client said at creation and where the upload is.
A completed upload keeps its ``.json`` (with the recording id it became) until it
expires, so that a client that lost the last response can still learn the outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import durable
from ..errors import StorageError, TooBusy

__all__ = ["PartialUpload", "ResumableStore", "UPLOAD_ID_PATTERN"]

#: Upload ids are 32 lowercase hex digits (never a path).
UPLOAD_ID_PATTERN = r"[0-9a-f]{32}"
_ID_RE = re.compile(UPLOAD_ID_PATTERN)


@dataclass
class PartialUpload:
    """One resumable upload.

    Attributes
    ----------
    id : str
    length : int
        Total bytes announced at creation (``Upload-Length``).
    metadata : dict of str to str
        Decoded ``Upload-Metadata``.
    raw_metadata : str
        The header as sent, echoed by HEAD.
    created_at, updated_at : float
        Unix times; ``updated_at`` moves with every byte received (expiry counts from it).
    state : {"receiving", "complete", "failed"}
    offset : int
        Bytes stored so far (read from the file, not persisted in the JSON).
    recording_id, sha256, error : str or None
        The outcome, once complete (or failed).
    """

    id: str
    length: int
    metadata: dict[str, str] = field(default_factory=dict)
    raw_metadata: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    state: str = "receiving"
    recording_id: str | None = None
    sha256: str | None = None
    error: str | None = None
    offset: int = 0

    def to_json(self) -> dict[str, Any]:
        """The persisted fields (the offset is the file's size, not stored)."""
        data = asdict(self)
        data.pop("offset")
        return data


class ResumableStore:
    """The ``uploads/tus/`` folder. Synchronous: call it with ``asyncio.to_thread``.

    Parameters
    ----------
    uploads_dir : Path
        The data dir's ``uploads/``.
    max_receiving : int, optional
        Uploads still receiving at most (unlimited by default): `create` refuses one
        more with `TooBusy`. An upload counts until it completes, fails, is removed, or
        has been untouched for ``expiry_s``.
    expiry_s : float, optional
        When an untouched upload stops counting (it expires, and is swept).
    """

    def __init__(self, uploads_dir: Path, *, max_receiving: int | None = None,
                 expiry_s: float | None = None) -> None:
        self.dir = uploads_dir / "tus"
        self.max_receiving = max_receiving
        self.expiry_s = expiry_s
        self._lock = threading.Lock()
        #: id -> updated_at of the uploads still receiving; read from disk on the first
        #: `create` that needs it (never at start-up), then kept current.
        self._receiving: dict[str, float] | None = None

    def _ensure_dir(self) -> None:
        # Made with the first upload, so that a data dir shows only what is used.
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.dir}: {exc}") from exc

    def part_path(self, upload_id: str) -> Path:
        """The file that holds the upload's bytes."""
        if not _ID_RE.fullmatch(upload_id):
            raise StorageError(f"'{upload_id[:40]}' is not an upload id")
        return self.dir / f"{upload_id}.part"

    def _meta_path(self, upload_id: str) -> Path:
        return self.part_path(upload_id).with_suffix(".json")

    def create(self, length: int, metadata: dict[str, str], raw_metadata: str) -> PartialUpload:
        """A new, empty upload (its files created and fsynced).

        Raises
        ------
        TooBusy
            ``max_receiving`` uploads are receiving already (503); nothing was created.
        """
        self._ensure_dir()
        now = time.time()
        upload = PartialUpload(id=uuid.uuid4().hex, length=length, metadata=metadata,
                               raw_metadata=raw_metadata, created_at=now, updated_at=now)
        if self.max_receiving is not None:
            with self._lock:
                receiving = self._count_receiving(now)
                if receiving >= self.max_receiving:
                    raise TooBusy(
                        f"{receiving} uploads are in progress, the most this server takes "
                        f"(VOCALINK_MAX_RESUMABLE_UPLOADS={self.max_receiving}); finish or "
                        "delete one, or try again later", retry_after_s=30)
                self._track(upload)  # counted from now: a concurrent create sees it
        try:
            with open(self.part_path(upload.id), "xb") as part:
                os.fsync(part.fileno())
            self.save(upload)
        except BaseException as exc:
            with self._lock:
                if self._receiving is not None:
                    self._receiving.pop(upload.id, None)
            # Nothing half-made stays behind (the record is written last, atomically).
            with contextlib.suppress(OSError):
                self.part_path(upload.id).unlink()
            if isinstance(exc, OSError) and durable.is_disk_full(exc):
                raise durable.insufficient_storage(exc, "the upload") from exc
            raise
        return upload

    def _count_receiving(self, now: float) -> int:
        """Uploads receiving and not expired. Holds ``_lock``."""
        if self._receiving is None:
            self._receiving = {}
            for upload_id in self.ids():
                try:
                    upload = self.load(upload_id)
                except StorageError:
                    continue  # unreadable: it receives nothing either
                if upload is not None and upload.state == "receiving":
                    self._receiving[upload_id] = upload.updated_at
        if self.expiry_s is None:
            return len(self._receiving)
        return sum(1 for at in self._receiving.values() if at + self.expiry_s >= now)

    def _track(self, upload: PartialUpload) -> None:
        """Keep the count of receiving uploads current. Holds ``_lock``."""
        if self._receiving is None:
            return  # not counted yet: the first count reads the disk
        if upload.state == "receiving":
            self._receiving[upload.id] = upload.updated_at
        else:
            self._receiving.pop(upload.id, None)

    def load(self, upload_id: str) -> PartialUpload | None:
        """The upload, with its offset read from its file; ``None`` if unknown."""
        if not _ID_RE.fullmatch(upload_id):
            return None
        try:
            data = json.loads(self._meta_path(upload_id).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StorageError(f"upload {upload_id} has an unreadable record: {exc}") from exc
        upload = PartialUpload(**data)
        try:
            upload.offset = self.part_path(upload_id).stat().st_size
        except FileNotFoundError:
            # Complete: the bytes became a recording. Failed: they all arrived and were
            # refused (not audio); the offset stays where it was, it never goes back.
            upload.offset = upload.length if upload.state in ("complete", "failed") else 0
        return upload

    def save(self, upload: PartialUpload) -> None:
        """Write the upload's record atomically (temporary file, fsync, rename)."""
        # Compact and in field order, as this record has always been written.
        durable.write_json_atomic(self._meta_path(upload.id), upload.to_json(), indent=None,
                                  sort_keys=False)
        with self._lock:
            self._track(upload)

    def restart(self, upload: PartialUpload) -> None:
        """Start the upload over from offset 0 (its bytes were lost to a server fault)."""
        with open(self.part_path(upload.id), "wb") as part:
            os.fsync(part.fileno())
        upload.offset = 0
        self.save(upload)

    def truncate(self, upload_id: str, offset: int) -> None:
        """Cut the upload back to ``offset`` bytes (a request whose checksum failed)."""
        with open(self.part_path(upload_id), "r+b") as part:
            part.truncate(offset)
            os.fsync(part.fileno())

    def remove(self, upload_id: str) -> None:
        """Forget the upload: its bytes (if still here) and its record."""
        self.part_path(upload_id).unlink(missing_ok=True)
        self._meta_path(upload_id).unlink(missing_ok=True)
        durable.fsync_dir(self.dir)
        with self._lock:
            if self._receiving is not None:
                self._receiving.pop(upload_id, None)

    def ids(self) -> list[str]:
        """Every upload with a record."""
        if not self.dir.exists():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if _ID_RE.fullmatch(p.stem))

    def expired(self, now: float, expiry_s: float) -> list[str]:
        """Ids of the uploads untouched for more than ``expiry_s`` seconds."""
        out = []
        for upload_id in self.ids():
            try:
                upload = self.load(upload_id)
            except StorageError:
                continue  # reported, never removed on a guess
            if upload is not None and upload.updated_at + expiry_s < now:
                out.append(upload_id)
        return out

