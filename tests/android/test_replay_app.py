"""The Android app replay (tests.support.android_app) on its own: no vocalink server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.support.android_app import (
    AAC_FRAME,
    CLOCK_SYNC_REPORT,
    SESSION_METADATA,
    STATE_REPORT,
    AndroidApp,
    KotlinJsonError,
    app_delay_ms,
    decode_object,
    encode_frame,
    encode_object,
    java_float_str,
)
from vocalink_lab.agent.clicktrack import click_start
from vocalink_lab.audio.io import probe

# A real epoch in ms (2027-01-15). float32 steps there are 2**17 = 131072 ms.
EPOCH_MS = 1_800_000_000_000
STEP = 131072


class FakeClock:
    """True time under the test's control (seconds since the epoch)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- the float32 delay ---------------------------------------------------------------------

def test_float32_grid_at_todays_epoch_is_131072_ms() -> None:
    assert float(np.spacing(np.float32(EPOCH_MS))) == STEP


def test_a_trigger_200_ms_ahead_at_a_real_epoch_runs_at_once() -> None:
    # float32(now) == float32(now + 200): the difference is 0, so "delay <= 0".
    assert app_delay_ms(EPOCH_MS + 200, EPOCH_MS, 0.0) is None
    assert app_delay_ms(EPOCH_MS + 5000, EPOCH_MS, 12.5) is None


def test_a_trigger_straddling_a_float32_midpoint_waits_the_cap() -> None:
    below = int(np.float32(EPOCH_MS))  # a float32 grid point (1799999979520)
    mid = below + STEP // 2  # values below it round down, above it round up
    now = mid - 1
    assert app_delay_ms(now + 200, now, 0.0) == 10000  # 131072 ms, capped
    # The same straddle backwards: -131072 ms, so at once.
    assert app_delay_ms(mid - 100, mid + 1, 0.0) is None


def test_theta_below_half_a_step_changes_nothing_at_real_epochs() -> None:
    below = int(np.float32(EPOCH_MS))
    mid = below + STEP // 2
    # now rounds down; now + theta (float32) rounds back down unless theta is large.
    assert app_delay_ms(mid + 100, mid - 1, 60000.0) == 10000
    assert app_delay_ms(mid + 100, mid - 1, 70000.0) is None


def test_no_trigger_means_at_once() -> None:
    assert app_delay_ms(None, EPOCH_MS, 0.0) is None
    assert app_delay_ms(-1, EPOCH_MS, 0.0) is None  # the app's own "none"


def test_small_epochs_where_float32_is_exact_give_the_exact_delay() -> None:
    assert app_delay_ms(1200, 1000, 0.0) == 200
    assert app_delay_ms(1200, 1000, 50.0) == 150
    assert app_delay_ms(1200, 1000, 0.75) == 199  # 199.25 truncated toward zero
    assert app_delay_ms(30000, 1000, 0.0) == 10000  # capped
    assert app_delay_ms(900, 1000, 0.0) is None
    assert app_delay_ms(1000, 1000, 0.0) is None


# -- kotlinx encoding ---------------------------------------------------------------------

def test_java_float_strings() -> None:
    assert [java_float_str(x) for x in (3, 12.5, -0.5, 1e7, 1e-4, 0.001, 123456.789)] == [
        "3.0", "12.5", "-0.5", "1.0E7", "1.0E-4", "0.001", "123456.79"]


def test_encoding_omits_properties_equal_to_their_default() -> None:
    assert encode_object(STATE_REPORT, {"id": "s1", "state": "stopped", "duration": 0}) \
        == '{"id":"s1","state":"stopped"}'
    assert encode_object(STATE_REPORT, {"id": "s1", "state": "running", "duration": 7}) \
        == '{"id":"s1","state":"running","duration":7}'
    stage = encode_object(SESSION_METADATA, {"id": "", "name": "User 7a1f",
                                              "ip": "127.0.0.23", "battery": 80,
                                              "device": "Google Pixel 7"})
    assert stage == ('{"id":"","name":"User 7a1f","ip":"127.0.0.23","battery":80,'
                     '"device":"Google Pixel 7"}')
    report = encode_object(CLOCK_SYNC_REPORT, {"theta": np.float32(-12.5), "rtt": 3})
    assert encode_frame("sync", "sync_report", report) \
        == '{"kind":"sync","msgType":"sync_report","body":{"theta":-12.5,"rtt":3.0}}'


def test_decoding_follows_kotlinx() -> None:
    meta = decode_object(SESSION_METADATA, '{"id":"a","name":"n","ip":"i","device":"d",'
                                           '"theta":0.1,"extra":[1]}')
    assert meta["theta"] == np.float32(0.1) and meta["battery"] is None
    assert decode_object(SESSION_METADATA, {"id": "a", "name": "n", "ip": "i", "device": "d",
                                            "lastSync": "17"})["lastSync"] == 17
    for bad in ('{"name":"n","ip":"i","device":"d"}',  # id missing
                '{"id":5,"name":"n","ip":"i","device":"d"}',  # unquoted string
                '{"id":"a","name":"n","ip":"i","device":"d","lastSync":1.5}',
                '{"id":"a","name":"n","ip":"i","device":null}'):
        with pytest.raises(KotlinJsonError):
            decode_object(SESSION_METADATA, bad)


