"""The Android app's dialect at the edges: pairing, and hostile frames.

A real server on 127.0.0.1 (authentication on, as the suite runs it), the app's side
written by hand frame by frame here (the faithful replay is `tests.support.android_app`):
what a hostile or broken app can send must get a clear error frame, leave its connection
open, and never disturb a protocol v1 device on the same server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import fast_settings, running
from tests.support.device import FakeDevice
from tests.support.http import Api, multipart_body
from tests.support.wait import wait_until
from vocalink_lab.hub.android import MAX_STAGED_PER_DEVICE
from vocalink_lab.protocol import Command
from vocalink_lab.server import Server

SESSION = {"id": "", "name": "User 7a1f", "ip": "127.0.0.23", "battery": 80,
           "device": "Google Pixel 7"}


@pytest_asyncio.fixture
async def approving(tmp_path: Path) -> AsyncIterator[Server]:
    """A server that lets an app's session in only once an operator approves it."""
    async with running(fast_settings(tmp_path / "approving")) as server:
        yield server


@pytest_asyncio.fixture
async def trusting(tmp_path: Path) -> AsyncIterator[Server]:
    """A server that trusts the app's sessions (``VOCALINK_ANDROID=trust``)."""
    async with running(fast_settings(tmp_path / "trusting", android="trust")) as server:
        yield server


async def new_session(server: Server, **fields: Any) -> dict[str, Any]:
    """``POST /sessions`` as the app does it: no token at all."""
    api = Api(server.url, token="")
    try:
        status, body = await api.post_json("/sessions", {**SESSION, **fields})
    finally:
        api.close()
    assert status == 200, body
    return dict(body)


def frame(kind: str, msg_type: str, body: Any = None) -> str:
    out: dict[str, Any] = {"kind": kind, "msgType": msg_type}
    if body is not None:
        out["body"] = body
    return json.dumps(out)


