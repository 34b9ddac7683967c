"""find_servers / watch_servers against services registered with plain zeroconf."""

from __future__ import annotations

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from tests.support.mdns import LOOPBACK, Watcher
from vocalink_lab.discovery import SERVICE_TYPE, find_servers
from vocalink_lab.errors import DiscoveryError

pytestmark = pytest.mark.asyncio


def service(label: str, port: int, **properties: str) -> AsyncServiceInfo:
    return AsyncServiceInfo(SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=port,
                            server=f"{label.lower().replace(' ', '-')}.local.",
                            parsed_addresses=list(LOOPBACK), properties=properties)


async def test_watch_reports_added_updated_and_removed() -> None:
    azc = AsyncZeroconf(interfaces=list(LOOPBACK), ip_version=IPVersion.V4Only)
    try:
        async with Watcher() as watcher:
            info = service("Changing", 7001, name="Changing", id="srv-chg", pairing="0")
            await azc.async_register_service(info)
            added = await watcher.wait_for("added", "Changing")
            assert not added.pairing_required
            changed = service("Changing", 7001, name="Changing", id="srv-chg", pairing="1")
            await azc.async_update_service(changed)
            updated = await watcher.wait_for("updated", "Changing")
            assert updated.pairing_required and updated.port == 7001
            await azc.async_unregister_service(changed)
            removed = await watcher.wait_for("removed", "Changing", timeout=5)
            assert removed.pairing_required  # the last known details
    finally:
        await azc.async_close()
    assert [e.kind for e in watcher.events] == ["added", "updated", "removed"]


@pytest.mark.slow
async def test_find_servers_lists_all_or_returns_the_named_one_early() -> None:
    azc = AsyncZeroconf(interfaces=list(LOOPBACK), ip_version=IPVersion.V4Only)
    try:
        for name, port in (("Beta", 7003), ("alpha", 7002)):
            await azc.async_register_service(service(name, port, name=name, id=f"srv-{port}"))
        everything = await find_servers(2, interfaces=LOOPBACK)
        assert [(s.name, s.port) for s in everything] == [("alpha", 7002), ("Beta", 7003)]
        assert [s.port for s in await find_servers(10, name="BETA", interfaces=LOOPBACK)] == [7003]
        assert [s.name for s in await find_servers(10, name="srv-7002",
                                                   interfaces=LOOPBACK)] == ["alpha"]
        assert await find_servers(1, name="Gamma", interfaces=LOOPBACK) == []
    finally:
        await azc.async_close()


async def test_a_service_without_txt_name_is_named_by_its_instance() -> None:
    azc = AsyncZeroconf(interfaces=list(LOOPBACK), ip_version=IPVersion.V4Only)
    try:
        await azc.async_register_service(service("Bare", 7004))
        [found] = await find_servers(10, name="Bare", interfaces=LOOPBACK)
        assert found.server_id is None and found.ws_url == "ws://127.0.0.1:7004/ws/control"
    finally:
        await azc.async_close()


async def test_browsing_an_unknown_interface_is_a_clear_error() -> None:
    with pytest.raises(DiscoveryError, match="no interface named 'wlan9'"):
        await find_servers(1, interfaces=("wlan9",))
