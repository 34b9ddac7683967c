"""A full disk answers 507 ``insufficient_storage`` and leaves nothing half-written.

Issue 12 ("hostile input"). The disk is the hardware, and it is what is faked: the
spools' and the atomic writes' ``open`` gives files whose ``write`` runs out of room
(`tests.support.disk.FullDisk`), an ``os.fsync`` reports ``ENOSPC`` for a job's output,
and SQLite's own page limit makes the catalog full (SQLite then raises its real
"database or disk is full"). Everything else is the real server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.audio import encode
from tests.support.disk import FullDisk
from tests.support.errors import assert_error_shape
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab import InsufficientStorage, StorageError, durable
from vocalink_lab.server import Server
from vocalink_lab.storage import Recording, files

TUS = {"Tus-Resumable": "1.0.0"}
NO_ROOM = os.strerror(errno.ENOSPC)


def assert_insufficient_storage(server: Server, body: Any) -> None:
    """The one error shape, 507, saying why, and naming no server path."""
    assert_error_shape(body, 507, "insufficient_storage")
    assert "the disk is full" in body["error"], body
    assert str(server.data_dir) not in json.dumps(body)


def leftovers(server: Server) -> list[str]:
    """Every file under ``uploads/`` (a partial upload, a job's temporary output)."""
    return sorted(p.relative_to(server.data_dir).as_posix()
                  for p in server.store.uploads_dir.rglob("*") if p.is_file())


def test_the_error_is_a_storage_error_an_os_error_and_exported() -> None:
    error = durable.insufficient_storage(OSError(errno.ENOSPC, NO_ROOM), "the file")
    assert isinstance(error, StorageError) and isinstance(error, OSError)
    assert (error.status, error.code, error.errno) == (507, "insufficient_storage",
                                                       errno.ENOSPC)
    assert durable.is_disk_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    assert not durable.is_disk_full(OSError(errno.EIO, os.strerror(errno.EIO)))


# -- the one-shot multipart upload: the partial spool file goes -------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("size", "room"), [(50_000, 20_000), (3_000_000, 1_500_000)],
                         ids=["fails-at-the-end", "fails-mid-body"])
