"""Issue 12, hostile input: absurd or non-finite numbers never reach a response or the catalog.

A hostile client found that one number could break the server: a device answering SYNC
with ``t1 = t2 = 1e308`` (the offset overflowed to infinity), an ACK or RECORDING with
``started_at`` 1e308, an upload saying ``started_at=1e306``. ``GET /api/clients``,
``/api/commands``, ``/api/audio/list``, ``/api/audio/{id}/meta`` and ``/api/takes/{id}``
then answered 500, the last three for good, because NaN or infinity was in SQLite.

Every case here runs on a real server on ``127.0.0.1:0`` with a real WebSocket device
(`FakeDevice`, which a subclass makes lie about its clock) and real SQLite. Each bad
frame gets an ERROR and the device stays connected; each bad upload gets 422 before
anything is stored; rows the old code wrote are listed (non-finite or absurd instants
read back as ``null``); after each case every GET route answers 200 with strict JSON.
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.device import FakeDevice
from tests.support.errors import assert_error_response
from tests.support.http import Api, multipart_body
from tests.support.wait import wait_until
from vocalink_lab.errors import ProtocolError
from vocalink_lab.hub.clock import DRIFT_PRIOR_PPM
from vocalink_lab.protocol import Ack, ClientState, Error, Message, Recording, Status, Sync
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio

DAY = 86_400.0
WAV = encode("wav", seconds=0.25)
#: A number JSON can hold that a float cannot: msgspec reads it as "out of range".
OVERFLOW = "1e999"


# -- shared checks ---------------------------------------------------------------------------


def strict_json(raw: bytes) -> Any:
    """Parse a body as JSON proper: NaN, Infinity and -Infinity are not JSON."""
    def refuse(token: str) -> None:
        raise AssertionError(f"response holds {token}, which is not JSON")
    return json.loads(raw, parse_constant=refuse)


async def get_ok(api: Api, path: str) -> Any:
    status, _, _, raw = await api.request("GET", path)
    assert status == 200, (path, status, raw[:300])
    return strict_json(raw)


async def assert_every_route_answers(api: Api, *, takes: tuple[str, ...] = (),
                                     commands: tuple[str, ...] = (),
                                     recordings: tuple[str, ...] = ()) -> None:
    """The GET routes a hostile number used to break all answer 200 with strict JSON."""
    await get_ok(api, "/api/clients")
    await get_ok(api, "/api/commands")
    await get_ok(api, "/api/audio/list")
    await get_ok(api, "/api/takes")
    for take_id in takes:
        await get_ok(api, f"/api/takes/{take_id}")
    for command_id in commands:
        await get_ok(api, f"/api/commands/{command_id}")
    for recording_id in recordings:
        await get_ok(api, f"/api/audio/{recording_id}/meta")


async def take_written(api: Api, take_id: str) -> None:
    """Wait until the take a START opened is in the catalog (it is written in the background)."""
    async def written() -> bool:
        status, _ = await api.get(f"/api/takes/{take_id}")
        return status == 200

    await wait_until(written, timeout=5)


async def device_info(api: Api, device_id: str) -> dict[str, Any]:
    info: dict[str, Any] = await get_ok(api, f"/api/clients/{device_id}")
    return info


async def assert_still_connected(api: Api, device: FakeDevice) -> None:
    """``device`` can still talk: its STATUS is applied, its own SYNC is answered."""
    await device.send(Status(state=ClientState.PAUSED, battery=0.5, pending_uploads=3))
    probe = f"probe-{time.monotonic_ns()}"
    await device.send(Sync(id=probe, t0=time.time()))
    await device.wait_for(Sync, where=lambda m: m.id == probe and m.t1 is not None)
    info = await device_info(api, device.device_id)
    assert info["connected"] is True and info["state"] == "PAUSED"
    assert (info["battery"], info["pending_uploads"]) == (0.5, 3)


@pytest_asyncio.fixture
async def quiet_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server that measures a device's clock once, when it registers, then leaves it be.

    Tests that measure clocks themselves use it, so that no burst of the server's own
    interleaves with theirs.
    """
    # Its first gap as long as the interval: no early bursts after the first either.
    srv = Server(fast_settings(tmp_path / "data", sync_interval_s=3600.0,
                               sync_first_gap_s=3600.0))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def measured(api: Api, device_id: str, probes: int = 8) -> dict[str, Any]:
    """The device's clock once the server's first burst of ``probes`` is over."""
    async def done() -> bool:
        clock = (await device_info(api, device_id))["clock"]
        return clock is not None and clock["samples"] >= probes

    await wait_until(done, timeout=10)
    clock: dict[str, Any] = (await device_info(api, device_id))["clock"]
    return clock


