"""Malformed frames and requests against a real server: each gets its clear error, and
the server keeps serving everyone else.

Every case runs on a real server on ``127.0.0.1:0`` with a healthy device connected
before the bad input. After the case, that device still gets a targeted command and
ACKs it, and ``GET /ping`` still answers (`assert_still_serving`). WebSocket cases
also check that the offending connection is still open: its STATUS is applied.
HTTP errors are checked against the one JSON shape (`assert_error_response`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.device import FakeDevice
from tests.support.errors import assert_error_response
from tests.support.http import Api, multipart_body
from tests.support.rawhttp import raw_request, with_token
from tests.support.wait import wait_until
from vocalink_lab.protocol import ClientState, Command, Error, Status, Sync, Welcome
from vocalink_lab.server import Server

HEALTHY = "healthy"
BAD = "bad-dev"
JSON = {"Content-Type": "application/json"}
#: A one-shot audio file for uploads (made once; 0.25 s of WAV).
WAV = encode("wav", seconds=0.25)


# -- shared checks ---------------------------------------------------------------------------


@pytest_asyncio.fixture
async def healthy(server: Server) -> AsyncIterator[FakeDevice]:
    """A well-behaved device, connected before any bad input arrives."""
    async with FakeDevice(server.ws_url, HEALTHY) as device:
        yield device


async def assert_still_serving(api: Api, healthy: FakeDevice) -> None:
    """The server still answers /ping and still commands the healthy device."""
    status, body = await api.get("/ping")
    assert (status, body) == (200, {"status": "server alive"})
    status, result = await api.post_json("/api/commands",
                                          {"action": "PING", "targets": [HEALTHY]})
    assert status == 200, result
    assert result["outcomes"][HEALTHY]["status"] == "SUCCESS", result
    command = await healthy.wait_for(Command, where=lambda c: c.command_id == result["command_id"])
    assert command.targets == (HEALTHY,)  # type: ignore[attr-defined]


async def assert_connection_open(api: Api, device: FakeDevice, device_id: str = BAD) -> None:
    """``device`` can still talk: a STATUS it sends is applied and visible in /api/clients."""
    await device.send(Status(state=ClientState.PAUSED, battery=0.5, pending_uploads=3))
    # Frames are handled in order: once the answer to our own SYNC is back, so is the STATUS.
    probe = f"probe-{time.monotonic_ns()}"
    await device.send(Sync(id=probe, t0=time.time()))
    await device.wait_for(Sync, where=lambda m: m.id == probe and m.t1 is not None)
    status, clients = await api.get("/api/clients")
    assert status == 200
    seen = {d["device_id"]: d for d in clients["items"]}
    assert seen[device_id]["connected"] is True
    assert seen[device_id]["state"] == "PAUSED"
    assert (seen[device_id]["battery"], seen[device_id]["pending_uploads"]) == (0.5, 3)


async def device_ids(api: Api) -> set[str]:
    _, clients = await api.get("/api/clients")
    return {d["device_id"] for d in clients["items"]}


def leftovers(server: Server) -> list[str]:
    """Files in data_dir/uploads (temporary files of uploads)."""
    return sorted(p.name for p in (server.data_dir / "uploads").iterdir())


def stored_files(server: Server) -> list[str]:
    return server.store.stored_files()


# -- WebSocket frames from a registered device ----------------------------------------------

ID_REGEX_WORDS = "is not a valid id"
SHA = "a" * 64


def _frame(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


def _ack(**over: Any) -> str:
    return _frame({"type": "ACK", "command_id": "c1", "action": "START", "device_id": BAD,
                   "status": "SUCCESS", **over})


def _status(**over: Any) -> str:
    return _frame({"type": "STATUS", "state": "IDLE", **over})


def _recording(**over: Any) -> str:
    return _frame({"type": "RECORDING", "recording_id": "rec-1", "sample_rate": 48000,
                   "channels": 1, "frames": 1, "bytes": 1, "sha256": SHA, "format": "wav",
                   **over})


#: (case id, frame, substring of the ERROR detail, expected ref)
REGISTERED_FRAMES: list[tuple[str, str, str, str | None]] = [
    ("not-json", "this is not json", "not valid JSON", None),
    ("truncated-json", '{"type": "STATUS", "state": "ID', "not valid JSON", None),
    ("json-array", "[1, 2, 3]", "must be a JSON object with a 'type'", None),
    ("json-string", '"STATUS"', "must be a JSON object with a 'type'", None),
    ("json-number", "42", "must be a JSON object with a 'type'", None),
    ("json-null", "null", "must be a JSON object with a 'type'", None),
    ("missing-type", '{"state": "IDLE"}', "frame has no 'type'", None),
    ("type-not-string", '{"type": 3, "command_id": "c1"}', "'type' must be a string", "c1"),
    ("unknown-type", '{"type": "HELLO", "command_id": "cmd-7"}',
     "unknown message type 'HELLO' (expected one of REGISTER", "cmd-7"),
    ("lowercase-type", '{"type": "status", "state": "IDLE"}',
     "unknown message type 'status'", None),
    ("ack-unknown-status", _ack(status="OK"), "ACK: field 'status': invalid enum value 'OK'",
     "c1"),
    ("ack-unknown-action", _ack(action="EXPLODE"),
     "ACK: field 'action': invalid enum value 'EXPLODE'", "c1"),
    ("status-unknown-state", _status(state="SLEEPING"),
     "STATUS: field 'state': invalid enum value 'SLEEPING'", None),
    ("status-offline", _status(state="OFFLINE"), "cannot report itself OFFLINE", None),
    ("ack-missing-device-id",
     _frame({"type": "ACK", "command_id": "c1", "action": "START", "status": "SUCCESS"}),
     "ACK: object missing required field `device_id`", "c1"),
    ("status-missing-state", '{"type": "STATUS", "battery": 0.5}',
     "STATUS: object missing required field `state`", None),
    ("int-for-str", _ack(command_id=5), "ACK: field 'command_id': expected `str`, got `int`",
     None),
    ("bool-for-number", _status(battery=True), "STATUS: field 'battery': expected `float",
     None),
    ("str-for-number", _status(level_dbfs="loud"), "field 'level_dbfs': expected `float", None),
    ("str-for-time", _frame({"type": "SYNC", "id": "s1", "t0": "now"}),
     "SYNC: field 't0': expected `float`, got `str`", "s1"),
    ("number-out-of-range", _status(battery=2), "STATUS: field 'battery': expected `float` <=",
     None),
    ("negative-count", _status(pending_uploads=-1), "field 'pending_uploads'", None),
    ("nan-literal", '{"type": "SYNC", "id": "s1", "t0": NaN}', "not valid JSON", None),
    ("infinity-literal", '{"type": "SYNC", "id": "s1", "t0": Infinity}', "not valid JSON",
     None),
    ("number-overflow", '{"type": "SYNC", "id": "s1", "t0": 1e999}',
     "field 't0': number out of range", "s1"),
    ("oversize-64k", _status(padding="x" * 70_000),
     "exceeds the limit of 65536 bytes", None),
    ("deeply-nested", '{"type": "STATUS", "state": "IDLE", "x": ' + "[" * 30_000
     + "]" * 30_000 + "}", "too deeply", None),
    ("text-too-long", _ack(status="FAILED", error="e" * 5000),
     "field 'error': expected `str` of length <= 4096", "c1"),
    ("id-traversal", _recording(recording_id="../../etc/passwd"),
     f"RECORDING: field 'recording_id': {ID_REGEX_WORDS}", "../../etc/passwd"),
    ("id-slash", _status(recording_id="a/b"), f"field 'recording_id': {ID_REGEX_WORDS}", "a/b"),
    ("id-dotdot", _recording(take_id=".."), f"field 'take_id': {ID_REGEX_WORDS}", "rec-1"),
    ("id-empty", _ack(command_id=""), f"field 'command_id': {ID_REGEX_WORDS}", None),
    ("id-65-chars", _ack(command_id="c" * 65), f"field 'command_id': {ID_REGEX_WORDS}", None),
    ("id-unicode", _recording(recording_id="enregistrement-é"),
     f"field 'recording_id': {ID_REGEX_WORDS}", "enregistrement-é"),
    ("sha256-format", _recording(sha256="xyz"),
     "field 'sha256': must be 64 lowercase hexadecimal digits", "rec-1"),
    ("second-register",
     _frame({"type": "REGISTER", "device_id": "other", "name": "n", "protocol": 1}),
     "REGISTER may only be sent once", None),
    ("ack-for-another-device", _ack(device_id=HEALTHY),
     f"ACK for device '{HEALTHY}' arrived on the connection of '{BAD}'", "c1"),
    ("server-only-welcome",
     _frame({"type": "WELCOME", "server_id": "srv-x", "server_name": "x", "protocol": 1,
             "server_time": 1.0, "heartbeat_s": 1.0, "upload_url": "/"}),
     "WELCOME is sent by the server, not by devices", None),
    ("server-only-command", _frame({"type": "COMMAND", "command_id": "c9", "action": "START"}),
     "COMMAND is sent by the server, not by devices", "c9"),
    ("server-only-server",
     _frame({"type": "SERVER", "event": "renamed", "server_name": "x", "server_id": "srv-x"}),
     "SERVER is sent by the server, not by devices", None),
    ("sync-unknown-probe", _frame({"type": "SYNC", "id": "zz", "t0": 1.0, "t1": 2.0, "t2": 3.0}),
     "SYNC answer 'zz' matches no probe sent to this device", "zz"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("frame", "detail", "ref"), [c[1:] for c in REGISTERED_FRAMES],
                         ids=[c[0] for c in REGISTERED_FRAMES])
async def test_bad_frame_from_registered_device(
    server: Server, api: Api, healthy: FakeDevice, frame: str, detail: str, ref: str | None
) -> None:
    async with FakeDevice(server.ws_url, BAD) as bad:
        await bad.send(frame)
        error: Error = await bad.wait_for(Error)  # type: ignore[assignment]
        assert error.code == "bad_message"
        assert detail in error.detail, error.detail
        assert error.ref == ref
        await assert_connection_open(api, bad)
        assert not healthy.of_type(Error)
        assert await device_ids(api) == {HEALTHY, BAD}
        await assert_still_serving(api, healthy)


# -- WebSocket frames before REGISTER -------------------------------------------------------


def _register(**over: Any) -> str:
    return _frame({"type": "REGISTER", "device_id": "mic-x", "name": "Mic X", "protocol": 1,
                   "token": os.environ["VOCALINK_TOKEN"], **over})


#: (case id, first frame, ERROR code, substring of the detail, expected ref)
FIRST_FRAMES: list[tuple[str, str, str, str, str | None]] = [
    ("status-first", _status(), "not_registered",
     "the first frame must be REGISTER, got STATUS", None),
    ("ack-first", _ack(), "not_registered", "the first frame must be REGISTER, got ACK", "c1"),
    ("not-json-first", "REGISTER me", "bad_message", "not valid JSON", None),
    ("wrong-protocol-version", _register(protocol=2), "bad_message",
     "protocol version 2 is not supported (this server speaks 1)", None),
    ("protocol-as-string", _register(protocol="1"), "bad_message",
     "REGISTER: field 'protocol': expected `int`, got `str`", None),
    ("protocol-as-bool", _register(protocol=True), "bad_message",
     "field 'protocol': expected `int`, got `bool`", None),
    ("missing-name", _frame({"type": "REGISTER", "device_id": "mic-x", "protocol": 1}),
     "bad_message", "missing required field `name`", None),
    ("device-id-traversal", _register(device_id="../../etc/passwd"), "bad_message",
     f"REGISTER: field 'device_id': {ID_REGEX_WORDS}", None),
    ("device-id-slash", _register(device_id="a/b"), "bad_message",
     f"field 'device_id': {ID_REGEX_WORDS}", None),
    ("device-id-dotdot", _register(device_id=".."), "bad_message",
     f"field 'device_id': {ID_REGEX_WORDS}", None),
    ("device-id-empty", _register(device_id=""), "bad_message",
     f"field 'device_id': {ID_REGEX_WORDS}", None),
    ("device-id-65-chars", _register(device_id="d" * 65), "bad_message",
     f"field 'device_id': {ID_REGEX_WORDS}", None),
    ("device-id-unicode", _register(device_id="micro-ü"), "bad_message",
     f"field 'device_id': {ID_REGEX_WORDS}", None),
    ("device-id-null-byte", _register(device_id="mic\u0000"), "bad_message",
     f"field 'device_id': {ID_REGEX_WORDS}", None),
    ("name-too-long", _register(name="n" * 65), "bad_message",
     "REGISTER: field 'name': must be 1 to 64 characters with no control characters", None),
    ("name-control-char", _register(name="Mic\u0007X"), "bad_message",
     "field 'name': must be 1 to 64 characters with no control characters", None),
    ("name-newline", _register(name="Mic\nX"), "bad_message", "field 'name'", None),
    ("name-blank", _register(name="   "), "bad_message", "name must not be blank", None),
    ("name-empty", _register(name=""), "bad_message", "field 'name'", None),
    ("capabilities-wrong-type", _register(capabilities={"sample_rates": "48000"}),
     "bad_message", "field 'capabilities.sample_rates'", None),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("frame", "code", "detail", "ref"), [c[1:] for c in FIRST_FRAMES],
                         ids=[c[0] for c in FIRST_FRAMES])
async def test_bad_frame_before_register(
    server: Server, api: Api, healthy: FakeDevice, frame: str, code: str, detail: str,
    ref: str | None,
) -> None:
    async with FakeDevice(server.ws_url, BAD, register=False) as bad:
        await bad.send(frame)
        error: Error = await bad.wait_for(Error)  # type: ignore[assignment]
        assert (error.code, error.ref) == (code, ref)
        assert detail in error.detail, error.detail
        assert not bad.of_type(Welcome)
        assert await device_ids(api) == {HEALTHY}  # nothing was registered
        # Still open, still waiting for its REGISTER.
        await bad.send(_register(device_id=BAD))
        await bad.wait_for(Welcome)
        await assert_connection_open(api, bad)
        await assert_still_serving(api, healthy)


# -- WebSocket: frames the codec never sees ----------------------------------------------------


@pytest.mark.asyncio
async def test_binary_frame_gets_an_error(server: Server, api: Api, healthy: FakeDevice) -> None:
    async with FakeDevice(server.ws_url, BAD) as bad:
        assert bad.conn is not None
        await bad.conn.write_message(b'{"type": "STATUS", "state": "IDLE"}', binary=True)
        error: Error = await bad.wait_for(Error)  # type: ignore[assignment]
        assert error.code == "bad_message"
        assert "binary frames are not part of the protocol" in error.detail
        await assert_connection_open(api, bad)
        await assert_still_serving(api, healthy)


@pytest.mark.asyncio
async def test_frame_over_1_mib_closes_the_connection_with_1009(
    server: Server, api: Api, healthy: FakeDevice
) -> None:
    """Above Tornado's hard limit (16 x 64 KiB) the frame is not even read: close 1009."""
    async with FakeDevice(server.ws_url, BAD) as bad:
        await bad.send(_status(padding="x" * (1 << 20)))
        await asyncio.wait_for(bad.closed.wait(), 5)
        assert bad.conn is not None
        assert bad.conn.close_code == 1009
        assert not bad.of_type(Error)
    _, device = await api.get(f"/api/clients/{BAD}")
    assert (device["connected"], device["state"]) == (False, "OFFLINE")
    await assert_still_serving(api, healthy)


