"""REST routes for the server itself, its devices and its commands."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.device import FakeDevice
from tests.support.errors import assert_error_shape
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.protocol import Command
from vocalink_lab.server import Server


@pytest.mark.asyncio
async def test_ping(api: Api) -> None:
    assert await api.get("/ping") == (200, {"status": "server alive"})


@pytest.mark.asyncio
async def test_server_info(server: Server, api: Api) -> None:
    status, info = await api.get("/api/server")
    assert status == 200
    assert info["name"] == server.name and info["id"].startswith("srv-")
    assert info["port"] == server.port and info["protocol"] == 1
    assert info["url"] == server.url and info["ws_url"] == server.ws_url
    assert info["addresses"] == ["127.0.0.1"]
    assert info["devices"] == {"known": 0, "connected": 0, "pending": 0}
    assert info["recordings"] == 0
    assert info["storage"]["clean"] is True
    assert info["limits"]["max_frame_bytes"] == 65536


@pytest.mark.asyncio
async def test_rename_and_invalid_rename_changes_nothing(server: Server, api: Api) -> None:
    status, info = await api.put_json("/api/server", {"name": "Salle B — étage 2"})
    assert status == 200 and info["name"] == "Salle B — étage 2"
    for bad in ["", "   ", "bad\x00name", "x" * 64, 42, None]:
        status, body = await api.put_json("/api/server", {"name": bad})
        assert status == 422, bad
        assert_error_shape(body, 422, "invalid_parameter")
    status, body = await api.put_json("/api/server", {"title": "x"})
    assert status == 422 and "name" in body["error"]
    assert_error_shape(body, 422, "invalid_parameter")
    assert (await api.get("/api/server"))[1]["name"] == "Salle B — étage 2"


@pytest.mark.asyncio
async def test_clients_list_and_detail(server: Server, api: Api) -> None:
    async with FakeDevice(server.ws_url, "mic-1", "Kitchen"), FakeDevice(server.ws_url, "mic-2"):
        status, clients = await api.get("/api/clients")
        assert status == 200 and clients["total"] == 2 and clients["connected"] == 2
        device = {d["device_id"]: d for d in clients["items"]}["mic-1"]
        for key in ("name", "state", "connected", "last_seen", "clock_offset_s", "rtt_s",
                    "level_dbfs", "battery", "pending_uploads"):
            assert key in device
        status, detail = await api.get("/api/clients/mic-1")
        assert status == 200 and detail["name"] == "Kitchen"
        assert [h["kind"] for h in detail["history"]] == ["connected"]
    status, body = await api.get("/api/clients/nobody")
    assert status == 404 and body["error"] == "no device with id 'nobody' has registered"
    assert_error_shape(body, 404, "device_not_found")


@pytest.mark.asyncio
async def test_command_without_waiting_then_polled(server: Server, api: Api) -> None:
    async with FakeDevice(server.ws_url, "slow", ack_delay=0.3) as device:
        status, pending = await api.post_json("/api/commands", {"action": "START", "wait": False,
                                                                 "take_id": "take-42"})
        assert status == 202 and pending["complete"] is False
        assert pending["outcomes"]["slow"]["status"] == "PENDING"
        await device.wait_for(Command)
        command_id = pending["command_id"]
        polls: list[dict[str, Any]] = []

        async def complete() -> bool:
            status, polled = await api.get(f"/api/commands/{command_id}")
            assert status == 200, polled
            polls.append(polled)
            return bool(polled["complete"])

        await wait_until(complete, timeout=10, interval=0.02)
        polled = polls[-1]
        assert polled["outcomes"]["slow"]["status"] == "SUCCESS"
        assert polled["take_id"] == "take-42" and polled["outcomes"]["slow"]["latency_s"] > 0.2
        status, recent = await api.get("/api/commands")
        assert status == 200 and recent["items"][0]["command_id"] == command_id


@pytest.mark.asyncio
async def test_command_params_reach_devices(server: Server, api: Api) -> None:
    async with FakeDevice(server.ws_url, "mic-1") as device:
        status, result = await api.post_json("/api/commands", {
            "action": "start", "targets": ["mic-1"], "timeout_s": 2,
            "params": {"sample_rate": 44100, "channels": 2, "format": "flac"}})
        assert status == 200 and result["ok"]
        command = device.of_type(Command)[0]
        assert (command.params.sample_rate, command.params.channels,
                command.params.format) == (44100, 2, "flac")


@pytest.mark.asyncio
async def test_broadcast_with_no_device_is_a_clear_conflict(api: Api) -> None:
    status, body = await api.post_json("/api/commands", {"action": "START"})
    assert status == 409 and body["error"] == "no device is connected: nothing to START"
    assert_error_shape(body, 409, "conflict")