# -- a device that lies about numbers --------------------------------------------------------


Rewrite = Callable[[Message], dict[str, Any] | None]


class HostileDevice(FakeDevice):
    """A real WebSocket device whose outgoing messages pass through ``rewrite``.

    ``rewrite`` returns the fields to change in a message (``None``: send it as it is);
    a string value is written into the frame as a raw JSON number (``"1e999"``).
    """

    def __init__(self, *args: Any, rewrite: Rewrite | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rewrite = rewrite

    async def send(self, message: Message | str) -> None:
        changes = None if isinstance(message, str) or self.rewrite is None \
            else self.rewrite(message)
        if changes is not None:
            assert not isinstance(message, str)
            message = raw_frame({**msgspec.to_builtins(message), **changes})
        await super().send(message)


def raw_frame(obj: dict[str, Any]) -> str:
    """JSON text of ``obj``; a value equal to `OVERFLOW` is written as that raw number."""
    raws = {k: v for k, v in obj.items() if isinstance(v, str) and v == OVERFLOW}
    text = json.dumps({k: (f"@{k}@" if k in raws else v) for k, v in obj.items()})
    for key, value in raws.items():
        text = text.replace(f'"@{key}@"', value)
    return text


def sync_answer(t1: float | str, t2: float | str) -> Rewrite:
    """Answer every SYNC probe of the server with ``t1`` and ``t2`` (absolute values)."""
    def rewrite(message: Message) -> dict[str, Any] | None:
        if isinstance(message, Sync) and message.t1 is not None:
            return {"t1": t1, "t2": t2}
        return None
    return rewrite


def sync_shifted(by_s: float) -> Rewrite:
    """Answer SYNC probes with the device's clock ``by_s`` seconds away from the truth."""
    def rewrite(message: Message) -> dict[str, Any] | None:
        if isinstance(message, Sync) and message.t1 is not None:
            assert message.t2 is not None
            return {"t1": message.t1 + by_s, "t2": message.t2 + by_s}
        return None
    return rewrite


def t2_before_t1(message: Message) -> dict[str, Any] | None:
    """Answer SYNC probes saying the answer left before the probe arrived."""
    if isinstance(message, Sync) and message.t1 is not None:
        return {"t1": message.t1 + 1.0, "t2": message.t1}
    return None


def ack_started_at(value: Callable[[], float | str]) -> Rewrite:
    def rewrite(message: Message) -> dict[str, Any] | None:
        if isinstance(message, Ack) and message.started_at is not None:
            return {"started_at": value()}
        return None
    return rewrite


# -- SYNC ------------------------------------------------------------------------------------


#: case id → (how the device answers the server's probes, substring of the ERROR detail)
SYNC_CASES: dict[str, tuple[Rewrite, str]] = {
    # The reported case: the offset ((t1 - t0) + (t2 - t3)) / 2 overflowed to infinity.
    "t1-t2-1e308": (sync_answer(1e308, 1e308), "SYNC: field 't1': must be an instant"),
    "t2-1e308": (sync_answer(time.time(), 1e308), "SYNC: field 't2': must be an instant"),
    "t1-negative": (sync_answer(-1.0, time.time()), "field 't1': must be an instant"),
    "t1-1e11": (sync_answer(1e11, 1e11), "field 't1': must be an instant"),
    "t1-overflow": (sync_answer(OVERFLOW, OVERFLOW), "field 't1': number out of range"),
    "t2-before-t1": (t2_before_t1, "t2 is before t1"),
}


@pytest.mark.parametrize(("rewrite", "detail"), list(SYNC_CASES.values()), ids=list(SYNC_CASES))
async def test_an_absurd_sync_answer_is_refused_and_never_measured(
    server: Server, api: Api, rewrite: Rewrite, detail: str
) -> None:
    async with HostileDevice(server.ws_url, "liar", rewrite=rewrite) as device:
        # The server probes a device as soon as it registers; every answer is refused.
        error: Error = await device.wait_for(  # type: ignore[assignment]
            Error, where=lambda e: e.ref is not None and e.ref.startswith("s"))
        assert error.code == "bad_message"
        assert detail in error.detail, error.detail
        info = await device_info(api, "liar")
        assert info["clock"] is None and info["clock_offset_s"] is None
        await assert_every_route_answers(api)
        await assert_still_connected(api, device)
        # An honest answer is taken again: the refusal held nothing against the device.
        device.rewrite = None
        await server.hub.sync_burst("liar", probes=3)  # type: ignore[union-attr]
        info = await device_info(api, "liar")
        assert info["clock"] is not None and abs(info["clock_offset_s"]) < 1.0


#: Plausible instants, but not of the clock the server measured: refused by the hub.
SHIFTS: dict[str, Rewrite] = {
    "two-days-ahead": sync_shifted(2 * DAY),
    "two-days-behind": sync_shifted(-2 * DAY),
    # Within a day of the server's clock, not of this device's as measured.
    "back-to-server-time": sync_shifted(-3 * DAY),
    "epoch-zero": sync_answer(0.0, 0.0),
}


@pytest.mark.parametrize("rewrite", list(SHIFTS.values()), ids=list(SHIFTS))
async def test_a_measured_clock_cannot_be_moved_a_day_by_one_answer(quiet_server: Server,
                                                                    rewrite: Rewrite) -> None:
    """After a real measurement, answers more than a day off the estimate are refused."""
    server, api = quiet_server, Api(quiet_server.url)
    offset = 3 * DAY - 600  # an honest device whose clock is days ahead: that is measured
    try:
        async with HostileDevice(server.ws_url, "mic-1", clock_offset=offset) as device:
            before = await measured(api, "mic-1")
            assert before["offset_s"] == pytest.approx(offset, abs=1.0)
            device.rewrite = rewrite
            with pytest.raises(ProtocolError, match="more than a day"):
                await server.hub.sync("mic-1")  # type: ignore[union-attr]
            error: Error = await device.wait_for(Error)  # type: ignore[assignment]
            assert error.code == "bad_message" and "more than a day" in error.detail
            after = (await device_info(api, "mic-1"))["clock"]
            assert after == before
            await assert_every_route_answers(api)
            await assert_still_connected(api, device)
    finally:
        api.close()


@pytest.mark.parametrize("offset", [-3 * DAY, 400 * DAY, 1000.0 - time.time()],
                         ids=["three-days-behind", "400-days-ahead", "booted-in-1970"])
async def test_a_device_whose_clock_is_far_off_is_measured_and_obeys(
    server: Server, api: Api, offset: float
) -> None:
    """No clock source (a Raspberry Pi without RTC on an offline network): not refused.

    An unmeasured clock is not judged against the server's; it is measured, and its
    scheduled START lands on time in server terms.
    """
    async with FakeDevice(server.ws_url, "pi-1", clock_offset=offset) as device:
        clock = await measured(api, "pi-1")
        assert clock["offset_s"] == pytest.approx(offset, abs=1.0)
        status, result = await api.post_json("/api/commands", {
            "action": "START", "targets": ["pi-1"], "take_id": "take-pi", "lead_ms": 300})
        assert status == 200 and result["outcomes"]["pi-1"]["status"] == "SUCCESS", result
        assert abs(result["outcomes"]["pi-1"]["late_ms"]) < 10_000
        assert not device.of_type(Error)
        await take_written(api, "take-pi")
        await assert_every_route_answers(api, takes=("take-pi",),
                                         commands=(result["command_id"],))


# -- ACK -------------------------------------------------------------------------------------


ACK_CASES: dict[str, tuple[Callable[[], float | str], str]] = {
    "1e308": (lambda: 1e308, "ACK: field 'started_at': must be an instant"),
    "negative": (lambda: -5.0, "field 'started_at': must be an instant"),
    "overflow": (lambda: OVERFLOW, "field 'started_at': number out of range"),
    "two-days-ahead": (lambda: time.time() + 2 * DAY, "more than a day"),
    "two-days-behind": (lambda: time.time() - 2 * DAY, "more than a day"),
}


@pytest.mark.parametrize(("started_at", "detail"), list(ACK_CASES.values()), ids=list(ACK_CASES))
async def test_an_ack_with_an_absurd_start_is_refused_and_never_stored(
    server: Server, api: Api, started_at: Callable[[], float | str], detail: str
) -> None:
    async with HostileDevice(server.ws_url, "liar", rewrite=ack_started_at(started_at)) as dev:
        await measured(api, "liar")  # the clock the ACK's start is held to
        status, sent = await api.post_json("/api/commands", {
            "action": "START", "targets": ["liar"], "take_id": "take-h", "lead_ms": 0,
            "timeout_s": 0.5, "wait": False})
        assert status == 202, sent
        command_id = sent["command_id"]
        error: Error = await dev.wait_for(  # type: ignore[assignment]
            Error, where=lambda e: e.ref == command_id)
        assert error.code == "bad_message" and detail in error.detail, error.detail
        # Refused, so the command never heard from the device: it times out.
        done = await get_ok(api, f"/api/commands/{command_id}")
        assert done["outcomes"]["liar"]["started_at"] is None

        async def timed_out() -> bool:
            record = await get_ok(api, f"/api/commands/{command_id}")
            return bool(record["outcomes"]["liar"]["status"] == "TIMEOUT")

        await wait_until(timed_out, timeout=5)
        await take_written(api, "take-h")
        await assert_every_route_answers(api, takes=("take-h",), commands=(command_id,))
        await assert_still_connected(api, dev)
        # The same device, honest again, is heard.
        dev.rewrite = None
        status, result = await api.post_json("/api/commands", {
            "action": "START", "targets": ["liar"], "lead_ms": 0})
        assert status == 200 and result["outcomes"]["liar"]["status"] == "SUCCESS", result
        assert abs(result["outcomes"]["liar"]["started_at"] - time.time()) < 60


# -- RECORDING and STATUS --------------------------------------------------------------------


def recording_frame(**over: Any) -> str:
    return raw_frame({"type": "RECORDING", "recording_id": "rec-h", "take_id": "take-h",
                      "sample_rate": 48000, "channels": 1, "frames": 48000, "bytes": 96044,
                      "sha256": "a" * 64, "format": "wav", **over})


#: case id → (frame, substring of the ERROR detail, ERROR ref)
FRAME_CASES: dict[str, tuple[Callable[[], str], str, str | None]] = {
    "recording-started-1e308": (lambda: recording_frame(started_at=1e308),
                                "RECORDING: field 'started_at': must be an instant", "rec-h"),
    "recording-started-negative": (lambda: recording_frame(started_at=-1e308),
                                   "field 'started_at': must be an instant", "rec-h"),
    "recording-started-overflow": (lambda: recording_frame(started_at=OVERFLOW),
                                   "field 'started_at': number out of range", "rec-h"),
    # A recording cannot start two days from now; it may have started long ago (offline).
    "recording-in-the-future": (lambda: recording_frame(started_at=time.time() + 2 * DAY),
                                "more than a day ahead", "rec-h"),
    "status-elapsed-1e308": (lambda: raw_frame({"type": "STATUS", "state": "RECORDING",
                                                "elapsed_s": 1e308}),
                             "STATUS: field 'elapsed_s': expected `float` <=", None),
    "status-level-overflow": (lambda: raw_frame({"type": "STATUS", "state": "RECORDING",
                                                 "level_dbfs": OVERFLOW}),
                              "field 'level_dbfs': number out of range", None),
    "device-sync-t0-1e308": (lambda: raw_frame({"type": "SYNC", "id": "d1", "t0": 1e308}),
                             "SYNC: field 't0': must be an instant", "d1"),
}


@pytest.mark.parametrize(("frame", "detail", "ref"), list(FRAME_CASES.values()),
                         ids=list(FRAME_CASES))
async def test_a_frame_with_an_absurd_number_is_refused(
    server: Server, api: Api, frame: Callable[[], str], detail: str, ref: str | None
) -> None:
    async with FakeDevice(server.ws_url, "liar") as device:
        await measured(api, "liar")  # the clock a RECORDING's start is held to
        await device.send(frame())
        error: Error = await device.wait_for(Error)  # type: ignore[assignment]
        assert error.code == "bad_message" and detail in error.detail, error.detail
        assert error.ref == ref
        info = await device_info(api, "liar")
        assert info["announced_recordings"] == [] and info["elapsed_s"] is None
        await assert_every_route_answers(api)
        await assert_still_connected(api, device)


async def test_an_old_offline_recording_is_still_announced(server: Server, api: Api) -> None:
    """Only the future is refused: a recording made offline a week ago is told on reconnect."""
    async with FakeDevice(server.ws_url, "mic-1") as device:
        await device.send(Recording(recording_id="rec-old", started_at=time.time() - 7 * DAY,
                                    sample_rate=48000, channels=1, frames=1, bytes=1,
                                    sha256="a" * 64, format="wav", offline=True))

        async def announced() -> bool:
            return "rec-old" in (await device_info(api, "mic-1"))["offline_recordings"]

        await wait_until(announced, timeout=5)
        assert not device.of_type(Error)
        await assert_every_route_answers(api)


# -- uploads ---------------------------------------------------------------------------------


ABSURD_STARTS = {
    "1e306": ("1e306", "started_at must be an instant in seconds since 1970"),
    "1e11": ("1e11", "started_at must be an instant"),
    "negative": ("-1", "started_at must be an instant"),
    "minus-1e306": ("-1e306", "started_at must be an instant"),
    "overflow": ("1e999", "started_at must be a number of seconds"),
    "nan": ("nan", "started_at must be a number of seconds"),
}


@pytest.mark.parametrize(("value", "contains"), list(ABSURD_STARTS.values()),
                         ids=list(ABSURD_STARTS))
async def test_a_multipart_upload_with_an_absurd_start_is_422_and_stores_nothing(
    server: Server, api: Api, value: str, contains: str
) -> None:
    body, ctype = multipart_body(WAV, recording_id="rec-h", device_id="mic-1",
                                 take_id="take-h", started_at=value)
    status, _, headers, raw = await api.request("POST", "/api/audio/upload", body=body,
                                                headers={"Content-Type": ctype})
    assert_error_response(status, headers, raw, 422, contains, code="invalid_parameter")
    assert server.store.stored_files() == []
    assert sorted(p.name for p in (server.data_dir / "uploads").iterdir()) == []
    assert (await get_ok(api, "/api/audio/list"))["total"] == 0
    await assert_every_route_answers(api)


def tus_metadata(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


@pytest.mark.parametrize(("value", "contains"), list(ABSURD_STARTS.values()),
                         ids=list(ABSURD_STARTS))
async def test_a_tus_upload_with_an_absurd_start_is_422_at_creation(
    server: Server, api: Api, value: str, contains: str
) -> None:
    status, _, headers, raw = await api.request("POST", "/api/audio/uploads", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(WAV)),
        "Upload-Metadata": tus_metadata(recording_id="rec-h", started_at=value)})
    assert_error_response(status, headers, raw, 422, contains, code="invalid_parameter")
    tus_dir = server.data_dir / "uploads" / "tus"
    assert not tus_dir.exists() or list(tus_dir.iterdir()) == []
    await assert_every_route_answers(api)


