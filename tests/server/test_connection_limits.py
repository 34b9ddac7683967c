"""Connections that hold on: idle, stalled heads and bodies, too many, and no descriptor left.

In-process servers (port 0) with short timeouts show each rule; servers in a child
process under ``ulimit -n 1024`` (``tests.support.limited_server``) take 2,000 idle
connections, past their open-file limit. The idle connections come from 127.0.0.2 (all of
127/8 is loopback), the requests that must still be served from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from tests.conftest import fast_settings, running
from tests.support.audio import encode
from tests.support.errors import assert_error_response
from tests.support.http import Api, multipart_body
from tests.support.rawhttp import with_token
from tests.support.wait import wait_until
from vocalink_lab.server import Server
from vocalink_lab.server.connections import IDLE_JITTER, connection_budget

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).parents[2]
FLOOD = 2000
LOG_BOUND = 100_000
TUS = {"Tus-Resumable": "1.0.0"}


# -- raw connections ------------------------------------------------------------------------


async def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connected non-blocking socket from ``source`` (any 127.x.y.z address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def read_to_end(sock: socket.socket, timeout: float = 10.0) -> bytes:
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


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def get_ping(port: int, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """``GET /ping`` over a fresh connection from ``source``, ``Connection: close``."""
    sock = await connect(port, source)
    try:
        await asyncio.get_running_loop().sock_sendall(
            sock, b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return parse_response(await read_to_end(sock))
    finally:
        sock.close()


@pytest_asyncio.fixture
async def strict_server(tmp_path: Path) -> AsyncIterator[Server]:
    """Short connection timeouts (upload idle timer long, so it never decides here)."""
    server = Server(fast_settings(tmp_path / "data", idle_timeout_s=0.5, header_timeout_s=0.5,
                                  body_timeout_s=0.5, upload_idle_timeout_s=30.0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# -- timeouts -------------------------------------------------------------------------------


async def test_an_idle_connection_is_closed(strict_server: Server) -> None:
    assert strict_server.port is not None
    sock = await connect(strict_server.port)
    try:
        assert await read_to_end(sock) == b""  # closed by the server, nothing said
    finally:
        sock.close()


async def test_idle_connections_opened_together_are_not_closed_together(
        strict_server: Server) -> None:
    """Each idle deadline is drawn up to a quarter longer (`IDLE_JITTER`): a crowd opened at
    once leaves over a spread of time, not in one turn of the event loop (where closing,
    and the reconnections that follow, held every other request up)."""
    assert strict_server.port is not None
    loop = asyncio.get_running_loop()
    socks = [await connect(strict_server.port) for _ in range(40)]
    opened = loop.time()

    async def closed_after(sock: socket.socket) -> float:
        assert await read_to_end(sock) == b""
        return loop.time() - opened

    try:
        after = sorted(await asyncio.gather(*(closed_after(s) for s in socks)))
    finally:
        for sock in socks:
            sock.close()
    idle = strict_server.settings.idle_timeout_s
    assert after[0] >= idle * 0.95, after  # never before the idle timeout
    assert after[-1] <= idle * (1 + IDLE_JITTER) + 0.5, after  # bounded
    assert after[-1] - after[0] >= idle * 0.05, after  # spread, not all at once


async def test_a_keep_alive_connection_serves_then_is_closed_when_idle(
    strict_server: Server,
) -> None:
    assert strict_server.port is not None
    loop = asyncio.get_running_loop()
    sock = await connect(strict_server.port)
    try:
        await loop.sock_sendall(sock, b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, body = parse_response(await read_to_end(sock))
        assert status == 200 and json.loads(body) == {"status": "server alive"}
    finally:
        sock.close()


async def test_a_stalled_request_head_gets_408(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "data", idle_timeout_s=30.0, header_timeout_s=0.5)
    async with running(settings) as server:
        assert server.port is not None
        sock = await connect(server.port)
        try:
            await asyncio.get_running_loop().sock_sendall(sock, b"GET /ping HTTP/1.1\r\nHo")
            status, headers, body = parse_response(await read_to_end(sock))
        finally:
            sock.close()
        assert_error_response(status, headers, body, 408,
                              "did not arrive within 0.5 s of its first byte",
                              code="request_timeout")
        assert (await get_ping(server.port))[0] == 200


async def test_a_head_sent_byte_by_byte_still_has_its_deadline(tmp_path: Path) -> None:
    """Trickling bytes does not buy time: the deadline runs from the head's first byte."""
    settings = fast_settings(tmp_path / "data", idle_timeout_s=30.0, header_timeout_s=0.5)
    async with running(settings) as server:
        assert server.port is not None
        loop = asyncio.get_running_loop()
        sock = await connect(server.port)
        try:
            answer = asyncio.ensure_future(read_to_end(sock, timeout=30))
            head = b"GET /ping HTTP/1.1\r\n" + b"X-Slow: " + b"x" * 10_000
            sent = 0
            while not answer.done() and sent < len(head):  # a client sending slowly
                await loop.sock_sendall(sock, head[sent:sent + 1])
                sent += 1
                await asyncio.sleep(0.02)
            status, headers, body = parse_response(await answer)
        finally:
            sock.close()
        assert sent < len(head), "the whole head went out before any answer"
        assert_error_response(status, headers, body, 408, code="request_timeout")


