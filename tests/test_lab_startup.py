"""How a Lab starts beside others: waiting for a server being started, not following, and
the recordings read after the rest (what the dashboard's kernels do on a big catalog)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import fast_settings
from tests.support.wait import wait_until
from vocalink_lab.client import Client
from vocalink_lab.datadir import DataDirLock
from vocalink_lab.lab import Lab
from vocalink_lab.protocol.events import Topic
from vocalink_lab.storage.catalog import Catalog, Recording

pytestmark = pytest.mark.asyncio


async def fill(data_dir: Path, n: int) -> list[str]:
    """``n`` recordings in the catalog (tiny WAV files on disk); their ids, newest first."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(160, np.float32), 16000, format="WAV", subtype="PCM_16")
    blob = buffer.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    now = time.time() - n
    ids = []
    async with Catalog(data_dir / "vocalink.db") as catalog:
        for i in range(n):
            rid = f"rec-{i:06d}"
            path = f"recordings/take-a/{rid}.wav"
            (data_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / path).write_bytes(blob)
            await catalog.add(Recording(
                id=rid, path=path, format="wav", sample_rate=16000, channels=1, frames=160,
                duration_s=0.01, bytes=len(blob), sha256=digest, created_at=now + i,
                take_id="take-a", device_id="dev-1", device_name="Device 1"))
            ids.append(rid)
    return ids[::-1]


async def test_a_lab_waits_for_the_server_another_process_is_starting(tmp_path: Path) -> None:
    """The data dir is held but has no URL yet: wait for it and attach, never serve too."""
    root = (tmp_path / "data").resolve()
    root.mkdir()
    # What a crashed holder left behind must not be taken for the coming server.
    (root / "vocalink.lock").write_text(json.dumps({"pid": 1, "url": "http://127.0.0.1:9"}))
    lock = DataDirLock(root)
    assert lock.acquire()
    assert lock.holder().get("url") is None  # taking it named only this process
    waiting = asyncio.create_task(Lab.start(data_dir=root, settings=fast_settings(root)))
    serving = None
    try:
        await asyncio.sleep(0.3)  # it polls the lock meanwhile
        assert not waiting.done()
        serving = await Lab.start(data_dir=root, settings=fast_settings(root), lock=lock)
        assert serving.server is not None and not serving.attached
        attached = await asyncio.wait_for(waiting, 10)
        try:
            assert attached is not serving and attached.attached
            assert attached.url == serving.url
        finally:
            await attached.stop()
    finally:
        waiting.cancel()
        if serving is not None:
            await serving.stop()
        lock.release()


async def test_a_lock_of_another_data_dir_is_refused(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path / "other")
    assert lock.acquire()
    try:
        with pytest.raises(Exception, match="not .*data"):
            await Lab.start(data_dir=tmp_path / "data", settings=fast_settings(tmp_path / "data"),
                            lock=lock)
    finally:
        lock.release()


async def test_a_lab_that_does_not_follow_reads_the_info_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    await fill(data, 3)
    lab = await Lab.start(data_dir=data, settings=fast_settings(data, name="Studio F"),
                          follow=False)
    try:
        assert lab.server is not None and lab.name == "Studio F"
        assert lab.join_code and lab.token
        assert lab.recording_list() == [] and lab.device_list() == []
    finally:
        await lab.stop()


async def test_recordings_later_come_after_the_rest_and_events_apply_over_them(
        tmp_path: Path) -> None:
    """Devices, takes and info first; the recordings next, and a recording deleted while
    they are read is gone at the end, whichever page had already listed it."""
    data = tmp_path / "data"
    data.mkdir()
    ids = await fill(data, 2500)
    lab = await Lab.start(data_dir=data, settings=fast_settings(data), recordings_later=True)
    refreshed: list[dict[str, object]] = []
    lab.on(Topic.LAB_REFRESHED.value, lambda topic, data: refreshed.append(data))
    other = Client(lab.url, token=lab.token)
    try:
        assert lab.info.get("name")
        # Deleted by someone else while the list is being read (newest: the first page).
        deleted = await other.delete(ids[0])
        assert deleted
        await wait_until(lambda: len(lab.recording_list()) == 2499, timeout=20)
        assert ids[0] not in {r["id"] for r in lab.recording_list()}
        assert refreshed  # the panels were told
        # A later start in this kernel returns the same lab, complete.
        again = await Lab.start(data_dir=data, settings=fast_settings(data))
        assert again is lab and len(again.recording_list()) == 2499
        # Events keep applying once the list is in.
        await other.delete(ids[1])
        await wait_until(lambda: ids[1] not in {r["id"] for r in lab.recording_list()},
                         timeout=10)
        assert len(lab.recording_list()) == 2498
    finally:
        other.close()
        await lab.stop()
