"""``DELETE /api/takes/{id}``: a stopped take goes with its recordings; a recording one stays."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.device import FakeDevice
from tests.support.errors import assert_error_shape
from tests.support.http import Api
from tests.support.takes import finished_job, record_take
from tests.support.wait import wait_until
from vocalink_lab.client import Client
from vocalink_lab.errors import Conflict, TakeNotFound
from vocalink_lab.protocol import Topic
from vocalink_lab.server import Server
from vocalink_lab.storage import Catalog, Recording

pytestmark = pytest.mark.asyncio


async def test_a_stopped_take_goes_with_its_recordings_and_each_is_announced(
        threaded: tuple[Server, Api]) -> None:
    server, api = threaded
    gone = await record_take(server, api, "take-a", {"mic-1": "Alto", "mic-2": "Bass"})
    kept = await record_take(server, api, "take-b", {"mic-1": "Alto"})
    # A merge across both takes belongs to neither: it stays, with its lineage.
    _, job = await api.post_json("/api/audio/merge", {"ids": [gone[0]["id"], kept[0]["id"]],
                                                      "mode": "mix"})
    across = (await finished_job(api, job["id"]))["result"]["recording"]
    assert across["take_id"] is None
    client = Client(server.url)
    events = await client.open_events([Topic.RECORDING_DELETED])
    announced: list[dict[str, Any]] = []

    async def follow() -> None:
        async for event in events:
            announced.append(event["data"]["recording"])

    following = asyncio.get_running_loop().create_task(follow())
    try:
        status, body = await _delete(api, "take-a")
        assert status == 200, body
        assert body["deleted"] == "take-a" and body["take"]["id"] == "take-a"
        assert sorted(body["recordings"]) == sorted(r["id"] for r in gone)
        await wait_until(lambda: len(announced) == len(gone), timeout=5)
        assert sorted(r["id"] for r in announced) == sorted(r["id"] for r in gone)
        assert {r["take_id"] for r in announced} == {"take-a"}
    finally:
        events.close()
        following.cancel()
        client.close()
    for row in gone:
        assert not (server.data_dir / row["path"]).exists()
        status, _ = await api.get(f"/api/audio/{row['id']}/meta")
        assert status == 404
    status, body = await api.get("/api/takes/take-a")
    assert status == 404
    assert_error_shape(body, 404, "take_not_found")
    _, listing = await api.get("/api/takes")
    assert [t["id"] for t in listing["items"]] == ["take-b"]
    _, row = await api.get(f"/api/audio/{across['id']}/meta")
    assert row["parents"] == [gone[0]["id"], kept[0]["id"]]
    assert (server.data_dir / kept[0]["path"]).exists()


async def test_a_take_still_recording_is_a_409_and_nothing_goes(server: Server,
                                                                  api: Api) -> None:
    async with FakeDevice(server.ws_url, "mic-1", "Alto"):
        await api.post_json("/api/commands", {"action": "START", "take_id": "take-live",
                                              "lead_ms": 0})

        async def catalogued() -> bool:
            return (await api.get("/api/takes/take-live"))[0] == 200

        await wait_until(catalogued, timeout=5)
        status, body = await _delete(api, "take-live")
        assert status == 409
        assert_error_shape(body, 409, "conflict")
        assert "still recording" in body["error"]
        assert (await api.get("/api/takes/take-live"))[0] == 200
        await api.post_json("/api/commands", {"action": "STOP", "lead_ms": 0})

        async def stopped() -> bool:
            return (await api.get("/api/takes/take-live"))[1]["stopped_at"] is not None

        await wait_until(stopped, timeout=5)
        status, body = await _delete(api, "take-live")
        assert status == 200 and body["recordings"] == []


async def test_a_take_an_earlier_server_left_open_can_be_deleted(tmp_path: Path) -> None:
    """Stopped mid-take (a crash, a power cut): the take never stopped, and nothing
    records it now; the lab assistant can still delete it, with its recordings."""
    from tests.conftest import fast_settings, running

    data = tmp_path / "data"
    data.mkdir()
    async with Catalog(data / "vocalink.db") as catalog:
        await catalog.take_started("take-crashed", 1700000000.0, ["mic-1"])
        await catalog.add(_recording("r1", "take-crashed", "original", "Alto"))
    async with running(fast_settings(data)) as server:
        api = Api(server.url)
        try:
            _, take = await api.get("/api/takes/take-crashed")
            assert take["stopped_at"] is None and server.hub.active_take_id is None
            status, body = await _delete(api, "take-crashed")
            assert status == 200, body
            assert body["deleted"] == "take-crashed" and body["recordings"] == ["r1"]
            assert (await api.get("/api/takes/take-crashed"))[0] == 404
        finally:
            api.close()


@pytest.mark.parametrize(("path", "token", "status", "code"), [
    ("/api/takes/nope", None, 404, "take_not_found"),
    ("/api/takes/..", None, 422, "invalid_parameter"),
    ("/api/takes/nope", "", 401, "unauthorized"),
])
async def test_delete_errors(server: Server, path: str, token: str | None, status: int,
                             code: str) -> None:
    api = Api(server.url, token=token)
    try:
        got, body, _, _ = await api.request("DELETE", path)
    finally:
        api.close()
    assert got == status
    assert_error_shape(body, status, code)


async def test_the_catalog_deletes_a_take_whole_or_not_at_all(tmp_path: Path) -> None:
    async with Catalog(tmp_path / "vocalink.db") as catalog:
        await catalog.take_started("take-1", 1700000000.0, ["mic-1", "mic-2"])
        await catalog.take_started("take-2", 1700000100.0, ["mic-1"])
        for rid, take, kind, device in (("r1", "take-1", "original", "Bass"),
                                        ("r2", "take-1", "original", "Alto"),
                                        ("r3", "take-1", "enhanced", "Alto"),
                                        ("r4", "take-1", "merged", None),
                                        ("r5", "take-2", "original", "Alto")):
            await catalog.add(_recording(rid, take, kind, device))
        with pytest.raises(Conflict, match="still recording"):
            await catalog.delete_take("take-1")
        assert (await catalog.query(take_id="take-1")).total == 4  # nothing went
        take, members = await catalog.take_members("take-1")
        assert take["recordings"] == 4
        assert [r.id for r in members] == ["r2", "r1", "r4"]  # originals by device, merges

        await catalog.take_stopped("take-1", 1700000010.0)
        take, deleted = await catalog.delete_take("take-1")
        assert take["id"] == "take-1" and take["recordings"] == 4
        assert sorted(r.id for r in deleted) == ["r1", "r2", "r3", "r4"]
        assert [r.id for r in (await catalog.query()).items] == ["r5"]
        with pytest.raises(TakeNotFound):
            await catalog.take("take-1")
        with pytest.raises(TakeNotFound):
            await catalog.delete_take("take-1")
        with pytest.raises(TakeNotFound):
            await catalog.take_members("take-1")
        items, total = await catalog.takes()
        assert total == 1 and items[0]["id"] == "take-2"


async def _delete(api: Api, take_id: str) -> tuple[int, Any]:
    status, body, _, _ = await api.request("DELETE", f"/api/takes/{take_id}")
    return status, body


def _recording(rid: str, take_id: str, kind: str, device_name: str | None) -> Recording:
    return Recording(id=rid, path=f"recordings/2024/{rid}.wav", format="wav",
                     sample_rate=16000, channels=1, frames=16000, duration_s=1.0, bytes=100,
                     sha256="0" * 64, created_at=1700000000.0 + len(rid), kind=kind,
                     take_id=take_id, device_id=device_name and device_name.lower(),
                     device_name=device_name)