@pytest.mark.asyncio
async def test_a_server_bug_on_a_frame_costs_an_error_not_the_connection(
    server: Server, api: Api, healthy: FakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while handling a valid frame: ERROR internal_error, still open."""
    assert server.hub is not None
    handle = server.hub.handle

    def buggy(device_id: str, message: Any) -> None:
        if device_id == BAD and isinstance(message, Status):
            raise RuntimeError("simulated bug")
        handle(device_id, message)

    async with FakeDevice(server.ws_url, BAD) as bad:
        monkeypatch.setattr(server.hub, "handle", buggy)
        await bad.send(Status(state=ClientState.RECORDING))
        error: Error = await bad.wait_for(Error)  # type: ignore[assignment]
        assert error.code == "internal_error"
        assert "the server failed to handle this STATUS" in error.detail
        assert "simulated bug" not in error.detail  # internals stay in the server log
        await assert_still_serving(api, healthy)
        monkeypatch.undo()
        await assert_connection_open(api, bad)


class RawWebSocket:
    """A WebSocket client on a bare socket, to send frames a real client refuses to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawWebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws/control HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send(self, payload: bytes, opcode: int = 0x1) -> None:
        mask, n = os.urandom(4), len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        else:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        self.writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        await self.writer.drain()

    async def receive(self) -> tuple[int, bytes] | None:
        """One server frame as ``(opcode, payload)``; ``None`` at EOF."""
        try:
            first, second = await self.reader.readexactly(2)
        except asyncio.IncompleteReadError:
            return None
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(n)

    def close(self) -> None:
        self.writer.close()


@pytest.mark.asyncio
async def test_invalid_utf8_text_frame_fails_only_that_connection(
    server: Server, api: Api, healthy: FakeDevice
) -> None:
    """RFC 6455 (8.1): invalid UTF-8 in a text frame fails the connection; Tornado drops it."""
    raw = await RawWebSocket.connect(server.port)  # type: ignore[arg-type]
    try:
        await raw.send(_register(device_id=BAD).encode())
        opcode, payload = await asyncio.wait_for(raw.receive(), 5)  # type: ignore[misc]
        assert opcode == 0x1 and json.loads(payload)["type"] == "WELCOME"
        await raw.send(b'{"type": "STATUS", "state": "\xff\xfe"}')
        frames = []
        while (frame := await asyncio.wait_for(raw.receive(), 5)) is not None:
            frames.append(frame)  # pings may come first; no ERROR can (not decodable)
        assert all(op in (0x8, 0x9) for op, _ in frames), frames
    finally:
        raw.close()
    await wait_until(lambda: server.hub is not None and server.hub.registry.link(BAD) is None,
                     timeout=5)
    _, device = await api.get(f"/api/clients/{BAD}")
    assert (device["connected"], device["state"]) == (False, "OFFLINE")
    await assert_still_serving(api, healthy)


# -- REST: JSON bodies, query arguments, ids, routes, methods ----------------------------------


@dataclass(frozen=True)
class Req:
    """One bad request and the error it must get."""

    method: str
    path: str
    status: int
    contains: str
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, method: str, path: str, obj: Any, status: int, contains: str) -> Req:
        return cls(method, path, status, contains, json.dumps(obj), JSON)


