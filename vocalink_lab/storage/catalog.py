"""The SQLite catalog of recordings: one writer thread, reads in a small thread pool.

The database runs in WAL mode so that readers never wait for the writer. Every
write goes through one thread (``vocalink-catalog-writer``) fed by a queue, so
writes are serialised without locks on the event loop; every public method is a
coroutine that never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    Conflict,
    InsufficientStorage,
    InvalidParameter,
    RecordingNotFound,
    StorageError,
    TakeNotFound,
)

__all__ = ["KINDS", "Catalog", "Page", "Recording"]

log = logging.getLogger(__name__)

T = TypeVar("T")
KINDS = ("original", "enhanced", "merged")
SCHEMA_VERSION = 4  # 2: takes; 3: device keys; 4: transcripts
#: Instants are seconds since 1970 below 1e11 (the year 5138): the bound of the protocol's
#: instants (``protocol.MAX_INSTANT_S``; storage imports no protocol). A start outside it is
#: refused when stored, and reads back as unknown (``None``) from a row older code wrote.
MAX_INSTANT_S = 1e11

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recordings (
    id            TEXT PRIMARY KEY,
    take_id       TEXT,
    device_id     TEXT,
    device_name   TEXT,
    kind          TEXT NOT NULL CHECK (kind IN ('original', 'enhanced', 'merged')),
    parents       TEXT NOT NULL DEFAULT '[]',
    params        TEXT NOT NULL DEFAULT '{}',
    path          TEXT NOT NULL UNIQUE,
    format        TEXT NOT NULL,
    codec         TEXT,
    sample_rate   INTEGER NOT NULL,
    channels      INTEGER NOT NULL,
    frames        INTEGER NOT NULL,
    duration_s    REAL NOT NULL,
    bytes         INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    started_at    REAL,
    created_at    REAL NOT NULL,
    original_name TEXT
);
CREATE INDEX IF NOT EXISTS recordings_take ON recordings (take_id);
CREATE INDEX IF NOT EXISTS recordings_device ON recordings (device_id);
CREATE INDEX IF NOT EXISTS recordings_created ON recordings (created_at, id);
CREATE TABLE IF NOT EXISTS takes (
    id          TEXT PRIMARY KEY,
    name        TEXT,
    notes       TEXT NOT NULL DEFAULT '',
    started_at  REAL NOT NULL,
    stopped_at  REAL,
    devices     TEXT NOT NULL DEFAULT '[]',
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS takes_started ON takes (started_at, id);
CREATE TABLE IF NOT EXISTS transcripts (
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('recording', 'take')),
    subject_id   TEXT NOT NULL,
    path         TEXT NOT NULL,
    language     TEXT NOT NULL,
    model        TEXT NOT NULL,
    enhanced     INTEGER NOT NULL,
    segments     INTEGER NOT NULL,
    duration_s   REAL NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (subject_kind, subject_id)
);
CREATE TABLE IF NOT EXISTS device_keys (
    device_id   TEXT PRIMARY KEY,
    key_sha256  TEXT NOT NULL,
    paired_at   REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Recording:
    """One catalogued audio file.

    ``path`` is relative to the data dir. ``started_at`` is the recording's start
    in server time (when known); ``created_at`` is when it entered the catalog.
    """

    id: str
    path: str
    format: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    bytes: int
    sha256: str
    created_at: float
    kind: str = "original"
    take_id: str | None = None
    device_id: str | None = None
    device_name: str | None = None
    parents: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    codec: str | None = None
    started_at: float | None = None
    original_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the catalog row); a number that is not finite reads as ``None``.

        `Catalog.add` stores no such number, but a row older code wrote may hold one;
        it must not make every listing that includes the row unserialisable.
        """
        # Not `asdict` nor `_json_safe` on the whole: both walk every value, several times
        # slower on a 1,000-row page. The fields are flat; only ``params`` nests.
        out = {name: getattr(self, name) for name in _RECORDING_FIELDS}
        for name, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[name] = None
        out["parents"] = list(self.parents)
        out["params"] = _json_safe(dict(self.params))
        return out

    def problems(self) -> list[str]:
        """What JSON or the catalog cannot hold in this recording (empty when all is well).

        ``started_at`` is ``None`` or an instant (seconds since 1970, 0 to below
        `MAX_INSTANT_S`); ``duration_s`` and ``created_at`` are finite; ``params`` is JSON
        without NaN or infinities.
        """
        found = []
        if self.started_at is not None and not _is_instant(self.started_at):
            found.append(f"recording '{self.id}': started_at must be an instant in seconds "
                         f"since 1970 (0 to below {MAX_INSTANT_S:.0e}) or null, got "
                         f"{self.started_at!r}")
        for name in ("duration_s", "created_at"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value)):
                found.append(f"recording '{self.id}': {name} must be a finite number, "
                             f"got {value!r}")
        try:
            json.dumps(dict(self.params), allow_nan=False)
        except (TypeError, ValueError) as exc:
            found.append(f"recording '{self.id}': params must be JSON without NaN or "
                         f"infinities ({exc})")
        return found


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing."""

    items: list[Recording]
    total: int
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the offset of the next page (``None`` at the end)."""
        next_offset = self.offset + len(self.items)
        return {
            "items": [r.to_dict() for r in self.items],
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
            "next_offset": next_offset if next_offset < self.total else None,
        }


