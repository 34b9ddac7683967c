"""The Advertiser on real zeroconf, in the suite's private namespace (loopback only)."""

from __future__ import annotations

import asyncio

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from tests.support.mdns import LOOPBACK, Watcher
from tests.support.wait import wait_until
from vocalink_lab.discovery import SERVICE_TYPE, Advertiser, AdvertiserState, find_servers
from vocalink_lab.errors import DiscoveryError

pytestmark = pytest.mark.asyncio


def advertiser(name: str, server_id: str, port: int = 9000, **kw: object) -> Advertiser:
    return Advertiser(name=name, port=port, server_id=server_id, interfaces=LOOPBACK,
                      properties={"version": "test"}, **kw)  # type: ignore[arg-type]


async def test_advertised_service_is_found_with_its_txt() -> None:
    async with advertiser("Studio A", "srv-aaa", port=8123) as adv:
        assert adv.state is AdvertiserState.ADVERTISING
        [found] = await find_servers(5, name="Studio A", interfaces=LOOPBACK)
    assert found.instance == "Studio A._vocalink._tcp.local."
    assert found.host == "srv-aaa.local." and found.port == 8123
    assert found.addresses == ("127.0.0.1",)
    assert found.server_id == "srv-aaa" and found.protocol == 1
    assert found.ws_url == "ws://127.0.0.1:8123/ws/control" and not found.pairing_required
    assert found.properties["version"] == "test" and found.properties["txtvers"] == "1"
    status = adv.status()
    assert status["state"] == "stopped" and status["addresses"] == ["127.0.0.1"]


async def test_start_twice_is_idempotent_and_stop_says_goodbye() -> None:
    adv = advertiser("Twice", "srv-twice")
    async with Watcher() as watcher:
        assert await adv.start() is AdvertiserState.ADVERTISING
        assert await adv.start() is AdvertiserState.ADVERTISING
        await watcher.wait_for("added", "Twice")
        await adv.stop()
        await adv.stop()
        # Goodbye packets, not record expiry (which would take minutes), remove it.
        await watcher.wait_for("removed", "Twice", timeout=5)
    assert [e.kind for e in watcher.events if e.server.name == "Twice"] == ["added", "removed"]
    assert adv.state is AdvertiserState.STOPPED


@pytest.mark.slow
async def test_a_taken_name_gets_a_suffix_and_the_name_in_use_is_reported() -> None:
    changes: list[str] = []
    async with advertiser("Shared", "srv-first") as first, \
            advertiser("Shared", "srv-second", on_name_change=changes.append) as second:
        assert first.name == "Shared"
        assert second.name == "Shared (2)" and second.requested_name == "Shared"
        assert changes == ["Shared (2)"]
        names = {s.name for s in await find_servers(3, interfaces=LOOPBACK)}
        assert {"Shared", "Shared (2)"} <= names


async def test_simultaneous_starts_with_one_name_end_with_distinct_names() -> None:
    ads = [advertiser("Together", f"srv-{i}") for i in range(3)]
    try:
        await asyncio.gather(*(a.start() for a in ads))
        # A conflict nobody probed in time is noticed after the announcements.
        await wait_until(lambda: len({a.name for a in ads}) == 3, timeout=10)
        assert sorted(a.name for a in ads) == ["Together", "Together (2)", "Together (3)"]
    finally:
        await asyncio.gather(*(a.stop() for a in ads))


@pytest.mark.slow
async def test_a_conflict_after_announcement_moves_the_greater_host_only() -> None:
    changes: list[str] = []
    async with advertiser("Clash", "srv-zzz", on_name_change=changes.append) as ours:
        # A responder that skips probing and announces our name from another host.
        azc = AsyncZeroconf(interfaces=list(LOOPBACK), ip_version=IPVersion.V4Only)
        other = AsyncServiceInfo(SERVICE_TYPE, f"Clash.{SERVICE_TYPE}", port=1,
                                 server="srv-000.local.", parsed_addresses=["127.0.0.1"],
                                 properties={"name": "Clash"})
        try:
            await azc.async_register_service(other, cooperating_responders=True)
            await wait_until(lambda: changes, timeout=10)
            assert changes == ["Clash (2)"] and ours.name == "Clash (2)"
            servers = {s.name: s for s in await find_servers(3, interfaces=LOOPBACK)}
            # The other server keeps its name: our withdrawal did not remove its PTR.
            assert servers["Clash"].host == "srv-000.local."
            assert servers["Clash (2)"].host == "srv-zzz.local."
        finally:
            await azc.async_close()


async def test_rename_announces_the_new_name_and_withdraws_the_old() -> None:
    async with advertiser("Before", "srv-ren") as adv, Watcher() as watcher:
        await watcher.wait_for("added", "Before")
        assert await adv.rename("After") == "After"
        await watcher.wait_for("added", "After")
        await watcher.wait_for("removed", "Before", timeout=5)
        assert set(watcher.current()) == {"After"}
        assert await adv.rename("After") == "After"  # unchanged: nothing re-registered
        assert await adv.rename("AFTER") == "AFTER"  # only the letter case changes
        await watcher.wait_for("added", "AFTER")


async def test_rename_to_a_taken_name_gets_a_suffix() -> None:
    async with advertiser("Owner", "srv-own"), advertiser("Mine", "srv-mine") as mine:
        assert await mine.rename("owner") == "owner (2)"  # DNS names ignore case
        assert mine.requested_name == "owner"


@pytest.mark.slow
async def test_a_failed_re_registration_keeps_the_old_name() -> None:
    async with advertiser("Steady", "srv-steady") as adv:
        adv.register_timeout_s = 0.01  # probing cannot finish: the registration fails
        with pytest.raises(DiscoveryError, match="still advertised as 'Steady'"):
            await adv.rename("Elsewhere")
        with pytest.raises(DiscoveryError):
            await adv.rename("STEADY")  # the old record was withdrawn first, then restored
        adv.register_timeout_s = 15
        assert adv.name == "Steady" and adv.state is AdvertiserState.ADVERTISING
        assert [s.name for s in await find_servers(3, interfaces=LOOPBACK)] == ["Steady"]


async def test_an_unusable_interface_fails_softly_with_the_reason() -> None:
    adv = Advertiser(name="Nowhere", port=1, server_id="srv-x", interfaces=("10.9.9.9",))
    assert await adv.start() is AdvertiserState.FAILED
    assert adv.error == "no interface has address 10.9.9.9"
    assert adv.status()["error"] == adv.error
    assert await adv.rename("Still nowhere") == "Still nowhere"  # stored for the next start
    await adv.stop()
    assert adv.state is AdvertiserState.FAILED
