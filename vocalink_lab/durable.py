"""Files that survive a crash or a power cut: atomic replacement, fsync'd directories, hashes.

The device agent (spool, outbox, identity) and the server's storage (resumable uploads,
recording files) keep their state the same way, with these functions:

- a small file is replaced whole: written under a temporary name next to it, fsync'd, renamed
  over the old one, and the directory fsync'd, so that a reader finds the old content or the
  new one, never a mix or nothing;
- a rename or a removal counts only once the directory holding it is fsync'd (`fsync_dir`);
- a file's SHA-256 is computed by streaming it in blocks (`hash_file`), never read whole.

A write that fails for want of room (``ENOSPC``, ``EDQUOT``: `is_disk_full`) raises
`InsufficientStorage` (an `OSError`, and a `StorageError`), naming the file but not its folder.

Standard library and `vocalink_lab.errors` only, so that the agent's base install and the
storage layer can share it. Every function blocks on the disk: from an event loop, call it
with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from .errors import InsufficientStorage

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "BLOCK_SIZE",
    "NO_ROOM_ERRNOS",
    "TMP_SUFFIX",
    "file_sha256",
    "fsync_dir",
    "fsync_file",
    "hash_file",
    "insufficient_storage",
    "is_disk_full",
    "replace",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

#: Bytes read at a time when hashing a file.
BLOCK_SIZE = 1 << 20
#: Appended to a file's name for its temporary copy while it is being replaced. Directory
#: scans skip names ending with it: a crash can leave one behind, and the next write of the
#: same file replaces it.
TMP_SUFFIX = ".tmp"
#: The errno values of a write that failed for want of room: the disk is full, or the
#: user's quota on it is used up.
NO_ROOM_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)


def is_disk_full(exc: BaseException) -> TypeGuard[OSError]:
    """Whether ``exc`` is an `OSError` saying that the disk (or the quota) has no room left.

    Parameters
    ----------
    exc : BaseException
        What a write raised.

    Returns
    -------
    bool
        True for ``ENOSPC`` and ``EDQUOT`` (and for an `InsufficientStorage` already made).
    """
    return isinstance(exc, InsufficientStorage) or (
        isinstance(exc, OSError) and exc.errno in NO_ROOM_ERRNOS)


def insufficient_storage(exc: OSError, what: str) -> InsufficientStorage:
    """The error a full disk reads as: ``what`` could not be written, and why.

    Parameters
    ----------
    exc : OSError
        The failed write (`is_disk_full`); an `InsufficientStorage` is returned as is.
    what : str
        What could not be written, in words that name no server path ("the file",
        "upload.json"): the message reaches clients.

    Returns
    -------
    InsufficientStorage
        Its ``errno`` is the original's, so that code testing for ``ENOSPC`` still works.
    """
    if isinstance(exc, InsufficientStorage):
        return exc
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
    error = InsufficientStorage(f"the disk is full: {what} could not be written: {reason}; "
                                "free some room and try again")
    error.errno = exc.errno
    return error


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (creations, renames, removals) durable.

    Parameters
    ----------
    path : str or Path
        The directory.

    Notes
    -----
    A no-op outside POSIX: Windows cannot open a directory, and NTFS journals renames.
    """
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Make a file's content durable, given its path (e.g. one another library wrote).

    Parameters
    ----------
    path : str or Path
        The file.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(source: str | Path, target: str | Path) -> None:
    """Rename ``source`` to ``target`` (replacing it), durably.

    Both directories are fsync'd (once when they are the same), so that after a crash the
    file is in one place, not in both or neither.

    Parameters
    ----------
    source : str or Path
        An existing file, fsync'd already if its content matters.
    target : str or Path
        Its new name, on the same filesystem; an existing file there is replaced.
    """
    source, target = Path(source), Path(target)
    os.replace(source, target)
    fsync_dir(target.parent)
    if source.parent.resolve() != target.parent.resolve():
        fsync_dir(source.parent)


def write_bytes_atomic(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, fsync the directory.

    A crash at any moment leaves either the previous file or the new one (and perhaps the
    temporary ``<name>.tmp``, which the next write replaces).

    Parameters
    ----------
    path : str or Path
        The file to create or replace. Its directory must exist.
    data : bytes
        The whole new content.
    mode : int, optional
        Permission bits of the new file (``0o600`` for a secret), set before any byte is
        written; by default the process's umask decides.

    Raises
    ------
    InsufficientStorage
        The disk is full: the previous file (if any) is left as it was, and no temporary
        file remains.

    Notes
    -----
    One writer per path at a time: the temporary name is fixed, so that an interrupted
    write leaves one leftover, not one per attempt.
    """
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        opener = None if mode is None else (
            lambda name, flags: os.open(name, flags, mode))
        with open(tmp, "wb", opener=opener) as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # a leftover temporary file kept its own mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(exc):
            raise insufficient_storage(exc, path.name) from exc
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text``, atomically (see `write_bytes_atomic`).

    Parameters
    ----------
    path : str or Path
        The file to create or replace.
    text : str
        The whole new content.
    encoding : str, default "utf-8"
        How ``text`` is encoded.
    """
    write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | Path, obj: Mapping[str, Any] | list[Any], *,
                      indent: int | None = 1, sort_keys: bool = True) -> None:
    """Replace ``path`` with ``obj`` as UTF-8 JSON and a newline, atomically.

    Parameters
    ----------
    path : str or Path
        The file to create or replace.
    obj : mapping or list
        JSON-serialisable.
    indent : int or None, default 1
        As for `json.dumps`: one space keeps the file readable by a person and small.
    sort_keys : bool, default True
        As for `json.dumps`: the same content always gives the same bytes.

    Raises
    ------
    TypeError
        ``obj`` is not JSON-serialisable; the file is left as it was.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys)
    write_text_atomic(path, text + "\n")


def hash_file(path: str | Path, *, fsync: bool = False,
              block_size: int = BLOCK_SIZE) -> _Hash:
    """The SHA-256 of a file's bytes, read ``block_size`` bytes at a time.

    Parameters
    ----------
    path : str or Path
        The file.
    fsync : bool, default False
        Make the file durable first (one open for both, for a file just written).
    block_size : int
        Bytes read at a time: memory stays at one block whatever the file's size.

    Returns
    -------
    hashlib hash object
        Still open to updates (a resumable upload goes on hashing from it); call
        ``.hexdigest()`` for the hex string.
    """
    hasher = hashlib.sha256()
    with open(path, "rb") as source:
        if fsync:
            os.fsync(source.fileno())
        while block := source.read(block_size):
            hasher.update(block)
    return hasher


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, streamed in blocks (see `hash_file`).

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    return hash_file(path).hexdigest()
