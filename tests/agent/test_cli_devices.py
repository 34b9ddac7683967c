"""``vocalink simulate`` and ``vocalink device`` as processes: found by mDNS or by URL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fast_settings
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.server import Server

pytestmark = [pytest.mark.asyncio, pytest.mark.serial]
VOCALINK = [sys.executable, "-m", "vocalink_lab"]




async def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then wait in a thread: the server under test runs on this loop."""
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, err
    return out


async def test_simulate_runs_devices_that_record_and_upload(server: Server, tmp_path: Path) -> None:
    proc = subprocess.Popen([*VOCALINK, "simulate", "--devices", "2", "--server", server.url,
                             "--state-dir", str(tmp_path / "sim"), "--prefix", "cli"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    api = Api(server.url)
    try:
        assert server.hub is not None
        await wait_until(lambda: set(server.hub.registry.connected_ids()) == {"cli-1", "cli-2"})
        _, body = await api.post_json("/api/commands", {
            "action": "START", "params": {"duration_s": 0.5}})
        assert body["ok"], body

        async def both_uploaded() -> bool:
            return bool((await api.get("/api/audio/list"))[1]["total"] == 2)

        await wait_until(both_uploaded, timeout=20)
        _, listing = await api.get("/api/audio/list")
        assert sorted(i["device_id"] for i in listing["items"]) == ["cli-1", "cli-2"]
        assert all(i["frames"] == 24000 for i in listing["items"])
    finally:
        out = await stop(proc)
        api.close()
    assert out.splitlines()[0].startswith("device cli-1 ('Simulated 1') -> http://127.0.0.1:")
    assert out.rstrip().endswith("stopped")


async def test_device_finds_the_server_by_name_with_mdns(tmp_path: Path) -> None:
    server = Server(fast_settings(tmp_path / "data", advertise=True, name="Field Studio"))
    await server.start()
    proc = subprocess.Popen([*VOCALINK, "device", "--name", "Field Studio", "--interfaces",
                             "127.0.0.1", "--state-dir", str(tmp_path / "dev"),
                             "--device-id", "pi-7", "--source", "tone:880"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.hub is not None
        await wait_until(lambda: "pi-7" in server.hub.registry.connected_ids())
        assert server.hub.registry.get("pi-7").platform == sys.platform
    finally:
        out = await stop(proc)
        await server.stop()
    assert "-> the server found with mDNS" in out


async def test_a_device_joins_with_the_code_and_comes_back_with_its_key(
        server: Server, tmp_path: Path) -> None:
    """``vocalink device --join CODE`` without the controller token: paired at once, its key
    kept; started again without the code, it is still paired. Without either, pending."""
    import os

    assert server.hub is not None
    code = server.pairing_info()["join_code"]
    env = {k: v for k, v in os.environ.items() if k != "VOCALINK_TOKEN"}  # a stranger's phone
    state = tmp_path / "pi"
    base = [*VOCALINK, "device", "--server", server.url, "--state-dir", str(state),
            "--device-id", "pi-cli", "--source", "tone:440"]
    for extra, expected in ((["--join", code], "paired"), ([], "paired")):
        proc = subprocess.Popen([*base, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        try:
            await wait_until(lambda: "pi-cli" in server.hub.registry.connected_ids())
            assert server.hub.registry.get("pi-cli").pairing == expected
            # The server counts it in at REGISTER; the device keeps its key a moment later,
            # once WELCOME is in. Stopped before that, it would come back a stranger.
            await wait_until((state / "device.key").exists)
        finally:
            await stop(proc)
        await wait_until(lambda: "pi-cli" not in server.hub.registry.connected_ids())
    assert (state / "device.key").read_text().startswith("dk-")
    stranger = subprocess.Popen([*VOCALINK, "device", "--server", server.url, "--state-dir",
                                 str(tmp_path / "other"), "--device-id", "pi-other",
                                 "--source", "tone:440"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        await wait_until(lambda: "pi-other" in server.hub.registry.pending_ids())
    finally:
        await stop(stranger)
