"""Host and Origin: a rebinding name or another site's page gets 403, in the one shape."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tests.conftest import fast_settings
from tests.support.errors import assert_error_shape
from tests.support.rawhttp import raw_request
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio


async def raw(port: int, head: str) -> tuple[int, dict[str, str], bytes]:
    """One request over a raw socket, with exactly the headers given (Host included)."""
    answer = await raw_request(port, head.encode())
    return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.body


def get(path: str, host: str, **headers: str) -> str:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n"


def upgrade(path: str, host: str, origin: str | None) -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    origin_line = f"Origin: {origin}\r\n" if origin is not None else ""
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{origin_line}\r\n")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "vocalink.evil.example.",
                                  "srv-000000000000.local", "localhost.evil.example"])
async def test_a_name_that_is_not_ours_is_refused_on_every_route(server: Server,
                                                                 host: str) -> None:
    assert server.port is not None
    for path in ("/ping", "/api/clients", "/api/audio/list", "/ws/events", "/nope"):
        status, headers, body = await raw(server.port, get(path, host))
        assert status == 403, (path, body)
        assert_error_shape(json.loads(body), 403, "forbidden")
        assert "does not answer to the name" in json.loads(body)["error"]
        assert "access-control-allow-origin" not in headers  # never any CORS


async def test_our_own_names_and_addresses_are_served(server: Server) -> None:
    assert server.port is not None and server.hub is not None
    port = server.port
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST",
                 f"[::1]:{port}", "192.0.2.7", f"{server.hub.server_id}.local:{port}"):
        status, _, body = await raw(port, get("/ping", host))
        assert status == 200, (host, body)


async def test_a_name_in_the_settings_is_served(tmp_path: Path) -> None:
    server = Server(fast_settings(tmp_path / "data", allowed_hosts=("Lab.Example.org",)))
    await server.start()
    try:
        assert server.port is not None
        assert (await raw(server.port, get("/ping", "lab.example.org:8765")))[0] == 200
        assert (await raw(server.port, get("/ping", "other.example.org")))[0] == 403
    finally:
        await server.stop()


@pytest.mark.parametrize("path", ["/ws/events", "/ws/control"])
async def test_a_page_of_another_origin_cannot_open_a_socket(server: Server, path: str) -> None:
    assert server.port is not None
    host = f"127.0.0.1:{server.port}"
    for origin in ("http://evil.example", "http://127.0.0.1", f"https://{host}", "null"):
        status, _, body = await raw(server.port, upgrade(path, host, origin))
        assert status == 403, (origin, body)
        error = assert_error_shape(json.loads(body), 403, "forbidden")
        assert "may not open this socket" in error["error"]
    for origin in (None, f"http://{host}", f"HTTP://{host.upper()}"):  # no browser; our own
        status, _, _ = await raw(server.port, upgrade(path, host, origin))
        assert status == 101, origin


async def test_an_origin_in_the_settings_may_open_the_sockets(tmp_path: Path) -> None:
    server = Server(fast_settings(tmp_path / "data",
                                  allowed_origins=("https://lab.example.org:443/",)))
    await server.start()
    try:
        assert server.port is not None
        host = f"127.0.0.1:{server.port}"
        for path in ("/ws/events", "/ws/control"):
            ok = await raw(server.port, upgrade(path, host, "https://lab.example.org"))
            assert ok[0] == 101
            refused = await raw(server.port, upgrade(path, host, "https://evil.example"))
            assert refused[0] == 403
    finally:
        await server.stop()
