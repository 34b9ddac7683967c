"""durable: whole-file replacement that a crash cannot tear, fsync'd directories, hashes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from vocalink_lab import durable


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What durable makes durable, in order: ``file <name>``, ``dir <name>``, ``rename a b``."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        events.append(f"{'dir' if path.is_dir() else 'file'} {path.name}")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(f"rename {Path(src).name} {Path(dst).name}")
        real_replace(src, dst)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name file descriptors")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_write_bytes_atomic_syncs_the_data_before_the_rename_and_the_directory_after(
        tmp_path: Path, synced: list[str]) -> None:
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    durable.write_bytes_atomic(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert synced == ["file state.bin.tmp", "rename state.bin.tmp state.bin",
                      f"dir {tmp_path.name}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_write_text_and_json_atomic(tmp_path: Path) -> None:
    durable.write_text_atomic(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_bytes() == "héllo\n".encode()
    durable.write_json_atomic(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "a.json").read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')  # sorted keys
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    durable.write_json_atomic(tmp_path / "c.json", {"z": 1, "y": 2}, indent=None,
                              sort_keys=False)
    assert (tmp_path / "c.json").read_text() == '{"z": 1, "y": 2}\n'


def test_a_leftover_temporary_file_is_replaced(tmp_path: Path) -> None:
    """What a crash between writing the temporary file and renaming it leaves."""
    (tmp_path / "x.json.tmp").write_text('{"torn": ')
    (tmp_path / "x.json").write_text('{"v": 1}')
    assert json.loads((tmp_path / "x.json").read_text()) == {"v": 1}  # the old one, intact
    durable.write_json_atomic(tmp_path / "x.json", {"v": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"v": 2}
    assert not (tmp_path / "x.json.tmp").exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    durable.write_json_atomic(target, {"v": 1})
    with pytest.raises(TypeError):
        durable.write_json_atomic(target, {"v": object()})

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        durable.write_bytes_atomic(target, b"never")
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_replace_syncs_both_directories_once(tmp_path: Path, synced: list[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"1")
    durable.replace(tmp_path / "a" / "f", tmp_path / "b" / "g")
    assert synced == ["rename f g", "dir b", "dir a"]
    synced.clear()
    durable.replace(tmp_path / "b" / "g", tmp_path / "b" / "h")
    assert synced == ["rename g h", "dir b"]
    assert (tmp_path / "b" / "h").read_bytes() == b"1"


def test_fsync_file_and_dir(tmp_path: Path, synced: list[str]) -> None:
    (tmp_path / "f").write_bytes(b"x")
    durable.fsync_file(tmp_path / "f")
    durable.fsync_dir(tmp_path)
    assert synced == ["file f", f"dir {tmp_path.name}"]


def test_hash_file_streams_in_blocks(tmp_path: Path, synced: list[str]) -> None:
    data = os.urandom(10_000)
    (tmp_path / "f").write_bytes(data)
    hasher = durable.hash_file(tmp_path / "f", block_size=999)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    hasher.update(b"more")  # a running hash: a resumed upload goes on from it
    assert hasher.hexdigest() == hashlib.sha256(data + b"more").hexdigest()
    assert synced == []
    assert durable.hash_file(tmp_path / "f", fsync=True).digest() == \
        hashlib.sha256(data).digest()
    assert synced == ["file f"]
    assert durable.file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert durable.file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