async def test_a_device_clock_that_converts_to_nonsense_stores_no_start(
    quiet_server: Server
) -> None:
    """Plausible on the device, absurd once converted: the row keeps no server-time start.

    A device can still walk its clock estimate by most of a day per burst: a finite but
    wild drift (billions of ppm) once its bursts span long enough for the estimate to
    believe a drift (twice the half round trip over the span under `DRIFT_PRIOR_PPM`: about
    a second on loopback; closer ones only widen its uncertainty). Converting an
    hour-old start with it gives an instant far outside any plausible range; the catalog
    must not get it.
    """
    server, api = quiet_server, Api(quiet_server.url)
    try:
        async with HostileDevice(server.ws_url, "mic-1") as device:
            hub = server.hub
            assert hub is not None
            honest = await measured(api, "mic-1")
            # The attacker waits until a line through its points would be believed: the
            # span must dwarf the half round trip (with room: later bursts' may be longer).
            span = max(1.0, 2 * honest["rtt_s"] / (DRIFT_PRIOR_PPM * 1e-6))
            await wait_until(lambda: time.time() - honest["measured_at"] >= span,
                             timeout=span + 5)
            device.rewrite = sync_shifted(0.9 * DAY)

            async def believed() -> bool:
                # Burst after burst (one may be refused: the estimate moved) until the line
                # is believed: a loaded machine's longer round trips need a longer span.
                await hub.sync_burst("mic-1", probes=2)
                clock = (await device_info(api, "mic-1"))["clock"]
                return bool(clock["bursts"] >= 3 and abs(clock["drift_ppm"]) > 1e9)

            await wait_until(believed, timeout=30, interval=0.2)
            started = time.time() - 3600
            status, stored = await api.upload(WAV, recording_id="rec-w", device_id="mic-1",
                                              started_at=repr(started))
            assert status == 201, stored
            assert stored["recording"]["started_at"] is None
            assert stored["recording"]["params"]["device_started_at"] == started
            assert (await get_ok(api, "/api/audio/rec-w/meta"))["started_at"] is None
            await assert_every_route_answers(api, recordings=("rec-w",))
    finally:
        api.close()


