"""Never lose a take: a server killed or gone during a take, an agent killed mid-take."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.audio import dominant_hz
from tests.support.http import Api
from tests.support.process import ServeProcess
from tests.support.wait import wait_until
from vocalink_lab.agent import simulate_devices
from vocalink_lab.server import Server

pytestmark = [pytest.mark.asyncio, pytest.mark.serial]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])




async def catalog(api: Api) -> list[dict[str, Any]]:
    _, listing = await api.get("/api/audio/list?limit=100")
    return listing["items"]  # type: ignore[no-any-return]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()




async def test_server_killed_mid_take_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    serve = ServeProcess(data, "--port", str(port)).start()
    sim = await simulate_devices(3, server_url=serve.url, state_dir=tmp_path / "devices")
    try:
        await sim.wait_connected()
        api = Api(serve.url)
        _, started = await api.post_json("/api/commands", {"action": "START"})
        assert started["ok"], started
        await asyncio.sleep(1.0)  # a second of the take with the server...
        serve.kill()  # SIGKILL, mid-take
        await wait_until(lambda: not any(a.connected.is_set() for a in sim.agents))
        await asyncio.sleep(1.0)  # ... and one without: the devices go on recording
        assert all(a.recording_id is not None for a in sim.agents)
        serve = ServeProcess(data, "--port", str(port)).start()
        await sim.wait_connected()
        _, stopped = await api.post_json("/api/commands", {"action": "STOP"})
        assert stopped["ok"], stopped
        await wait_until(lambda: all(len(a.uploaded) == 1 for a in sim.agents))
        items = await catalog(api)
        assert len(items) == 3 and len({i["id"] for i in items}) == 3  # none duplicated
        for agent in sim.agents:
            [item] = [i for i in items if i["device_id"] == agent.device_id]
            finished = agent._last_finished
            assert finished is not None and item["id"] == finished.recording_id
            assert item["sha256"] == finished.sha256 == sha256_of(data / item["path"])
            # One take from the first server's START to the second server's STOP.
            assert item["duration_s"] == pytest.approx(
                stopped["start_at"] - started["start_at"], abs=0.05)
            _, device = await api.get(f"/api/clients/{agent.device_id}")
            assert device["offline_recordings"] == [item["id"]]
        api.close()
    finally:
        await sim.stop()
        serve.kill()


async def test_server_gone_for_the_whole_take(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    serve = ServeProcess(data, "--port", str(port)).start()
    sim = await simulate_devices(2, server_url=serve.url, state_dir=tmp_path / "devices",
                                 sample_rate=16000)
    try:
        await sim.wait_connected()
        api = Api(serve.url)
        _, started = await api.post_json("/api/commands", {
            "action": "START", "params": {"duration_s": 2.0}})
        assert started["ok"], started
        serve.kill()  # gone before the take has really begun, back after it ended
        await wait_until(lambda: all(a.recording_id is None for a in sim.agents), 10)
        assert all(len(a.outbox or []) == 1 for a in sim.agents)  # queued, on disk
        serve = ServeProcess(data, "--port", str(port)).start()
        await wait_until(lambda: all(len(a.uploaded) == 1 for a in sim.agents))
        items = await catalog(api)
        assert sorted(i["frames"] for i in items) == [32000, 32000]
        for item in items:
            _, device = await api.get(f"/api/clients/{item['device_id']}")
            assert device["offline_recordings"] == [item["id"]]
        api.close()
    finally:
        await sim.stop()
        serve.kill()


async def test_agent_killed_mid_take_recovers_and_uploads(server: Server, tmp_path: Path) -> None:
    state = tmp_path / "device"
    argv = [sys.executable, "-m", "vocalink_lab", "device", "--server", server.url,
            "--state-dir", str(state), "--device-id", "mic-k", "--source", "tone:500"]
    api = Api(server.url)
    agent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert server.hub is not None
        await wait_until(lambda: "mic-k" in server.hub.registry.connected_ids())
        _, started = await api.post_json("/api/commands", {"action": "START"})
        assert started["ok"], started
        recording_id = started["outcomes"]["mic-k"]["recording_id"]
        await asyncio.sleep(2.5)  # the take, then a SIGKILL in the middle of it
        killed_at = time.time()
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(10)
        assert (await catalog(api)) == []
        agent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await wait_until(lambda: bool(server.hub.registry.get("mic-k").announced), 30)
        await wait_until(lambda: catalog(api), timeout=30)
        [item] = await catalog(api)
        # What was synced before the kill is recovered: the spool syncs every second of
        # audio, so at most that much of what was recorded until the kill is lost.
        assert item["id"] == recording_id
        recorded_s = killed_at - started["start_at"]
        assert recorded_s - 1.1 <= item["duration_s"] <= recorded_s + 0.05  # + a block
        assert dominant_hz(server.data_dir / item["path"]) == pytest.approx(500, abs=2)
        _, device = await api.get("/api/clients/mic-k")
        assert device["recovered_recordings"] == [recording_id]
        assert not list((state / "spool").glob("*.wav"))
        assert not list((state / "outbox").glob("*.json"))
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(agent.wait, 20)  # the server runs on this loop
        except subprocess.TimeoutExpired:
            agent.kill()
        api.close()
