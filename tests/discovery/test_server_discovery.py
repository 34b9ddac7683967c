"""A real Server advertising on loopback: status, live rename, conflicts, stop, failure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import fast_settings
from tests.support.device import FakeDevice
from tests.support.errors import assert_error_shape
from tests.support.http import Api
from tests.support.mdns import LOOPBACK, Watcher
from tests.support.wait import wait_until
from vocalink_lab.discovery import find_servers
from vocalink_lab.protocol import Server as ServerMessage
from vocalink_lab.protocol import ServerEvent
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio
JSON = {"Content-Type": "application/json"}


async def advertised(data_dir: Path, name: str, **overrides: Any) -> Server:
    server = Server(fast_settings(data_dir, advertise=True, name=name, **overrides))
    await server.start()
    await server.advertised()
    return server


@pytest_asyncio.fixture
async def studio(tmp_path: Path) -> AsyncIterator[Server]:
    server = await advertised(tmp_path / "data", "Studio One")
    try:
        yield server
    finally:
        await server.stop()


async def test_status_shows_the_advertisement(studio: Server) -> None:
    api = Api(studio.url)
    try:
        status, info = await api.get("/api/server")
    finally:
        api.close()
    assert status == 200
    discovery = info["discovery"]
    assert discovery["state"] == "advertising" and discovery["error"] is None
    assert discovery["name"] == info["name"] == "Studio One"
    assert discovery["instance"] == "Studio One._vocalink._tcp.local."
    assert discovery["addresses"] == ["127.0.0.1"] and discovery["port"] == studio.port
    [found] = await find_servers(5, name="Studio One", interfaces=LOOPBACK)
    assert found.server_id == info["id"] and found.port == info["port"]
    advertiser = studio.advertiser
    await studio.start()  # idempotent: the same advertisement, not a second one
    assert studio.advertiser is advertiser and (await studio.advertised())["state"] == "advertising"
    assert [s.name for s in await find_servers(2, interfaces=LOOPBACK)] == ["Studio One"]


async def test_live_rename_reaches_browsers_and_devices(studio: Server) -> None:
    api = Api(studio.url)
    async with Watcher() as watcher, FakeDevice(studio.ws_url, "mic-1") as device:
        await watcher.wait_for("added", "Studio One")
        status, info = await api.put_json("/api/server", {"name": "Studio Two"})
        assert status == 200 and info["name"] == "Studio Two"
        assert info["discovery"]["name"] == "Studio Two"
        found = await watcher.wait_for("added", "Studio Two")
        assert found.port == studio.port
        await watcher.wait_for("removed", "Studio One", timeout=5)
        message = await device.wait_for(ServerMessage)
        assert message.event is ServerEvent.RENAMED  # type: ignore[attr-defined]
        assert message.server_name == "Studio Two"  # type: ignore[attr-defined]
    api.close()
    assert await studio.catalog.get_meta("server_name") == "Studio Two"


@pytest.mark.parametrize("name", ["", "   ", "Studio\u0007", "x" * 64, "Dr. Who"],
                         ids=["empty", "spaces", "control", "64-bytes", "dot"])
async def test_invalid_rename_changes_nothing(studio: Server, name: str) -> None:
    api = Api(studio.url)
    async with Watcher() as watcher, FakeDevice(studio.ws_url, "mic-1") as device:
        await watcher.wait_for("added", "Studio One")
        status, _, _, raw = await api.request("PUT", "/api/server",
                                              json.dumps({"name": name}), headers=JSON)
        assert status == 422
        assert_error_shape(json.loads(raw), 422, "invalid_parameter")
        _, info = await api.get("/api/server")
        assert info["name"] == info["discovery"]["name"] == "Studio One"
        assert await studio.catalog.get_meta("server_name") == "Studio One"
        # Renames run one at a time: whatever the refused one set going on mDNS or with
        # the devices would come before what a valid rename does next.
        status, _ = await api.put_json("/api/server", {"name": "Studio Next"})
        assert status == 200
        await watcher.wait_for("added", "Studio Next")
        message = await device.wait_for(ServerMessage)
        assert message.server_name == "Studio Next"  # type: ignore[attr-defined]
        kinds: dict[str, list[str]] = {}
        for event in watcher.events:
            kinds.setdefault(event.server.name, []).append(event.kind)
        assert kinds["Studio Next"] == ["added"]
        assert kinds["Studio One"] in (["added"], ["added", "removed"])  # no re-registration
        assert set(kinds) == {"Studio One", "Studio Next"}
    api.close()


async def test_a_failed_re_registration_rolls_back(studio: Server) -> None:
    assert studio.advertiser is not None
    studio.advertiser.register_timeout_s = 0.01  # probing cannot finish in time
    api = Api(studio.url)
    async with FakeDevice(studio.ws_url, "mic-1") as device:
        status, _, _, raw = await api.request("PUT", "/api/server",
                                              json.dumps({"name": "Never"}), headers=JSON)
        body = json.loads(raw)
        assert status == 503
        assert_error_shape(body, 503, "discovery_failed")
        assert "could not advertise the name 'Never'" in body["error"]
        assert "still advertised as 'Studio One'" in body["error"]
        _, info = await api.get("/api/server")
        assert info["name"] == "Studio One" and info["discovery"]["state"] == "advertising"
        assert device.of_type(ServerMessage) == []
    api.close()
    assert await studio.catalog.get_meta("server_name") == "Studio One"
    assert [s.name for s in await find_servers(3, interfaces=LOOPBACK)] == ["Studio One"]


@pytest.mark.slow
async def test_two_servers_with_one_name_end_with_distinct_names(tmp_path: Path) -> None:
    first, second = await asyncio.gather(advertised(tmp_path / "a", "Twin Studio"),
                                         advertised(tmp_path / "b", "Twin Studio"))
    try:
        # A clash nobody probed in time is resolved after announcing.
        await wait_until(lambda: first.name != second.name, timeout=10)
        assert {first.name, second.name} == {"Twin Studio", "Twin Studio (2)"}
        found = {s.name: s for s in await find_servers(3, interfaces=LOOPBACK)}
        assert {found[first.name].port, found[second.name].port} == {first.port, second.port}
        renamed = first if first.name == "Twin Studio (2)" else second
        # Devices are told the name in use, and the requested name is what is stored.
        async with FakeDevice(renamed.ws_url, "mic-1") as device:
            assert device.welcome is not None
            assert device.welcome.server_name == "Twin Studio (2)"
        assert await renamed.catalog.get_meta("server_name") == "Twin Studio"
    finally:
        await asyncio.gather(first.stop(), second.stop())


async def test_stop_removes_the_service_from_browsers(tmp_path: Path) -> None:
    async with Watcher() as watcher:
        server = await advertised(tmp_path / "data", "Leaving Studio")
        await watcher.wait_for("added", "Leaving Studio")
        await server.stop()
        await watcher.wait_for("removed", "Leaving Studio", timeout=5)
    assert server.advertiser is not None and server.advertiser.state.value == "stopped"


async def test_advertising_failure_is_reported_and_http_still_serves(tmp_path: Path) -> None:
    server = await advertised(tmp_path / "data", "Lonely", interfaces=("10.9.9.9",))
    api = Api(server.url)
    try:
        assert (await api.get("/ping"))[0] == 200
        _, info = await api.get("/api/server")
        assert info["discovery"]["state"] == "failed"
        assert info["discovery"]["error"] == "no interface has address 10.9.9.9"
        status, info = await api.put_json("/api/server", {"name": "Still Lonely"})
        assert status == 200 and info["name"] == "Still Lonely"  # renames without mDNS
    finally:
        api.close()
        await server.stop()


async def test_advertising_can_be_turned_off(tmp_path: Path) -> None:
    server = Server(fast_settings(tmp_path / "data", name="Quiet"))
    await server.start()
    try:
        status = await server.advertised()
        assert status == {"state": "disabled", "name": "Quiet",
                          "error": "advertising is turned off"}
        assert await find_servers(1.5, interfaces=LOOPBACK) == []
    finally:
        await server.stop()


async def test_the_txt_record_says_whether_pairing_is_required(tmp_path: Path) -> None:
    """Devices learn from mDNS alone that they must pair (or that the server is open)."""
    for open_, name in ((False, "Paired Room"), (True, "Open Room")):
        server = await advertised(tmp_path / name, name, open=open_)
        try:
            found = await find_servers(5, name=name, interfaces=["127.0.0.1"])
            assert [s.pairing_required for s in found] == [not open_], found
        finally:
            await server.stop()


async def test_a_tls_server_advertises_its_pin_and_an_agent_speaks_tls_by_it(
        tmp_path: Path) -> None:
    """The TXT record carries the CA's pin: a device that finds the server with mDNS
    speaks ``wss://`` and HTTPS, trusting that CA alone, with nothing typed."""
    from vocalink_lab.agent import Agent, AgentConfig

    server = await advertised(tmp_path / "data", "Secure Room", tls=True)
    try:
        assert server.tls is not None
        found = await find_servers(5, name="Secure Room", interfaces=["127.0.0.1"])
        assert [s.ca_pin for s in found] == [server.tls.ca_fingerprint]
        assert found[0].https_url == f"https://127.0.0.1:{server.port}"
        agent = Agent(AgentConfig(state_dir=tmp_path / "device", server_name="Secure Room",
                                  interfaces=["127.0.0.1"], device_id="mdns-tls"))
        await agent.start()
        try:
            await asyncio.wait_for(agent.paired.wait(), 15)
            assert agent.server_url == f"https://127.0.0.1:{server.port}"
            session = next(iter(server.sessions))
            assert session.connection.transport.get_extra_info("ssl_object") is not None
        finally:
            await agent.stop()
    finally:
        await server.stop()