# -- rows the old code stored ----------------------------------------------------------------


async def test_rows_with_nan_or_infinity_are_listed_after_a_restart(server: Server,
                                                                    api: Api) -> None:
    """Rows written by the old code (NaN, ±infinity, 1e306) read back with ``null``."""
    ids = ("rec-inf", "rec-minus-inf", "rec-1e306", "rec-nan-params", "rec-good")
    for i, recording_id in enumerate(ids):
        status, stored = await api.upload(WAV, recording_id=recording_id, device_id=f"mic-{i}",
                                          take_id="take-old", started_at="1700000000.5")
        assert status == 201, stored
    settings = server.settings
    await server.stop()
    # What the old code could leave in SQLite (sqlite3 stores inf as REAL Inf and NaN as
    # NULL; json.dumps wrote NaN and Infinity into the params text).
    db = sqlite3.connect(settings.data_dir / "vocalink.db")
    with db:
        db.execute("UPDATE recordings SET started_at = ? WHERE id = 'rec-inf'", (math.inf,))
        db.execute("UPDATE recordings SET started_at = ?, duration_s = ? "
                   "WHERE id = 'rec-minus-inf'", (-math.inf, math.inf))
        db.execute("UPDATE recordings SET started_at = 1e306 WHERE id = 'rec-1e306'")
        db.execute("UPDATE recordings SET params = ?, created_at = ? WHERE id = 'rec-nan-params'",
                   (json.dumps({"device_started_at": math.nan,
                                "clock": {"offset_s": math.inf, "drift_ppm": -math.inf},
                                "list": [1.0, math.nan]}), 1_700_000_100.0))
        db.execute("INSERT INTO takes (id, started_at, stopped_at, devices, created_at) "
                   "VALUES ('take-old', 1700000000.0, ?, '[]', 1700000000.0)", (math.inf,))
        db.execute("INSERT INTO takes (id, started_at, stopped_at, devices, created_at) "
                   "VALUES ('take-inf', ?, ?, '[]', ?)", (math.inf, -math.inf, math.inf))
        assert db.execute("SELECT started_at FROM recordings WHERE id = 'rec-inf'"
                          ).fetchone()[0] == math.inf
    db.close()
    restarted = Server(settings)
    await restarted.start()
    again = Api(restarted.url)
    try:
        listing = await get_ok(again, "/api/audio/list")
        assert listing["total"] == len(ids)
        rows = {r["id"]: r for r in listing["items"]}
        for recording_id in ("rec-inf", "rec-minus-inf", "rec-1e306"):
            assert rows[recording_id]["started_at"] is None, rows[recording_id]
            assert (await get_ok(again, f"/api/audio/{recording_id}/meta"))["started_at"] is None
        assert rows["rec-minus-inf"]["duration_s"] is None
        assert rows["rec-nan-params"]["params"] == {
            "device_started_at": None, "clock": {"offset_s": None, "drift_ppm": None},
            "list": [1.0, None]}
        assert rows["rec-good"]["started_at"] == 1700000000.5
        take = await get_ok(again, "/api/takes/take-old")
        assert take["stopped_at"] is None and take["duration_s"] is None
        assert {r["id"] for r in take["recordings"]} == set(ids)
        # Only the sound start is in the skew report; the others are unknown.
        assert take["skew"]["devices"] == 2 and take["skew"]["skew_ms"] == 0.0
        broken = await get_ok(again, "/api/takes/take-inf")
        assert broken["started_at"] is None and broken["created_at"] is None
        await assert_every_route_answers(again, takes=("take-old", "take-inf"), recordings=ids)
        # The rows are still served in full: the file of the worst one downloads.
        status, _, _, raw = await again.request("GET", "/api/audio/rec-minus-inf")
        assert status == 200 and raw == WAV
    finally:
        again.close()
        await restarted.stop()


async def test_the_events_of_a_hostile_device_stay_serialisable(server: Server,
                                                                 api: Api) -> None:
    """What the hub publishes about a refused frame: nothing; about a sound one: JSON."""
    seen: list[dict[str, Any]] = []
    server.hub.events.subscribe(  # type: ignore[union-attr]
        None, lambda e: seen.append(dict(e.data)))
    async with HostileDevice(server.ws_url, "liar", rewrite=sync_answer(1e308, 1e308)) as dev:
        await dev.wait_for(Error, where=lambda e: e.ref is not None and e.ref.startswith("s"))
        await dev.send(recording_frame(started_at=1e308))
        await dev.wait_for(Error, where=lambda e: e.ref == "rec-h")
        await dev.send(Status(state=ClientState.RECORDING, level_dbfs=-20.0, elapsed_s=1.0))
        await wait_until(lambda: any("device" in d and d["device"]["device_id"] == "liar"
                                     and d["device"]["elapsed_s"] == 1.0 for d in seen),
                         timeout=5)
    assert seen
    for data in seen:
        json.dumps(data, allow_nan=False, default=str)
