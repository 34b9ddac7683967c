"""The server measures simulated devices' clocks (offsets up to ±10 s, drifts up to ±200 ppm)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import fast_settings
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.agent import Simulation, simulate_devices
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio
OFFSETS = [-10.0, -2.5, 0.0, 4.2, 10.0]
DRIFTS = [200.0, -200.0, 0.0, 75.0, -120.0]


async def wait_measured(server: Server, sim: Simulation, bursts: int) -> None:
    """Until the server has measured every device's clock in ``bursts`` SYNC bursts."""
    hub = server.hub
    assert hub is not None

    def measured() -> bool:
        estimates = [hub.clock_estimate(agent.device_id) for agent in sim.agents]
        return all(e is not None and e.bursts >= bursts for e in estimates)

    await wait_until(measured, timeout=30)


async def test_offsets_are_estimated_within_a_millisecond(tmp_path: Path) -> None:
    server = Server(fast_settings(tmp_path / "data", sync_interval_s=0.5))
    await server.start()
    sim = await simulate_devices(5, server_url=server.url, state_dir=tmp_path / "devices",
                                 offsets_s=OFFSETS, drifts_ppm=DRIFTS)
    api = Api(server.url)
    try:
        await sim.wait_connected()
        await wait_measured(server, sim, bursts=8)  # a burst every 0.5 s: 3.5 s of drift
        assert server.hub is not None
        for agent, drift in zip(sim.agents, DRIFTS, strict=True):
            estimate = server.hub.clock_estimate(agent.device_id)
            assert estimate is not None and estimate.bursts >= 8
            now = time.time()
            truth = agent.clock.now() - now
            error = estimate.offset_at(now) - truth
            assert abs(error) < 0.001, (agent.device_id, error)
            assert estimate.uncertainty_s < 0.001
            # Over a few seconds the drift is known to tens of ppm, enough between bursts.
            assert estimate.drift_ppm == pytest.approx(drift, abs=50), agent.device_id
        _, clients = await api.get("/api/clients")
        for item in clients["items"]:
            clock = item["clock"]
            assert set(clock) >= {"offset_s", "rtt_s", "uncertainty_s", "drift_ppm",
                                  "measured_at", "bursts"}
            assert clock["rtt_s"] < 0.05
    finally:
        api.close()
        await sim.stop()
        await server.stop()


async def test_scheduled_start_and_stop_line_up_across_skewed_clocks(tmp_path: Path) -> None:
    server = Server(fast_settings(tmp_path / "data", sync_interval_s=0.5))
    await server.start()
    sim = await simulate_devices(5, server_url=server.url, state_dir=tmp_path / "devices",
                                 offsets_s=OFFSETS, drifts_ppm=DRIFTS, sample_rate=16000)
    api = Api(server.url)
    try:
        await sim.wait_connected()
        await wait_measured(server, sim, bursts=4)  # offsets and drifts known
        _, started = await api.post_json("/api/commands", {"action": "START"})
        assert started["ok"] and started["start_at"] is not None, started
        await asyncio.sleep(1.0)  # the take: its length is what the devices record
        _, stopped = await api.post_json("/api/commands", {"action": "STOP"})
        assert stopped["ok"] and stopped["start_at"] is not None, stopped
        # Every device started at the set instant: its reported start, put on the
        # server's clock with the device's TRUE offset, is within a millisecond of it.
        for agent in sim.agents:
            outcome = started["outcomes"][agent.device_id]
            assert abs(outcome["late_ms"]) < 1.0, outcome  # by the server's own estimate
            truth = agent.clock.now() - time.time()  # drift over a second: < 0.2 ms
            error = outcome["started_at"] - truth - started["start_at"]
            assert abs(error) < 0.001, (agent.device_id, error)
        await wait_until(lambda: all(len(a.uploaded) == 1 for a in sim.agents), 30)
        _, listing = await api.get("/api/audio/list")
        frames = {item["frames"] for item in listing["items"]}
        expected = round((stopped["start_at"] - started["start_at"]) * 16000)
        # Equal lengths: each device stopped at the same instant, to within a few samples.
        assert max(frames) - min(frames) <= 32 and abs(min(frames) - expected) <= 32, frames
        # The take, as the catalog keeps it, with its skew report.
        _, takes = await api.get("/api/takes")
        [take] = takes["items"]
        assert take["id"] == started["take_id"] and take["recordings"] == 5
        assert take["started_at"] == started["start_at"]
        assert take["stopped_at"] == stopped["start_at"]
        assert sorted(take["devices"]) == sorted(a.device_id for a in sim.agents)
        _, detail = await api.get(f"/api/takes/{take['id']}")
        assert detail["skew"]["devices"] == 5 and detail["skew"]["skew_ms"] < 2.0, detail["skew"]
        assert all(abs(v) < 2.0 for v in detail["skew"]["start_offset_ms"].values())
        for recording in detail["recordings"]:
            clock = recording["params"]["clock"]
            assert clock["bursts"] >= 3 and clock["uncertainty_s"] < 0.001
    finally:
        api.close()
        await sim.stop()
        await server.stop()


async def test_a_start_that_arrives_late_starts_at_once_and_says_by_how_much(
        tmp_path: Path) -> None:
    server = Server(fast_settings(tmp_path / "data", sync_interval_s=0.5))
    await server.start()
    sim = await simulate_devices(2, server_url=server.url, state_dir=tmp_path / "devices",
                                 offsets_s=[5.0, -5.0], sample_rate=16000)
    try:
        await sim.wait_connected()
        await wait_measured(server, sim, bursts=2)
        assert server.hub is not None
        late_by = 0.3  # as if the command had been delayed on its way
        start_at = time.time() - late_by
        result = await server.hub.command("START", start_at=start_at)
        assert result.ok
        # The first sample is that of the block in progress when START arrives, so it may
        # precede the arrival by up to one block (20 ms) plus the clock estimate's error.
        block_s = 0.02
        for device_id, outcome in result.outcomes.items():
            estimate = server.hub.clock_estimate(device_id)
            assert estimate is not None and outcome.started_at is not None
            lateness = estimate.to_server(outcome.started_at) - start_at
            assert late_by - block_s - 0.005 < lateness < late_by + 0.1, (device_id, lateness)
        described = server.hub.describe(result)
        assert all(outcome["late_ms"] > 1000 * (late_by - block_s - 0.005)
                   for outcome in described["outcomes"].values()), described
        await server.hub.command("STOP")
    finally:
        await sim.stop()
        await server.stop()
