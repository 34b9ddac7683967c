"""A take's recordings, placed on the server timeline by their metadata, line up on the audio.

Every simulated device hears the same clicks, at the same TRUE instants, while their clocks
are offset by up to ±10 s and drift by up to ±200 ppm.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import fast_settings
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.agent import simulate_devices
from vocalink_lab.agent.clock import DeviceClock
from vocalink_lab.agent.sources import ClickSource
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio
RATE = 16000
OFFSETS = [-10.0, -3.0, 2.5, 10.0]
DRIFTS = [200.0, -200.0, 120.0, -80.0]


def onsets(path: Path) -> np.ndarray:
    """Sample indices where a click begins."""
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    loud = np.abs(data[:, 0]) > 0.3
    starts = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    keep = [s for i, s in enumerate(starts) if i == 0 or s - starts[i - 1] > RATE // 20]
    return np.asarray(keep)


async def test_click_source_follows_true_time() -> None:
    clock = DeviceClock(offset_s=7.0, drift_ppm=150.0)
    source = ClickSource(period_s=0.1, sample_rate=RATE, clock=clock)
    async with source:
        blocks = [await source.read() for _ in range(20)]
    audio = np.concatenate([b.samples[:, 0] for b in blocks])
    first = np.flatnonzero(np.abs(audio) > 0.3)
    assert first.size
    t = blocks[0].t0 + first[0] / RATE  # device time of the first loud sample
    # On the true timeline the click sits just after a multiple of 0.1 s.
    assert (clock.true_time(t) % 0.1) < 0.001


async def test_recordings_line_up_within_two_milliseconds(tmp_path: Path) -> None:
    server = Server(fast_settings(tmp_path / "data", sync_interval_s=0.5))
    await server.start()
    sim = await simulate_devices(4, server_url=server.url, state_dir=tmp_path / "devices",
                                 sources=["click:0.25"] * 4, offsets_s=OFFSETS,
                                 drifts_ppm=DRIFTS, sample_rate=RATE)
    api = Api(server.url)
    try:
        await sim.wait_connected()
        assert server.hub is not None
        hub = server.hub
        await wait_until(lambda: all((e := hub.clock_estimate(a.device_id)) is not None
                                     and e.bursts >= 4 for a in sim.agents), 30)  # measured
        _, started = await api.post_json("/api/commands", {"action": "START"})
        assert started["ok"], started
        await asyncio.sleep(1.3)  # the take: about five clicks recorded
        _, stopped = await api.post_json("/api/commands", {"action": "STOP"})
        assert stopped["ok"], stopped
        await wait_until(lambda: sum(len(a.uploaded) for a in sim.agents) == 4, 30)
        _, take = await api.get(f"/api/takes/{started['take_id']}")
        timelines = []
        for recording in take["recordings"]:
            found = onsets(server.data_dir / recording["path"])
            assert len(found) >= 4, recording["device_id"]
            # On the server timeline: the recording's start (server time) plus sample time,
            # the device's sample clock corrected by its measured drift.
            drift = recording["params"]["clock"]["drift_ppm"] * 1e-6
            timelines.append(recording["started_at"] + found / (RATE * (1 + drift)))
        reference = timelines[0]
        worst: list[float] = []
        for other in timelines[1:]:
            for t in reference:
                nearest = other[np.argmin(np.abs(other - t))]
                assert abs(nearest - t) < 0.002, (t, nearest)
                worst.append(abs(nearest - t))
        assert take["skew"]["skew_ms"] < 2.0
        print(f"alignment on the audio: worst {max(worst) * 1e6:.0f} us")
    finally:
        api.close()
        await sim.stop()
        await server.stop()
