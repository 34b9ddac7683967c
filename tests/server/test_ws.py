"""The devices' WebSocket: REGISTER/WELCOME, every device message, liveness, reconnects."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from tests.support.device import FakeDevice
from tests.support.http import Api
from tests.support.rawws import SilentSocket
from tests.support.wait import wait_until
from vocalink_lab.hub import Topic
from vocalink_lab.protocol import (
    ClientState,
    Error,
    Recording,
    Register,
    Server,
    ServerEvent,
    Status,
    Sync,
    encode,
)
from vocalink_lab.server import WS_PATH
from vocalink_lab.server import Server as VocalinkServer


async def device_state(api: Api, device_id: str) -> dict[str, object]:
    status, device = await api.get(f"/api/clients/{device_id}")
    assert status == 200
    return device  # type: ignore[no-any-return]


@pytest.mark.asyncio
async def test_register_gets_welcome(server: VocalinkServer, api: Api) -> None:
    before = time.time()
    async with FakeDevice(server.ws_url, "pixel-7", "Pixel 7") as device:
        after = time.time()
        welcome = device.welcome
        assert welcome is not None
        assert welcome.server_id == server.hub.server_id  # type: ignore[union-attr]
        assert welcome.server_name == server.name and welcome.protocol == 1
        assert welcome.heartbeat_s == server.settings.heartbeat_s
        assert welcome.sync_interval_s == server.settings.sync_interval_s  # the page's watchdog
        assert welcome.upload_url == "/api/audio/upload"
        assert before <= welcome.server_time <= after  # stamped while we registered
        device_info = await device_state(api, "pixel-7")
        assert device_info["name"] == "Pixel 7" and device_info["connected"] is True
        assert device_info["platform"] == "test" and device_info["remote"] == "127.0.0.1"


@pytest.mark.asyncio
async def test_status_recording_error_and_sync_messages(server: VocalinkServer, api: Api) -> None:
    async with FakeDevice(server.ws_url, "mic-1", clock_offset=-3.25) as device:
        await device.send(Status(state=ClientState.RECORDING, level_dbfs=-21.0, peak_dbfs=-4.5,
                                 battery=0.42, free_bytes=5_000_000_000, pending_uploads=1,
                                 recording_id="rec-1", elapsed_s=3.5))
        await device.send(Recording(recording_id="rec-1", take_id="take-1", started_at=1.0,
                                    sample_rate=48000, channels=1, frames=48000, bytes=96044,
                                    sha256="f" * 64, format="wav"))
        await device.send(Error(code="mic_busy", detail="another app holds the microphone"))

        async def updated() -> bool:
            info = await device_state(api, "mic-1")
            return bool(info["announced_recordings"]) and any(
                h["kind"] == "error" for h in info["history"])  # type: ignore[union-attr]

        await wait_until(updated, timeout=5)
        info = await device_state(api, "mic-1")
        assert info["state"] == "RECORDING" and info["battery"] == 0.42
        assert info["level_dbfs"] == -21.0 and info["peak_dbfs"] == -4.5
        assert info["pending_uploads"] == 1 and info["elapsed_s"] == 3.5
        assert info["announced_recordings"] == ["rec-1"]

        # SYNC: the server probes, the device answers from its own clock.
        sample = await server.hub.sync("mic-1")  # type: ignore[union-attr]
        # NTP's bound: the answer was stamped within the round trip, so the offset is off
        # by at most half of it, however long the round trip took.
        assert sample.rtt >= 0 and abs(sample.offset + 3.25) <= sample.rtt / 2 + 1e-6
        info = await device_state(api, "mic-1")
        assert abs(info["clock_offset_s"] + 3.25) < 0.05  # type: ignore[operator]
        # ... and a device may probe the server, which answers from its own clock.
        before = time.time()
        await device.send(Sync(id="dev-probe", t0=device.now()))
        reply = await device.wait_for(Sync, where=lambda m: m.id == "dev-probe")
        assert before <= reply.t1 <= reply.t2 <= time.time()  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_vanished_device_goes_offline_within_a_few_seconds(
        server: VocalinkServer, api: Api) -> None:
    offline = asyncio.Event()
    server.hub.events.subscribe(Topic.DEVICE_OFFLINE, lambda e: offline.set())  # type: ignore[union-attr]
    silent = await SilentSocket.connect("127.0.0.1", server.port, WS_PATH)  # type: ignore[arg-type]
    try:
        await silent.send_text(encode(Register(device_id="lost", name="lost", protocol=1,
                                                     token=os.environ["VOCALINK_TOKEN"])))
        await wait_until(lambda: _connected(api, "lost"), timeout=5)
        # The socket stays open and nothing answers the pings (heartbeat_s is 0.5 s in
        # tests): the server, not the TCP connection, must notice.
        await asyncio.wait_for(offline.wait(), 10)
        info = await device_state(api, "lost")
        assert info["state"] == "OFFLINE" and info["connected"] is False
    finally:
        silent.close()


async def _connected(api: Api, device_id: str) -> bool:
    status, info = await api.get(f"/api/clients/{device_id}")
    return status == 200 and bool(info["connected"])


@pytest.mark.asyncio
async def test_reconnect_replaces_connection_and_keeps_record(
        server: VocalinkServer, api: Api) -> None:
    first = FakeDevice(server.ws_url, "mic-1", "first name")
    await first.connect()
    await first.send(Status(state=ClientState.RECORDING))
    await wait_until(lambda: _state_is(api, "mic-1", "RECORDING"), timeout=5)
    async with FakeDevice(server.ws_url, "mic-1", "second name") as second:
        await asyncio.wait_for(first.closed.wait(), 5)  # the old connection was closed
        info = await device_state(api, "mic-1")
        assert info["connected"] is True and info["state"] == "RECORDING"
        assert info["name"] == "second name" and info["connections"] == 2
        status, result = await api.post_json("/api/commands", {"action": "PING"})
        assert result["outcomes"]["mic-1"]["status"] == "SUCCESS"
        assert second.of_type(type(first.welcome))  # type: ignore[arg-type]
    await first.close()
    _, clients = await api.get("/api/clients")
    assert clients["total"] == 1


async def _state_is(api: Api, device_id: str, state: str) -> bool:
    return (await device_state(api, device_id))["state"] == state


@pytest.mark.asyncio
async def test_silent_connection_is_closed_without_register(server: VocalinkServer) -> None:
    device = FakeDevice(server.ws_url, "shy", register=False)
    await device.connect()
    await asyncio.wait_for(device.closed.wait(), server.settings.register_timeout_s + 3)
    assert device.conn is not None and device.conn.close_code == 4002


@pytest.mark.asyncio
async def test_rename_reaches_devices_and_survives_restart(tmp_path, api: Api,
                                                           server: VocalinkServer) -> None:
    async with FakeDevice(server.ws_url, "mic-1") as device:
        status, info = await api.put_json("/api/server", {"name": "  Studio B  "})
        assert status == 200 and info["name"] == "Studio B"
        message = await device.wait_for(Server)
        assert message.event is ServerEvent.RENAMED  # type: ignore[attr-defined]
        assert message.server_name == "Studio B"  # type: ignore[attr-defined]
    restarted = VocalinkServer(server.settings)
    await server.stop()
    await restarted.start()
    try:
        assert restarted.name == "Studio B"
        assert restarted.hub.server_id == server.hub.server_id  # type: ignore[union-attr]
    finally:
        await restarted.stop()


@pytest.mark.asyncio
async def test_shutdown_tells_devices(server: VocalinkServer) -> None:
    device = FakeDevice(server.ws_url, "mic-1")
    await device.connect()
    await server.stop()
    message = await device.wait_for(Server)
    assert message.event is ServerEvent.SHUTTING_DOWN  # type: ignore[attr-defined]
    await asyncio.wait_for(device.closed.wait(), 5)
    await device.close()


@pytest.mark.asyncio
async def test_a_crowd_connecting_at_once_all_register(server: VocalinkServer) -> None:
    # Devices in another process send REGISTER the instant they have the 101: no frame may
    # be lost in the hand-over from Tornado to the WebSocket connection (the fan-out
    # benchmark once lost some).
    n = 200
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.crowd", server.ws_url, str(n),
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2])
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert int(out.decode().strip()) == n
    assert sum(1 for r in server.hub.registry if r.device_id.startswith("crowd-")) == n  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_device_connection_leaves_no_cycle_behind(server: Server) -> None:
    """The handler of /ws/control is detached, never finished: its cycles are broken by
    hand, so a crowd of devices coming and going does not feed the cyclic collector (whose
    full collections held every request up by 150 ms under a REGISTER flood)."""
    import gc

    from vocalink_lab.server.ws import ControlSocket

    async with FakeDevice(server.ws_url, "warm-up"):
        pass
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(5):
            async with FakeDevice(server.ws_url, f"cycle-{i}"):
                pass
        await wait_until(lambda: not server.sessions)
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, ControlSocket)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
