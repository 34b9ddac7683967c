"""One take on three kinds of device: the replayed Android app, a Python agent, a browser page.

What is real: the server (a `Server` on 127.0.0.1, port 0, in a loop thread, trusting the
app's sessions as ``VOCALINK_ANDROID=trust`` does), its REST API, WebSockets, catalog, take
and merge job (the DSP pool); a page of Debian's Chromium driven by Playwright; a Python
`Agent` on the server's loop; the m4a file (AAC in MP4, encoded by PyAV) and its decoding.
Replayed: the VocalLink Android app's network layer, recorder service and state machine
(`tests.support.android_app`). Faked: the microphones (Chromium's fake capture device plays
a 1 kHz tone; the agent and the app hear the same 2 kHz click every 0.6 s of TRUE time, so
their files' true starts can be read off their audio), the agent's and the phone's clocks
(offsets), and MediaRecorder's start latency.

One scheduled START and one STOP go to all three through ``POST /api/commands``; every file
lands in the catalog under the same take. ``POST /api/audio/merge`` turns the three into one
multichannel recording placed by the take's clocks, where the app's clicks fall on the
agent's within the bounds the server gave; merged on the audio, the app's m4a lands where
its clicks truly are, to a fraction of a millisecond.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.recorder_support import (
    TONE_HZ,
    LiveServer,
    chromium,
    dominant_hz,
    download,
    open_paired,
    wait_for,
)
from tests.browser.test_recorder import live_server
from tests.support.android_app import AAC_FRAME, AndroidApp, ClickTrack
from vocalink_lab.agent import Agent, AgentConfig
from vocalink_lab.agent.clicktrack import click_start
from vocalink_lab.agent.clock import DeviceClock
from vocalink_lab.audio import load

__all__ = ["chromium"]  # a fixture, used by name

#: The phone's clock runs this far ahead of true (server) time.
PHONE_AHEAD_S = 0.350
#: MediaRecorder starts capturing this long after start() (a real phone: tens of ms).
START_LATENCY_S = 0.040
#: The agent's clock runs this far behind true time.
AGENT_BEHIND_S = 1.200
#: The click period the agent and the app hear (true time). Not the app's default 0.25 s:
#: `align` searches half a second around each seed, and clicks that close make its
#: cross-correlation ambiguous (it then keeps the seed, or takes a neighbouring click).
CLICK_PERIOD_S = 0.6
#: How long the take lasts, at least (waited for on the page's sample clock).
TAKE_S = 3.0
#: The page's and the agent's files are the take's length within this (they map the
#: scheduled instants to their own sample clocks).
LENGTH_TOLERANCE_S = 0.020
#: The agent's device id.
AGENT_ID = "pi-agent"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    """The browser tests' live server (SYNC each second), trusting the app's sessions."""
    with live_server(tmp_path / "data", name="Lab Room", sync_interval_s=1.0,
                     android="trust") as server:
        yield server


def clients(live: LiveServer) -> list[dict[str, Any]]:
    items = live.json("GET", "/api/clients")
    return list(items["items"] if isinstance(items, dict) else items)


def measured(live: LiveServer, device_id: str) -> bool:
    """The server has measured ``device_id``'s clock (three samples at least)."""
    client = live.client(device_id)
    clock = client and client.get("clock")
    return bool(clock and clock["samples"] >= 3)


def clicks_start(audio: np.ndarray, rate: int, near: float, search_s: float = 0.1) -> float:
    """True time of a lossy click-track recording's first sample, within a sample.

    `click_start` wants digital silence between clicks, which AAC does not keep: here
    the recording is matched against the click track itself (a cross-correlation), for
    starts within ``search_s`` of ``near`` (under half the period: no click is taken for
    its neighbour).
    """
    reference = ClickTrack(period_s=CLICK_PERIOD_S)(near + np.arange(audio.size) / rate)
    size = 1 << int(np.ceil(np.log2(2 * audio.size)))
    xc = np.fft.irfft(np.fft.rfft(audio, size) * np.conj(np.fft.rfft(reference, size)), size)
    reach = int(search_s * rate)
    lags = np.r_[0:reach + 1, -reach:0]
    lag = int(lags[int(np.argmax(xc[lags]))])
    return near - lag / rate


def lag_s(track: np.ndarray, reference: np.ndarray, rate: int,
          reach_s: float = 0.1) -> float:
    """How much later ``track`` hears what ``reference`` hears (seconds, within a sample),
    for lags within ``reach_s`` (under half the click period)."""
    size = 1 << int(np.ceil(np.log2(track.size + reference.size)))
    xc = np.fft.irfft(np.fft.rfft(track, size) * np.conj(np.fft.rfft(reference, size)), size)
    reach = int(reach_s * rate)
    lags = np.r_[0:reach + 1, -reach:0]
    return float(lags[int(np.argmax(xc[lags]))]) / rate


