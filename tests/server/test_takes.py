"""Takes in the catalog: START opens one, STOP closes it; names, notes, errors."""

from __future__ import annotations

import pytest

from tests.support.device import FakeDevice
from tests.support.errors import assert_error_shape
from tests.support.http import Api
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio


async def test_takes_are_listed_named_and_survive_a_restart(server: Server, api: Api) -> None:
    async with FakeDevice(server.ws_url, "mic-1"), FakeDevice(server.ws_url, "mic-2"):
        _, started = await api.post_json("/api/commands", {"action": "START",
                                                           "take_id": "take-a"})
        _, stopped = await api.post_json("/api/commands", {"action": "STOP"})
    assert started["take_id"] == stopped["take_id"] == "take-a"
    _, listing = await api.get("/api/takes")
    assert listing["total"] == 1
    [take] = listing["items"]
    assert take["id"] == "take-a" and take["devices"] == ["mic-1", "mic-2"]
    assert take["started_at"] == started["start_at"] and take["stopped_at"] == stopped["start_at"]
    assert take["duration_s"] == pytest.approx(stopped["start_at"] - started["start_at"])
    status, named = await api.put_json("/api/takes/take-a", {"name": "Duet", "notes": "2 mics"})
    assert status == 200 and (named["name"], named["notes"]) == ("Duet", "2 mics")
    assert named["skew"] == {"skew_ms": None, "bound_ms": None, "flagged": False, "flag": None,
                             "devices": 0, "start_offset_ms": {}, "uncertainty_ms": {}}
    restarted = Server(server.settings)
    await server.stop()
    await restarted.start()
    again = Api(restarted.url)
    try:
        _, detail = await again.get("/api/takes/take-a")
        assert detail["name"] == "Duet" and detail["recordings"] == []
    finally:
        again.close()
        await restarted.stop()


@pytest.mark.parametrize(("method", "path", "body", "status", "message", "code"), [
    ("GET", "/api/takes/nope", None, 404, "no take 'nope'", "take_not_found"),
    ("PUT", "/api/takes/nope", {"name": "x"}, 404, "no take 'nope'", "take_not_found"),
    ("GET", "/api/takes/..", None, 422, "take id", "invalid_parameter"),
    ("GET", "/api/takes?limit=0", None, 422, "limit", "invalid_parameter"),
])
async def test_take_errors(server: Server, api: Api, method: str, path: str,
                           body: object, status: int, message: str, code: str) -> None:
    got, parsed, _, _ = await api.request(method, path, json_body=body)
    assert got == status
    assert_error_shape(parsed, status, code)
    assert message in parsed["error"]


async def test_an_invalid_take_update_is_refused(server: Server, api: Api) -> None:
    async with FakeDevice(server.ws_url, "mic-1"):
        await api.post_json("/api/commands", {"action": "START", "take_id": "take-b"})
    status, body = await api.put_json("/api/takes/take-b", {"name": 5})
    assert status == 422 and "invalid take" in body["error"]
    assert_error_shape(body, 422, "invalid_parameter")
    status, body = await api.put_json("/api/takes/take-b", {"title": "x"})
    assert status == 422
    assert_error_shape(body, 422, "invalid_parameter")
