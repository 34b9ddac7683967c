"""The Lab's take and job actions, as the Takes and Jobs panels use them."""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from pathlib import Path

import pytest

from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.device import FakeDevice
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.errors import Conflict, TakeNotFound
from vocalink_lab.lab import Lab, connect
from vocalink_lab.widgets import Controller

pytestmark = pytest.mark.asyncio


async def test_a_take_named_merged_enhanced_downloaded_and_deleted(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="dsp-test") as executor:
        lab = await Lab.start(data_dir=tmp_path / "data", port=0, host="127.0.0.1",
                              advertise=False, settings=fast_settings(tmp_path / "data"),
                              executor=executor)
        controller: Controller = lab  # what the panels hold
        api = Api(lab.url)
        assert lab.server is not None
        other = await connect(lab.url, token=lab.token)  # another page's kernel
        try:
            async with FakeDevice(lab.server.ws_url, "mic-1", "Alto"), \
                    FakeDevice(lab.server.ws_url, "mic-2", "Bass"):
                await lab.wait_for_devices(2, timeout_s=5)
                take_id = (await lab.start_recording(lead_ms=0))["take_id"]
                with pytest.raises(Conflict, match="still recording"):
                    await controller.delete_take(take_id)
                await lab.stop_recording()
                for i, device in enumerate(("mic-1", "mic-2")):
                    status, body = await api.upload(
                        encode("wav", 1.0, sr=16000, freq=300 + 200 * i, seed=i),
                        recording_id=f"rec-{i}", device_id=device, take_id=take_id,
                        started_at="1700000000")
                    assert status == 201, body
            await lab.wait_for_recordings(take_id, 2, timeout_s=5)
            await wait_until(lambda: [t["id"] for t in controller.take_list()] == [take_id],
                             timeout=5)

            # The other kernel has seen both recordings and re-read the takes since.
            await wait_until(lambda: len([r for r in other.recording_list()
                                          if r.get("take_id") == take_id]) == 2
                             and [t["id"] for t in other.take_list()] == [take_id]
                             and (other._takes_refresh is None or other._takes_refresh.done()),
                             timeout=5)
            take = await controller.describe_take(take_id, name="Duet", notes="two voices")
            assert (take["name"], take["notes"]) == ("Duet", "two voices")
            assert controller.take_list()[0]["name"] == "Duet"
            # Another kernel is told (``take.updated``), not left with the old name.
            await wait_until(lambda: [t["name"] for t in other.take_list()] == ["Duet"],
                             timeout=5)
            take = await controller.describe_take(take_id, notes="kept the name")
            assert (take["name"], take["notes"]) == ("Duet", "kept the name")

            merge = await controller.submit_merge(take_id=take_id, mode="multichannel")
            assert merge["kind"] == "merge" and merge["params"]["ids"] == ["rec-0", "rec-1"]
            assert merge["id"] in {j["id"] for j in controller.job_list()}  # at once
            enhance = await controller.submit_enhance("rec-0", "gentle")
            assert enhance["kind"] == "enhance"

            def states() -> dict[str, str]:
                return {j["id"]: j["state"] for j in controller.job_list()}

            # The jobs' events reach the mirror: both end as succeeded there.
            await wait_until(lambda: states().get(merge["id"]) == "succeeded"
                             and states().get(enhance["id"]) == "succeeded", timeout=60)
            done = await lab.wait_job(merge["id"])
            merged = done["result"]["recording"]

            # Cancelling a finished job changes nothing; a queued one ends cancelled.
            assert (await controller.cancel_job(merge["id"]))["state"] == "succeeded"
            release = threading.Event()
            executor.submit(release.wait, 30)  # the pool's one worker is busy
            try:
                blocked = await controller.submit_enhance("rec-1", "gentle")
                await controller.cancel_job(blocked["id"])
                await wait_until(lambda: states().get(blocked["id"]) == "cancelled",
                                 timeout=10)
            finally:
                release.set()

            path = await controller.download_take(take_id, tmp_path)
            assert path == tmp_path / "Duet.zip" and not list(tmp_path.glob("*.part"))
            with zipfile.ZipFile(path) as archive:
                manifest = json.loads(archive.read("Duet/manifest.json"))
                assert [m["recording_id"] for m in manifest["members"]] == [
                    "rec-0", "rec-1", merged["id"]]
                for member in manifest["members"]:
                    data = archive.read(member["file"])
                    assert hashlib.sha256(data).hexdigest() == member["sha256"]
            named = await controller.download_take(take_id, tmp_path / "mine.zip")
            assert named == tmp_path / "mine.zip" and named.read_bytes()[:2] == b"PK"

            await controller.delete_take(take_id)
            assert controller.take_list() == []
            await wait_until(lambda: other.take_list() == [], timeout=5)  # ``take.deleted``
            await wait_until(lambda: not [r for r in controller.recording_list()
                                          if r.get("take_id") == take_id], timeout=5)
            with pytest.raises(TakeNotFound):
                await controller.download_take(take_id, tmp_path / "gone.zip")
            assert not (tmp_path / "gone.zip").exists()
            assert not list(tmp_path.glob("*.part"))
            with pytest.raises(TakeNotFound):
                await controller.describe_take(take_id, name="x")
            with pytest.raises(TakeNotFound):
                await controller.delete_take(take_id)
        finally:
            api.close()
            await other.stop()
            await lab.stop()


async def test_the_client_lists_and_cancels_jobs(tmp_path: Path) -> None:
    lab = await Lab.start(data_dir=tmp_path / "data", port=0, host="127.0.0.1",
                          advertise=False, settings=fast_settings(tmp_path / "data"))
    try:
        assert await lab.client.jobs() == []
        from vocalink_lab.errors import JobNotFound

        with pytest.raises(JobNotFound):
            await lab.cancel_job("job-nope")
    finally:
        await lab.stop()
