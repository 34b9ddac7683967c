"""Real agents against a real server on loopback: commands, recordings, content, status."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.audio import dominant_hz
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.agent import Agent, AgentConfig, simulate_devices
from vocalink_lab.agent.simulate import tone_for
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio






async def recordings(api: Api) -> list[dict]:  # type: ignore[type-arg]
    _, listing = await api.get("/api/audio/list?limit=100")
    return listing["items"]  # type: ignore[no-any-return]


async def test_three_agents_start_stop_give_three_recordings(server: Server, api: Api,
                                                              tmp_path: Path) -> None:
    sim = await simulate_devices(3, server_url=server.url, state_dir=tmp_path / "devices")
    try:
        await sim.wait_connected()
        status, started = await api.post_json("/api/commands", {"action": "START"})
        assert status == 200, started
        assert [t["status"] for t in started["outcomes"].values()] == ["SUCCESS"] * 3
        await asyncio.sleep(1.5)  # the take: its length is what the devices record
        status, stopped = await api.post_json("/api/commands", {"action": "STOP"})
        assert status == 200 and all(
            t["status"] == "SUCCESS" for t in stopped["outcomes"].values()), stopped
        # START and STOP are scheduled: each device records between the two instants.
        expected = stopped["start_at"] - started["start_at"]
        await wait_until(lambda: sum(len(a.uploaded) for a in sim.agents) == 3, 15)
        items = await recordings(api)
        assert len(items) == 3
        by_device = {item["device_id"]: item for item in items}
        assert set(by_device) == {"sim-1", "sim-2", "sim-3"}
        for i, agent in enumerate(sim.agents):
            item = by_device[agent.device_id]
            assert item["take_id"] == started["take_id"]
            assert item["duration_s"] == pytest.approx(expected, abs=0.05)
            assert item["format"] == "wav" and item["sample_rate"] == 48000
            hz = dominant_hz(server.data_dir / item["path"])
            assert hz == pytest.approx(tone_for(i), abs=2), agent.device_id
            assert len(agent.outbox or []) == 0  # confirmed, so it left the outbox
    finally:
        await sim.stop()


async def test_duration_param_gives_exact_lengths_and_flac(server: Server, api: Api,
                                                           tmp_path: Path) -> None:
    sim = await simulate_devices(2, server_url=server.url, state_dir=tmp_path / "devices",
                                 sample_rate=16000)
    try:
        await sim.wait_connected()
        status, body = await api.post_json("/api/commands", {
            "action": "START", "params": {"duration_s": 0.75, "format": "flac"}})
        assert status == 200, body
        await wait_until(lambda: sum(len(a.uploaded) for a in sim.agents) == 2, 15)
        for item in await recordings(api):
            assert item["frames"] == 12000 and item["format"] == "flac"
        # A STOP after the devices stopped by themselves is not an error.
        status, body = await api.post_json("/api/commands", {"action": "STOP"})
        assert [t["status"] for t in body["outcomes"].values()] == ["SUCCESS"] * 2
    finally:
        await sim.stop()


async def test_commands_are_refused_with_reasons(server: Server, api: Api,
                                                 tmp_path: Path) -> None:
    agent = Agent(AgentConfig(state_dir=tmp_path / "a", server_url=server.url,
                              device_id="mic-1", source="tone:300"))
    mute = Agent(AgentConfig(state_dir=tmp_path / "b", server_url=server.url,
                             device_id="mic-2", source="mic"))
    async with agent, mute:
        await wait_until(lambda: agent.connected.is_set() and mute.connected.is_set())

        async def send(action: str, **extra: object) -> dict[str, dict]:  # type: ignore[type-arg]
            _, body = await api.post_json("/api/commands", {"action": action, **extra})
            return body["outcomes"]  # type: ignore[no-any-return]

        targets = await send("START")
        assert targets["mic-1"]["status"] == "SUCCESS"
        assert targets["mic-2"]["status"] == "FAILED"
        assert targets["mic-2"]["error"].startswith("no microphone")
        again = await send("START", targets=["mic-1"])
        assert again["mic-1"]["status"] == "FAILED"
        assert again["mic-1"]["error"].startswith("already recording rec-")
        assert (await send("PAUSE", targets=["mic-1"]))["mic-1"]["status"] == "SUCCESS"
        assert (await send("PAUSE", targets=["mic-1"]))["mic-1"]["error"] == "already paused"
        assert (await send("RESUME", targets=["mic-1"]))["mic-1"]["status"] == "SUCCESS"
        assert (await send("PING"))["mic-2"]["status"] == "SUCCESS"
        bad = await send("STOP", targets=["mic-2"])
        assert bad["mic-2"] == {**bad["mic-2"], "status": "FAILED", "error": "not recording"}
        # STATUS about once a second: state and levels of the last second.
        async def reported_recording() -> bool:
            _, device = await api.get("/api/clients/mic-1")
            return device["state"] == "RECORDING" and device["level_dbfs"] is not None

        await wait_until(reported_recording, timeout=10)
        _, device = await api.get("/api/clients/mic-1")
        assert -14 < device["level_dbfs"] < -8  # a 0.3-amplitude tone: about -13.5 dBFS
        assert device["free_bytes"] > 0
        assert (await send("STOP", targets=["mic-1"]))["mic-1"]["status"] == "SUCCESS"
        await wait_until(lambda: len(agent.uploaded) == 1)


async def test_identity_is_kept_across_restarts(server: Server, tmp_path: Path) -> None:
    first = Agent(AgentConfig(state_dir=tmp_path / "a", server_url=server.url, name="Lab Pi"))
    async with first:
        await wait_until(first.connected.is_set)
    again = Agent(AgentConfig(state_dir=tmp_path / "a", server_url=server.url))
    async with again:
        await wait_until(again.connected.is_set)
        assert (again.device_id, again.name) == (first.device_id, "Lab Pi")
        assert server.hub is not None and again.device_id in server.hub.registry


async def test_a_scheduled_stop_ends_a_paused_take_at_its_instant(server: Server, api: Api,
                                                                  tmp_path: Path) -> None:
    """A pause skips frames, not time: STOP's instant ends the take (paused or not), and
    the file holds what was heard outside the pause."""
    import soundfile

    agent = Agent(AgentConfig(state_dir=tmp_path / "mic", server_url=server.url,
                              device_id="mic-p", source="tone:440"))

    async def command(action: str) -> tuple[dict, float]:  # type: ignore[type-arg]
        before = time.time()
        status, result = await api.post_json("/api/commands", {"action": action})
        assert status == 200 and result["outcomes"]["mic-p"]["status"] == "SUCCESS", result
        return result, (before + time.time()) / 2

    async with agent:
        await wait_until(agent.connected.is_set)
        for count, resume in enumerate((True, False), start=1):
            started, _ = await command("START")
            await asyncio.sleep(0.5)
            _, paused_at = await command("PAUSE")
            await asyncio.sleep(0.4)
            skipped = 0.0
            if resume:
                _, resumed_at = await command("RESUME")
                skipped = resumed_at - paused_at
                await asyncio.sleep(0.4)
            stopped, _ = await command("STOP")  # answered once the take has ended
            await wait_until(lambda: len(agent.uploaded) >= count, 15)  # noqa: B023
            take_s = stopped["start_at"] - started["start_at"]
            heard_s = take_s - skipped if resume else paused_at - started["start_at"]
            path = next(r for r in await recordings(api)
                        if r["take_id"] == started["take_id"])["path"]
            info = soundfile.info(server.data_dir / path)
            assert abs(info.frames / info.samplerate - heard_s) < 0.05, (
                resume, info.frames / info.samplerate, heard_s, take_s)