CMD = "/api/commands"
REST_CASES: dict[str, Req] = {
    # bodies that are not a JSON object
    "body-not-json": Req("POST", CMD, 400, "request body is not valid JSON", "{nope", JSON),
    "body-invalid-utf8": Req("POST", CMD, 400, "not valid JSON", b"\xff\xfe{}", JSON),
    "body-empty": Req("POST", CMD, 400, "request body must be a JSON object", "", JSON),
    "body-array": Req("POST", CMD, 400, "request body must be a JSON object", "[1, 2]", JSON),
    "body-string": Req("POST", CMD, 400, "request body must be a JSON object", '"PING"', JSON),
    "body-nan": Req("POST", CMD, 400, "NaN is not a JSON number",
                    '{"action": "PING", "timeout_s": NaN}', JSON),
    "body-infinity": Req("POST", CMD, 400, "Infinity is not a JSON number",
                         '{"action": "PING", "lead_ms": -Infinity}', JSON),
    "body-deeply-nested": Req("POST", CMD, 400, "nests arrays or objects too deeply",
                              '{"action": ' + "[" * 100_000 + "]" * 100_000 + "}", JSON),
    "body-lone-surrogate": Req("POST", CMD, 400, "unpaired UTF-16 surrogate",
                               '{"action": "\\ud800"}', JSON),
    "body-too-large": Req("POST", CMD, 413, "exceeds 1048576 bytes",
                          json.dumps({"action": "PING", "x": "y" * (1 << 20)}), JSON),
    # wrong content type
    "ctype-text": Req("POST", CMD, 415, "expected a JSON body (Content-Type: application/json), "
                      "got 'text/plain'", '{"action": "PING"}', {"Content-Type": "text/plain"}),
    "ctype-form": Req("PUT", "/api/server", 415, "got 'multipart/form-data'",
                      multipart_body(None, boundary="b", name="x")[0],
                      {"Content-Type": "multipart/form-data; boundary=b"}),
    "ctype-form-broken": Req("PUT", "/api/server", 400, "Invalid multipart/form-data",
                             '{"name": "x"}', {"Content-Type": "multipart/form-data; boundary=x"}),
    "ctype-xml": Req("POST", CMD, 415, "got 'application/xml'", "<action>PING</action>",
                     {"Content-Type": "application/xml"}),
    # What a page on another origin can send without a preflight ("no-cors"): no type at
    # all, or text/plain, form-urlencoded, multipart. None of it is taken as JSON. (Tornado's
    # client gives a POST body form-urlencoded when no type is set: a PUT shows "none".)
    "ctype-none-rename": Req("PUT", "/api/server", 415, "got no Content-Type",
                             '{"name": "Hijacked"}'),
    "ctype-urlencoded": Req("POST", CMD, 415, "got 'application/x-www-form-urlencoded'",
                            '{"action": "START"}',
                            {"Content-Type": "application/x-www-form-urlencoded"}),
    # POST /api/commands: fields
    "cmd-unknown-field": Req.json("POST", CMD, {"action": "PING", "bogus": 1}, 422,
                                  "invalid command: object contains unknown field `bogus`"),
    "cmd-missing-action": Req.json("POST", CMD, {"targets": [HEALTHY]}, 422,
                                   "missing required field `action`"),
    "cmd-action-int": Req.json("POST", CMD, {"action": 5}, 422,
                               "field 'action': expected `str`, got `int`"),
    "cmd-unknown-action": Req.json("POST", CMD, {"action": "EXPLODE", "targets": [HEALTHY]}, 422,
                                   "unknown action 'EXPLODE' (expected one of START, STOP"),
    "cmd-targets-string": Req.json("POST", CMD, {"action": "PING", "targets": HEALTHY}, 422,
                                   "field 'targets': expected `array | null`, got `str`"),
    "cmd-targets-traversal": Req.json("POST", CMD, {"action": "PING", "targets": ["../x"]}, 422,
                                      "field 'targets[0]': is not a valid id"),
    "cmd-targets-empty": Req.json("POST", CMD, {"action": "PING", "targets": []}, 422,
                                  "targets must name at least one device"),
    "cmd-take-id-traversal": Req.json("POST", CMD, {"action": "START", "take_id": "../t"}, 422,
                                      "field 'take_id': is not a valid id"),
    "cmd-timeout-string": Req.json("POST", CMD, {"action": "PING", "timeout_s": "1"}, 422,
                                   "field 'timeout_s': expected `float | null`, got `str`"),
    "cmd-timeout-negative": Req.json("POST", CMD, {"action": "PING", "timeout_s": -1}, 422,
                                     "field 'timeout_s': expected `float` > 0"),
    "cmd-wait-string": Req.json("POST", CMD, {"action": "PING", "wait": "yes"}, 422,
                                "field 'wait': expected `bool`, got `str`"),
    "cmd-params-bool": Req.json("POST", CMD, {"action": "START", "params": {"sample_rate": True}},
                                422, "field 'params.sample_rate'"),
    "cmd-lead-ms": Req.json("POST", CMD, {"action": "START", "lead_ms": 60_001}, 422,
                            "lead_ms"),
    "cmd-unknown-target": Req.json("POST", CMD, {"action": "PING", "targets": ["ghost"]}, 404,
                                   "unknown device(s): ghost"),
    "cmd-one-unknown-target": Req.json("POST", CMD, {"action": "STOP",
                                                     "targets": [HEALTHY, "ghost"]}, 404,
                                       "unknown device(s): ghost"),
    # GET /api/audio/list
    "list-limit-abc": Req("GET", "/api/audio/list?limit=abc", 422,
                          "query argument 'limit' must be an integer, got 'abc'"),
    "list-limit-0": Req("GET", "/api/audio/list?limit=0", 422,
                        "'limit' must be between 1 and 1000, got 0"),
    "list-limit-huge": Req("GET", "/api/audio/list?limit=99999999999999999999", 422,
                           "'limit' must be between 1 and 1000"),
    "list-offset-negative": Req("GET", "/api/audio/list?offset=-1", 422,
                                "'offset' must be between 0 and"),
    "list-kind-bogus": Req("GET", "/api/audio/list?kind=bogus", 422,
                           "kind must be one of original, enhanced, merged, got 'bogus'"),
    "list-device-traversal": Req("GET", "/api/audio/list?device_id=../x", 422,
                                 "query argument 'device_id' is not a valid id: '../x'"),
    "list-take-slash": Req("GET", "/api/audio/list?take_id=a%2Fb", 422,
                           "query argument 'take_id' is not a valid id"),
    "list-order-bogus": Req("GET", "/api/audio/list?order=sideways", 422,
                            "order must be 'newest' or 'oldest'"),
    "list-invalid-utf8": Req("GET", "/api/audio/list?device_id=%ff", 400, "Invalid unicode"),
    # devices and commands by id
    "client-traversal": Req("GET", "/api/clients/..%2fetc", 422,
                            "'../etc' is not a valid device id"),
    "client-unknown": Req("GET", "/api/clients/ghost", 404,
                          "no device with id 'ghost' has registered"),
    "command-unknown": Req("GET", "/api/commands/cmd-ghost", 404, "no command with id 'cmd-ghost'"),
    "commands-limit": Req("GET", "/api/commands?limit=-5", 422, "'limit' must be between 1"),
    # unknown routes, every method
    **{f"route-unknown-{m.lower()}": Req(m, "/api/nope", 404, f"no such route: {m} /api/nope",
                                         "{}" if m in ("POST", "PUT", "PATCH") else None)
       for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND")},
    "route-raw-traversal": Req("GET", "/api/audio/../../etc/passwd", 404, "no such route"),
    "route-trailing-slash": Req("GET", "/api/clients/", 404, "no such route"),
    # wrong method on a known route
    "method-delete-ping": Req("DELETE", "/ping", 405, "DELETE is not allowed on /ping"),
    "method-post-clients": Req("POST", "/api/clients", 405, "POST is not allowed on /api/clients",
                               "{}", JSON),
    "method-put-list": Req("PUT", "/api/audio/list", 405, "PUT is not allowed", "{}", JSON),
    "method-get-upload": Req("GET", "/api/audio/upload", 405, "GET is not allowed"),
    "method-propfind-ping": Req("PROPFIND", "/ping", 405, "PROPFIND is not allowed on /ping"),
    "method-post-ws": Req("POST", "/ws/control", 405, "POST is not allowed on /ws/control", "x"),
    # the WebSocket endpoint asked for without a WebSocket handshake
    "ws-plain-get": Req("GET", "/ws/control", 400, "devices' WebSocket endpoint"),
    "ws-no-connection-upgrade": Req("GET", "/ws/control", 400, "Connection: Upgrade",
                                    headers={"Upgrade": "websocket"}),
    "ws-no-key": Req("GET", "/ws/control", 400, "Sec-WebSocket-Key",
                     headers={"Upgrade": "websocket", "Connection": "Upgrade"}),
    "ws-version-99": Req("GET", "/ws/control", 426, "WebSocket version 99 is not supported",
                         headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                  "Sec-WebSocket-Version": "99"}),
    # the controllers' event stream: the same handshake checks, then its topics
    "events-plain-get": Req("GET", "/ws/events", 400, "the controllers' event stream"),
    "events-post": Req("POST", "/ws/events", 405, "POST is not allowed on /ws/events", "x"),
    "events-version-99": Req("GET", "/ws/events", 426, "WebSocket version 99 is not supported",
                             headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                      "Sec-WebSocket-Version": "99"}),
    "events-unknown-topic": Req("GET", "/ws/events?topics=device.updated,device.exploded",
                                422, "no event topic 'device.exploded'; topics: ",
                                headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                         "Sec-WebSocket-Version": "13"}),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", list(REST_CASES.values()), ids=list(REST_CASES))