async def test_a_full_disk_refuses_an_upload_and_removes_its_partial_file(
        server: Server, api: Api, monkeypatch: pytest.MonkeyPatch, size: int,
        room: int) -> None:
    """A small file fails when its bytes are flushed at the end, a large one while its
    body is still arriving (the spool writes a MiB at a time); part of each reached the
    disk before it filled up. Neither leaves a byte behind, nor a catalog row."""
    data = encode("wav", seconds=size / 96_000)  # 16-bit mono at 48 kHz: 96 kB a second
    disk = FullDisk(room=room).install(monkeypatch, files)
    status, body = await api.upload(data, recording_id="rec-full")
    assert status == 507, body
    assert_insufficient_storage(server, body)
    assert NO_ROOM in body["error"]
    assert disk.refused == 1 and disk.room == 0  # the disk did fill up: part was written
    await wait_until(lambda: leftovers(server) == [], timeout=10)
    assert server.store.stored_files() == []
    assert await server.catalog.count() == 0

    monkeypatch.undo()  # room again: the same upload goes through
    status, body = await api.upload(data, recording_id="rec-full")
    assert status == 201, body
    assert body["recording"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert leftovers(server) == []


# -- the resumable upload: what reached the disk stays, at the right offset ----------------------


async def create_upload(api: Api, length: int, recording_id: str) -> str:
    encoded = base64.b64encode(recording_id.encode()).decode()
    status, body, headers, _ = await api.request(
        "POST", "/api/audio/uploads",
        headers={**TUS, "Upload-Length": str(length),
                 "Upload-Metadata": f"recording_id {encoded}"})
    assert status == 201, body
    return str(headers["Location"])


async def patch(api: Api, url: str, offset: int, data: bytes) -> tuple[int, Any, Any]:
    status, body, headers, _ = await api.request(
        "PATCH", url, body=data,
        headers={**TUS, "Content-Type": "application/offset+octet-stream",
                 "Upload-Offset": str(offset)})
    return status, body, headers


async def head_offset(api: Api, url: str) -> int:
    status, _, headers, _ = await api.request("HEAD", url, headers=TUS)
    assert status == 200
    return int(headers["Upload-Offset"])


@pytest.mark.asyncio
async def test_a_tus_patch_keeps_what_reached_the_disk_and_resumes_from_there(
        server: Server, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode("wav", seconds=10.0)  # 960 kB
    url = await create_upload(api, len(data), "rec-tus")
    part = server.store.uploads_dir / "tus" / f"{url.rsplit('/', 1)[1]}.part"
    assert (await patch(api, url, 0, data[:100_000]))[0] == 204

    FullDisk(room=12_345).install(monkeypatch, files)
    status, body, _ = await patch(api, url, 100_000, data[100_000:600_000])
    assert status == 507, body
    assert_insufficient_storage(server, body)
    monkeypatch.undo()  # room again

    offset = await head_offset(api, url)
    assert offset == 100_000 + 12_345 == part.stat().st_size  # what reached the disk
    assert part.read_bytes() == data[:offset]
    status, _, headers = await patch(api, url, offset, data[offset:])
    assert status == 204, headers
    assert headers["Vocalink-Sha256"] == hashlib.sha256(data).hexdigest()
    assert (await api.get("/api/audio/rec-tus/meta"))[0] == 200


@pytest.mark.asyncio
async def test_a_tus_record_that_cannot_be_replaced_stays_as_it_was(
        server: Server, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes fit, the upload's record (an atomic JSON replacement) does not."""
    data = encode("wav", seconds=2.0)
    url = await create_upload(api, len(data), "rec-record")
    record = server.store.uploads_dir / "tus" / f"{url.rsplit('/', 1)[1]}.json"
    before = record.read_bytes()

    disk = FullDisk(room=0).install(monkeypatch, durable)
    status, body, _ = await patch(api, url, 0, data[:50_000])
    assert status == 507, body
    assert_insufficient_storage(server, body)
    assert disk.refused == 1
    monkeypatch.undo()

    assert record.read_bytes() == before  # the old record, whole
    assert [p.name for p in record.parent.iterdir()
            if p.name.endswith(durable.TMP_SUFFIX)] == []  # no temporary copy left
    offset = await head_offset(api, url)
    assert offset == 50_000  # the bytes are on disk, and the offset says so
    status, _, headers = await patch(api, url, offset, data[offset:])
    assert status == 204 and headers["Vocalink-Sha256"] == hashlib.sha256(data).hexdigest()


def test_an_atomic_write_on_a_full_disk_keeps_the_old_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    durable.write_json_atomic(target, {"offset": 1})
    FullDisk(room=3).install(monkeypatch, durable)
    with pytest.raises(InsufficientStorage, match="the disk is full: state.json") as caught:
        durable.write_json_atomic(target, {"offset": 2})
    assert caught.value.errno == errno.ENOSPC
    assert str(tmp_path) not in str(caught.value)
    assert json.loads(target.read_text()) == {"offset": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# -- a job's output: the temporary file goes, the job says 507 --------------------------------


@pytest.mark.asyncio
async def test_a_job_whose_output_does_not_fit_fails_with_507_and_leaves_nothing(
        server: Server, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DSP wrote its output; making it durable finds the disk full (a filesystem
    with delayed allocation reports ``ENOSPC`` at ``fsync``)."""
    status, body = await api.upload(encode("wav", seconds=2.0), recording_id="rec-src")
    assert status == 201, body
    real_fsync = os.fsync
    refused: list[str] = []

    def fsync(fd: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if name.startswith("job-"):  # the job's output, in uploads/
            refused.append(name)
            raise OSError(errno.ENOSPC, NO_ROOM)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    status, job = await api.post_json("/api/audio/rec-src/enhance", {"preset": "gentle"})
    assert status == 202, job

    async def finished() -> dict[str, Any] | None:
        _, body = await api.get(f"/api/jobs/{job['id']}")
        return body if body["state"] in ("succeeded", "failed", "cancelled") else None

    await wait_until(finished, timeout=120)
    _, job = await api.get(f"/api/jobs/{job['id']}")
    assert job["state"] == "failed" and job["result"] is None, job
    assert_insufficient_storage(server, job["error"])
    assert refused, "the job's output was never made durable"
    assert leftovers(server) == []  # the temporary output is gone
    assert [p for p in server.store.stored_files() if p.startswith("derived/")] == []
    assert await server.catalog.count() == 1


# -- the catalog: SQLite's "database or disk is full", no row -----------------------------------


async def fill_the_catalog(server: Server) -> None:
    """Leave the catalog no room for another recording.

    A ballast row fills the recordings table's one page to within a few dozen bytes
    (without spilling onto an overflow page), and the database may not grow past the
    pages it has (``max_page_count``, on the writer's connection): the next row needs a
    page, and SQLite says "database or disk is full", as it does when the disk is. The
    page's free bytes are read from SQLite's ``dbstat`` table. The rows already there must
    fit in that one page (a few recordings).
    """
    ballast = Recording(
        id="ballast", path="ballast", format="wav", sample_rate=8000, channels=1, frames=0,
        duration_s=0.0, bytes=0, sha256="0" * 64, created_at=time.time(),
        params={"ballast": "x" * 100})
    await server.catalog.add(ballast)
    before = await server.catalog.count()

    def unused(conn: sqlite3.Connection) -> tuple[int, int, int]:
        rows = conn.execute("SELECT pagetype, unused FROM dbstat WHERE name = 'recordings'"
                            ).fetchall()
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return len(rows), int(rows[0][1]), int(free)

    pages, free_bytes, free_pages = await server.catalog.execute_read(unused)
    assert (pages, free_pages) == (1, 0)
    params = json.dumps({"ballast": "x" * (100 + free_bytes - 40)})
    await server.catalog.execute_write(lambda conn: conn.execute(
        "UPDATE recordings SET params = ? WHERE id = 'ballast'", (params,)))
    pages, free_bytes, free_pages = await server.catalog.execute_read(unused)
    assert (pages, free_pages) == (1, 0) and free_bytes < 100, (pages, free_bytes, free_pages)
    assert await server.catalog.count() == before

    def no_more_pages(conn: sqlite3.Connection) -> None:
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {int(count)}")

    await server.catalog.execute_write(no_more_pages)


async def room_in_the_catalog(server: Server) -> None:
    await server.catalog.execute_write(
        lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))


@pytest.mark.asyncio
async def test_a_full_catalog_refuses_a_recording_and_writes_no_row(
        server: Server, api: Api) -> None:
    await fill_the_catalog(server)
    data = encode("wav", seconds=1.0)
    status, body = await api.upload(data, recording_id="rec-nowhere")
    assert status == 507, body
    assert_insufficient_storage(server, body)
    assert "catalog" in body["error"]
    assert await server.catalog.find("rec-nowhere") is None
    assert await server.catalog.count() == 1  # the ballast alone
    assert (await api.get("/api/audio/rec-nowhere/meta"))[0] == 404
    assert leftovers(server) == []

    await room_in_the_catalog(server)  # the writer goes on: the next write works
    status, body = await api.upload(data, recording_id="rec-nowhere")
    assert status == 201, body
    assert await server.catalog.count() == 2


@pytest.mark.asyncio
async def test_a_full_catalog_fails_a_write_and_the_next_one_still_works(
        server: Server) -> None:
    """The writer thread's transaction is closed after SQLite gave up on it."""
    await fill_the_catalog(server)
    with pytest.raises(InsufficientStorage, match="the catalog could not be written") as caught:
        await server.catalog.set_meta("big", "y" * 20_000)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert await server.catalog.get_meta("big") is None
    await room_in_the_catalog(server)
    await server.catalog.set_meta("big", "y" * 20_000)
    assert await server.catalog.get_meta("big") == "y" * 20_000


async def finished_job(api: Api, job_id: str) -> dict[str, Any]:
    async def ended() -> bool:
        _, body = await api.get(f"/api/jobs/{job_id}")
        return body["state"] in ("succeeded", "failed", "cancelled")

    await wait_until(ended, timeout=120)
    _, body = await api.get(f"/api/jobs/{job_id}")
    return dict(body)


@pytest.mark.asyncio
async def test_a_job_whose_output_cannot_be_catalogued_fails_with_507(
        server: Server, api: Api) -> None:
    status, body = await api.upload(encode("wav", seconds=2.0), recording_id="rec-src")
    assert status == 201, body
    await fill_the_catalog(server)
    status, job = await api.post_json("/api/audio/rec-src/enhance", {"preset": "gentle"})
    assert status == 202, job
    job = await finished_job(api, job["id"])
    assert job["state"] == "failed", job
    assert_insufficient_storage(server, job["error"])
    assert "catalog" in job["error"]["error"]
    assert await server.catalog.count() == 2  # the source and the ballast
    assert leftovers(server) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("via", ["upload", "job"])
async def test_a_recording_that_cannot_be_catalogued_leaves_no_file(
        server: Server, api: Api, via: str) -> None:
    if via == "job":
        status, body = await api.upload(encode("wav", seconds=2.0), recording_id="rec-src")
        assert status == 201, body
    stored = server.store.stored_files()
    await fill_the_catalog(server)
    if via == "upload":
        status, body = await api.upload(encode("wav", seconds=1.0), recording_id="rec-nowhere")
        assert status == 507, body
    else:
        status, job = await api.post_json("/api/audio/rec-src/enhance", {"preset": "gentle"})
        assert status == 202, job
        assert (await finished_job(api, job["id"]))["state"] == "failed"
    assert server.store.stored_files() == stored


@pytest.mark.asyncio
async def test_a_tus_upload_that_cannot_be_catalogued_stays_open(
        server: Server, api: Api) -> None:
    """A full catalog at the last byte is the server's fault: 507, and the upload starts
    over from 0 (never refused for good), so the device sends it again once there is room."""
    data = encode("wav", seconds=1.0)
    url = await create_upload(api, len(data), "rec-late")
    await fill_the_catalog(server)
    status, body, _ = await patch(api, url, 0, data)
    assert status == 507, body
    assert_insufficient_storage(server, body)
    assert await head_offset(api, url) == 0
    await room_in_the_catalog(server)
    status, _, headers = await patch(api, url, 0, data)
    assert status == 204, headers
    assert headers["Vocalink-Sha256"] == hashlib.sha256(data).hexdigest()
    assert (await api.get("/api/audio/rec-late/meta"))[0] == 200


@pytest.mark.asyncio
async def test_a_tus_upload_that_cannot_be_created_leaves_nothing(
        server: Server, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its record does not fit: 507, and neither a record nor an empty part file stays."""
    tus_dir = server.store.uploads_dir / "tus"
    before = sorted(p.name for p in tus_dir.iterdir()) if tus_dir.exists() else []
    FullDisk(room=0).install(monkeypatch, durable)
    status, body, _, _ = await api.request("POST", "/api/audio/uploads", headers={
        **TUS, "Upload-Length": "1000"})
    assert status == 507, body
    assert_insufficient_storage(server, body)
    monkeypatch.undo()
    assert sorted(p.name for p in tus_dir.iterdir()) == before
