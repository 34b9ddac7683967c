"""HTTPS and HTTP on one port: the first byte of each connection tells which.

Real servers on 127.0.0.1:0 with ``tls=True`` (by default TLS is on only beyond loopback),
real TLS clients that trust only the data dir's CA, and raw sockets for the connections
that say nothing, or stall in the middle of a handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tests.conftest import fast_settings, running
from tests.support.device import FakeDevice
from tests.support.http import Api, auth_headers
from tests.support.wait import wait_until
from vocalink_lab.server import Server
from vocalink_lab.server.connections import IDLE_JITTER
from vocalink_lab.server.tls import ensure_tls

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[Server]:
    """TLS forced on, on loopback; a short head deadline, a long idle one."""
    async with running(fast_settings(tmp_path / "data", tls=True, idle_timeout_s=5.0,
                                     header_timeout_s=0.5)) as server:
        yield server


def trusting(ca_pem: bytes) -> ssl.SSLContext:
    """A client context that trusts ``ca_pem`` and nothing else."""
    return ssl.create_default_context(cadata=ca_pem.decode())


def held(server: Server) -> int:
    assert server._listener is not None
    return server._listener.held


async def fetch(url: str, context: ssl.SSLContext | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    client = AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(HTTPRequest(url, headers=headers, ssl_options=context,
                                                  request_timeout=10), raise_error=False)
    finally:
        client.close()
    if response.code == 599 and response.error is not None:
        raise response.error
    return response.code, response.body or b""


async def connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def read_to_end(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def client_hello() -> bytes:
    """The first flight of a TLS client: one ClientHello, nothing after it."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


# -- both schemes ---------------------------------------------------------------------------


async def test_https_is_served_with_the_data_dirs_ca(tls_server: Server) -> None:
    assert tls_server.tls is not None
    context = trusting(tls_server.tls.ca_pem)
    status, body = await fetch(f"https://127.0.0.1:{tls_server.port}/ping", context)
    assert status == 200, body


async def test_the_server_info_over_https_tells_the_pin(tls_server: Server) -> None:
    assert tls_server.tls is not None
    status, body = await fetch(f"https://127.0.0.1:{tls_server.port}/api/server",
                               trusting(tls_server.tls.ca_pem), headers=auth_headers())
    assert status == 200, body
    tls = json.loads(body)["tls"]
    assert tls == {"enabled": True, "ca_fingerprint": tls_server.tls.ca_fingerprint,
                   "https_url": f"https://127.0.0.1:{tls_server.port}"}


async def test_plain_http_still_works_on_the_same_port(tls_server: Server) -> None:
    api = Api(tls_server.url)
    try:
        status, _ = await api.get("/ping")
        assert status == 200
        status, info = await api.get("/api/server")
        assert status == 200
        assert info["tls"]["enabled"] is True
    finally:
        api.close()


async def test_a_client_trusting_another_ca_refuses_the_server(tls_server: Server,
                                                                tmp_path: Path) -> None:
    other = await asyncio.to_thread(ensure_tls, tmp_path / "other", addresses=["127.0.0.1"],
                                    names=["localhost"])
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", tls_server.port,
                                      ssl=trusting(other.ca_pem), server_hostname="127.0.0.1")
    # The server is none the worse for it.
    assert tls_server.tls is not None
    status, _ = await fetch(f"https://127.0.0.1:{tls_server.port}/ping",
                            trusting(tls_server.tls.ca_pem))
    assert status == 200


# -- connections that say nothing, or too little --------------------------------------------


async def test_a_silent_connection_is_closed_and_its_slot_released(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data", tls=True, idle_timeout_s=0.5,
                                     header_timeout_s=0.5)) as server:
        assert server.port is not None
        before = held(server)
        sock = await connect(server.port)
        try:
            await wait_until(lambda: held(server) == before + 1, timeout=5)
            assert await read_to_end(sock, timeout=5) == b""  # closed without a word
        finally:
            sock.close()
        await wait_until(lambda: held(server) == before, timeout=5)


async def test_connections_closed_before_a_byte_release_their_slots(tmp_path: Path) -> None:
    """Two silent connections fill the per-address cap; the next is refused (503); once
    they close, unanswered, their slots are free again."""
    async with running(fast_settings(tmp_path / "data", tls=True, idle_timeout_s=30.0,
                                     max_connections_per_ip=2)) as server:
        assert server.port is not None
        before = held(server)
        silent = [await connect(server.port), await connect(server.port)]
        await wait_until(lambda: held(server) == before + 2, timeout=5)
        refused = await connect(server.port)
        try:
            assert (await read_to_end(refused, timeout=5)).startswith(b"HTTP/1.1 503 ")
        finally:
            refused.close()
        assert held(server) == before + 2  # a refusal never held a slot
        for sock in silent:
            sock.close()
        await wait_until(lambda: held(server) == before, timeout=5)
        assert server.tls is not None
        status, _ = await fetch(f"https://127.0.0.1:{server.port}/ping",
                                trusting(server.tls.ca_pem))
        assert status == 200


async def test_a_stalled_handshake_is_closed_within_the_head_deadline(
        tls_server: Server) -> None:
    assert tls_server.port is not None
    before = held(tls_server)
    sock = await connect(tls_server.port)
    try:
        await asyncio.get_running_loop().sock_sendall(sock, client_hello())
        started = time.monotonic()
        # The server answers its part of the handshake, then closes; long before the idle
        # timeout (5 s), which would close a silent connection.
        await read_to_end(sock, timeout=4)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert elapsed <= tls_server.settings.header_timeout_s * (1 + IDLE_JITTER) + 1.0
    await wait_until(lambda: held(tls_server) == before, timeout=5)


