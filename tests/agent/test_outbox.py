"""Outbox: a durable queue that survives restarts and crashes, and deletes only on done()."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vocalink_lab import durable
from vocalink_lab.agent import outbox as outbox_mod
from vocalink_lab.agent.outbox import LAYOUT_VERSION, Outbox, OutboxItem
from vocalink_lab.agent.spool import FinishedRecording, SpoolWriter, recover, sidecar_path


def finished(folder: Path, recording_id: str, *, fmt: str = "wav", seed: int = 0,
             frames: int = 800) -> FinishedRecording:
    """A finished recording file, as SpoolWriter.finalize would hand it over."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{recording_id}.{fmt}"
    data = np.random.default_rng(seed).uniform(-0.5, 0.5, frames).astype(np.float32)
    sf.write(path, data, 8000, subtype="PCM_16")
    raw = path.read_bytes()
    return FinishedRecording(path, recording_id, "take-1", "mic-1", 100.0 + seed, 8000, 1,
                             frames, len(raw), hashlib.sha256(raw).hexdigest(), fmt)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def test_add_survives_a_restart(tmp_path: Path, spool_dir: Path) -> None:
    rec = finished(spool_dir, "rec-1", fmt="flac")
    audio = rec.path.read_bytes()
    outbox = Outbox(tmp_path / "outbox")
    item = outbox.add(rec, recorded_offline=True, server_id="srv-A")
    assert not rec.path.exists()
    assert item.path == tmp_path / "outbox" / "rec-1.flac" and item.path.read_bytes() == audio
    assert item.meta_path == tmp_path / "outbox" / "rec-1.json"
    stored = json.loads(item.meta_path.read_text())
    assert stored == item.meta() and stored["outbox_version"] == LAYOUT_VERSION
    assert stored["recording"] == {**rec.to_dict(), "path": "rec-1.flac"}
    assert stored["extra"] == {"recorded_offline": True, "server_id": "srv-A"}
    assert (stored["upload_url"], stored["attempts"], stored["last_error"]) == (None, 0, None)
    assert stored["queued_at"] > 0
    assert item.recording == dataclasses.replace(rec, path=item.path)

    again = Outbox(tmp_path / "outbox")  # a restart
    assert again.pending() == [item]
    assert len(again) == 1 and again.bytes_pending == rec.bytes
    assert again.get("rec-1") == item and again.get("nope") is None
    assert again.pending()[0].recording == item.recording
    assert again.orphans() == []


