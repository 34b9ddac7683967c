"""Recording files under the data dir, written atomically.

Layout: ``recordings/<take_id>/<recording_id>.<ext>`` for originals, ``derived/``
for enhanced and merged files, ``uploads/`` for uploads in progress. A file is
written under a temporary name in ``uploads/``, fsynced, renamed into place (the
directory fsynced too), and only then catalogued. Nothing here deletes a file at
start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .. import durable
from ..durable import hash_file  # part of this module's API: the server hashes with it
from ..errors import StorageError

__all__ = ["NO_TAKE", "RecordingStore", "Spool", "hash_file"]

#: Folder of recordings that belong to no take.
NO_TAKE = "_no_take"
_PART = ".part"


class Spool:
    """A file filled from the event loop, written and hashed off it.

    Chunks are gathered (not copied) until they make ``block_size`` bytes; each
    batch is written and hashed in a worker thread while the next one is being
    received, so memory stays at about two blocks whatever the file size.

    Parameters
    ----------
    path : Path
        The file to create (or, with ``append``, to extend).
    block_size : int
        Bytes handed to the writer thread at a time.
    append : bool
        Extend an existing file instead of creating a new one (resumable uploads).
    hasher : hashlib hash, optional
        The running hash to update (a resumed upload's); a new SHA-256 by default.
    also : sequence of hashlib hashes
        More hashes fed the same bytes (e.g. a tus ``Upload-Checksum`` of one request).
    """

    def __init__(self, path: Path, *, block_size: int = 1 << 20, append: bool = False,
                 hasher: Any = None, also: Sequence[Any] = ()) -> None:
        self.path = path
        self.size = 0
        self._block_size = block_size
        self._mode: Literal["ab", "xb"] = "ab" if append else "xb"
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._file: BinaryIO | None = None
        self._hash = hasher if hasher is not None else hashlib.sha256()
        self._hashes = [self._hash, *also]
        self._pending: asyncio.Future[None] | None = None
        self._closed = False
        #: Why the writer closed the file, if it failed (raised again by later writes).
        self._error: StorageError | None = None

    async def write(self, data: bytes) -> None:
        """Append ``data``, which is kept, not copied: do not mutate it.

        Returns once the data is buffered, after waiting for the writer when two
        blocks are in hand (back-pressure).
        """
        if self._closed:
            # The writer thread may have failed (a full disk) since the last block: say
            # that, not that the spool is closed.
            raise self._error if self._error is not None else StorageError(
                "write to a closed spool")
        self._chunks.append(data)
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered >= self._block_size:
            await self._flush_buffer()

    async def _flush_buffer(self) -> None:
        if self._pending is not None:
            await self._pending
            self._pending = None
        if self._chunks:
            chunks, self._chunks, self._buffered = self._chunks, [], 0
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._write_chunks, chunks))

    def _write_chunks(self, chunks: list[bytes]) -> None:
        try:
            if self._file is None:
                self._file = open(self.path, self._mode)  # noqa: SIM115 - closed in finish
            for chunk in chunks:
                self._file.write(chunk)
                for hasher in self._hashes:
                    hasher.update(chunk)
        except OSError as exc:
            raise self._failed(exc) from exc

    async def finish(self) -> tuple[int, str]:
        """Write what is left, fsync and close; return ``(size, sha256 hex)``."""
        await self._flush_buffer()
        if self._pending is not None:
            await self._pending
            self._pending = None
        await asyncio.to_thread(self._sync_close)
        self._closed = True
        return self.size, self._hash.hexdigest()

    def _sync_close(self) -> None:
        try:
            if self._file is None:
                self._file = open(self.path, self._mode)  # noqa: SIM115 - nothing was written
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: OSError) -> StorageError:
        """Close the file (what reached the disk stays) and say why, naming no server path.

        A full disk (``ENOSPC``, ``EDQUOT``) is `InsufficientStorage` (507); any other
        failure a plain `StorageError`. Whoever owns the file decides what stays: a new
        upload's spool is discarded, a resumable one keeps what reached the disk.
        """
        self._closed = True
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if isinstance(exc, StorageError):
            error = exc
        elif durable.is_disk_full(exc):
            error = durable.insufficient_storage(exc, "the file")
        else:
            error = StorageError("the file could not be written: "
                                 f"{exc.strerror or type(exc).__name__}")
        self._error = error
        return error

    async def discard(self) -> None:
        """Stop and delete the temporary file (idempotent)."""
        self._closed = True
        self._chunks.clear()
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(OSError):
                await pending
        await asyncio.to_thread(self._close_and_unlink)

    def _close_and_unlink(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class RecordingStore:
    """Where recording files live under ``data_dir``.

    Methods that touch the disk are synchronous: call them with
    ``asyncio.to_thread`` from the event loop.
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.root = Path(data_dir).resolve()
        self.recordings_dir = self.root / "recordings"
        self.derived_dir = self.root / "derived"
        self.uploads_dir = self.root / "uploads"

    def ensure_dirs(self) -> None:
        """Create the data dir's folders if missing (never removes anything)."""
        for folder in (self.root, self.recordings_dir, self.derived_dir, self.uploads_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {folder}: {exc}") from exc

    def spool(self, prefix: str = "upload") -> Spool:
        """A new temporary file in ``uploads/``."""
        return Spool(self.uploads_dir / f"{prefix}-{uuid.uuid4().hex}{_PART}")

    def commit(
        self, temp: Path, *, recording_id: str, ext: str, take_id: str | None = None,
        derived: bool = False,
    ) -> str:
        """Move a finished, fsynced temporary file into place; return its relative path.

        An existing file is never overwritten: if the target name is taken (say
        by a file a crash left uncatalogued), a numbered name is used instead.

        Raises
        ------
        InsufficientStorage
            The disk is full (no room for the folder or the directory entry); the file is
            not in place (``temp`` is the caller's to remove).
        OSError
            Another failure, the file not in place either.
        """
        folder = self.derived_dir if derived else self.recordings_dir / (take_id or NO_TAKE)
        target: Path | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            name = folder / f"{recording_id}.{ext}"
            n = 1
            while True:
                try:
                    _move_no_clobber(temp, name)
                    break
                except FileExistsError:
                    n += 1
                    name = folder / f"{recording_id}-{n}.{ext}"
            target = name
            durable.fsync_dir(folder)
            durable.fsync_dir(temp.parent)
        except OSError as exc:
            if target is not None:  # moved, but not durably: out again, nothing half-done
                with contextlib.suppress(OSError):
                    target.unlink()
            if durable.is_disk_full(exc):
                raise durable.insufficient_storage(exc, "the recording") from exc
            raise
        return target.relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        """The absolute path of a catalogued file, refusing paths outside the data dir."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"path '{relative}' is outside the data dir")
        return path

    def remove(self, relative: str) -> None:
        """Delete a catalogued file (missing is fine)."""
        path = self.absolute(relative)
        path.unlink(missing_ok=True)
        durable.fsync_dir(path.parent)

    def stored_files(self) -> list[str]:
        """Relative paths of every file under ``recordings/`` and ``derived/``."""
        out = []
        for folder in (self.recordings_dir, self.derived_dir):
            if folder.exists():
                out += [p.relative_to(self.root).as_posix()
                        for p in folder.rglob("*") if p.is_file()]
        return sorted(out)

    def partial_uploads(self) -> list[str]:
        """Relative paths of the files in ``uploads/`` (interrupted or in progress)."""
        if not self.uploads_dir.exists():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in self.uploads_dir.iterdir()
                      if p.is_file())


def _move_no_clobber(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, raising FileExistsError instead of overwriting."""
    try:
        os.link(source, target)  # atomic, and fails if the target exists
    except FileExistsError:
        raise
    except OSError:
        # Filesystems without hard links (FAT on a USB drive): the store's callers
        # serialise commits per recording id, so check-then-rename is safe here.
        if target.exists():
            raise FileExistsError(target) from None
        os.replace(source, target)
        return
    source.unlink()