async def test_bad_request_gets_its_error(
    server: Server, api: Api, healthy: FakeDevice, case: Req
) -> None:
    status, _, headers, raw = await api.request(case.method, case.path, body=case.body,
                                                headers=case.headers)
    assert_error_response(status, headers, raw, case.status, case.contains)
    if status == 405:
        assert headers["Allow"], "a 405 names the allowed methods"
        assert case.method not in headers["Allow"].split(", ")
    if status == 426:
        assert headers["Sec-WebSocket-Version"] == "13"
    assert not healthy.of_type(Command), "a refused command reached a device"
    await assert_still_serving(api, healthy)


@pytest.mark.asyncio
async def test_head_of_unknown_route_is_404_json(server: Server, api: Api) -> None:
    status, _, headers, raw = await api.request("HEAD", "/api/nope")
    assert (status, raw) == (404, b"")  # HEAD has no body, but the same status and type
    assert headers["Content-Type"].startswith("application/json")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name",
    ["", "   ", "\t\n", "Studio\u0007A", "Studio\u0000A", "é" * 32, "x" * 64, 42, None,
     ["Studio"], "Dr. Smith"],
    ids=["empty", "spaces", "whitespace", "bell", "nul", "64-utf8-bytes", "64-ascii", "int",
         "null", "list", "dot"],
)
async def test_rename_refused_keeps_the_name(
    server: Server, api: Api, healthy: FakeDevice, name: Any
) -> None:
    _, before = await api.get("/api/server")
    status, _, headers, raw = await api.request("PUT", "/api/server", json.dumps({"name": name}),
                                                headers=JSON)
    body = assert_error_response(status, headers, raw, 422, "server name")
    assert any(word in body["error"] for word in
               ("empty or only spaces", "control characters", "the limit is 63", "a string",
                "must not contain '.'"))
    _, after = await api.get("/api/server")
    assert after["name"] == before["name"] == server.name
    await assert_still_serving(api, healthy)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status", "contains"),
    [('{"name": "\\ud83d"}', 400, "unpaired UTF-16 surrogate"),
     ('{"nom": "Studio"}', 422, "body must have a 'name'")],
    ids=["lone-surrogate", "missing-name"],
)
async def test_rename_bad_body_keeps_the_name(
    server: Server, api: Api, body: str, status: int, contains: str
) -> None:
    before = server.name
    code, _, headers, raw = await api.request("PUT", "/api/server", body, headers=JSON)
    assert_error_response(code, headers, raw, status, contains)
    assert server.name == before


