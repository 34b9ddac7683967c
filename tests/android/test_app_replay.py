"""The VocalLink Android app, replayed from its Kotlin sources, against our server.

Real: the server on 127.0.0.1 (authentication on), its WebSocket and REST, the catalog,
the m4a files (AAC in MP4, encoded by PyAV) and their decoding. Replayed: the app's
network layer, recorder service and state machine, frame for frame
(`tests.support.android_app`). Faked: the phone's clock (an offset), MediaRecorder's
start latency, and its microphone (a click track on true time, so that a file's true
start can be read from its audio).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import fast_settings, running
from tests.support.android_app import AndroidApp
from tests.support.device import FakeDevice
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.audio import load
from vocalink_lab.protocol import Command
from vocalink_lab.server import Server

#: The phone's clock runs this far ahead of true (server) time.
PHONE_AHEAD_S = 0.350
#: MediaRecorder starts capturing this long after start() (a real phone: tens of ms).
START_LATENCY_S = 0.030


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """Trusts the app's sessions (``VOCALINK_ANDROID=trust``); SYNC each second for v1."""
    async with running(fast_settings(tmp_path / "data", android="trust",
                                     sync_interval_s=1.0)) as srv:
        yield srv


@pytest_asyncio.fixture
async def app(server: Server, tmp_path: Path) -> AsyncIterator[AndroidApp]:
    """The replayed app, staged and activated; it probes our clock every 0.2 s."""
    phone = AndroidApp(server.url, offset_s=PHONE_AHEAD_S, start_latency_s=START_LATENCY_S,
                       sync_period_s=0.2, sync_jitter_s=0.05, recordings_dir=tmp_path / "phone")
    try:
        await phone.stage()
        await phone.connect()
        await phone.wait_for(lambda a: a.activated)
        yield phone
    finally:
        await phone.close()


async def command(api: Api, action: str, device_id: str, **more: Any) -> dict[str, Any]:
    status, body = await api.post_json("/api/commands", {
        "action": action, "targets": [device_id], **more})
    assert status == 200, body
    return dict(body)


async def android_device(api: Api) -> dict[str, Any]:
    _, devices = await api.get("/api/clients")
    [device] = [d for d in devices["items"] if d["platform"] == "android"]
    return dict(device)