# -- the app without a server ----------------------------------------------------------------

def _activated(app: AndroidApp, sid: str = "s1", theta: float | None = None) -> None:
    body: dict[str, object] = {"id": sid, "name": "User 7a1f", "ip": "127.0.0.23",
                               "device": "Google Pixel 7"}
    if theta is not None:
        body["theta"] = theta
    app.session = {"id": sid}
    app._ws_session_id = sid  # as connect() would set it from the staged session
    app.handle_text(json.dumps({"kind": "event", "msgType": "session_activated",
                                "body": body}))


@pytest.mark.asyncio
async def test_tok_gives_a_sync_report_with_long_then_float_arithmetic(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)  # now_ms() == 1_000_000
    app = AndroidApp("http://127.0.0.1:1", true_time=clock, recordings_dir=tmp_path)
    _activated(app)
    app.handle_text('{"kind":"sync","msgType":"tok","body":'
                    '{"t1":999990,"t2":1000050,"t3":1000051}}')
    assert app.parse_errors == []
    assert app.attempted[-1] == {"kind": "sync", "msgType": "sync_report",
                                 "body": {"theta": 55.5, "rtt": 9.0}}
    await app.close()


@pytest.mark.asyncio
async def test_frames_the_app_rejects_or_ignores(tmp_path: Path) -> None:
    app = AndroidApp("http://127.0.0.1:1", true_time=FakeClock(1000.0), recordings_dir=tmp_path)
    _activated(app)
    app.handle_text('{"kind":"event","msgType":"no_such_event","body":{}}')  # ignored
    app.handle_text('{"kind":"action","msgType":"start","body":{"id":"other"}}')  # not us
    app.handle_text('{"kind":"event","msgType":"session_update"}')  # no body: ignored
    assert app.parse_errors == [] and app.state == "stopped"
    for bad in ('{"kind":"bogus","msgType":"x"}', '{"msgType":"tok"}', "not json",
                '{"kind":"sync","msgType":"tok"}',
                '{"kind":"event","msgType":"session_activated","body":{"id":"x"}}'):
        app.handle_text(bad)
    assert len(app.parse_errors) == 5
    await app.close()


@pytest.mark.asyncio
async def test_state_reports_and_events(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)
    app = AndroidApp("http://127.0.0.1:1", true_time=clock, recordings_dir=tmp_path)
    _activated(app)
    app.handle_text('{"kind":"action","msgType":"get_state","body":{"id":"all"}}')
    assert app.attempted[-1]["body"] == {"id": "s1", "state": "stopped"}  # duration 0 omitted
    # A body that does not decode as a target counts as none: obeyed.
    app.handle_text('{"kind":"action","msgType":"start","body":{"nope":1}}')
    assert app.state == "running"
    clock.t += 1.0
    app.handle_text('{"kind":"action","msgType":"pause","body":{"id":"s1"}}')
    clock.t += 0.5
    app.handle_text('{"kind":"action","msgType":"resume"}')
    clock.t += 0.5
    app.handle_text('{"kind":"action","msgType":"cancel","body":{"id":"all"}}')
    events = [f["msgType"] for f in app.attempted]
    # No "tik": the sync loop runs only while a WebSocket is open.
    assert events == ["session_state_report", "started", "paused", "resumed", "stopped"]
    assert app.takes[0].cancelled and not app.takes[0].path.exists()
    app.handle_text('{"kind":"action","msgType":"cancel"}')  # when stopped: "stopped" again
    assert app.attempted[-1]["msgType"] == "stopped"
    assert app.parse_errors == []
    await app.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("latency_s", "drift_ppm"), [(0.0, 0.0), (0.137, 80.0)])