# -- REST: recording ids -------------------------------------------------------------------


BAD_IDS: list[tuple[str, int, str]] = [
    ("%2e%2e%2f%2e%2e%2fsentinel.txt", 422, "'../../sentinel.txt' is not a valid recording id"),
    ("..%2f..%2f..%2fetc%2fpasswd", 422, "'../../../etc/passwd' is not a valid recording id"),
    ("..", 422, "'..' is not a valid recording id"),
    ("%2e%2e", 422, "'..' is not a valid recording id"),
    ("%2e", 422, "'.' is not a valid recording id"),
    ("a%2fb", 422, "'a/b' is not a valid recording id"),
    ("..%5c..%5csentinel.txt", 422, "is not a valid recording id"),
    (".hidden", 422, "'.hidden' is not a valid recording id"),
    ("%00", 422, "is not a valid recording id"),
    ("r" * 65, 422, "is not a valid recording id"),
    ("%C3%A9t%C3%A9", 422, "'été' is not a valid recording id"),
    ("%ff", 400, "Invalid unicode in url"),
    ("rec-missing", 404, "no recording with id 'rec-missing'"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("HEAD", ""), ("GET", "/meta"),
                                                ("DELETE", "")],
                         ids=["file", "head", "meta", "delete"])
async def test_bad_recording_ids_never_reach_a_file(
    tmp_path: Path, server: Server, api: Api, healthy: FakeDevice, method: str, suffix: str
) -> None:
    sentinel = tmp_path / "sentinel.txt"  # data_dir is tmp_path/data: ../sentinel.txt is this
    sentinel.write_text("outside the data dir")
    status, body = await api.upload(WAV, recording_id="rec-keep")
    assert status == 201, body
    for raw_id, expected, contains in BAD_IDS:
        status, _, headers, raw = await api.request(method, f"/api/audio/{raw_id}{suffix}")
        if method == "HEAD":
            assert (status, raw) == (expected, b""), raw_id
        else:
            assert_error_response(status, headers, raw, expected, contains)
        assert b"outside the data dir" not in raw
    assert sentinel.read_text() == "outside the data dir"
    _, listing = await api.get("/api/audio/list")
    assert [r["id"] for r in listing["items"]] == ["rec-keep"]
    assert len(stored_files(server)) == 1
    await assert_still_serving(api, healthy)


