"""Commands over the real WebSocket: broadcast, targeted, and every kind of outcome."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.device import FakeDevice
from tests.support.http import Api
from vocalink_lab.protocol import Command
from vocalink_lab.server import Server


@pytest.mark.asyncio
async def test_broadcast_start_stop_reaches_every_device(server: Server, api: Api) -> None:
    async with FakeDevice(server.ws_url, "mic-1") as a, FakeDevice(server.ws_url, "mic-2") as b, \
            FakeDevice(server.ws_url, "mic-3") as c:
        status, result = await api.post_json("/api/commands", {"action": "START"})
        assert status == 200, result
        assert result["ok"] and result["broadcast"]
        assert {d: o["status"] for d, o in result["outcomes"].items()} == {
            "mic-1": "SUCCESS", "mic-2": "SUCCESS", "mic-3": "SUCCESS"}
        take_id = result["take_id"]
        for dev in (a, b, c):
            cmd = dev.of_type(Command)[-1]
            assert cmd.command_id == result["command_id"] and cmd.take_id == take_id
            assert cmd.targets is None
        _, clients = await api.get("/api/clients")
        assert {d["device_id"]: d["state"] for d in clients["items"]} == {
            "mic-1": "RECORDING", "mic-2": "RECORDING", "mic-3": "RECORDING"}

        status, result = await api.post_json("/api/commands", {"action": "stop"})
        assert status == 200 and result["ok"]
        assert result["take_id"] == take_id  # STOP closes the active take
        _, clients = await api.get("/api/clients")
        assert {d["state"] for d in clients["items"]} == {"IDLE"}


@pytest.mark.asyncio
async def test_targeted_command_reaches_only_its_targets(server: Server, api: Api) -> None:
    async with FakeDevice(server.ws_url, "mic-1") as a, FakeDevice(server.ws_url, "mic-2") as b:
        status, result = await api.post_json("/api/commands",
                                              {"action": "START", "targets": ["mic-2"]})
        assert status == 200 and list(result["outcomes"]) == ["mic-2"]
        assert not result["broadcast"]
        assert b.of_type(Command)[0].targets == ("mic-2",)
        # A connection delivers in order: once a PING for mic-1 is there, a START sent to
        # it before would be there too.
        status, ping = await api.post_json("/api/commands",
                                            {"action": "PING", "targets": ["mic-1"]})
        assert status == 200 and list(ping["outcomes"]) == ["mic-1"]
        await a.wait_for(Command, where=lambda c: c.command_id == ping["command_id"])
        assert [c.command_id for c in a.of_type(Command)] == [ping["command_id"]]


@pytest.mark.asyncio
async def test_outcomes_success_failed_timeout_and_disconnect(server: Server, api: Api) -> None:
    ok = FakeDevice(server.ws_url, "ok")
    failing = FakeDevice(server.ws_url, "failing", ack="failed")
    silent = FakeDevice(server.ws_url, "silent", ack="never")
    leaving = FakeDevice(server.ws_url, "leaving", ack="never")
    for dev in (ok, failing, silent, leaving):
        await dev.connect()
    try:
        task = asyncio.create_task(api.post_json("/api/commands", {"action": "START"}))
        await leaving.wait_for(Command)
        await leaving.close()  # disconnects mid-command, before its ACK
        status, result = await task
        assert status == 200
        outcomes = result["outcomes"]
        assert outcomes["ok"]["status"] == "SUCCESS"
        assert outcomes["failing"]["status"] == "FAILED"
        assert outcomes["failing"]["error"] == "no microphone"
        assert outcomes["silent"]["status"] == "TIMEOUT"
        assert outcomes["leaving"]["status"] == "FAILED"
        assert "disconnected" in outcomes["leaving"]["error"]
        assert result["counts"] == {"PENDING": 0, "SUCCESS": 1, "FAILED": 2, "TIMEOUT": 1}
        assert not result["ok"]
        # The command stays queryable with the same outcomes.
        status, again = await api.get(f"/api/commands/{result['command_id']}")
        assert status == 200 and again["outcomes"] == outcomes
        _, clients = await api.get("/api/clients")
        states = {d["device_id"]: (d["state"], d["connected"]) for d in clients["items"]}
        assert states["leaving"] == ("OFFLINE", False)
        assert states["ok"] == ("RECORDING", True)
    finally:
        for dev in (ok, failing, silent):
            await dev.close()