async def receive(ws: ClientConnection, kind: str | None = None,
                  msg_type: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame (of this kind and type; others are passed over)."""
    while True:
        got = json.loads(await ws.recv(timeout))
        if (kind is None or got["kind"] == kind) and (msg_type is None
                                                       or got["msgType"] == msg_type):
            return dict(got)


@pytest.mark.asyncio
async def test_a_session_waits_for_approval_then_is_activated(approving: Server) -> None:
    server = approving
    session = await new_session(server)
    assert session["id"] and session["name"] == "User 7a1f"
    assert session["device"] == "Google Pixel 7"
    api = Api(server.url)
    try:
        async with connect(server.ws_url) as ws:
            await ws.send(frame("event", "session_activate", {"id": session["id"]}))

            async def listed() -> Any:
                status, devices = await api.get("/api/clients")
                return [d for d in devices["items"] if d["platform"] == "android"]

            await wait_until(listed)
            [device] = await listed()
            assert device["pairing"] == "pending" and device["name"] == "User 7a1f"
            assert not device["device_id"].startswith(session["id"][:8])  # its own public id
            # Pending: the app is not told it is ready, and gets no command.
            status, body = await api.post_json("/api/commands", {
                "action": "START", "targets": [device["device_id"]]})
            assert status == 409 and body["code"] == "conflict", body
            status, _ = await api.post_json(f"/api/clients/{device['device_id']}/approve", {})
            assert status == 200
            activated = await receive(ws, "event", "session_activated")
            assert activated["body"]["id"] == session["id"]
            assert "theta" not in activated["body"]  # no clock yet: absent, as the app omits
    finally:
        api.close()


@pytest.mark.asyncio
async def test_hostile_frames_get_clear_errors_and_leave_a_v1_device_alone(
        trusting: Server) -> None:
    server = trusting
    mine, other = await new_session(server), await new_session(server, name="Other")
    async with FakeDevice(server.ws_url, "mic-1", "Mic") as device, \
            connect(server.ws_url) as ws:
        await ws.send(frame("event", "session_activate", {"id": mine["id"]}))
        await receive(ws, "event", "session_activated")
        hostile = [
            (json.dumps({"kind": "shout", "msgType": "x"}), "invalid_kind"),
            (frame("event", "started"), "invalid_body"),  # no body
            (frame("event", "no_such_event", {"id": mine["id"]}), "invalid_event"),
            (frame("action", "start", {"id": "all"}), "action_not_allowed"),  # ours to send
            (frame("sync", "tik", {"t1": 10**30}), "invalid_body"),
            (frame("sync", "tik", {"t1": -5}), "invalid_body"),
            (frame("sync", "sync_report", {"theta": 1e300, "rtt": 1}), "invalid_body"),
            (frame("sync", "sync_report", {"theta": 1.0, "rtt": 2.0}), "invalid_body"),  # no tok
            (frame("event", "started", {"id": other["id"]}), "action_not_allowed"),
            (frame("event", "rec_stage", {"sessionId": other["id"], "recName": "a.m4a",
                                          "duration": 1, "sizeBytes": 10}),
             "action_not_allowed"),
            (frame("event", "session_state_report", {"id": mine["id"], "state": "flying"}),
             "invalid_body"),
            (frame("event", "session_activate", {"id": mine["id"]}), "action_not_allowed"),
            ("[1, 2]", "invalid_body"),
            ("{" * 5000, "invalid_body"),
        ]
        for text, code in hostile:
            await ws.send(text)
            answer = await receive(ws, "error")
            assert answer["msgType"] == code, (text[:80], answer)
            assert answer["body"]["detail"], answer
        # The other session was not touched, the app's connection is still open, and the
        # v1 device on the same server records as before.
        await ws.send(frame("event", "session_state_report", {"id": mine["id"],
                                                              "state": "stopped"}))
        result = await server.hub.command("START", targets=["mic-1"])
        assert result.outcomes["mic-1"].status.value == "SUCCESS"
        commands = device.of_type(Command)
        assert commands and commands[-1].action.value == "START"


@pytest.mark.asyncio
async def test_an_unknown_session_and_an_unstaged_upload_are_refused(trusting: Server) -> None:
    server = trusting
    async with connect(server.ws_url) as ws:
        await ws.send(frame("event", "session_activate", {"id": "not-a-session"}))
        answer = await receive(ws, "error")
        assert answer["msgType"] == "session_not_found", answer
    api = Api(server.url, token="")
    try:
        body, ctype = multipart_body(b"not audio", filename="upload_rec-x")
        status, parsed, _, _ = await api.request("POST", "/recordings/rec-nothing-staged",
                                                 body=body, headers={"Content-Type": ctype})
        assert status == 404 and parsed["code"] == "recording_not_found", parsed
        status, parsed = await api.post_json("/sessions", {"name": "no id, no device"})
        assert status == 422 and "session" in parsed["error"], parsed
        status, parsed, _, _ = await api.request("POST", "/sessions", body=b"[]",
                                                 headers={"Content-Type": "application/json"})
        assert status in (400, 422), parsed
    finally:
        api.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["x" * 300, "bell\x07name", ""])
async def test_names_are_cleaned_not_refused(trusting: Server, name: str) -> None:
    session = await new_session(trusting, name=name)
    cleaned = session["name"]
    assert 1 <= len(cleaned) <= 64 and cleaned.isprintable(), cleaned


@pytest.mark.asyncio
async def test_an_app_staging_in_a_loop_drops_its_own_stagings_not_anothers(
        trusting: Server) -> None:
    server = trusting
    sessions = [await new_session(server, name=n) for n in ("Honest", "Looping")]
    async with connect(server.ws_url) as honest, connect(server.ws_url) as looping:
        for ws, session in ((honest, sessions[0]), (looping, sessions[1])):
            await ws.send(frame("event", "session_activate", {"id": session["id"]}))
            await receive(ws, "event", "session_activated")
        await honest.send(frame("event", "rec_stage", {
            "sessionId": sessions[0]["id"], "recName": "take.m4a", "duration": 3,
            "sizeBytes": 1000}))
        kept = (await receive(honest, "event", "rec_staged"))["body"]["rid"]
        rids = []
        for i in range(MAX_STAGED_PER_DEVICE + 10):
            await looping.send(frame("event", "rec_stage", {
                "sessionId": sessions[1]["id"], "recName": f"{i}.m4a", "duration": 1,
                "sizeBytes": 10}))
            rids.append((await receive(looping, "event", "rec_staged"))["body"]["rid"])
    assert server.android is not None
    assert server.android.staged(kept) is not None  # the honest app's upload still lands
    assert [r for r in rids if server.android.staged(r)] == rids[-MAX_STAGED_PER_DEVICE:]


@pytest.mark.asyncio
async def test_a_trusted_phone_that_reconnects_is_the_same_device(trusting: Server) -> None:
    """The app asks for a new session on every connect: on a trusted network the same
    phone back is the same device (its row and history go on); another is another."""
    server = trusting
    first = await new_session(server)
    async with connect(server.ws_url) as ws:
        await ws.send(frame("event", "session_activate", {"id": first["id"]}))
        await receive(ws, "event", "session_activated")
    assert server.hub is not None
    [device_id] = [d["device_id"] for d in server.hub.devices() if d["platform"] == "android"]
    await wait_until(lambda: not server.hub.registry.get(device_id).connected)
    again = await new_session(server)
    other = await new_session(server, name="Someone else")
    assert again["id"] != first["id"]
    async with connect(server.ws_url) as ws, connect(server.ws_url) as ws2:
        await ws.send(frame("event", "session_activate", {"id": again["id"]}))
        await receive(ws, "event", "session_activated")
        await ws2.send(frame("event", "session_activate", {"id": other["id"]}))
        await receive(ws2, "event", "session_activated")
        devices = [d for d in server.hub.devices() if d["platform"] == "android"]
        assert len(devices) == 2 and device_id in {d["device_id"] for d in devices}
        mine = server.hub.registry.get(device_id)
        assert mine.connected and mine.connections == 2


@pytest.mark.asyncio
async def test_sessions_do_not_pile_up(approving: Server, trusting: Server) -> None:
    """A session never let in is forgotten when it leaves; a phone back replaces its own."""
    pending = await new_session(approving)
    async with connect(approving.ws_url) as ws:
        await ws.send(frame("event", "session_activate", {"id": pending["id"]}))
        assert approving.android is not None
        await wait_until(lambda: approving.android.get(pending["id"]) is not None
                         and approving.android.get(pending["id"]).activated)
    await wait_until(lambda: approving.android.get(pending["id"]) is None)
    assert trusting.android is not None
    first = await new_session(trusting)
    for n in range(2):  # the next session asked for once the first has left
        session = first if n == 0 else await new_session(trusting)
        async with connect(trusting.ws_url) as ws:
            await ws.send(frame("event", "session_activate", {"id": session["id"]}))
            await receive(ws, "event", "session_activated")
        await wait_until(lambda: not [d for d in trusting.hub.devices()
                                      if d["platform"] == "android" and d["connected"]])
    assert trusting.android.get(first["id"]) is None  # replaced by the phone's next one