@pytest.mark.asyncio
async def test_every_step_of_the_app_works_against_the_server(
        server: Server, app: AndroidApp) -> None:
    api = Api(server.url)
    try:
        # -- a device, and its clock measured from the app's own probes --------------------
        device = await android_device(api)
        device_id = device["device_id"]
        assert device["pairing"] == "paired" and device["name"] == "User 7a1f"
        await app.wait_for(lambda a: a.session and a.session.get("theta") is not None)

        async def measured() -> Any:
            clock = (await android_device(api))["clock"]
            return clock and clock["samples"] >= 3 and clock

        await wait_until(measured, timeout=10)
        clock = (await android_device(api))["clock"]
        assert abs(clock["offset_s"] - PHONE_AHEAD_S) < 0.003, clock  # whole ms, loopback
        assert clock["uncertainty_s"] >= 0.001  # no better than the app's millisecond
        # The theta we send is server minus phone: what the app adds to its clock.
        assert abs(float(app.theta) + PHONE_AHEAD_S * 1000) < 3, app.theta

        # -- a scheduled START: sent so that it arrives when due; the app acts on arrival --
        started = await command(api, "START", device_id)
        outcome = started["outcomes"][device_id]
        assert outcome["status"] == "SUCCESS", outcome
        recording_id = outcome["recording_id"]
        await app.wait_for(lambda a: a.state == "running")
        take = app.takes[-1]
        assert abs(take.true_call - started["start_at"]) < 0.020, (
            take.true_call, started["start_at"])

        # -- pause, resume, get_state ------------------------------------------------------
        paused = await command(api, "PAUSE", device_id)
        assert paused["outcomes"][device_id]["status"] == "SUCCESS", paused
        assert app.state == "paused"
        resumed = await command(api, "RESUME", device_id)
        assert resumed["outcomes"][device_id]["status"] == "SUCCESS", resumed
        pinged = await command(api, "PING", device_id)
        assert pinged["outcomes"][device_id]["status"] == "SUCCESS", pinged
        assert (await android_device(api))["state"] == "RECORDING"
        await app.wait_for(lambda a: a.duration >= 1, timeout=5)

        # -- STOP, stage, upload, catalogue --------------------------------------------------
        stopped = await command(api, "STOP", device_id)
        assert stopped["outcomes"][device_id]["status"] == "SUCCESS", stopped
        await app.wait_for(lambda a: a.uploads, timeout=30)
        assert app.uploads == [(recording_id, 201)], app.uploads
        status, row = await api.get(f"/api/audio/{recording_id}/meta")
        assert status == 200, row
        assert row["format"] == "m4a" and row["codec"] == "aac" and row["sample_rate"] == 48000
        assert row["device_id"] == device_id and row["take_id"] == started["take_id"]
        assert row["original_name"] == take.name
        # Its length: what was captured (the pause left out), within an AAC frame.
        assert abs(row["frames"] - take.samples) <= 2048, (row["frames"], take.samples)
        # Its start: where the first sample truly was, within the bound the server gives.
        bound = row["params"]["clock"]["start_uncertainty_s"]
        assert take.true_first_sample is not None
        assert abs(row["started_at"] - take.true_first_sample) <= bound, (
            row["started_at"], take.true_first_sample, bound)
        assert bound < 0.1, bound  # loopback: the start is bounded tightly
        # What the app decodes, it decoded: nothing it could not parse, no error frames.
        assert app.parse_errors == [] and app.errors == []
        # Defaults omitted, as the app's own encoder does: no nulls in our frames.
        assert not [raw for raw in app.received_raw if "null" in raw]
        # The file decodes with the catalogued length.
        status, _, _, raw = await api.request("GET", f"/api/audio/{recording_id}")
        assert status == 200
        path = Path(app.recordings_dir) / "downloaded.m4a"
        path.write_bytes(raw)
        audio, rate = load(path)
        assert rate == 48000 and abs(audio.shape[-1] - row["frames"]) <= 2048
    finally:
        api.close()


@pytest.mark.asyncio
async def test_cancel_throws_the_take_away_and_the_next_one_uploads_under_its_own_id(
        server: Server, app: AndroidApp) -> None:
    api = Api(server.url)
    try:
        device_id = (await android_device(api))["device_id"]
        first = await command(api, "START", device_id)
        await app.wait_for(lambda a: a.state == "running")
        async with FakeDevice(server.ws_url, "mic-1") as v1:
            status, cancelled = await api.post_json("/api/commands", {
                "action": "CANCEL", "targets": [device_id, "mic-1"]})
            assert status == 200, cancelled
            assert not v1.of_type(Command)  # never sent to a v1 device
        assert cancelled["outcomes"][device_id]["status"] == "SUCCESS", cancelled
        # CANCEL is the app's alone: the v1 device fails at once, and says why.
        failed = cancelled["outcomes"]["mic-1"]
        assert failed["status"] == "FAILED" and "CANCEL" in failed["error"], failed
        await app.wait_for(lambda a: a.state == "stopped")
        assert app.takes[-1].cancelled
        second = await command(api, "START", device_id)
        second_id = second["outcomes"][device_id]["recording_id"]
        assert second_id != first["outcomes"][device_id]["recording_id"]
        await app.wait_for(lambda a: a.duration >= 1, timeout=5)
        await command(api, "STOP", device_id)
        await app.wait_for(lambda a: a.uploads, timeout=30)
        assert app.uploads == [(second_id, 201)], app.uploads
        status, row = await api.get(f"/api/audio/{second_id}/meta")
        assert status == 200 and row["take_id"] == second["take_id"], row
    finally:
        api.close()



