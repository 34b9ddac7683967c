"""Who may record: pending devices, approval, join codes, impostors, rejection, keys.

A real server with authentication on, real devices over real WebSockets (``FakeDevice``:
``token=""`` registers with no credential, as a stranger does; by default it presents the
suite's controller token and is trusted), real uploads.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.device import FakeDevice
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.agent import Agent, AgentConfig
from vocalink_lab.agent.agent import KEY_FILE
from vocalink_lab.hub import CLOSE_IMPOSTOR, CLOSE_REJECTED
from vocalink_lab.hub.pairing import MAX_JOIN_FAILURES
from vocalink_lab.protocol import ClientState, Command, Error, Status, Welcome
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio


async def clients(api: Api) -> dict[str, dict[str, object]]:
    status, body = await api.get("/api/clients")
    assert status == 200
    return {d["device_id"]: d for d in body["items"]}


async def closed_with(device: FakeDevice) -> int | None:
    await asyncio.wait_for(device.closed.wait(), 10)
    assert device.conn is not None
    return device.conn.close_code


async def refused(server: Server, device_id: str, *, token: str | None = None,
                  join_code: str | None = None) -> tuple[Error, int | None]:
    """A REGISTER with these credentials, refused: the ERROR it got, and its close code."""
    device = FakeDevice(server.ws_url, device_id, token="", register=False)
    await device.connect()
    try:
        await device.send(_register(device_id, token=token, join_code=join_code))
        error = await device.wait_for(Error)
        assert isinstance(error, Error)
        return error, await closed_with(device)
    finally:
        await device.close()


async def test_a_stranger_waits_gets_no_command_then_is_approved(server: Server,
                                                                  api: Api) -> None:
    async with FakeDevice(server.ws_url, "trusted-1") as trusted, \
            FakeDevice(server.ws_url, "phone-1", token="") as stranger:
        assert stranger.welcome is not None and stranger.welcome.paired is False
        assert stranger.welcome.device_key is None
        assert trusted.welcome is not None and trusted.welcome.paired is True
        seen = await clients(api)
        assert seen["phone-1"]["pairing"] == "pending" and seen["trusted-1"]["pairing"] == (
            "trusted")
        # It may show its state (which phone is it?)...
        await stranger.send(Status(state=ClientState.IDLE, level_dbfs=-20.0))
        await wait_until(lambda: server.hub is not None and
                         server.hub.registry.get("phone-1").level_dbfs == -20.0)
        # ...and gets no command: a broadcast passes it by, a targeted one is refused.
        status, result = await api.post_json("/api/commands", {"action": "PING"})
        assert status == 200 and set(result["outcomes"]) == {"trusted-1"}, result
        status, body = await api.post_json("/api/commands",
                                           {"action": "PING", "targets": ["phone-1"]})
        assert status == 409 and "waiting for approval" in body["error"], body
        assert not stranger.of_type(Command)
        status, info = await api.get("/api/pairing")
        assert info["pending"] == ["phone-1"]
        # Approved: a second WELCOME brings its key; commands reach it from now on.
        status, device = await api.post_json("/api/clients/phone-1/approve", {})
        assert status == 200 and device["pairing"] == "paired", device
        welcome = await stranger.wait_for(Welcome, where=lambda w: w.device_key is not None)
        assert isinstance(welcome, Welcome) and welcome.paired
        status, result = await api.post_json("/api/commands",
                                             {"action": "PING", "targets": ["phone-1"]})
        assert status == 200 and result["outcomes"]["phone-1"]["status"] == "SUCCESS"
    # It comes back with its key: paired, not pending.
    assert welcome.device_key is not None
    async with FakeDevice(server.ws_url, "phone-1", token=welcome.device_key) as again:
        assert again.welcome is not None and again.welcome.paired
        assert (await clients(api))["phone-1"]["pairing"] == "paired"


async def test_a_pending_device_that_leaves_is_forgotten(server: Server, api: Api) -> None:
    async with FakeDevice(server.ws_url, "phone-2", token=""):
        assert "phone-2" in await clients(api)

    async def gone() -> bool:
        return "phone-2" not in await clients(api)

    await wait_until(gone)


async def test_the_join_code_pairs_without_a_click(server: Server, api: Api) -> None:
    status, info = await api.get("/api/server")
    code = info["pairing"]["join_code"]
    assert status == 200 and len(code) == 9 and code[4] == "-"
    assert info["pairing"]["join_code_expires_at"] > 0
    # Typed in lower case, without the dash: still the code.
    async with FakeDevice(server.ws_url, "phone-3", token="",
                          join_code=code.lower().replace("-", "")) as phone:
        assert phone.welcome is not None and phone.welcome.paired
        key = phone.welcome.device_key
        assert key is not None and key.startswith("dk-")
        assert (await clients(api))["phone-3"]["pairing"] == "paired"
    # A new code: the old one stops working.
    status, fresh = await api.post_json("/api/pairing", {})
    assert status == 200 and fresh["join_code"] != code
    error, closed = await refused(server, "phone-4", join_code=code)
    assert error.code == "pairing_refused"
    assert "wrong or has expired" in error.detail
    assert closed == CLOSE_REJECTED


async def test_guessing_join_codes_is_cut_short(server: Server) -> None:
    for i in range(MAX_JOIN_FAILURES):
        await refused(server, f"guess-{i}", join_code="AAAA-AAAA")
    assert server.hub is not None
    code, _ = server.hub.pairing.join_code()
    error, _ = await refused(server, "guess-right", join_code=code)
    assert "too many wrong join codes" in error.detail


async def test_an_impostor_is_refused_and_the_real_device_stays(server: Server,
                                                                 api: Api) -> None:
    assert server.hub is not None
    code, _ = server.hub.pairing.join_code()
    async with FakeDevice(server.ws_url, "mic-real", token="", join_code=code) as real:
        key = real.welcome.device_key if real.welcome else None
        assert key
        for credential in ("", "dk-" + "x" * 43, os.urandom(8).hex()):
            error, closed = await refused(server, "mic-real", token=credential or None)
            assert error.code == "pairing_refused"
            assert closed == CLOSE_IMPOSTOR
        # Undisturbed: still connected, still commanded.
        assert not real.closed.is_set()
        status, result = await api.post_json("/api/commands",
                                             {"action": "PING", "targets": ["mic-real"]})
        assert status == 200 and result["outcomes"]["mic-real"]["status"] == "SUCCESS"
    # Offline, its id is still its own.
    assert (await refused(server, "mic-real"))[1] == CLOSE_IMPOSTOR
    # A trusted device's id cannot be taken without a credential either.
    async with FakeDevice(server.ws_url, "sim-9") as trusted:
        assert (await refused(server, "sim-9"))[1] == CLOSE_IMPOSTOR
        assert not trusted.closed.is_set()


async def test_reject_disconnects_forgets_and_keeps_it_out(server: Server, api: Api) -> None:
    async with FakeDevice(server.ws_url, "phone-5", token="") as phone:
        status, body = await api.post_json("/api/clients/phone-5/reject", {})
        assert status == 200 and body["rejected"] is True
        assert await closed_with(phone) == CLOSE_REJECTED
    assert "phone-5" not in await clients(api)
    error, closed = await refused(server, "phone-5")
    assert "rejected by the operator" in error.detail
    assert closed == CLOSE_REJECTED
    status, body = await api.post_json("/api/clients/nobody/reject", {})
    assert status == 404 and body["code"] == "device_not_found"


async def test_a_device_uploads_with_its_key_in_its_own_name_only(server: Server,
                                                                   api: Api) -> None:
    assert server.hub is not None
    code, _ = server.hub.pairing.join_code()
    async with FakeDevice(server.ws_url, "mic-7", token="", join_code=code) as device:
        key = device.welcome.device_key if device.welcome else None
    assert key
    as_device = Api(server.url, token=key)
    stranger = Api(server.url, token="")
    try:
        wav = encode("wav", seconds=0.1)
        status, body = await as_device.upload(wav, recording_id="rec-own", device_id="mic-7")
        assert status == 201, body
        status, body = await as_device.upload(wav, recording_id="rec-not", device_id="mic-8")
        assert status == 403 and "its own recordings only" in body["error"], body
        status, body = await as_device.get("/api/audio/list")  # a key is no controller
        assert status == 403, body
        status, _ = await stranger.upload(wav, recording_id="rec-anon", device_id="mic-7")
        assert status == 401
        tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "10"}
        status, _, _, _ = await as_device.request("POST", "/api/audio/uploads", headers={
            **tus, "Upload-Metadata": "device_id bWljLTg="})  # mic-8
        assert status == 403
        status, _, _, _ = await as_device.request("POST", "/api/audio/uploads", headers={
            **tus, "Upload-Metadata": "device_id bWljLTc="})  # mic-7
        assert status == 201
    finally:
        as_device.close()
        stranger.close()
    status, listed = await api.get("/api/audio/list")
    assert [r["id"] for r in listed["items"]] == ["rec-own"]


async def test_keys_survive_a_restart_as_digests(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(fast_settings(data))
    await server.start()
    try:
        assert server.hub is not None
        code, _ = server.hub.pairing.join_code()
        async with FakeDevice(server.ws_url, "mic-9", token="", join_code=code) as device:
            key = device.welcome.device_key if device.welcome else None
        assert key

        async def stored() -> bool:
            return "mic-9" in await server.catalog.device_keys()

        await wait_until(stored)
    finally:
        await server.stop()
    raw = (data / "vocalink.db").read_bytes()
    assert key.encode() not in raw  # only its digest is kept
    server = Server(fast_settings(data))
    await server.start()
    try:
        async with FakeDevice(server.ws_url, "mic-9", token=key) as again:
            assert again.welcome is not None and again.welcome.paired
    finally:
        await server.stop()


async def test_the_agent_joins_keeps_its_key_and_comes_back_paired(server: Server,
                                                                    tmp_path: Path) -> None:
    assert server.hub is not None
    code, _ = server.hub.pairing.join_code()
    state = tmp_path / "agent"
    config = AgentConfig(state_dir=state, server_url=server.url, device_id="pi-1",
                         source="tone:440", token=None, join_code=code)
    async with Agent(config) as agent:
        await asyncio.wait_for(agent.paired.wait(), 10)
    key_file = state / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip().startswith("dk-")
    # Next time: its key, no code needed (a new code is in force anyway).
    server.hub.pairing.new_join_code()
    again = AgentConfig(state_dir=state, server_url=server.url, device_id="pi-1",
                        source="tone:440", token=None)
    async with Agent(again) as agent:
        await asyncio.wait_for(agent.paired.wait(), 10)
        assert server.hub.registry.get("pi-1").pairing == "paired"


async def test_a_waiting_agent_records_once_approved(server: Server, api: Api,
                                                     tmp_path: Path) -> None:
    config = AgentConfig(state_dir=tmp_path / "agent", server_url=server.url,
                         device_id="pi-2", source="tone:440", token=None)
    async with Agent(config) as agent:
        await asyncio.wait_for(agent.connected.wait(), 10)
        assert not agent.paired.is_set()
        status, _ = await api.post_json("/api/clients/pi-2/approve", {})
        assert status == 200
        await asyncio.wait_for(agent.paired.wait(), 10)
        assert agent.device_key is not None
        status, result = await api.post_json("/api/commands", {"action": "START",
                                                               "targets": ["pi-2"]})
        assert status == 200 and result["outcomes"]["pi-2"]["status"] == "SUCCESS", result
        status, result = await api.post_json("/api/commands", {"action": "STOP",
                                                               "targets": ["pi-2"]})
        assert status == 200, result
        # Its upload goes with its key, in its own name.
        await wait_until(lambda: len(agent.uploaded) == 1, timeout=20)


def _register(device_id: str, *, token: str | None = None,
              join_code: str | None = None) -> str:
    frame = {"type": "REGISTER", "device_id": device_id, "name": device_id, "protocol": 1}
    if token is not None:
        frame["token"] = token
    if join_code is not None:
        frame["join_code"] = join_code
    return json.dumps(frame)


async def test_a_lab_follows_the_join_code_and_who_waits(server: Server) -> None:
    """Another controller's new code, and a stranger arriving or leaving, reach every Lab
    by event; the expiry is in the Lab's own clock (from the seconds left)."""
    import time

    from vocalink_lab.lab import connect

    lab = await connect(server.url)
    other = Api(server.url)
    try:
        code = lab.join_code
        assert code and 0 < lab.pairing["join_code_expires_at"] - time.time() <= 900
        status, fresh = await other.post_json("/api/pairing", {})
        assert status == 200
        await wait_until(lambda: lab.join_code == fresh["join_code"] != code)
        async with FakeDevice(server.ws_url, "phone-9", token=""):
            await wait_until(lambda: lab.pairing["pending"] == ["phone-9"])
        await wait_until(lambda: lab.pairing["pending"] == [])
    finally:
        other.close()
        await lab.stop()