async def test_a_stalled_json_body_is_closed(strict_server: Server) -> None:
    assert strict_server.port is not None
    sock = await connect(strict_server.port)
    try:
        await asyncio.get_running_loop().sock_sendall(
            sock, with_token(b"POST /api/commands HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                             b"{\"action\""))
        assert await read_to_end(sock) == b""
    finally:
        sock.close()
    assert (await get_ping(strict_server.port))[0] == 200


async def send_slowly(port: int, head: bytes, body: bytes, *, pieces: int = 10,
                      longer_than: float) -> tuple[int, dict[str, str], bytes]:
    """A slow link: the body goes out in ``pieces``, over more than ``longer_than`` s."""
    loop = asyncio.get_running_loop()
    sock = await connect(port)
    try:
        await loop.sock_sendall(sock, with_token(head))
        started = loop.time()
        size = -(-len(body) // pieces)
        for i in range(0, len(body), size):
            await loop.sock_sendall(sock, body[i:i + size])
            await asyncio.sleep(longer_than / (pieces - 1))
        assert loop.time() - started > longer_than  # the premise
        return parse_response(await read_to_end(sock))
    finally:
        sock.close()


async def test_uploads_outlast_the_body_timeout(strict_server: Server, api: Api) -> None:
    """Slow uploads go on past body_timeout_s: their own idle timer is what counts."""
    port = strict_server.port
    assert port is not None
    wav = encode("wav", seconds=1.0)
    body, ctype = multipart_body(wav, recording_id="rec-slow")
    head = (f"POST /api/audio/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    status, _, raw = await send_slowly(port, head, body,
                                       longer_than=2 * strict_server.settings.body_timeout_s)
    assert status == 201 and json.loads(raw)["file_id"] == "rec-slow", raw

    status, _, headers, _ = await api.request("POST", "/api/audio/uploads", headers={
        **TUS, "Upload-Length": str(len(wav)), "Upload-Metadata": "recording_id cmVjLXR1cw=="})
    assert status == 201
    head = (f"PATCH {headers['Location']} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {len(wav)}\r\nConnection: close\r\n\r\n").encode()
    status, headers, raw = await send_slowly(
        port, head, wav, longer_than=2 * strict_server.settings.body_timeout_s)
    assert status == 204 and headers["Vocalink-Recording-Id"] == "rec-tus", raw


# -- caps -----------------------------------------------------------------------------------


async def test_connections_past_the_per_address_cap_get_503(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data", max_connections_per_ip=3)) as server:
        port = server.port
        assert port is not None
        idle = [await connect(port, "127.0.0.2") for _ in range(3)]
        try:
            async def refused() -> bool:  # the three are counted once accepted
                status, headers, body = await get_ping(port, "127.0.0.2")
                return status == 503 and bool(headers and body)

            await wait_until(refused, timeout=10)
            status, headers, body = await get_ping(port, "127.0.0.2")
            assert_error_response(status, headers, body, 503,
                                  "127.0.0.2 holds 3 connections, the limit per address "
                                  "(VOCALINK_MAX_CONNECTIONS_PER_IP)", code="too_busy")
            assert headers["Retry-After"] == "1"
            assert (await get_ping(port, "127.0.0.1"))[0] == 200  # another address: served
        finally:
            idle.pop().close()
            for sock in idle:
                sock.close()

        async def served_again() -> bool:
            return (await get_ping(port, "127.0.0.2"))[0] == 200

        await wait_until(served_again, timeout=10)


async def test_connections_past_the_total_cap_get_503(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data", max_connections=4)) as server:
        port = server.port
        assert port is not None
        idle = [await connect(port, f"127.0.0.{2 + i}") for i in range(4)]
        try:
            async def refused() -> bool:
                return (await get_ping(port, "127.0.0.9"))[0] == 503

            await wait_until(refused, timeout=10)
            status, headers, body = await get_ping(port, "127.0.0.9")
            assert_error_response(status, headers, body, 503,
                                  "the server holds 4 connections, its limit "
                                  "(VOCALINK_MAX_CONNECTIONS", code="too_busy")
        finally:
            for sock in idle:
                sock.close()

        async def served_again() -> bool:
            return (await get_ping(port, "127.0.0.9"))[0] == 200

        await wait_until(served_again, timeout=10)


async def test_the_cap_stays_below_the_open_file_limit(server: Server, api: Api) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard  # the server raised its process's soft limit to the hard one
    _, info = await api.get("/api/server")
    limits = info["limits"]
    assert limits["max_connections"] == connection_budget(4096, soft) <= soft - 64
    assert limits["max_connections_per_ip"] == 256


# -- a server process under ulimit -n 1024 ---------------------------------------------------


class LimitedServer:
    """``tests.support.limited_server`` in a child process; its log in a file."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = tmp_path / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.limited_server", str(tmp_path / "data"),
             "--max-s", "120", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT,
            env={**os.environ, **(env or {})})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise AssertionError(f"the server did not start:\n{self.log_path.read_text()}")
        self.info = json.loads(line)
        self.port = int(self.info["url"].rsplit(":", 1)[1])
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def many_files() -> Iterator[None]:
    """This process needs a descriptor per flood connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FLOOD + 500
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"the open-file hard limit ({hard}) is below {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield


async def flood(port: int, n: int, source: str = "127.0.0.2") -> list[socket.socket]:
    """``n`` idle connections from ``source``, opened 100 at a time (each given 2 s)."""
    socks: list[socket.socket] = []

    async def one() -> None:
        with contextlib.suppress(OSError, TimeoutError):
            socks.append(await asyncio.wait_for(connect(port, source), 2))

    for start in range(0, n, 100):
        await asyncio.gather(*(one() for _ in range(min(100, n - start))))
    return socks


async def cpu_goes_idle(server: LimitedServer, seen: list[float]) -> None:
    """Wait until the server uses under 10 % of a core over a second (records each window)."""
    async def idle() -> bool:
        before = server.cpu_s()
        await asyncio.sleep(1.0)  # a measuring window, not a wait for something to happen
        seen.append(server.cpu_s() - before)
        return seen[-1] < 0.1

    try:
        await wait_until(idle, timeout=30)
    except AssertionError:
        raise AssertionError(f"the server stayed busy: CPU s per 1 s window {seen}") from None


async def ping(url: str) -> int:
    api = Api(url)
    try:
        status, _, _, _ = await api.request("GET", "/ping", timeout=5)
        return status
    finally:
        api.close()


@pytest.mark.slow
async def test_2000_idle_connections_under_ulimit_1024(tmp_path: Path, many_files: None) -> None:
    """Past the open-file limit (the server spun at 100 % CPU and logged 46 MB in 6 s)."""
    server = LimitedServer(tmp_path, "--nofile", "1024")
    socks: list[socket.socket] = []
    try:
        assert server.info["open_files"] == [1024, 1024]
        assert server.info["limits"]["max_connections"] == 896  # 1024 less an eighth
        baseline_fds = server.ps.num_fds()
        socks = await flood(server.port, FLOOD)
        assert len(socks) > 1024  # the test's side: the connections are there
        assert await ping(server.info["url"]) == 200  # another address is served
        cpu: list[float] = []
        await cpu_goes_idle(server, cpu)
        fds = server.ps.num_fds()
        assert fds <= baseline_fds + 256 + 64 + 8  # its cap per address, refusals, a few more
        assert await ping(server.info["url"]) == 200
        assert server.log_bytes() < LOG_BOUND, server.log_path.read_text()[-2000:]
        print(f"\n{len(socks)} idle connections: server fds {baseline_fds} -> {fds}, CPU s per "
              f"1 s window {[round(c, 3) for c in cpu]}, log {server.log_bytes()} bytes")
        for sock in socks:
            sock.close()
        socks = []
        await wait_until(lambda: server.ps.num_fds() <= baseline_fds + 2, timeout=30)
    finally:
        for sock in socks:
            sock.close()
        server.stop()


@pytest.mark.slow
async def test_out_of_descriptors_the_server_neither_spins_nor_floods_its_log(
    tmp_path: Path, many_files: None
) -> None:
    """``accept()`` fails with EMFILE: connections are closed unanswered, one warning per
    10 s, and the server serves again once descriptors are free."""
    server = LimitedServer(tmp_path, "--nofile", "1024", "--leave-free", "40")
    socks: list[socket.socket] = []
    try:
        socks = await flood(server.port, FLOOD)
        cpu: list[float] = []
        await cpu_goes_idle(server, cpu)
        log = server.log_path.read_text()
        assert "out of file descriptors" in log and "Traceback" not in log, log[-2000:]
        assert server.log_bytes() < LOG_BOUND, log[-2000:]
        fds = server.ps.num_fds()
        assert fds <= 1024
        print(f"\nout of descriptors: server fds {fds}/1024, CPU s per 1 s window "
              f"{[round(c, 3) for c in cpu]}, log {server.log_bytes()} bytes")
        for sock in socks:  # the clients leave: their descriptors come back
            sock.close()
        socks = []

        async def served() -> bool:
            with contextlib.suppress(OSError):
                return await ping(server.info["url"]) == 200
            return False

        await wait_until(served, timeout=30)
        assert server.log_bytes() < LOG_BOUND
    finally:
        for sock in socks:
            sock.close()
        server.stop()


async def test_the_soft_open_file_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard open-file limit is {hard}: nothing to raise to")
    target = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    server = LimitedServer(tmp_path, "--nofile", f"1024:{target}")
    try:
        assert server.info["open_files"] == [target, target]
        assert server.ps.rlimit(psutil.RLIMIT_NOFILE) == (target, target)
        assert server.info["limits"]["max_connections"] == connection_budget(4096, target)
    finally:
        server.stop()
