"""Recording files: spooled off the loop, committed atomically, never clobbered or lost."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from pathlib import Path

import pytest

from vocalink_lab.errors import StorageError
from vocalink_lab.storage import Catalog, Recording, RecordingStore, check_integrity


@pytest.mark.asyncio
async def test_spool_writes_and_hashes_in_blocks(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    store.ensure_dirs()
    spool = store.spool()
    data = os.urandom(3_500_000)
    for i in range(0, len(data), 65536):
        await spool.write(data[i:i + 65536])
    size, digest = await spool.finish()
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert spool.path.read_bytes() == data
    assert spool.path.parent == store.uploads_dir and spool.path.name.endswith(".part")


@pytest.mark.asyncio
async def test_empty_spool_and_discard(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    store.ensure_dirs()
    empty = store.spool()
    assert await empty.finish() == (0, hashlib.sha256(b"").hexdigest())
    dropped = store.spool()
    await dropped.write(os.urandom(2_000_000))
    await dropped.discard()
    await dropped.discard()
    assert not dropped.path.exists()


@pytest.mark.asyncio
@pytest.mark.parametrize("fails", ["write", "fsync"])
async def test_a_failing_disk_is_a_storage_error_and_keeps_what_reached_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str) -> None:
    # The hardware is what we fake: the disk fills up at the second block, or at the fsync.
    store = RecordingStore(tmp_path)
    store.ensure_dirs()
    spool = store.spool()
    opened: list[object] = []
    real_open = open

    class FullDisk:
        def __init__(self, raw: object) -> None:
            self.raw, self.writes = raw, 0

        def __getattr__(self, name: str) -> object:
            return getattr(self.raw, name)

        def write(self, chunk: bytes) -> int:
            self.writes += 1
            if fails == "write" and self.writes > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(spool.path))
            return self.raw.write(chunk)  # type: ignore[attr-defined, no-any-return]

    def fake_open(path: object, mode: str = "r", *args: object) -> object:
        handle = FullDisk(real_open(path, mode, *args))  # type: ignore[call-overload]
        opened.append(handle)
        return handle

    def no_room(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("builtins.open", fake_open)
    if fails == "fsync":
        monkeypatch.setattr(os, "fsync", no_room)
    with pytest.raises(StorageError, match="could not be written: No space left") as caught:
        await spool.write(os.urandom(1 << 20))
        await spool.write(os.urandom(1 << 20))
        await spool.finish()
    monkeypatch.undo()
    assert str(tmp_path) not in str(caught.value)  # no server path in what a client sees
    assert opened and all(h.raw.closed for h in opened)  # type: ignore[attr-defined]
    assert spool.path.stat().st_size == (1 << 20 if fails == "write" else 2 << 20)
    with pytest.raises(StorageError):
        await spool.write(b"more")  # a failed spool takes nothing more


def test_commit_moves_atomically_and_never_overwrites(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    store.ensure_dirs()
    first, second = store.uploads_dir / "a.part", store.uploads_dir / "b.part"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    path1 = store.commit(first, recording_id="rec-1", ext="wav", take_id="take-1")
    path2 = store.commit(second, recording_id="rec-1", ext="wav", take_id="take-1")
    assert path1 == "recordings/take-1/rec-1.wav" and path2 == "recordings/take-1/rec-1-2.wav"
    assert store.absolute(path1).read_bytes() == b"first"
    assert store.absolute(path2).read_bytes() == b"second"
    assert not first.exists() and not second.exists()
    other = store.uploads_dir / "c.part"
    other.write_bytes(b"x")
    assert store.commit(other, recording_id="r", ext="flac").startswith("recordings/_no_take/")


def test_paths_outside_the_data_dir_are_refused(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "data")
    for bad in ("../outside.wav", "/etc/passwd", "recordings/../../x"):
        with pytest.raises(StorageError, match="outside the data dir"):
            store.absolute(bad)


@pytest.mark.asyncio
async def test_integrity_check_reports_and_deletes_nothing(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    store.ensure_dirs()
    kept = store.uploads_dir / "kept.part"
    kept.write_bytes(b"x")
    (store.recordings_dir / "t").mkdir()
    (store.recordings_dir / "t" / "orphan.wav").write_bytes(b"orphan")
    (store.recordings_dir / "t" / "ok.wav").write_bytes(b"ok")
    async with Catalog(tmp_path / "vocalink.db") as catalog:
        for rid, path in (("ok", "recordings/t/ok.wav"), ("gone", "recordings/t/gone.wav")):
            await catalog.add(Recording(id=rid, path=path, format="wav", sample_rate=8000,
                                        channels=1, frames=1, duration_s=1 / 8000, bytes=2,
                                        sha256="0" * 64, created_at=1.0))
        report = await check_integrity(catalog, store)
        assert report.missing_files == [{"id": "gone", "path": "recordings/t/gone.wav"}]
        assert report.orphan_files == ["recordings/t/orphan.wav"]
        assert report.partial_uploads == ["uploads/kept.part"]
        assert not report.clean
        assert (await catalog.get("gone")).id == "gone"  # the row stays
    assert kept.exists() and (store.recordings_dir / "t" / "orphan.wav").exists()


@pytest.mark.asyncio
async def test_a_write_after_the_disk_filled_says_the_disk_is_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer thread fails between two writes: the next write reports a full disk
    (507), not a closed spool (500), whichever of the two comes first."""
    from tests.support.disk import FullDisk
    from vocalink_lab.errors import InsufficientStorage
    from vocalink_lab.storage import files

    FullDisk(room=1000).install(monkeypatch, files)
    spool = files.Spool(tmp_path / "part", block_size=4096)
    await spool.write(b"x" * 4096)  # a block goes to the writer thread, and fails there
    assert spool._pending is not None
    with pytest.raises(InsufficientStorage):
        await asyncio.wait_for(asyncio.shield(spool._pending), 10)
    with pytest.raises(InsufficientStorage):
        await spool.write(b"y")
    await spool.discard()
    assert not (tmp_path / "part").exists()
