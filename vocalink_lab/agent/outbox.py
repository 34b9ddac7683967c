"""The durable upload queue: finished recordings wait here until the server has them.

An `Outbox` is a directory. Each queued recording is two files, ``<recording_id>.<ext>`` (the
audio) and ``<recording_id>.json`` (what it is, plus its upload state), both put in place
with atomic renames, so that the queue survives a crash or a restart at any moment. Nothing is
ever deleted except by `Outbox.done`, which callers invoke once the server has confirmed the
recording's SHA-256. Files that do not pair up are reported (`Outbox.orphans`), never removed.

The JSON is an on-disk format that outlives the code that wrote it. Layout 2 (written now)
nests the recording::

    {"outbox_version": 2, "recording": {<FinishedRecording fields, "path": file name>},
     "upload_url": ..., "attempts": ..., "last_error": ..., "queued_at": ...,
     "extra": {...}}

Layout 1 (no ``outbox_version``; written before) had every field, extras included, at the
top level. Both are read; an item is rewritten in layout 2 the next time it changes.

All methods are synchronous and quick (renames and small JSON files, each fsync'd); from the
event loop, call them through ``asyncio.to_thread`` when the disk may be slow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import durable
from .spool import FinishedRecording, release

__all__ = ["LAYOUT_VERSION", "Outbox", "OutboxItem"]

log = logging.getLogger(__name__)

#: The layout `Outbox` writes (see the module's docstring); 1 had no version field.
LAYOUT_VERSION = 2
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(FinishedRecording))
_STATE_FIELDS = ("upload_url", "attempts", "last_error", "queued_at")
_UPDATABLE = ("upload_url", "attempts", "last_error")
# Not allowed as extra names: layout 1 kept extras next to these, and `Outbox.update` takes
# state and extra fields in one namespace.
_RESERVED = frozenset(_RECORD_FIELDS + _STATE_FIELDS + ("meta_path", "extra"))


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One queued recording, as its JSON file describes it.

    Attributes
    ----------
    recording : FinishedRecording
        The recording, its ``path`` being the audio file in the outbox.
    meta_path : Path
        Its JSON file.
    upload_url : str or None
        Where a resumable upload of it lives, once one was created.
    attempts : int
        Upload attempts so far.
    last_error : str or None
        Why the latest attempt failed.
    queued_at : float
        ``time.time()`` when it was added.
    extra : mapping
        Any other fields given to `Outbox.add` or `Outbox.update` (e.g. ``recorded_offline``,
        ``server_id``).
    """

    recording: FinishedRecording
    meta_path: Path
    upload_url: str | None = None
    attempts: int = 0
    last_error: str | None = None
    queued_at: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The audio file, in the outbox (``recording.path``)."""
        return self.recording.path

    @property
    def recording_id(self) -> str:
        """The recording's id, which names the item's files (``recording.recording_id``)."""
        return self.recording.recording_id

    def meta(self) -> dict[str, Any]:
        """The JSON object stored for this item, in the current layout.

        Returns
        -------
        dict
            ``path`` in ``recording`` is the audio file's name, not a full path.
        """
        return {
            "outbox_version": LAYOUT_VERSION,
            "recording": {**self.recording.to_dict(), "path": self.path.name},
            **{name: getattr(self, name) for name in _STATE_FIELDS},
            "extra": dict(self.extra),
        }

    @classmethod
    def _from_meta(cls, meta: Mapping[str, Any], meta_path: Path) -> OutboxItem:
        if "outbox_version" not in meta:  # layout 1: everything flat, extras too
            record: Mapping[str, Any] = meta
            extra = {k: v for k, v in meta.items() if k not in _RESERVED}
        else:
            if meta["outbox_version"] != LAYOUT_VERSION:
                raise ValueError(f"outbox layout {meta['outbox_version']!r} is not "
                                 f"{LAYOUT_VERSION}: written by another version")
            record, extra = meta["recording"], dict(meta.get("extra") or {})
            if not isinstance(record, Mapping):
                raise TypeError("recording must be a JSON object")
        fields = {k: record[k] for k in _RECORD_FIELDS if k in record}
        fields["path"] = meta_path.with_name(str(record["path"]))
        recording = FinishedRecording(**fields)
        if not isinstance(recording.recording_id, str) or not isinstance(recording.sha256, str):
            raise TypeError("recording_id and sha256 must be strings")
        state = {k: meta[k] for k in _STATE_FIELDS if k in meta}
        return cls(recording=recording, meta_path=meta_path, extra=extra, **state)


class Outbox:
    """A directory of recordings waiting to be uploaded.

    Parameters
    ----------
    root : str or Path
        The directory; created if missing. Must be on the same filesystem as the spool, so
        that `add` is a rename (it falls back to a copy otherwise).
    keep_sent : bool, default False
        `done` moves items into ``root/sent/`` instead of deleting them.

    Examples
    --------
    >>> outbox = Outbox(tmp / "outbox")                               # doctest: +SKIP
    >>> item = outbox.add(rec, recorded_offline=True)                 # doctest: +SKIP
    >>> outbox.update(item, attempts=item.attempts + 1, last_error="timeout")  # doctest: +SKIP
    >>> outbox.done(item, sha256=server_sha256)                       # doctest: +SKIP
    """

    def __init__(self, root: str | Path, *, keep_sent: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_sent = keep_sent
        self._reported: set[Path] = set()
        #: Items this process is adding or removing right now, and how many times that
        #: began or ended: an item is two files, written (or removed) one after the other,
        #: often in a worker thread, and a scan in between must not call the half it sees
        #: an orphan. Counters under a lock held for no I/O: a scan on the event loop never
        #: waits on a fsync.
        self._moving = 0
        self._changes = 0
        self._counting = threading.Lock()

    @property
    def sent_dir(self) -> Path:
        """Where `done` keeps sent items when ``keep_sent`` is set."""
        return self.root / "sent"

    def add(self, rec: FinishedRecording, **extra: Any) -> OutboxItem:
        """Queue a finished recording, moving its file into the outbox.

        The JSON goes first and the audio second, then the spool's sidecar is released
        (`release`): a crash at any point leaves either a sidecar `recover` returns again or
        a complete item. Adding the same recording (same id and SHA-256) again is harmless.

        Parameters
        ----------
        rec : FinishedRecording
            A finalized or recovered recording; its file is moved.
        **extra
            JSON-serialisable fields to store with it (e.g. ``recorded_offline=True``).

        Returns
        -------
        OutboxItem
            The queued item.

        Raises
        ------
        FileExistsError
            Another recording with the same id, but different bytes, is queued.
        ValueError
            The id cannot be a file name, or an ``extra`` name is a reserved field.
        """
        _check_id(rec.recording_id)
        clash = sorted(_RESERVED.intersection(extra))
        if clash:
            raise ValueError(f"reserved field names cannot be extra fields: {clash}")
        ext = rec.path.suffix.lower().lstrip(".") or rec.format
        dest = self.root / f"{rec.recording_id}.{ext}"
        meta_path = self.root / f"{rec.recording_id}.json"
        previous = self._read(meta_path) if meta_path.exists() else None
        if previous is not None:
            queued_sha = previous.recording.sha256
            if queued_sha != rec.sha256:
                raise FileExistsError(f"another recording {rec.recording_id!r} is queued, "
                                      f"with other bytes (sha256 {queued_sha[:12]}...)")
            if previous.path.exists():
                release(rec.path)
                return previous
        item = OutboxItem(
            recording=dataclasses.replace(rec, path=dest), meta_path=meta_path,
            queued_at=previous.queued_at if previous else time.time(),
            attempts=previous.attempts if previous else 0,
            extra={**(previous.extra if previous else {}), **extra},
        )
        with self._in_flight():
            durable.write_json_atomic(meta_path, item.meta())
            if rec.path.resolve() != dest.resolve():
                _move(rec.path, dest)
        release(rec.path)
        log.info("queued %s (%.2f s, %d bytes)", dest.name, rec.duration_s, rec.bytes)
        return item

    def pending(self) -> list[OutboxItem]:
        """Every complete item, oldest first, read from disk.

        Orphans (see `orphans`) are skipped, and logged once.

        Returns
        -------
        list of OutboxItem
            Sorted by ``queued_at``, then ``recording_id``.
        """
        items, _ = self._scan()
        return items

    def get(self, recording_id: str) -> OutboxItem | None:
        """The pending item with this id, or None.

        Parameters
        ----------
        recording_id : str
            The recording's id.

        Returns
        -------
        OutboxItem or None
            None if it is not queued (or is not complete).
        """
        _check_id(recording_id)
        meta_path = self.root / f"{recording_id}.json"
        if not meta_path.exists():
            return None
        item = self._read(meta_path)
        return item if item is not None and item.path.exists() else None

    def orphans(self) -> list[Path]:
        """Files that are not part of a complete item: kept, never deleted.

        Returns
        -------
        list of Path
            JSON files that are unreadable or whose audio is missing, and audio files without
            their JSON. ``*.tmp`` leftovers of interrupted writes are not listed.
        """
        _, orphans = self._scan()
        return orphans

    def update(self, item: OutboxItem, **fields: Any) -> OutboxItem:
        """Change an item's upload state (or extra fields), atomically.

        The current JSON is re-read from disk, so that updates made through another
        `OutboxItem` of the same recording are kept.

        Parameters
        ----------
        item : OutboxItem
            The item to change.
        **fields
            ``upload_url``, ``attempts``, ``last_error``, or extra fields. The recording's
            own fields cannot change.

        Returns
        -------
        OutboxItem
            The item as now stored.

        Raises
        ------
        FileNotFoundError
            The item is no longer in the outbox.
        ValueError
            A field of the recording itself was given.
        """
        frozen = sorted(k for k in fields if k in _RESERVED and k not in _UPDATABLE)
        if frozen:
            raise ValueError(f"these fields cannot be updated: {frozen}")
        current = self._read(item.meta_path) if item.meta_path.exists() else None
        if current is None:
            raise FileNotFoundError(f"{item.recording_id} is not in the outbox")
        state = {k: v for k, v in fields.items() if k in _UPDATABLE}
        extra = {k: v for k, v in fields.items() if k not in _UPDATABLE}
        updated = dataclasses.replace(current, **state, extra={**current.extra, **extra})
        durable.write_json_atomic(item.meta_path, updated.meta())
        return updated

    def done(self, item: OutboxItem, *, sha256: str | None = None) -> None:
        """Remove an uploaded item (or move it to ``sent/``); idempotent.

        The JSON goes first, so that a crash in between leaves an orphan audio file (reported,
        kept), never an item whose audio is gone.

        Parameters
        ----------
        item : OutboxItem
            The item the server has confirmed.
        sha256 : str, optional
            The SHA-256 the server reported; if given and different, nothing is removed.

        Raises
        ------
        ValueError
            ``sha256`` is not the item's.
        """
        ours = item.recording.sha256
        if sha256 is not None and sha256.lower() != ours.lower():
            raise ValueError(f"{item.recording_id}: the server has sha256 {sha256[:12]}..., "
                             f"not {ours[:12]}...; keeping it")
        with self._in_flight():
            if self.keep_sent:
                self.sent_dir.mkdir(exist_ok=True)
                for path in (item.meta_path, item.path):
                    if path.exists():
                        os.replace(path, self.sent_dir / path.name)
                durable.fsync_dir(self.sent_dir)
            else:
                for path in (item.meta_path, item.path):
                    path.unlink(missing_ok=True)
        durable.fsync_dir(self.root)
        log.info("sent %s", item.path.name)

    def __len__(self) -> int:
        return len(self.pending())

    @property
    def bytes_pending(self) -> int:
        """Total size of the pending audio files."""
        return sum(item.recording.bytes for item in self.pending())

    def __repr__(self) -> str:
        return f"<Outbox {self.root} {len(self)} pending>"

    def _read(self, meta_path: Path) -> OutboxItem | None:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            return OutboxItem._from_meta(meta, meta_path)
        except FileNotFoundError:
            return None  # removed since it was listed: sent meanwhile
        except (OSError, ValueError, TypeError, KeyError) as exc:
            self._report(meta_path, f"unreadable ({exc})")
            return None

    def _scan(self) -> tuple[list[OutboxItem], list[Path]]:
        items: list[OutboxItem] = []
        halves: list[tuple[Path, str]] = []
        audio: dict[str, Path] = {}
        metas: list[Path] = []
        changes = self._changes
        for path in self.root.iterdir():
            if not path.is_file() or path.name.endswith((durable.TMP_SUFFIX, ".part")):
                continue
            if path.suffix == ".json":
                metas.append(path)
            else:
                audio[path.name] = path
        orphans: list[Path] = []
        for meta_path in metas:
            item = self._read(meta_path)
            if item is None:  # written atomically: never half a JSON
                if meta_path.exists():
                    orphans.append(meta_path)
                continue
            if audio.pop(item.path.name, None) is None:
                halves.append((meta_path, f"its audio {item.path.name} is missing"))
                continue
            items.append(item)
        halves += [(path, "audio without its JSON") for path in audio.values()]
        # Half an item seen while this process was adding or removing one may be that one,
        # on its way: it is an orphan only if it is still there at a scan nothing overlapped.
        if self._moving or self._changes != changes:
            halves = []
        for path, why in halves:
            self._report(path, why)
            orphans.append(path)
        items.sort(key=lambda i: (i.queued_at, i.recording_id))
        return items, sorted(orphans)

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """While the block runs (and a scan overlapping it), half items are not orphans."""
        with self._counting:
            self._changes += 1
            self._moving += 1
        try:
            yield
        finally:
            with self._counting:
                self._moving -= 1
                self._changes += 1

    def _report(self, path: Path, why: str) -> None:
        if path not in self._reported:
            self._reported.add(path)
            log.warning("outbox: %s: %s; kept, not queued", path.name, why)


def _check_id(recording_id: str) -> None:
    if (not recording_id or recording_id.startswith(".") or "/" in recording_id
            or "\\" in recording_id or "\0" in recording_id):
        raise ValueError(f"recording id {recording_id!r} cannot be a file name")


def _move(src: Path, dest: Path) -> None:
    """Rename, or copy then delete across filesystems; durable either way."""
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        part = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, part)
        durable.fsync_file(part)
        if part.stat().st_size != src.stat().st_size:
            raise OSError(f"copying {src} to {dest} came out short") from exc
        durable.replace(part, dest)
        os.unlink(src)
        durable.fsync_dir(src.parent)
        return
    durable.fsync_dir(dest.parent)
    if src.parent.resolve() != dest.parent.resolve():
        durable.fsync_dir(src.parent)