@pytest.mark.asyncio
@pytest.mark.parametrize("range_header", ["bytes=999999999-", "bytes=-0", "bytes=500-400"],
                         ids=["past-the-end", "empty-suffix", "backwards"])
async def test_unsatisfiable_range_is_416(
    server: Server, api: Api, healthy: FakeDevice, range_header: str
) -> None:
    _, body = await api.upload(WAV, recording_id="rec-range")
    size = body["recording"]["bytes"]
    status, _, headers, raw = await api.request("GET", "/api/audio/rec-range",
                                                headers={"Range": range_header})
    assert_error_response(status, headers, raw, 416, f"range '{range_header}'")
    assert headers["Content-Range"] == f"bytes */{size}"
    # A good range still works on the same file.
    status, _, headers, raw = await api.request("GET", "/api/audio/rec-range",
                                                headers={"Range": "bytes=0-3"})
    assert (status, raw, headers["Content-Range"]) == (206, b"RIFF", f"bytes 0-3/{size}")
    await assert_still_serving(api, healthy)


# -- uploads ---------------------------------------------------------------------------------


BOUNDARY = "vl-test-boundary"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def form(data: bytes | None = WAV, **fields: Any) -> bytes:
    return multipart_body(data, boundary=BOUNDARY, **fields)[0]


def without_end(body: bytes) -> bytes:
    """A form body without its closing delimiter, to append more parts."""
    return body.removesuffix(f"--{BOUNDARY}--\r\n".encode())


def field_part(name: str, value: bytes, extra: str = "") -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'
            .encode() + value + b"\r\n")