_RECORDING_FIELDS = tuple(f.name for f in fields(Recording))

_COLUMNS = (
    "id", "take_id", "device_id", "device_name", "kind", "parents", "params", "path", "format",
    "codec", "sample_rate", "channels", "frames", "duration_s", "bytes", "sha256", "started_at",
    "created_at", "original_name",
)


def _to_row(rec: Recording) -> tuple[Any, ...]:
    values = {**asdict(rec), "parents": json.dumps(list(rec.parents)),
              "params": json.dumps(dict(rec.params), allow_nan=False)}
    return tuple(values[c] for c in _COLUMNS)


def _from_row(row: sqlite3.Row) -> Recording:
    values = dict(zip(row.keys(), tuple(row), strict=True))
    values["parents"] = tuple(json.loads(values["parents"]))
    # Rows older code wrote may hold NaN or infinities (Python's json writes and reads
    # them): read as unknown, and a start that is no instant as no start.
    values["params"] = _STORED_JSON.decode(values["params"])
    values["started_at"] = _instant_or_none(values["started_at"])
    return Recording(**values)


def _is_instant(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 <= value < MAX_INSTANT_S)


def _instant_or_none(value: Any) -> float | None:
    return float(value) if _is_instant(value) else None


def _unknown(_: str) -> None:
    """What ``NaN``, ``Infinity`` and ``-Infinity`` in stored JSON read as."""
    return None


_STORED_JSON = json.JSONDecoder(parse_constant=_unknown)