def merge(live: LiveServer, ids: list[str], folder: Path, **request: Any
          ) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """``POST /api/audio/merge`` (multichannel), waited for: its recording, its report, its
    audio (downloaded and decoded)."""
    job = live.json("POST", "/api/audio/merge", {"ids": ids, "mode": "multichannel",
                                                 **request})
    job = finished_job(live, job["id"])
    assert job["state"] == "succeeded", job
    merged, report = job["result"]["recording"], job["result"]["report"]
    assert merged["kind"] == "merged" and merged["parents"] == ids, merged
    assert merged["sample_rate"] == 48000 and report["frames"] == merged["frames"], merged
    status, _, raw = live.request("GET", f"/api/audio/{merged['id']}")
    assert status == 200
    path = folder / f"{merged['id']}.{merged['format']}"
    path.write_bytes(raw)
    audio, rate = load(path)
    assert rate == 48000 and audio.shape == (len(ids), report["frames"]), audio.shape
    assert all(np.abs(channel).max() > 0.1 for channel in audio), "a silent channel"
    return merged, report, audio


def finished_job(live: LiveServer, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
    """Poll ``GET /api/jobs/{id}`` until the job ends; progress only ever grows."""
    seen: list[dict[str, Any]] = []

    def ended() -> bool:
        job = live.json("GET", f"/api/jobs/{job_id}")
        assert not seen or job["progress"] >= seen[-1]["progress"], (seen[-1], job)
        seen.append(job)
        return job["state"] in ("succeeded", "failed", "cancelled")

    wait_for(ended, timeout, what=f"merge job {job_id} ended")
    return seen[-1]


@pytest.mark.slow
@pytest.mark.serial
def test_a_mixed_take_lands_as_one_take_and_merges_into_one_aligned_multitrack(
        live: LiveServer, chromium: Any, tmp_path: Path) -> None:
    began = time.monotonic()
    agent = Agent(AgentConfig(state_dir=tmp_path / "agent", server_url=live.url,
                              device_id=AGENT_ID, name="Lab Pi",
                              source=f"click:{CLICK_PERIOD_S:g}",
                              clock=DeviceClock(offset_s=-AGENT_BEHIND_S)))
    app = AndroidApp(live.url, offset_s=PHONE_AHEAD_S, start_latency_s=START_LATENCY_S,
                     sync_period_s=0.2, sync_jitter_s=0.05, recordings_dir=tmp_path / "phone",
                     source=ClickTrack(period_s=CLICK_PERIOD_S))
    watched = None
    agent_running = False
    try:
        # -- three devices: a page, an agent, the app; every clock measured ---------------
        watched, page_id = open_paired(chromium, live)
        live.run(agent.__aenter__())
        agent_running = True
        live.run(app.stage())
        live.run(app.connect())
        live.run(app.wait_for(lambda a: a.activated), timeout=15)
        [app_client] = wait_for(lambda: [c for c in clients(live)
                                         if c["platform"] == "android"],
                                what="the app listed as a device", page=watched.page)
        app_id = app_client["device_id"]
        assert app_client["pairing"] == "paired", app_client
        devices = [page_id, AGENT_ID, app_id]
        wait_for(lambda: all(measured(live, d) for d in devices), 30,
                 what="every device's clock measured", page=watched.page)
        app_client = live.client(app_id)
        assert app_client is not None
        assert abs(app_client["clock"]["offset_s"] - PHONE_AHEAD_S) < 0.005, app_client
        ready = time.monotonic()

        # -- one scheduled START for all three -------------------------------------------
        started = live.json("POST", "/api/commands", {"action": "START", "targets": devices})
        assert started["start_at"] is not None, started  # scheduled: one instant for all
        outcomes = started["outcomes"]
        assert {d: o["status"] for d, o in outcomes.items()} == dict.fromkeys(
            devices, "SUCCESS"), started
        take_id = started["take_id"]
        ids = {d: o["recording_id"] for d, o in outcomes.items()}
        assert all(ids.values()) and len(set(ids.values())) == 3, ids
        watched.wait("document.body.dataset.state === 'recording'")
        live.run(app.wait_for(lambda a: a.state == "running"), timeout=15)
        take = app.takes[-1]
        # The app acts on the action's arrival: at the instant, within loopback's latency.
        assert abs(take.true_call - started["start_at"]) < 0.020, (
            take.true_call, started["start_at"])
        watched.wait(f"window.vocalinkRecorder.take && "
                     f"window.vocalinkRecorder.take.elapsed >= {TAKE_S}", timeout=15)
        live.run(app.wait_for(lambda a: a.duration >= 2), timeout=15)

        # -- one STOP ----------------------------------------------------------------------
        stopped = live.json("POST", "/api/commands", {"action": "STOP", "targets": devices})
        assert stopped["start_at"] is not None and stopped["take_id"] == take_id, stopped
        assert {d: o["status"] for d, o in stopped["outcomes"].items()} == dict.fromkeys(
            devices, "SUCCESS"), stopped
        expected = stopped["start_at"] - started["start_at"]
        assert expected >= TAKE_S
        recorded = time.monotonic()

        # -- all three files in the catalog, under the one take ---------------------------
        live.run(app.wait_for(lambda a: a.uploads, timeout=60), timeout=70)
        assert app.uploads == [(ids[app_id], 201)], app.uploads
        rows = wait_for(lambda: (items := live.json(
            "GET", f"/api/audio/list?take_id={take_id}&kind=original")["items"])
            and len(items) == 3 and items, 60, what="three recordings of the take",
            page=watched.page)
        by_device = {row["device_id"]: row for row in rows}
        assert set(by_device) == set(devices), rows
        assert {d: r["id"] for d, r in by_device.items()} == ids
        assert all(r["take_id"] == take_id for r in rows), rows
        status, _, raw = live.request("GET", f"/api/takes/{take_id}")
        assert status == 200, raw[:300]
        take_info = json.loads(raw)
        landed = time.monotonic()

        # -- the page and the agent: the take's length, their own sound -------------------
        for device_id in (page_id, AGENT_ID):
            row = by_device[device_id]
            audio, rate, sha256 = download(live, row["id"])
            assert row["sha256"] == sha256 and rate == row["sample_rate"]
            length = len(audio) / rate
            assert abs(length - expected) <= LENGTH_TOLERANCE_S, (device_id, length, expected)
        page_audio, page_rate, _ = download(live, by_device[page_id]["id"])
        assert abs(dominant_hz(page_audio, page_rate) - TONE_HZ) <= 3
        agent_audio, agent_rate, _ = download(live, by_device[AGENT_ID]["id"])
        agent_row = by_device[AGENT_ID]
        agent_true_start = click_start(agent_audio, agent_rate, period_s=CLICK_PERIOD_S,
                                       near=agent_row["started_at"])
        agent_bound = agent_row["params"]["clock"]["start_uncertainty_s"]
        assert abs(agent_row["started_at"] - agent_true_start) <= agent_bound + 0.001, (
            agent_row["started_at"], agent_true_start, agent_bound)

        # -- the app: m4a/aac/48000, what the replay captured, and it decodes so ----------
        app_row = by_device[app_id]
        assert (app_row["format"], app_row["codec"], app_row["sample_rate"]) == (
            "m4a", "aac", 48000), app_row
        assert app_row["original_name"] == take.name
        android = app_row["params"]["android"]
        priming = android["priming_samples"]
        # Its catalogued length (the file's declared one) is what was captured, priming in
        # front when the file does not declare it, within an AAC frame (the encoder pads the
        # last one; an edit list cuts the end to its movie timescale's whole millisecond).
        assert abs(app_row["frames"] - take.samples - priming) < AAC_FRAME, (
            app_row["frames"], take.samples, android, take.file_info)
        status, _, raw_m4a = live.request("GET", f"/api/audio/{app_row['id']}")
        assert status == 200
        m4a = tmp_path / "downloaded.m4a"
        m4a.write_bytes(raw_m4a)
        app_audio, app_rate = load(m4a)
        # `load` decodes every packet: the catalog's length (the edit list's) and the last
        # frame's padding, which the edit list cuts and the decoder does not (under one AAC
        # frame, and the edit list's sub-millisecond rounding).
        assert app_rate == 48000 and app_audio.shape[0] == 1, app_audio.shape
        assert 0 <= app_audio.shape[1] - app_row["frames"] < AAC_FRAME + 48, (
            app_audio.shape, app_row["frames"])
        # The decoded file's first sample is where the clicks say: the replay's first
        # captured sample, minus any priming in front.
        assert take.true_first_sample is not None
        app_true_start = clicks_start(app_audio[0], 48000, near=app_row["started_at"])
        assert abs(app_true_start - (take.true_first_sample - priming / 48000)) < 0.001, (
            app_true_start, take.true_first_sample, priming)
        # The catalogue places it within the bound it gives, and the bound is loopback's.
        app_bound = app_row["params"]["clock"]["start_uncertainty_s"]
        assert abs(app_row["started_at"] - app_true_start) <= app_bound, (
            app_row["started_at"], app_true_start, app_bound, android)
        assert app_bound < 0.1, app_bound
        # Capture began after the START and before the STOP's instant.
        assert started["start_at"] <= take.true_first_sample < stopped["start_at"]
        assert app.parse_errors == [] and app.errors == [], (app.parse_errors, app.errors)

        # -- the take's skew report: every device, the app's wide bound flagged -----------
        skew = take_info["skew"]
        assert skew["devices"] == 3 and set(skew["start_offset_ms"]) == set(devices), skew
        assert skew["bound_ms"] is not None and skew["bound_ms"] >= skew["skew_ms"], skew
        assert skew["flagged"] and "align" in skew["flag"], skew

        # -- the merge: the take's three recordings, one multitrack on the take's clocks --
        # Placed by each recording's start in server time (``align: false``): the page's
        # tone shares no sound with the clicks, so a cross-correlation against them has
        # nothing true to find (`align` may still report a confident, wrong, offset).
        order = [AGENT_ID, app_id, page_id]
        merge_ids = [ids[d] for d in order]
        starts = [by_device[d]["started_at"] for d in order]
        bounds = [by_device[d]["params"]["clock"]["start_uncertainty_s"] for d in order]
        merged, report, multitrack = merge(live, merge_ids, tmp_path, align=False)
        assert merged["take_id"] == take_id and merged["device_id"] is None, merged
        assert merged["channels"] == 3 and report["channels"] == 3, (merged, report)
        # As long as the take: the three spans' union (the app's starts a little late).
        assert abs(report["duration_s"] - expected) < 0.1, (report["duration_s"], expected)
        alignment = report["alignment"]
        assert alignment["method"] == ["reference", "seed", "seed"], alignment
        assert alignment["offsets_s"] == pytest.approx(
            [t - starts[0] for t in starts], abs=1e-6), (alignment, starts)
        assert merged["started_at"] == pytest.approx(starts[0] + report["start_s"], abs=1e-6)
        # On the merged timeline the app's clicks are the agent's, but for the error of the
        # app's start in the catalog (the clicks tell it), within the bounds the server gave.
        error_s = (app_row["started_at"] - app_true_start) \
            - (agent_row["started_at"] - agent_true_start)
        assert abs(error_s) <= bounds[0] + bounds[1], (error_s, bounds)
        shift_s = lag_s(multitrack[1], multitrack[0], 48000)
        assert abs(shift_s - error_s) < 0.0002, (shift_s, error_s)
        assert abs(dominant_hz(multitrack[2], 48000) - TONE_HZ) <= 3

        # -- aligned on the audio: the app's m4a lands where its clicks truly are --------
        pair, pair_report, pair_audio = merge(live, merge_ids[:2], tmp_path)
        assert pair["take_id"] == take_id and pair["channels"] == 2, pair
        measured_alignment = pair_report["alignment"]
        assert measured_alignment["method"] == ["reference", "xcorr"], measured_alignment
        offset = measured_alignment["offsets_s"][1]
        assert abs(offset - (app_true_start - agent_true_start)) < 0.0005, (
            offset, app_true_start - agent_true_start, measured_alignment)
        # ...which is the catalog's placement within the bounds the server gave.
        assert abs(offset - (starts[1] - starts[0])) <= bounds[0] + bounds[1], (
            offset, starts, bounds)
        assert abs(lag_s(pair_audio[1], pair_audio[0], 48000)) < 0.0002
        merged_at = time.monotonic()
        watched.check()
        print(f"\nsetup {ready - began:.1f} s, take {recorded - ready:.1f} s, "
              f"uploads {landed - recorded:.1f} s, checks and merges {merged_at - landed:.1f} s; "
              f"app: started {skew['start_offset_ms'][app_id]:.1f} ms after the instant, "
              f"catalogued within {error_s * 1e3:+.2f} ms (bound {app_bound * 1e3:.1f} ms), "
              f"START outcome late_ms {outcomes[app_id]['late_ms']} "
              f"(+/- {outcomes[app_id]['uncertainty_ms']} ms), "
              f"aligned offset {offset * 1e3:.2f} ms "
              f"(confidence {measured_alignment['confidence'][1]:.2f})")
    finally:
        live.run(app.close(), timeout=30)
        if agent_running:
            live.run(agent.__aexit__(None, None, None), timeout=60)
        if watched is not None:
            watched.close()