#: case id → (body, Content-Type, status, substring of the error)
UPLOAD_CASES: dict[str, tuple[bytes, str | None, int, str]] = {
    "ctype-text": (form(), "text/plain", 415,
                   "upload must be multipart/form-data, got 'text/plain'"),
    "ctype-json": (b'{"file": "..."}', "application/json", 415,
                   "must be multipart/form-data, got 'application/json'"),
    "ctype-audio": (WAV, "audio/wav", 415, "got 'audio/wav'"),
    "no-boundary": (form(), "multipart/form-data", 400,
                    "multipart/form-data Content-Type has no boundary"),
    "empty-boundary": (form(), "multipart/form-data; boundary=", 400, "has no boundary"),
    "truncated-mid-file": (form()[: len(form()) // 2], CTYPE, 400,
                           "multipart body is truncated or malformed"),
    "empty-body": (b"", CTYPE, 400, "truncated or malformed after 0 bytes"),
    "no-boundary-in-body": (b"x" * 500, CTYPE, 400, "Boundary not found"),
    "other-boundary": (multipart_body(WAV, boundary="something-else")[0], CTYPE, 400,
                       "malformed multipart body"),
    "no-file-part": (form(None, recording_id="rec-x"), CTYPE, 400, "the upload has no 'file' part"),
    "two-file-parts": (without_end(form()) + form(), CTYPE, 400, "more than one 'file' part"),
    "unknown-field": (form(color="red"), CTYPE, 400, "unknown form field 'color' (expected 'file'"),
    "duplicated-field": (without_end(form(None, take_id="t1")) + form(take_id="t2"), CTYPE, 400,
                         "form field 'take_id' appears twice"),
    "field-too-long": (form(take_id="t" * 2000), CTYPE, 400,
                       "form field 'take_id' is longer than 1024 bytes"),
    "part-without-name": (field_part("x", b"v").replace(b'; name="x"', b"") + form(), CTYPE, 400,
                          "Missing name"),
    "recording-id-traversal": (form(recording_id="../../etc/passwd"), CTYPE, 422,
                               "recording_id '../../etc/passwd' is not a valid id"),
    "recording-id-dotdot": (form(recording_id=".."), CTYPE, 422, "recording_id '..' is not"),
    "recording-id-65": (form(recording_id="r" * 65), CTYPE, 422, "is not a valid id"),
    "device-id-slash": (form(device_id="a/b"), CTYPE, 422, "device_id 'a/b' is not a valid id"),
    "take-id-backslash": (form(take_id="..\\x"), CTYPE, 422, "take_id '..\\x' is not a valid id"),
    "field-not-utf8": (without_end(field_part("device_id", b"\xff\xfe")) + form(), CTYPE, 422,
                       "form field 'device_id' is not UTF-8 text"),
    "started-at-text": (form(started_at="soon"), CTYPE, 422,
                        "started_at must be a number of seconds, got 'soon'"),
    "started-at-nan": (form(started_at="nan"), CTYPE, 422, "started_at must be a number"),
    "started-at-inf": (form(started_at="inf"), CTYPE, 422, "started_at must be a number"),
    "sha256-format": (form(sha256="xyz"), CTYPE, 422, "sha256 must be 64 hexadecimal digits"),
    "sha256-mismatch": (form(sha256="0" * 64, recording_id="rec-sha"), CTYPE, 422,
                        "sha256 mismatch: the received file hashes to"),
    # Seeded: now and then, fresh random bytes look like a container with no audio stream
    # to FFmpeg, which is refused too (415) but with another message.
    "random-bytes": (form(random.Random(0).randbytes(4096)), CTYPE, 415,
                     "the file is not audio in a format that can be decoded"),
    "text-file": (form(b"hello, this is a text file\n" * 100, filename="notes.wav"), CTYPE, 415,
                  "not audio"),
    "empty-file": (form(b""), CTYPE, 415, "not audio"),
    "truncated-audio": (form(WAV[:40]), CTYPE, 415, "not audio"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize(("body", "ctype", "status", "contains"), list(UPLOAD_CASES.values()),
                         ids=list(UPLOAD_CASES))
async def test_bad_upload_is_refused_and_stores_nothing(
    server: Server, api: Api, healthy: FakeDevice, body: bytes, ctype: str | None, status: int,
    contains: str,
) -> None:
    code, _, headers, raw = await api.request("POST", "/api/audio/upload", body=body,
                                              headers={"Content-Type": ctype} if ctype else {})
    assert_error_response(code, headers, raw, status, contains)
    _, listing = await api.get("/api/audio/list")
    assert listing["total"] == 0
    assert stored_files(server) == [] and leftovers(server) == []
    status, _ = await api.get("/api/audio/rec-sha/meta")
    assert status == 404
    await assert_still_serving(api, healthy)
    # The same server takes a good upload right after.
    code, stored = await api.upload(WAV, recording_id="rec-good")
    assert code == 201 and stored["recording"]["id"] == "rec-good"


@pytest.mark.asyncio
@pytest.mark.parametrize("filename", ["../../evil.wav", "..\\..\\evil.wav", "/etc/evil.wav"])
async def test_client_file_name_is_a_label_never_a_path(
    tmp_path: Path, server: Server, api: Api, filename: str
) -> None:
    status, body = await api.upload(WAV, filename=filename, recording_id="rec-named")
    assert status == 201, body
    recording = body["recording"]
    assert recording["original_name"] == "evil.wav"
    assert stored_files(server) == [recording["path"]]
    assert recording["path"] == "recordings/_no_take/rec-named.wav"
    assert not list(tmp_path.glob("**/evil.wav")) and not Path("/etc/evil.wav").exists()


@pytest.mark.asyncio
async def test_reupload_with_other_bytes_is_409_and_keeps_the_first(
    server: Server, api: Api, healthy: FakeDevice
) -> None:
    status, first = await api.upload(WAV, recording_id="rec-1")
    assert status == 201
    code, _, headers, raw = await api.request(
        "POST", "/api/audio/upload", body=form(encode("wav", seconds=0.25, freq=300.0),
                                               recording_id="rec-1"),
        headers={"Content-Type": CTYPE})
    assert_error_response(code, headers, raw, 409, "recording 'rec-1' is already stored with other")
    _, meta = await api.get("/api/audio/rec-1/meta")
    assert meta["sha256"] == first["recording"]["sha256"]
    assert len(stored_files(server)) == 1 and leftovers(server) == []
    await assert_still_serving(api, healthy)


# -- uploads over a raw socket: lying lengths, limits, stalls ----------------------------------


def request_head(port: int, *, length: int | None = None, chunked: bool = False,
                 extra: str = "", ctype: str = CTYPE) -> bytes:
    lines = ["POST /api/audio/upload HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Content-Type: {ctype}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return with_token(("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode())


def pieces(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def chunked(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    out = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces(data, size)]
    return [*out, b"0\r\n\r\n"]


@pytest.mark.asyncio
async def test_content_length_larger_than_the_body_times_out_with_408(
    server: Server, api: Api, healthy: FakeDevice
) -> None:
    """The client stops sending: 408 after upload_idle_timeout_s, and the temp file is gone."""
    body = form(os.urandom(3 << 20))  # the spool writes (and creates its file) per MiB
    sent = body[: 2 << 20]
    port = server.port
    assert port is not None

    async def temp_file_exists(n: int) -> None:
        if n == len(sent):  # in progress: one temp file
            await wait_until(lambda: len(leftovers(server)) == 1, timeout=5)

    # The server's idle timer runs on this loop's clock: it cannot have fired before the
    # timeout counted from the first byte (a lower bound, never a speed limit).
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await raw_request(port, request_head(port, length=len(body)), pieces(sent),
                                 on_sent=temp_file_exists)
    assert loop.time() - started >= server.settings.upload_idle_timeout_s
    response.check(408, f"upload stalled: no data for 2 s after {len(sent)} of {len(body)} bytes")
    assert leftovers(server) == [] and stored_files(server) == []
    await assert_still_serving(api, healthy)


@pytest.mark.asyncio
async def test_content_length_smaller_than_the_body_is_400_truncated(
    server: Server, api: Api, healthy: FakeDevice
) -> None:
    body = form()
    port = server.port
    assert port is not None
    response = await raw_request(port, request_head(port, length=len(body) - 100), [body])
    response.check(400, f"multipart body is truncated or malformed after {len(body) - 100} bytes")
    _, listing = await api.get("/api/audio/list")
    assert listing["total"] == 0 and leftovers(server) == []
    await assert_still_serving(api, healthy)


@pytest.mark.asyncio
async def test_content_length_not_a_number_is_400(
    server: Server, api: Api, healthy: FakeDevice
) -> None:
    port = server.port
    assert port is not None
    head = request_head(port, extra="Content-Length: lots\r\n")
    response = await raw_request(port, head)
    response.check(400, "Content-Length must be a non-negative integer (at most 19 ASCII "
                        "digits), got 'lots'")
    await assert_still_serving(api, healthy)


@pytest_asyncio.fixture
async def small_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server whose uploads are limited to 1.2 MB (one spool block of 1 MiB fits)."""
    server = Server(fast_settings(tmp_path / "small", max_upload_bytes=1_200_000))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_content_length_over_the_limit_is_413_before_the_body(small_server: Server) -> None:
    """Refused on the headers: no ``100 Continue``, so a careful client sends nothing."""
    port = small_server.port
    assert port is not None
    head = request_head(port, length=10**12, extra="Expect: 100-continue\r\n")
    response = await raw_request(port, head)
    response.check(413, "upload of 1000000000000 bytes exceeds the limit of 1200000 bytes")
    assert response.interim == []
    await _check_small_server_serves(small_server)


@pytest.mark.asyncio
async def test_content_length_over_the_limit_with_the_body_sent_is_413(
    small_server: Server,
) -> None:
    port = small_server.port
    assert port is not None
    body = form(os.urandom(2_000_000))
    response = await raw_request(port, request_head(port, length=len(body)), pieces(body))
    response.check(413, f"upload of {len(body)} bytes exceeds the limit of 1200000 bytes")
    assert leftovers(small_server) == []
    await _check_small_server_serves(small_server)


@pytest.mark.asyncio
async def test_chunked_body_over_the_limit_is_413_and_its_temp_file_deleted(
    small_server: Server,
) -> None:
    """No length announced: refused once the file passes the limit, mid-stream."""
    port = small_server.port
    assert port is not None
    paused = []

    async def pause_at_1_1_mb(sent: int) -> None:
        if sent > 1_100_000 and not paused:  # past the first 1 MiB spool block
            paused.append(sent)
            await wait_until(lambda: len(leftovers(small_server)) == 1, timeout=5)  # on disk

    body = form(os.urandom(3_000_000))
    response = await raw_request(port, request_head(port, chunked=True), chunked(body),
                                 on_sent=pause_at_1_1_mb)
    response.check(413, "file exceeds the limit of 1200000 bytes")
    assert paused, "the upload was refused before its temp file was written"
    assert leftovers(small_server) == [] and small_server.store.stored_files() == []
    await _check_small_server_serves(small_server)


@pytest.mark.asyncio
async def test_chunked_body_of_junk_over_the_limit_is_refused(small_server: Server) -> None:
    port = small_server.port
    assert port is not None
    response = await raw_request(port, request_head(port, chunked=True),
                                 chunked(os.urandom(3_000_000)))
    response.check(400, "Boundary not found")
    await _check_small_server_serves(small_server)


async def _check_small_server_serves(server: Server) -> None:
    api = Api(server.url)
    try:
        async with FakeDevice(server.ws_url, HEALTHY) as device:
            await assert_still_serving(api, device)
        _, listing = await api.get("/api/audio/list")
        assert listing["total"] == 0
        code, body = await api.upload(WAV, recording_id="fits")
        assert code == 201, body
    finally:
        api.close()


@pytest.mark.asyncio
async def test_client_vanishing_mid_upload_leaves_no_temp_file(
    server: Server, api: Api, healthy: FakeDevice
) -> None:
    port = server.port
    assert port is not None
    body = form(os.urandom(3 << 20))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_head(port, length=len(body)) + body[: 2 << 20])
        await writer.drain()
        await wait_until(lambda: len(leftovers(server)) == 1, timeout=5)
    finally:
        writer.close()
    await wait_until(lambda: leftovers(server) == [], timeout=5)
    assert stored_files(server) == []
    await assert_still_serving(api, healthy)


@pytest.mark.asyncio
@pytest.mark.parametrize(("head", "status", "contains"), [
    # What Tornado alone answers with a bare 400 and no body, once the route is chosen.
    ("GET /api/openapi.json HTTP/1.1\r\nContent-Length: \r\n", 400,
     "Content-Length must be a non-negative integer"),
    ("GET /api/server HTTP/1.1\r\nContent-Length: 4, 5\r\n", 400,
     "Content-Length values differ: '4, 5'"),
    ("POST /api/commands HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n",
     400, "not both"),
    ("GET /api/devices HTTP/1.1\r\nTransfer-Encoding: gzip\r\n", 400,
     "Transfer-Encoding 'gzip' is not supported"),
    ("PUT /api/takes/take-1 HTTP/1.1\r\nContent-Type: application/json\r\n"
     "Content-Length: 50000000\r\n", 413, "takes at most"),
])
async def test_framing_tornado_refuses_gets_the_one_shape_and_the_connection_closes(
        server: Server, api: Api, healthy: FakeDevice, head: str, status: int,
        contains: str) -> None:
    port = server.port
    assert port is not None
    request_line, rest = head.split("\r\n", 1)
    raw = f"{request_line}\r\nHost: 127.0.0.1:{port}\r\n{rest}\r\n".encode()
    response = await raw_request(port, raw)
    response.check(status, contains)
    assert response.headers.get("Connection") == "close"  # the body, if any, is not read
    await assert_still_serving(api, healthy)