async def test_the_m4a_decodes_and_its_clicks_give_the_true_start(
        tmp_path: Path, latency_s: float, drift_ppm: float) -> None:
    clock = FakeClock(1_800_000_000.0 + 0.0417)
    app = AndroidApp("http://127.0.0.1:1", true_time=clock, recordings_dir=tmp_path,
                     start_latency_s=latency_s, drift_ppm=drift_ppm, offset_s=-3.2)
    _activated(app)
    app.handle_text('{"kind":"action","msgType":"start","body":{"id":"s1"}}')
    clock.t += 1.0
    app.handle_text('{"kind":"action","msgType":"pause","body":{"id":"s1"}}')
    clock.t += 0.6
    app.handle_text('{"kind":"action","msgType":"resume","body":{"id":"s1"}}')
    clock.t += 1.3
    app.handle_text('{"kind":"action","msgType":"stop","body":{"id":"s1"}}')
    take = app.takes[0]
    await app.wait_for(lambda a: any(f["msgType"] == "rec_stage" for f in a.attempted))
    assert app.parse_errors == []
    stage = app.attempted[-1]
    assert stage["msgType"] == "rec_stage"
    assert stage["body"] == {"sessionId": "s1", "recName": take.name,
                             "duration": take.duration_s, "sizeBytes": take.path.stat().st_size}
    assert [f["msgType"] for f in app.attempted][-2:] == ["stopped", "rec_stage"]
    assert take.name.endswith(".m4a") and take.name[:4] == "2027"  # the phone's clock
    assert take.true_first_sample == pytest.approx(1_800_000_000.0417 + latency_s, abs=1e-6)

    # The paused 0.6 s is not in the file.
    expected = take.samples
    assert expected == pytest.approx((2.3 - latency_s) * take.true_rate, abs=2)
    info = probe(take.path)
    assert (info.format, info.codec, info.sample_rate, info.channels) == ("m4a", "aac", 48000, 1)
    priming = take.file_info["priming"]
    assert abs(info.frames - expected) <= AAC_FRAME + priming
    assert stage["body"]["duration"] == int(expected / 48000)

    # The encoder primes 1024 samples and the MP4 declares them (edit list); PyAV drops them.
    assert priming == AAC_FRAME
    assert take.file_info["edit_list"][0][1] == priming
    assert app.last_file_priming == {"encoder_priming": 1024,
                                     "edit_list": take.file_info["edit_list"],
                                     "declared_media_time": 1024}
    with av.open(str(take.path)) as container:
        y = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    # AAC turns digital silence around a click into faint noise; gate it back to silence.
    y = np.where(np.abs(y) < 0.1, 0.0, y)
    assert take.true_first_sample is not None
    start = click_start(y, take.true_rate, period_s=0.25, near=take.true_first_sample)
    assert start == pytest.approx(take.true_first_sample, abs=20e-6)
    await app.close()


# -- the wire, against a minimal stand-in (not vocalink's server) ----------------------------

@pytest.mark.asyncio
async def test_stage_connect_sync_and_upload_on_the_wire(tmp_path: Path) -> None:
    import asyncio

    import tornado.web
    import tornado.websocket

    seen: dict[str, Any] = {"frames": []}

    class Sessions(tornado.web.RequestHandler):
        def post(self) -> None:
            seen["stage"] = (self.request.body, dict(self.request.headers))
            self.set_header("Content-Type", "application/json")
            self.write('{"id":"s9","name":"User 7a1f","ip":"x","device":"d","more":1}')

    class Upload(tornado.web.RequestHandler):
        def post(self, rid: str) -> None:
            seen["upload"] = (rid, self.request.files["file"][0], dict(self.request.headers))
            self.set_status(201)

    class Control(tornado.websocket.WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            frame = json.loads(message)
            seen["frames"].append(frame)
            if frame["msgType"] == "session_activate":
                self.write_message('{"kind":"event","msgType":"session_activated","body":'
                                   '{"id":"s9","name":"User 7a1f","ip":"x","device":"d",'
                                   '"theta":-2.5}}')
            elif frame["msgType"] == "tik":
                t1 = frame["body"]["t1"]
                self.write_message(json.dumps({"kind": "sync", "msgType": "tok",
                                               "body": {"t1": t1, "t2": t1 + 5, "t3": t1 + 6}}))
            elif frame["msgType"] == "rec_stage":
                body = frame["body"]
                self.write_message(json.dumps({"kind": "event", "msgType": "rec_staged", "body": {
                    "rid": "r1", "recName": body["recName"], "sessionId": "s9", "speaker": "x",
                    "device": "d", "duration": body["duration"], "sizeBytes": body["sizeBytes"],
                    "createdAt": 1}}))

    server = tornado.web.Application([(r"/sessions", Sessions), (r"/recordings/(\w+)", Upload),
                                      (r"/ws/control", Control)]).listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    app = AndroidApp(f"http://127.0.0.1:{port}", recordings_dir=tmp_path, sync_period_s=0.2,
                     sync_jitter_s=0.05)
    try:
        assert (await app.stage())["id"] == "s9"
        body, headers = seen["stage"]
        assert json.loads(body)["id"] == "" and "Authorization" not in headers
        assert headers["Content-Type"] == "application/json; charset=utf-8"
        await app.connect()
        await app.wait_for(lambda a: a.activated and any(
            f["msgType"] == "sync_report" for f in a.sent))
        assert app.theta == np.float32(-2.5)
        app.handle_text('{"kind":"action","msgType":"start","body":{"id":"s9"}}')
        await asyncio.sleep(0.3)
        app.handle_text('{"kind":"action","msgType":"stop","body":{"id":"all"}}')
        await app.wait_for(lambda a: a.uploads, timeout=20)
        assert app.uploads == [("r1", 201)]
        rid, part, up_headers = seen["upload"]
        assert (rid, part["filename"], part["content_type"]) == ("r1", "upload_r1", "audio/*")
        assert part["body"] == app.takes[0].path.read_bytes()
        assert "Authorization" not in up_headers
        assert [f["msgType"] for f in app.sent][0] == "session_activate"
        assert app.sent[0]["body"] == {"id": "s9"}
        assert app.parse_errors == []
    finally:
        await app.close()
        server.stop()