@pytest.mark.asyncio
@pytest.mark.parametrize("declared", [True, False])
async def test_the_start_accounts_for_the_aac_priming_whether_declared_or_not(
        server: Server, tmp_path: Path, declared: bool) -> None:
    """The catalogued start is the decoded file's first sample, priming included.

    A file that declares its priming (an edit list) decodes from the first captured
    sample; one that does not decodes the encoder's priming first (here FFmpeg's 1024
    samples; the server assumes Android's 2048 and widens the bound by 1024).
    """
    phone = AndroidApp(server.url, offset_s=-0.2, start_latency_s=START_LATENCY_S,
                       sync_period_s=0.2, sync_jitter_s=0.05, declare_priming=declared,
                       recordings_dir=tmp_path / "phone")
    api = Api(server.url)
    try:
        await phone.stage()
        await phone.connect()
        await phone.wait_for(lambda a: a.activated and a.session.get("theta") is not None)
        device_id = (await android_device(api))["device_id"]
        started = await command(api, "START", device_id)
        recording_id = started["outcomes"][device_id]["recording_id"]
        await phone.wait_for(lambda a: a.duration >= 1, timeout=5)
        await command(api, "STOP", device_id)
        await phone.wait_for(lambda a: a.uploads, timeout=30)
        _, row = await api.get(f"/api/audio/{recording_id}/meta")
        take = phone.takes[-1]
        assert take.file_info["priming_declared"] is declared
        android = row["params"]["android"]
        assert android["priming_declared"] is declared
        assert android["priming_samples"] == (0 if declared else 2048)
        assert take.true_first_sample is not None
        in_file = take.file_info["priming"] if not declared else 0
        decoded_first = take.true_first_sample - in_file / 48000
        bound = row["params"]["clock"]["start_uncertainty_s"]
        assert abs(row["started_at"] - decoded_first) <= bound, (
            row["started_at"], decoded_first, bound)
    finally:
        await phone.close()
        api.close()


@pytest.mark.asyncio
async def test_a_take_stopped_on_the_phone_is_catalogued_with_an_honest_bound(
        server: Server, app: AndroidApp) -> None:
    """Stopped by a tap on the phone, a take has no STOP to place its start from.

    Its start is then bounded by the START alone: from the action's arrival to a
    MediaRecorder latency after the app's ``started`` (the app reports the call, not the
    first sample, which here comes 30 ms later).
    """
    api = Api(server.url)
    try:
        device_id = (await android_device(api))["device_id"]
        started = await command(api, "START", device_id)
        recording_id = started["outcomes"][device_id]["recording_id"]
        await app.wait_for(lambda a: a.duration >= 1, timeout=5)
        app.tap_stop()
        await app.wait_for(lambda a: a.uploads, timeout=30)
        assert app.uploads == [(recording_id, 201)], app.uploads
        _, row = await api.get(f"/api/audio/{recording_id}/meta")
        assert row["take_id"] == started["take_id"]
        assert row["params"]["android"]["anchored"] == "start"
        take = app.takes[-1]
        assert take.true_first_sample is not None
        bound = row["params"]["clock"]["start_uncertainty_s"]
        error = abs(row["started_at"] - take.true_first_sample)
        assert START_LATENCY_S - 0.005 <= error <= bound, (error, bound)
    finally:
        api.close()


@pytest.mark.asyncio
async def test_renaming_on_the_phone_renames_the_device(server: Server, app: AndroidApp) -> None:
    api = Api(server.url)
    try:
        app.rename("Alto, row 2")

        async def renamed() -> bool:
            return (await android_device(api))["name"] == "Alto, row 2"

        await wait_until(renamed, timeout=10)
        assert app.errors == [] and app.parse_errors == []
    finally:
        api.close()
