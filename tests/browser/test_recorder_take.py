"""One take on two browser recorders and a Python agent, driven from a notebook's Lab.

What is real: the server (a `Server` on 127.0.0.1, port 0, in a loop thread), two pages of
Debian's Chromium in two browser contexts (so two IndexedDBs, two device ids and two
device keys, as two phones would have), a Python `Agent` on the server's loop, and the
`Lab` a notebook uses (``vocalink_lab.connect``: REST and ``/ws/events``, with the
``VOCALINK_TOKEN`` the test session sets). What is faked: the microphones: Chromium's
fake capture device plays a 1 kHz tone, the agent's source is a generated 440 Hz tone.

START and STOP are scheduled instants of the server's clock; each device maps them to its
own clock (the pages' clocks are measured by SYNC like the agent's), so every file of the
take is STOP's instant minus START's long, to a few milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import vocalink_lab as vl
from tests.browser.recorder_support import (
    TONE_HZ,
    LiveServer,
    chromium,
    dominant_hz,
    download,
    live,
    open_paired,
)
from vocalink_lab.agent import Agent, AgentConfig

__all__ = ["chromium", "live"]  # fixtures, used by name

#: The agent's tone: not the pages', so each file is told apart by its content.
AGENT_HZ = 440.0
#: How long the take lasts, at least (waited for on the pages' sample clocks).
TAKE_S = 2.0
#: Every file's length is the take's within this.
LENGTH_TOLERANCE_S = 0.020


@pytest.mark.slow
@pytest.mark.serial
def test_two_pages_and_an_agent_record_one_take_started_and_stopped_by_the_lab(
        live: LiveServer, chromium: Any, tmp_path: Path) -> None:
    pages = []
    agent = Agent(AgentConfig(state_dir=tmp_path / "agent", server_url=live.url,
                              device_id="pi-agent", name="Lab Pi",
                              source=f"tone:{AGENT_HZ:g}"))
    lab = None
    agent_running = False
    try:
        for _ in range(2):
            pages.append(open_paired(chromium, live))
        live.run(agent.__aenter__())
        agent_running = True
        lab = live.run(vl.connect(live.url))
        page_ids = [device_id for _, device_id in pages]
        assert len(set(page_ids)) == 2, page_ids
        keys = [w.page.evaluate("localStorage.getItem('vocalink.device_key')") for w, _ in pages]
        assert all(keys) and keys[0] != keys[1]
        devices = live.run(lab.wait_for_devices(3))
        assert {d["device_id"] for d in devices} == {*page_ids, "pi-agent"}

        started = live.run(lab.start_recording())
        assert started["start_at"] is not None, started  # scheduled: one instant for all
        outcomes = started["outcomes"]
        assert {d: o["status"] for d, o in outcomes.items()} == dict.fromkeys(
            [*page_ids, "pi-agent"], "SUCCESS"), started
        take_id = started["take_id"]
        # Every device's first sample is at the instant, by its measured clock.
        late = {d: o["late_ms"] for d, o in outcomes.items()}
        assert all(ms is not None and abs(ms) <= 1000 * LENGTH_TOLERANCE_S
                   for ms in late.values()), late
        for watched, _ in pages:
            watched.wait(f"window.vocalinkRecorder.take && "
                         f"window.vocalinkRecorder.take.elapsed >= {TAKE_S}", timeout=15)
        stopped = live.run(lab.stop_recording())
        assert stopped["start_at"] is not None and stopped["take_id"] == take_id, stopped
        assert all(o["status"] == "SUCCESS" for o in stopped["outcomes"].values()), stopped
        expected = stopped["start_at"] - started["start_at"]
        assert expected >= TAKE_S

        rows = live.run(lab.wait_for_recordings(take_id, 3))
        by_device = {row["device_id"]: row for row in rows}
        assert set(by_device) == {*page_ids, "pi-agent"}, rows
        assert {row["id"] for row in rows} == {o["recording_id"] for o in outcomes.values()}
        for device_id, row in by_device.items():
            audio, rate, sha256 = download(live, row["id"])
            assert row["take_id"] == take_id and row["sha256"] == sha256
            assert rate == row["sample_rate"]
            length = len(audio) / rate
            assert abs(length - expected) <= LENGTH_TOLERANCE_S, (device_id, length, expected)
            tone = AGENT_HZ if device_id == "pi-agent" else TONE_HZ
            assert abs(dominant_hz(audio, rate) - tone) <= 3, (device_id, dominant_hz(audio,
                                                                                      rate))
        for watched, device_id in pages:
            # The rate the page said it records at, the one it recorded at, the file's.
            row_id = by_device[device_id]["id"]
            client = live.client(device_id)
            capture_rate = watched.evaluate("window.vocalinkRecorder.capture.sampleRate")
            assert client["capabilities"]["sample_rates"] == [capture_rate]
            assert by_device[device_id]["sample_rate"] == capture_rate
            # The SHA-256 the page computed of its own chunks is the stored file's.
            sent = watched.wait(f"window.vocalinkRecorder.sent[{json.dumps(row_id)}]")
            assert sent["sha256"] == by_device[device_id]["sha256"]
            watched.wait("window.vocalinkRecorder.pending === 0 && "
                         "document.body.dataset.state === 'ready'")
            watched.check()
    finally:
        if lab is not None:
            live.run(lab.stop())
        if agent_running:
            live.run(agent.__aexit__(None, None, None), timeout=60)
        for watched, _ in pages:
            watched.close()