def test_pending_is_oldest_first(tmp_path: Path, spool_dir: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count(1000.0, -1.0)  # a clock stepping backwards: order by queued_at
    monkeypatch.setattr(outbox_mod.time, "time", lambda: next(ticks))
    outbox = Outbox(tmp_path / "outbox")
    for rid in ("a", "b", "c"):
        outbox.add(finished(spool_dir, rid))
    monkeypatch.undo()
    assert [i.recording_id for i in Outbox(tmp_path / "outbox").pending()] == ["c", "b", "a"]


def test_update_persists(tmp_path: Path, spool_dir: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    item = outbox.add(finished(spool_dir, "rec-1"), recorded_offline=False)
    updated = outbox.update(item, upload_url="http://hub/files/abc", attempts=1,
                            last_error="timeout", server_id="srv-B")
    assert (updated.upload_url, updated.attempts, updated.last_error) == \
        ("http://hub/files/abc", 1, "timeout")
    assert updated.extra == {"recorded_offline": False, "server_id": "srv-B"}
    [reread] = Outbox(tmp_path / "outbox").pending()
    assert reread == updated
    # A stale item does not undo what another update stored.
    assert outbox.update(item, attempts=2).upload_url == "http://hub/files/abc"
    with pytest.raises(ValueError, match="cannot be updated"):
        outbox.update(item, sha256="0" * 64)


def test_a_crash_during_update_leaves_the_previous_json(tmp_path: Path, spool_dir: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    item = outbox.update(outbox.add(finished(spool_dir, "rec-1")), attempts=3)
    # What a crash between writing the temporary file and renaming it leaves behind.
    (tmp_path / "outbox" / "rec-1.json.tmp").write_text('{"recording_id": "rec-1", "att')
    restarted = Outbox(tmp_path / "outbox")
    assert restarted.pending() == [item] and restarted.orphans() == []
    assert restarted.update(item, attempts=4).attempts == 4
    assert not (tmp_path / "outbox" / "rec-1.json.tmp").exists()


@pytest.mark.parametrize("keep_sent", [False, True])
def test_done_removes_only_that_item(tmp_path: Path, spool_dir: Path, keep_sent: bool) -> None:
    outbox = Outbox(tmp_path / "outbox", keep_sent=keep_sent)
    first = outbox.add(finished(spool_dir, "rec-1", seed=1))
    second = outbox.add(finished(spool_dir, "rec-2", seed=2))
    with pytest.raises(ValueError, match="keeping it"):
        outbox.done(first, sha256="f" * 64)
    assert len(outbox) == 2
    outbox.done(first, sha256=first.recording.sha256.upper())
    assert outbox.pending() == [second]
    assert not first.path.exists() and not first.meta_path.exists()
    sent = sorted(p.name for p in (tmp_path / "outbox" / "sent").glob("*")) if keep_sent else []
    assert sent == (["rec-1.json", "rec-1.wav"] if keep_sent else [])
    outbox.done(first)  # idempotent
    assert Outbox(tmp_path / "outbox").pending() == [second]
    assert outbox.orphans() == []


def test_orphans_are_reported_and_kept(tmp_path: Path, spool_dir: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox(root)
    good = outbox.add(finished(spool_dir, "good"))
    lonely_json = outbox.add(finished(spool_dir, "no-audio")).meta_path
    (root / "no-audio.wav").unlink()
    (root / "no-json.wav").write_bytes(b"RIFF....")
    (root / "broken.json").write_text("{")
    (root / "odd.json").write_text('{"recording_id": 5}')
    caplog.set_level(logging.WARNING, logger="vocalink_lab.agent.outbox")
    assert outbox.pending() == [good]
    assert outbox.orphans() == sorted([lonely_json, root / "no-json.wav", root / "broken.json",
                                       root / "odd.json"])
    for name in ("no-audio.json", "no-json.wav", "broken.json", "odd.json"):
        assert (root / name).exists() and name in caplog.text
    caplog.clear()
    outbox.pending()
    assert caplog.text == ""  # reported once, not at every scan


def test_add_is_idempotent_and_refuses_a_clash(tmp_path: Path, spool_dir: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    rec = finished(spool_dir, "rec-1", seed=1)
    item = outbox.add(rec)
    assert outbox.add(rec) == item
    with pytest.raises(FileExistsError, match="other bytes"):
        outbox.add(finished(spool_dir, "rec-1", seed=2))
    assert (spool_dir / "rec-1.wav").exists()  # the clashing file stays where it was
    with pytest.raises(ValueError, match="reserved"):
        outbox.add(finished(spool_dir, "rec-3"), sha256="x")
    evil = FinishedRecording(**{**finished(spool_dir, "rec-4").to_dict(),
                                "path": spool_dir / "rec-4.wav", "recording_id": "../evil"})
    with pytest.raises(ValueError, match="file name"):
        outbox.add(evil)
    assert len(outbox) == 1


@pytest.mark.asyncio
async def test_from_spool_to_outbox_without_a_gap(tmp_path: Path, spool_dir: Path) -> None:
    x = np.random.default_rng(0).integers(-32768, 32768, (4000, 1)).astype(np.float32) / 32768
    writer = SpoolWriter(spool_dir / "r1.wav", 8000, 1, recording_id="r1", format="flac")
    await writer.write(x)
    rec = await writer.finalize()
    outbox = Outbox(tmp_path / "outbox")
    # A crash after the JSON was written, before the audio moved: the spool still has it.
    meta = tmp_path / "outbox" / "r1.json"
    durable.write_json_atomic(meta, {**rec.to_dict(), "path": "r1.flac", "queued_at": 1.0,
                                     "attempts": 0, "upload_url": None, "last_error": None})
    assert outbox.pending() == [] and outbox.orphans() == [meta]
    [again] = recover(spool_dir)
    assert again == rec
    item = outbox.add(again, recorded_offline=True)
    assert item.queued_at == 1.0 and item.extra == {"recorded_offline": True}
    assert not sidecar_path(rec.path).exists() and list(spool_dir.iterdir()) == []
    assert recover(spool_dir) == []
    y, _ = sf.read(item.path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(y, x)
    assert Outbox(tmp_path / "outbox").pending() == [item]


def test_item_meta_round_trip(tmp_path: Path) -> None:
    rec = FinishedRecording(tmp_path / "a.wav", "a", None, None, 1.0, 8000, 1, 8, 60, "ab", "wav")
    item = OutboxItem(rec, tmp_path / "a.json", attempts=2, extra={"k": [1, 2]})
    meta = item.meta()
    assert meta["recording"]["path"] == "a.wav" and meta["extra"] == {"k": [1, 2]}
    assert (item.path, item.recording_id) == (rec.path, "a")
    assert OutboxItem._from_meta(json.loads(json.dumps(meta)), item.meta_path) == item


# What the outbox wrote before layout 2 (every field at the top level, extras too): an agent
# upgraded with recordings still queued must send them.
OLD_LAYOUT = {
    "path": "rec-old.wav", "recording_id": "rec-old", "take_id": "take-9",
    "device_id": "mic-3", "started_at": 1700000000.25, "sample_rate": 8000, "channels": 1,
    "frames": 800, "bytes": 0, "sha256": "", "format": "wav", "recovered": True,
    "upload_url": "/api/audio/uploads/0123456789abcdef0123456789abcdef", "attempts": 3,
    "last_error": "timeout", "queued_at": 1700000001.5,
    "recorded_offline": True, "server_id": "srv-A",
}


def test_an_outbox_in_the_old_flat_layout_still_loads(tmp_path: Path, spool_dir: Path) -> None:
    root = tmp_path / "outbox"
    root.mkdir()
    rec = finished(spool_dir, "rec-old")
    (root / "rec-old.wav").write_bytes(rec.path.read_bytes())
    old = {**OLD_LAYOUT, "bytes": rec.bytes, "sha256": rec.sha256}
    (root / "rec-old.json").write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")

    outbox = Outbox(root)
    [item] = outbox.pending()
    assert outbox.orphans() == []
    assert item.recording == FinishedRecording(
        root / "rec-old.wav", "rec-old", "take-9", "mic-3", 1700000000.25, 8000, 1, 800,
        rec.bytes, rec.sha256, "wav", recovered=True)
    assert (item.upload_url, item.attempts, item.last_error, item.queued_at) == \
        (OLD_LAYOUT["upload_url"], 3, "timeout", 1700000001.5)
    assert item.extra == {"recorded_offline": True, "server_id": "srv-A"}
    assert outbox.get("rec-old") == item and outbox.bytes_pending == rec.bytes

    # The next change rewrites it in the current layout, losing nothing.
    updated = outbox.update(item, attempts=4)
    stored = json.loads(item.meta_path.read_text())
    assert stored["outbox_version"] == LAYOUT_VERSION and "recorded_offline" not in stored
    assert Outbox(root).pending() == [updated]
    assert updated == dataclasses.replace(item, attempts=4)
    outbox.done(updated, sha256=rec.sha256)
    assert list(root.iterdir()) == []


def test_an_outbox_from_a_newer_version_is_kept_not_guessed(tmp_path: Path,
                                                           spool_dir: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    item = outbox.add(finished(spool_dir, "rec-1"))
    durable.write_json_atomic(item.meta_path, {**item.meta(), "outbox_version": 99})
    assert outbox.pending() == [] and outbox.orphans() == [item.meta_path, item.path]
    assert item.path.exists()


def test_a_scan_beside_adds_and_removals_sees_no_orphan(tmp_path: Path, spool_dir: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    # The agent adds in a worker thread while its loop counts the outbox for STATUS: the
    # half item a scan sees in between is on its way, not an orphan.
    outbox = Outbox(tmp_path / "outbox")
    recordings = [finished(spool_dir, f"rec-{i}", seed=i) for i in range(60)]
    caplog.set_level(logging.WARNING, logger="vocalink_lab.agent.outbox")
    stop = threading.Event()
    scans = []

    def scan() -> None:
        while not stop.is_set():
            scans.append(len(outbox.pending()) + len(outbox.orphans()))

    scanner = threading.Thread(target=scan)
    scanner.start()
    try:
        for rec in recordings:
            outbox.done(outbox.add(rec))
    finally:
        stop.set()
        scanner.join()
    assert len(scans) > 10 and caplog.text == "", caplog.text
    assert outbox.pending() == [] and outbox.orphans() == []
