"""A cancelled merge leaves nothing: no file in ``uploads/`` or ``derived/``, no row.

``DELETE /api/jobs/{id}`` on a real server. The first test runs the DSP in a thread pool
(a real executor, in this process) so that the disk can be made slow where the merge
reads its sources: the cancellation then lands while the merge is provably in the middle
of its work. The second cancels on the default process pool once the output is complete
and being catalogued: too late to cancel, the job succeeds, and the store agrees with it.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf

from tests.conftest import fast_settings
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.audio import io as audio_io
from vocalink_lab.audio import synth
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio

SR = 16000


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio).T, SR, format="WAV", subtype="FLOAT")
    return buf.getvalue()


async def upload_tracks(api: Api, n: int = 2) -> list[str]:
    voice = synth.speech_like(3.0, SR, seed=5)
    ids = []
    for i in range(n):
        status, body = await api.upload(wav_bytes(voice * (0.5 + 0.1 * i)),
                                        recording_id=f"rec-{i}", take_id="take-1")
        assert status == 201, body
        ids.append(f"rec-{i}")
    return ids


async def job_state(api: Api, job_id: str) -> dict[str, Any]:
    status, body = await api.get(f"/api/jobs/{job_id}")
    assert status == 200, body
    return dict(body)


async def ended(api: Api, job_id: str) -> dict[str, Any]:
    async def done() -> bool:
        return (await job_state(api, job_id))["state"] in ("succeeded", "failed", "cancelled")

    await wait_until(done, timeout=120)
    return await job_state(api, job_id)


def files_under(server: Server, folder: str) -> list[str]:
    root = server.data_dir / folder
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


class SlowDisk:
    """Reading a source file blocks until the test lets the disk answer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reading = threading.Event()
        self.answer = threading.Event()
        real_open = audio_io.AudioReader.__init__

        def open_(reader: Any, *args: Any, **kwargs: Any) -> None:
            self.reading.set()
            self.answer.wait(60)
            real_open(reader, *args, **kwargs)

        monkeypatch.setattr(audio_io.AudioReader, "__init__", open_)


@pytest_asyncio.fixture
async def threaded(tmp_path: Path) -> AsyncIterator[tuple[Server, Api, ThreadPoolExecutor]]:
    """A server whose DSP runs in one thread of this process."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="dsp-test")
    server = Server(fast_settings(tmp_path / "data"), executor=executor)
    await server.start()
    api = Api(server.url)
    try:
        yield server, api, executor
    finally:
        api.close()
        await server.stop()
        executor.shutdown(wait=True)


async def test_a_merge_cancelled_mid_work_leaves_no_file_and_no_row(
        threaded: tuple[Server, Api, ThreadPoolExecutor],
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, api, executor = threaded
    ids = await upload_tracks(api)
    stored = server.store.stored_files()
    disk = SlowDisk(monkeypatch)
    status, job = await api.post_json("/api/audio/merge", {"ids": ids, "format": "wav"})
    assert status == 202, job
    assert await asyncio.to_thread(disk.reading.wait, 60)  # the merge is reading its sources

    status, cancelling, _, _ = await api.request("DELETE", f"/api/jobs/{job['id']}")
    assert status == 200, cancelling
    disk.answer.set()  # the disk answers; the merge must not go on to write its output
    job = await ended(api, job["id"])
    assert job["state"] == "cancelled" and job["result"] is None, job
    assert job["error"]["code"] == "job_cancelled"

    # The one DSP thread is free (work runs in order): the merge has let go for good.
    await asyncio.wrap_future(executor.submit(lambda: None))
    assert files_under(server, "uploads") == []
    assert files_under(server, "derived") == []
    assert server.store.stored_files() == stored
    assert await server.catalog.count() == len(ids)


async def test_a_cancel_that_comes_while_the_output_is_catalogued_is_too_late(
        server: Server, api: Api) -> None:
    """Cut short there, the job read ``cancelled`` while its recording was stored."""
    ids = await upload_tracks(api)
    writer_free = threading.Event()
    writer_busy = asyncio.ensure_future(  # a slow disk holds the catalog's writer
        server.catalog.execute_write(lambda conn: writer_free.wait(60)))
    try:
        status, job = await api.post_json("/api/audio/merge", {"ids": ids})
        assert status == 202, job
        # The output is in derived/; its row waits for the writer.
        await wait_until(lambda: files_under(server, "derived") != [], timeout=120)
        status, _, _, _ = await api.request("DELETE", f"/api/jobs/{job['id']}")
        assert status == 200
    finally:
        writer_free.set()
        await writer_busy
    job = await ended(api, job["id"])
    assert job["state"] == "succeeded", job
    merged = job["result"]["recording"]
    assert (await api.get(f"/api/audio/{merged['id']}/meta"))[0] == 200
    assert files_under(server, "derived") == [Path(merged["path"]).name]
    assert files_under(server, "uploads") == []
