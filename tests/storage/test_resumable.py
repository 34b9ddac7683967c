"""ResumableStore: an upload's record is replaced whole, and survives a restart."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vocalink_lab.errors import StorageError
from vocalink_lab.storage import ResumableStore, hash_file


def test_records_round_trip_and_survive_a_restart(tmp_path: Path) -> None:
    store = ResumableStore(tmp_path / "uploads")
    upload = store.create(1000, {"recording_id": "rec-1"}, "recording_id cmVjLTE=")
    with open(store.part_path(upload.id), "ab") as part:
        part.write(b"x" * 400)
    upload.state, upload.updated_at = "receiving", upload.created_at + 1
    store.save(upload)

    again = ResumableStore(tmp_path / "uploads").load(upload.id)
    assert again is not None and again.offset == 400
    assert again.to_json() == upload.to_json()
    record = store.part_path(upload.id).with_suffix(".json")
    assert json.loads(record.read_text()) == upload.to_json()
    assert list(json.loads(record.read_text())) == list(upload.to_json())  # field order kept
    assert store.ids() == [upload.id]


def test_a_torn_temporary_record_is_not_an_upload_and_is_replaced(tmp_path: Path) -> None:
    """What a crash between writing the temporary record and renaming it leaves."""
    store = ResumableStore(tmp_path / "uploads")
    upload = store.create(10, {}, "")
    temp = store.part_path(upload.id).with_suffix(".json.tmp")
    temp.write_text('{"id": "')
    assert store.ids() == [upload.id]
    loaded = store.load(upload.id)
    assert loaded is not None and loaded.state == "receiving"
    upload.state, upload.recording_id, upload.sha256 = "complete", "rec-9", "ab" * 32
    store.save(upload)
    assert not temp.exists()
    loaded = store.load(upload.id)
    assert loaded is not None and (loaded.state, loaded.recording_id) == ("complete", "rec-9")


def test_remove_and_unreadable_records(tmp_path: Path) -> None:
    store = ResumableStore(tmp_path / "uploads")
    upload = store.create(10, {}, "")
    store.part_path(upload.id).with_suffix(".json").write_text("{not json")
    with pytest.raises(StorageError, match="unreadable"):
        store.load(upload.id)
    store.remove(upload.id)
    assert store.load(upload.id) is None and store.ids() == []
    assert list(store.dir.iterdir()) == []


def test_hash_file_is_still_part_of_storage(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc" * 1000)
    assert hash_file(tmp_path / "f", fsync=True).hexdigest() == \
        hashlib.sha256(b"abc" * 1000).hexdigest()
