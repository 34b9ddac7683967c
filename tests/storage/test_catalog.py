"""The SQLite catalog: one writer thread, async reads, filters and pages."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from vocalink_lab.errors import InvalidParameter, RecordingNotFound, StorageError
from vocalink_lab.storage import Catalog, Recording


def rec(i: int, **kw: object) -> Recording:
    values: dict[str, object] = dict(
        id=f"rec-{i:03d}", path=f"recordings/t/rec-{i:03d}.wav", format="wav", sample_rate=48000,
        channels=1, frames=48000, duration_s=1.0, bytes=96044, sha256=f"{i:064x}",
        created_at=1000.0 + i, take_id="take-a" if i % 2 else "take-b",
        device_id=f"mic-{i % 3}", params={"gain": i}, parents=(),
    )
    values.update(kw)
    return Recording(**values)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_add_get_delete_round_trip(tmp_path: Path) -> None:
    async with Catalog(tmp_path / "v.db") as catalog:
        stored = await catalog.add(rec(1, parents=("rec-000",), kind="enhanced"))
        assert await catalog.get("rec-001") == stored
        assert (await catalog.get("rec-001")).parents == ("rec-000",)
        with pytest.raises(StorageError, match="rec-001"):
            await catalog.add(rec(1))
        assert await catalog.delete("rec-001") == stored
        with pytest.raises(RecordingNotFound, match="no recording with id 'rec-001'"):
            await catalog.get("rec-001")
        with pytest.raises(RecordingNotFound):
            await catalog.delete("rec-001")


@pytest.mark.asyncio
async def test_query_filters_and_pages(tmp_path: Path) -> None:
    async with Catalog(tmp_path / "v.db") as catalog:
        await asyncio.gather(*(catalog.add(rec(i)) for i in range(25)))
        page = await catalog.query(limit=10)
        assert page.total == 25 and [r.id for r in page.items][:2] == ["rec-024", "rec-023"]
        assert page.to_dict()["next_offset"] == 10
        last = await catalog.query(limit=10, offset=20)
        assert len(last.items) == 5 and last.to_dict()["next_offset"] is None
        oldest = await catalog.query(limit=1, newest_first=False)
        assert oldest.items[0].id == "rec-000"
        by_take = await catalog.query(take_id="take-a", device_id="mic-1")
        assert {r.id for r in by_take.items} == {"rec-001", "rec-007", "rec-013", "rec-019"}
        assert (await catalog.query(kind="merged")).total == 0
        for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"kind": "bogus"}):
            with pytest.raises(InvalidParameter):
                await catalog.query(**bad)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_meta_wal_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with Catalog(path) as catalog:
        await catalog.set_meta("server_name", "Studio")
        await catalog.set_meta("server_name", "Studio B")
        await catalog.add(rec(7))
    async with Catalog(path) as catalog:
        assert await catalog.get_meta("server_name") == "Studio B"
        assert await catalog.get_meta("nothing") is None
        assert (await catalog.get("rec-007")).params == {"gain": 7}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


@pytest.mark.asyncio
async def test_writes_happen_on_one_named_thread(tmp_path: Path) -> None:
    async with Catalog(tmp_path / "v.db") as catalog:
        names = await asyncio.gather(*(catalog.execute_write(
            lambda _c: threading.current_thread().name) for _ in range(20)))
        assert set(names) == {"vocalink-catalog-writer"}
        read = await catalog.execute_read(lambda _c: threading.current_thread().name)
        assert read.startswith("vocalink-catalog-read")


@pytest.mark.asyncio
async def test_failed_write_rolls_back_and_writer_survives(tmp_path: Path) -> None:
    async with Catalog(tmp_path / "v.db") as catalog:
        def half_done(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await catalog.execute_write(half_done)
        assert await catalog.get_meta("a") is None
        await catalog.set_meta("b", "2")
        assert await catalog.get_meta("b") == "2"


@pytest.mark.asyncio
async def test_stop_is_idempotent_and_closed_catalog_refuses(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "v.db")
    await catalog.start()
    await catalog.start()
    await catalog.stop()
    await catalog.stop()
    with pytest.raises(StorageError, match="not open"):
        await catalog.get("x")


@pytest.mark.asyncio
async def test_newer_schema_is_refused_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StorageError, match="newer vocalink_lab"):
        await Catalog(path).start()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    conn.close()