def _json_safe(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by ``None`` (nested too)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


_STOP = object()
#: SQLite's primary result code for "database or disk is full" (``SQLITE_FULL``).
_SQLITE_FULL = 13


def _is_full(exc: BaseException) -> bool:
    """Whether SQLite said the database or the disk is full (an extended code too)."""
    return (isinstance(exc, sqlite3.Error)
            and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_FULL)


class Catalog:
    """Async access to ``vocalink.db``.

    Parameters
    ----------
    path : Path
        The database file; created (with its schema) if missing.
    readers : int
        Threads for reads.

    Notes
    -----
    Use ``await catalog.start()`` / ``await catalog.stop()`` or ``async with``.
    ``stop`` is idempotent and joins the writer thread.
    """

    def __init__(self, path: Path | str, *, readers: int = 2) -> None:
        self.path = Path(path)
        self._readers = readers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Catalog:
        """Open the database (creating it and its schema if needed)."""
        if self._started:
            return self
        self._writer = threading.Thread(
            target=self._write_loop, name="vocalink-catalog-writer", daemon=True
        )
        self._writer.start()
        self._read_pool = ThreadPoolExecutor(
            self._readers, thread_name_prefix="vocalink-catalog-read"
        )
        self._started = True
        try:
            await self.execute_write(self._migrate)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Finish pending writes, close every connection, join the threads (idempotent)."""
        if not self._started:
            return
        self._started = False
        self._queue.put(_STOP)
        writer, pool = self._writer, self._read_pool
        await asyncio.to_thread(self._shutdown, writer, pool)

    def _shutdown(self, writer: threading.Thread | None, pool: ThreadPoolExecutor | None) -> None:
        if writer is not None:
            writer.join()
        if pool is not None:
            pool.shutdown(wait=True)
        with self._conn_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    async def __aenter__(self) -> Catalog:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- primitives (datasette's execute_write / execute_fn) ----------------------------------

    async def execute_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer thread, inside a transaction.

        Raises
        ------
        InsufficientStorage
            SQLite found the database or the disk full: the transaction was rolled back,
            nothing of it is stored.
        """
        if not self._started:
            raise StorageError("the catalog is not open")
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return await asyncio.wrap_future(future)

    async def execute_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in a reader thread."""
        if not self._started or self._read_pool is None:
            raise StorageError("the catalog is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self._run_read, fn)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False,
                                   isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the catalog {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a catalogued take survives power loss
        conn.execute("PRAGMA foreign_keys=ON")
        with self._conn_lock:
            self._connections.append(conn)
        return conn

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return fn(conn)

    def _write_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if conn is None:
                    conn = self._connect()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    # SQLite may have rolled back already (a full disk does), and a COMMIT
                    # that failed leaves the transaction open: end it either way, so that
                    # nothing of it is stored and the next write can begin.
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except BaseException as exc:
                future.set_exception(_full_as_507(exc))
            else:
                future.set_result(result)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the catalog was written by a newer vocalink_lab (schema {version}); "
                "upgrade vocalink_lab to open it"
            )
        # Statement by statement: executescript() would commit the writer's transaction.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- meta ------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        """A value of the ``meta`` table (server id, server name...)."""
        row = await self.execute_read(
            lambda c: c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        """Set a value of the ``meta`` table."""
        await self.execute_write(
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    # -- device keys -----------------------------------------------------------------------

    async def device_keys(self) -> dict[str, str]:
        """Paired devices: device id → SHA-256 (hex) of its key. Keys are never stored."""
        rows = await self.execute_read(
            lambda c: c.execute("SELECT device_id, key_sha256 FROM device_keys").fetchall())
        return {str(device_id): str(value) for device_id, value in rows}

    async def set_device_key(self, device_id: str, key_sha256: str | None) -> None:
        """Store the digest of a device's new key, or forget it (``None``: unpaired)."""
        if key_sha256 is None:
            await self.execute_write(lambda c: c.execute(
                "DELETE FROM device_keys WHERE device_id = ?", (device_id,)))
            return
        now = time.time()
        await self.execute_write(lambda c: c.execute(
            "INSERT INTO device_keys (device_id, key_sha256, paired_at) VALUES (?, ?, ?) "
            "ON CONFLICT (device_id) DO UPDATE SET key_sha256 = excluded.key_sha256, "
            "paired_at = excluded.paired_at", (device_id, key_sha256, now)))

    # -- recordings ------------------------------------------------------------------------

    async def add(self, recording: Recording) -> Recording:
        """Insert a recording.

        Raises
        ------
        InvalidParameter
            A value JSON or the catalog cannot hold (`Recording.problems`: a start that is
            no instant, NaN or infinity anywhere), listing each; nothing is stored. Callers
            validate first; this is the last line of defence of every later response.
        StorageError
            The id is taken.
        InsufficientStorage
            The database or the disk is full (507); the row is not written.
        """
        problems = recording.problems()
        if problems:
            raise InvalidParameter("; ".join(problems), errors=problems)
        row = _to_row(recording)
        sql = f"INSERT INTO recordings ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(row))})"
        try:
            await self.execute_write(lambda c: c.execute(sql, row))
        except sqlite3.IntegrityError as exc:
            raise StorageError(f"cannot catalog recording '{recording.id}': {exc}") from exc
        return recording

    async def find(self, recording_id: str) -> Recording | None:
        """The recording with this id, or ``None``."""
        row = await self.execute_read(
            lambda c: c.execute("SELECT * FROM recordings WHERE id = ?", (recording_id,)).fetchone()
        )
        return None if row is None else _from_row(row)

    async def get(self, recording_id: str) -> Recording:
        """The recording with this id; raise `RecordingNotFound` otherwise."""
        rec = await self.find(recording_id)
        if rec is None:
            raise RecordingNotFound(f"no recording with id '{recording_id}'")
        return rec

    async def delete(self, recording_id: str) -> Recording:
        """Remove a row and return it; raise `RecordingNotFound` if there is none."""

        def run(c: sqlite3.Connection) -> sqlite3.Row | None:
            row = c.execute("SELECT * FROM recordings WHERE id = ?", (recording_id,)).fetchone()
            if row is not None:
                c.execute("DELETE FROM recordings WHERE id = ?", (recording_id,))
                c.execute("DELETE FROM transcripts WHERE subject_kind = 'recording' "
                          "AND subject_id = ?", (recording_id,))
            return row  # type: ignore[no-any-return]

        row = await self.execute_write(run)
        if row is None:
            raise RecordingNotFound(f"no recording with id '{recording_id}'")
        return _from_row(row)

    async def query(
        self,
        *,
        device_id: str | None = None,
        take_id: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> Page:
        """List recordings, filtered and paginated.

        Parameters
        ----------
        device_id, take_id, kind : str, optional
            Filters (``kind`` is one of ``original``, ``enhanced``, ``merged``).
        limit : int
            Page size, 1 to 1000.
        offset : int
            Rows to skip.
        newest_first : bool
            Order by creation time, newest first (default) or oldest first.
        """
        if not 1 <= limit <= 1000:
            raise InvalidParameter(f"limit must be between 1 and 1000, got {limit}")
        if offset < 0:
            raise InvalidParameter(f"offset must not be negative, got {offset}")
        if kind is not None and kind not in KINDS:
            raise InvalidParameter(f"kind must be one of {', '.join(KINDS)}, got '{kind}'")
        where, args = [], []
        for column, value in (("device_id", device_id), ("take_id", take_id), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = "DESC" if newest_first else "ASC"

        def run(c: sqlite3.Connection) -> tuple[list[Recording], int]:
            total = c.execute(f"SELECT COUNT(*) FROM recordings{clause}", args).fetchone()[0]
            rows = c.execute(
                f"SELECT * FROM recordings{clause} ORDER BY created_at {order}, id {order} "
                "LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            # Decoded in the reader's thread too: a 1,000-row page is 10 ms off the loop.
            return [_from_row(r) for r in rows], int(total)

        items, total = await self.execute_read(run)
        return Page(items, total, limit, offset)

    async def all_paths(self) -> dict[str, str]:
        """Every catalogued file: relative path → recording id."""
        rows = await self.execute_read(
            lambda c: c.execute("SELECT path, id FROM recordings").fetchall()
        )
        return {str(r[0]): str(r[1]) for r in rows}

    # -- takes -----------------------------------------------------------------------------

    async def take_started(self, take_id: str, started_at: float,
                           devices: list[str]) -> None:
        """Record that a take began (a repeated START of one take changes nothing).

        `InvalidParameter` if ``started_at`` is not an instant (nothing is stored).
        """
        _check_instant("started_at", started_at, take_id)
        await self.execute_write(lambda c: c.execute(
            "INSERT INTO takes (id, started_at, devices, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (take_id, started_at, json.dumps(sorted(devices)), time.time())))

    async def take_stopped(self, take_id: str, stopped_at: float) -> None:
        """Record when a take ended (unknown takes are ignored).

        `InvalidParameter` if ``stopped_at`` is not an instant (nothing is stored).
        """
        _check_instant("stopped_at", stopped_at, take_id)
        await self.execute_write(lambda c: c.execute(
            "UPDATE takes SET stopped_at = ? WHERE id = ?", (stopped_at, take_id)))

    async def describe_take(self, take_id: str, *, name: str | None = None,
                            notes: str | None = None) -> dict[str, Any]:
        """Set a take's name and/or notes; return the take. `TakeNotFound` if unknown."""
        def run(c: sqlite3.Connection) -> int:
            cursor = c.execute(
                "UPDATE takes SET name = COALESCE(?, name), notes = COALESCE(?, notes) "
                "WHERE id = ?", (name, notes, take_id))
            return cursor.rowcount
        if not await self.execute_write(run):
            raise TakeNotFound(f"no take '{take_id}'")
        return await self.take(take_id)

    async def take_members(self, take_id: str) -> tuple[dict[str, Any], list[Recording]]:
        """A take's row and what an archive of it holds: its originals, then its merges.

        A merge belongs to a take when all its inputs do (the merge job then gives it their
        ``take_id``). Originals come by device name, then id; merges oldest first.

        Raises
        ------
        TakeNotFound
            No such take.
        """
        def run(c: sqlite3.Connection) -> tuple[sqlite3.Row | None, list[sqlite3.Row], int]:
            row = c.execute("SELECT * FROM takes WHERE id = ?", (take_id,)).fetchone()
            recs = c.execute(
                "SELECT * FROM recordings WHERE take_id = ? AND kind IN ('original', 'merged') "
                "ORDER BY kind = 'merged', CASE WHEN kind = 'original' THEN "
                "COALESCE(device_name, device_id, '') END, created_at, id",
                (take_id,)).fetchall()
            count = c.execute("SELECT COUNT(*) FROM recordings WHERE take_id = ?",
                              (take_id,)).fetchone()[0]
            return row, recs, int(count)
        row, recs, count = await self.execute_read(run)
        if row is None:
            raise TakeNotFound(f"no take '{take_id}'")
        return _take_dict(row, count), [_from_row(r) for r in recs]

    async def delete_take(self, take_id: str, *, open_ok: bool = False
                          ) -> tuple[dict[str, Any], list[Recording]]:
        """Remove a take and every recording of it, in one transaction; return them.

        ``open_ok`` lets a take that never stopped go too: one a server that stopped
        mid-take left open (the caller knows no take is recording it).

        The rows go, not the files: the caller removes those (a crash in between leaves
        orphan files, which the start-up check reports, never a row without its file).
        Recordings derived from the take's that belong to no take keep their lineage.

        Raises
        ------
        TakeNotFound
            No such take.
        Conflict
            The take has not stopped (still recording): nothing is removed.
        """
        def run(c: sqlite3.Connection) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
            row = c.execute("SELECT * FROM takes WHERE id = ?", (take_id,)).fetchone()
            if row is None or (row["stopped_at"] is None and not open_ok):
                return row, []
            recs = c.execute("SELECT * FROM recordings WHERE take_id = ? ORDER BY id",
                             (take_id,)).fetchall()
            c.execute("DELETE FROM transcripts WHERE (subject_kind = 'take' AND subject_id = ?) "
                      "OR (subject_kind = 'recording' AND subject_id IN "
                      "(SELECT id FROM recordings WHERE take_id = ?))", (take_id, take_id))
            c.execute("DELETE FROM recordings WHERE take_id = ?", (take_id,))
            c.execute("DELETE FROM takes WHERE id = ?", (take_id,))
            return row, recs
        row, recs = await self.execute_write(run)
        if row is None:
            raise TakeNotFound(f"no take '{take_id}'")
        if row["stopped_at"] is None and not open_ok:
            raise Conflict(f"take '{take_id}' is still recording (it has not stopped); "
                           "stop it before deleting it")
        return _take_dict(row, len(recs)), [_from_row(r) for r in recs]

    async def take(self, take_id: str) -> dict[str, Any]:
        """One take with its recordings (originals first, by device). `NotFound` if unknown."""
        def run(c: sqlite3.Connection
                ) -> tuple[sqlite3.Row | None, list[sqlite3.Row], dict[str, dict[str, Any]]]:
            row = c.execute("SELECT * FROM takes WHERE id = ?", (take_id,)).fetchone()
            recs = c.execute("SELECT * FROM recordings WHERE take_id = ? "
                             "ORDER BY kind, device_id, id", (take_id,)).fetchall()
            return row, recs, _take_transcripts(c, [take_id])
        row, recs, transcripts = await self.execute_read(run)
        if row is None:
            raise TakeNotFound(f"no take '{take_id}'")
        out = _take_dict(row, len(recs), transcripts.get(take_id))
        out["recordings"] = [_from_row(r).to_dict() for r in recs]
        return out

    async def takes(self, limit: int = 50, offset: int = 0, *, originals: bool = False
                    ) -> tuple[list[dict[str, Any]], int]:
        """Takes, newest first, with their recording counts; and how many there are.

        With ``originals``, each take also lists its original recordings (``to_dict``
        form), which a skew report is made from.
        """
        def run(c: sqlite3.Connection) -> tuple[list[sqlite3.Row], int, list[sqlite3.Row],
                                                dict[str, dict[str, Any]]]:
            rows = c.execute(
                "SELECT t.*, (SELECT COUNT(*) FROM recordings r WHERE r.take_id = t.id) AS n "
                "FROM takes t ORDER BY t.started_at DESC, t.id LIMIT ? OFFSET ?",
                (limit, offset)).fetchall()
            total = c.execute("SELECT COUNT(*) FROM takes").fetchone()[0]
            recs: list[sqlite3.Row] = []
            if originals and rows:
                ids = [r["id"] for r in rows]
                recs = c.execute(
                    "SELECT * FROM recordings WHERE kind = 'original' AND take_id IN "
                    f"({', '.join('?' * len(ids))}) ORDER BY device_id, id", ids).fetchall()
            return rows, int(total), recs, _take_transcripts(c, [r["id"] for r in rows])
        rows, total, recs, transcripts = await self.execute_read(run)
        items = [_take_dict(r, int(r["n"]), transcripts.get(r["id"])) for r in rows]
        if originals:
            by_take: dict[str, list[dict[str, Any]]] = {t["id"]: [] for t in items}
            for rec in recs:
                by_take[rec["take_id"]].append(_from_row(rec).to_dict())
            for take in items:
                take["originals"] = by_take[take["id"]]
        return items, total

    # -- transcripts ---------------------------------------------------------------------------

    async def put_transcript(self, kind: str, subject_id: str, *, path: str, language: str,
                             model: str, enhanced: bool, segments: int,
                             duration_s: float) -> dict[str, Any]:
        """Record (or replace) the transcript of a recording or a take; its summary.

        Refused, and nothing written, when the subject is gone meanwhile (deleted while
        it was being transcribed): `RecordingNotFound` or `TakeNotFound`.
        """
        table = {"recording": "recordings", "take": "takes"}[kind]
        now = time.time()

        def run(c: sqlite3.Connection) -> sqlite3.Row | None:
            if c.execute(f"SELECT 1 FROM {table} WHERE id = ?", (subject_id,)).fetchone() is None:
                return None
            c.execute("INSERT OR REPLACE INTO transcripts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (kind, subject_id, path, language, model, int(enhanced), segments,
                       duration_s if math.isfinite(duration_s) else 0.0, now))
            found: sqlite3.Row | None = c.execute(
                "SELECT * FROM transcripts WHERE subject_kind = ? AND subject_id = ?",
                (kind, subject_id)).fetchone()
            return found

        row = await self.execute_write(run)
        if row is None:
            error = RecordingNotFound if kind == "recording" else TakeNotFound
            raise error(f"no {kind} '{subject_id}' (deleted meanwhile?); its transcript "
                        "was not stored")
        return transcript_summary(row)

    async def transcript_row(self, kind: str, subject_id: str) -> dict[str, Any] | None:
        """The summary of a recording's or a take's transcript, or None if it has none."""
        row = await self.execute_read(lambda c: c.execute(
            "SELECT * FROM transcripts WHERE subject_kind = ? AND subject_id = ?",
            (kind, subject_id)).fetchone())
        return None if row is None else transcript_summary(row)

    async def count(self) -> int:
        """Number of catalogued recordings."""
        row = await self.execute_read(
            lambda c: c.execute("SELECT COUNT(*) FROM recordings").fetchone()
        )
        return int(row[0])


def _full_as_507(exc: BaseException) -> BaseException:
    """SQLite's "database or disk is full" as `InsufficientStorage`; anything else as is."""
    if not _is_full(exc):
        return exc
    error = InsufficientStorage(f"the disk is full: the catalog could not be written: {exc}; "
                                "nothing of this change was stored; free some room and try "
                                "again")
    error.__cause__ = exc
    return error


def _check_instant(name: str, value: float, take_id: str) -> None:
    if not _is_instant(value):
        raise InvalidParameter(f"take '{take_id}': {name} must be an instant in seconds since "
                               f"1970 (0 to below {MAX_INSTANT_S:.0e}), got {value!r}")


def transcript_summary(row: sqlite3.Row) -> dict[str, Any]:
    """A ``transcripts`` row as the API shows it beside its subject."""
    return {"kind": row["subject_kind"], "subject_id": row["subject_id"],
            "language": row["language"], "model": row["model"],
            "enhanced": bool(row["enhanced"]), "segments": int(row["segments"]),
            "duration_s": _json_safe(row["duration_s"]),
            "created_at": _json_safe(row["created_at"])}


def _take_transcripts(c: sqlite3.Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The transcripts of these takes, by take id (a take without one is absent)."""
    if not ids:
        return {}
    rows = c.execute("SELECT * FROM transcripts WHERE subject_kind = 'take' AND subject_id IN "
                     f"({', '.join('?' * len(ids))})", ids).fetchall()
    return {r["subject_id"]: transcript_summary(r) for r in rows}


def _take_dict(row: sqlite3.Row, recordings: int,
               transcript: dict[str, Any] | None = None) -> dict[str, Any]:
    # Instants that are none (written by older code) read as unknown, not as a 500.
    started = _instant_or_none(row["started_at"])
    stopped = _instant_or_none(row["stopped_at"])
    return {
        "id": row["id"], "name": row["name"], "notes": row["notes"],
        "started_at": started, "stopped_at": stopped,
        "duration_s": None if stopped is None or started is None else stopped - started,
        "devices": json.loads(row["devices"]), "recordings": recordings,
        "created_at": _json_safe(row["created_at"]), "transcript": transcript,
    }