# -- TLS off --------------------------------------------------------------------------------


async def test_with_tls_off_https_fails_and_http_works(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data", tls=False)) as server:
        assert server.tls is None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
        api = Api(server.url)
        try:
            status, info = await api.get("/api/server")
        finally:
            api.close()
        assert status == 200
        assert info["tls"] == {"enabled": False, "ca_fingerprint": None, "https_url": None}


async def test_tls_is_off_by_default_on_loopback(server: Server, api: Api) -> None:
    assert server.tls is None
    status, info = await api.get("/api/server")
    assert status == 200
    assert info["tls"]["enabled"] is False


@pytest.mark.parametrize(("host", "tls", "wanted"), [
    ("127.0.0.1", None, False), ("::1", None, False), ("localhost", None, False),
    ("0.0.0.0", None, True), ("::", None, True), ("192.0.2.20", None, True),
    ("0.0.0.0", False, False), ("127.0.0.1", True, True),
])
async def test_tls_by_default_only_beyond_loopback(tmp_path: Path, host: str,
                                                   tls: bool | None, wanted: bool) -> None:
    settings = fast_settings(tmp_path / "data", host=host)
    if tls is not None:
        settings = settings.replace(tls=tls)
    assert Server(settings).tls_wanted is wanted


async def test_a_device_registers_over_wss_and_is_commanded(tls_server: Server) -> None:
    """A phone's page is served over HTTPS, so its socket is ``wss://``: the same session,
    run on the TLS stream. REGISTER, WELCOME, a command and its ACK, a SYNC probe."""
    assert tls_server.tls is not None
    url = f"wss://127.0.0.1:{tls_server.port}/ws/control"
    api = Api(tls_server.url)
    async with FakeDevice(url, "phone-1", ssl_context=trusting(tls_server.tls.ca_pem)) as device:
        assert device.welcome is not None and device.welcome.server_id == tls_server.hub.server_id
        status, result = await api.post_json("/api/commands", {"action": "START"})
        assert status == 200 and result["ok"], result
        assert {d: o["status"] for d, o in result["outcomes"].items()} == {"phone-1": "SUCCESS"}
        sample = await tls_server.hub.sync("phone-1")
        assert sample is not None
        status, info = await api.get("/api/clients/phone-1")
        assert status == 200 and info["connected"] is True and info["remote"] == "127.0.0.1"


async def test_a_wss_device_is_counted_once_and_its_slot_comes_back(tls_server: Server) -> None:
    """Its stream leaves the listener's count for the sessions' (not both), and a device
    that leaves is forgotten by both."""
    assert tls_server.tls is not None
    before = held(tls_server)
    url = f"wss://127.0.0.1:{tls_server.port}/ws/control"
    async with FakeDevice(url, "phone-2", ssl_context=trusting(tls_server.tls.ca_pem)):
        await wait_until(lambda: len(tls_server.sessions) == 1)
        assert held(tls_server) == before
    await wait_until(lambda: not tls_server.sessions and held(tls_server) == before)
    status, _ = await fetch(f"https://127.0.0.1:{tls_server.port}/ping",
                            trusting(tls_server.tls.ca_pem))
    assert status == 200


async def test_a_wss_device_that_vanishes_goes_offline(tmp_path: Path) -> None:
    """A phone that drops off the Wi-Fi (its TCP connection just stops) is found by the
    keep-alive over TLS, as over plain TCP, and its slot comes back."""
    settings = fast_settings(tmp_path / "data", tls=True, heartbeat_s=0.3)
    async with running(settings) as server:
        assert server.tls is not None
        sock = await connect(server.port)
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=trusting(server.tls.ca_pem), server_hostname="127.0.0.1")
        writer.write(b"GET /ws/control HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        await wait_until(lambda: len(server.sessions) == 1)
        # Never answers a ping, never registers: closed by the register deadline or the
        # keep-alive, whichever first; both run on the TLS stream.
        started = loop.time()
        await wait_until(lambda: not server.sessions, timeout=10)
        assert loop.time() - started < 10
        writer.close()




async def test_a_new_address_gets_a_new_certificate_under_the_same_pin(
        tls_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop that joins another Wi-Fi: the certificate is re-issued for its new address
    (the interfaces are the hardware faked here); the CA, and so the pin, stay."""
    from vocalink_lab.server import app

    assert tls_server.tls is not None
    pin, before = tls_server.tls.ca_fingerprint, tls_server.tls.sans
    assert await tls_server.refresh_tls() is False  # nothing changed: nothing written
    real = app.local_addresses
    monkeypatch.setattr(app, "local_addresses",
                        lambda host: [*real(host), "192.0.2.44"])
    assert await tls_server.refresh_tls() is True
    assert "192.0.2.44" in tls_server.tls.sans and "192.0.2.44" not in before
    assert tls_server.tls.ca_fingerprint == pin
    # A new connection is served the new certificate, trusted by the same CA.
    context = trusting(tls_server.tls.ca_pem)
    context.check_hostname = False
    _, writer = await asyncio.open_connection("127.0.0.1", tls_server.port, ssl=context)
    try:
        cert = writer.get_extra_info("peercert")
        assert ("IP Address", "192.0.2.44") in cert["subjectAltName"]
    finally:
        writer.close()
    status, _ = await fetch(f"https://127.0.0.1:{tls_server.port}/ping",
                            trusting(tls_server.tls.ca_pem))
    assert status == 200
