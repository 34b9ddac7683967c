"""The cutting TCP proxy of `tests.support.proxy`: forwards faithfully, cuts where told."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.proxy import CuttingProxy
from tests.support.wait import wait_until

pytestmark = pytest.mark.asyncio
REPO = Path(__file__).resolve().parent.parent


class Sink:
    """A TCP server on 127.0.0.1 that reads each connection to its end.

    It answers ``got <n>`` once the client has half-closed, and queues ``n`` (the bytes
    it received on that connection) whether or not the connection ended cleanly.
    """

    def __init__(self) -> None:
        self.received: asyncio.Queue[int] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Sink:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while data := await reader.read(1 << 16):
                n += len(data)
            writer.write(f"got {n}".encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.received.put_nowait(n)
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[Sink]:
    server = await Sink().start()
    try:
        yield server
    finally:
        await server.stop()


async def send(port: int, payload: bytes, *, block: int = 1 << 16) -> bytes | None:
    """Send ``payload``, half-close, read the answer; None if the connection was cut."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(0, len(payload), block):
            writer.write(payload[i:i + block])
            await writer.drain()
        writer.write_eof()
        return await reader.read()
    except ConnectionError:
        return None
    finally:
        writer.close()


async def test_forwards_an_http_exchange_unchanged() -> None:
    requests: list[bytes] = []

    async def http_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = await reader.readexactly(length)
        requests.append(head + body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % length + body[::-1])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http_echo, "127.0.0.1", 0)
    body = os.urandom(3 * 2**20 + 17)
    request = (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream"
               b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    try:
        async with CuttingProxy("127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
            assert proxy.url == f"http://127.0.0.1:{proxy.port}"
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(request)
            await writer.drain()
            response = await reader.read()
            writer.close()
            assert requests == [request]
            head, _, answer = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and answer == body[::-1]
            assert proxy.bytes_up == len(request) and proxy.bytes_down == len(response)
            assert proxy.connections == 1 and proxy.cuts == 0 and proxy.cut_offsets == []
    finally:
        server.close()
        await server.wait_closed()


async def test_cuts_after_n_bytes_max_cuts_times_then_passes(sink: Sink) -> None:
    n, k = 10_000, 3
    payload = os.urandom(3 * n)
    async with CuttingProxy("127.0.0.1", sink.port, cut_after_bytes=n, max_cuts=k) as proxy:
        for i in range(k + 2):
            answer = await send(proxy.port, payload, block=4096)
            received = await asyncio.wait_for(sink.received.get(), 10)
            if i < k:  # cut: the target got exactly n bytes, the client no answer
                assert received == n and answer in (None, b"")
            else:
                assert received == 3 * n and answer == f"got {3 * n}".encode()
        assert proxy.cuts == k and proxy.connections == k + 2
        assert proxy.cut_offsets == [n * (i + 1) for i in range(k)]
        assert proxy.bytes_up == k * n + 2 * 3 * n


async def test_the_client_sees_a_reset_mid_request(sink: Sink) -> None:
    async with CuttingProxy("127.0.0.1", sink.port, cut_after_bytes=1000) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x" * 5000)
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(10):
                while True:  # keeps sending until the reset shows
                    await writer.drain()
                    if not await reader.read(100):
                        raise ConnectionResetError("EOF")  # an EOF counts too
                    writer.write(b"x")
        writer.close()
        assert await asyncio.wait_for(sink.received.get(), 10) == 1000
        assert proxy.cuts == 1


async def test_cut_at_cuts_at_cumulative_offsets_across_connections(sink: Sink) -> None:
    offsets = [1000, 250_000, 600_000]
    async with CuttingProxy("127.0.0.1", sink.port, cut_at=offsets) as proxy:
        got = []
        for _ in range(4):
            answer = await send(proxy.port, bytes(400_000))
            got.append((await asyncio.wait_for(sink.received.get(), 10), answer))
        assert [n for n, _ in got] == [1000, 249_000, 350_000, 400_000]
        assert all(answer in (None, b"") for _, answer in got[:3])
        assert got[3][1] == b"got 400000"
        assert proxy.cuts == 3 and proxy.cut_offsets == offsets
        assert proxy.bytes_up == 1000 + 249_000 + 350_000 + 400_000


async def test_cut_at_cuts_the_connection_carrying_the_byte(sink: Sink) -> None:
    size = 2**20
    async with CuttingProxy("127.0.0.1", sink.port, cut_at=[700_000]) as proxy:
        answers = await asyncio.gather(send(proxy.port, os.urandom(size)),
                                       send(proxy.port, os.urandom(size)))
        received = sorted([await asyncio.wait_for(sink.received.get(), 10) for _ in range(2)])
        assert proxy.cuts == 1 and proxy.cut_offsets == [700_000]
        assert received[1] == size and 0 < received[0] <= 700_000
        assert proxy.bytes_up == received[0] + size
        full = f"got {size}".encode()
        assert sorted(a == full for a in answers) == [False, True]
        assert all(a in (None, b"", full) for a in answers)


async def test_refuses_a_target_off_loopback_and_mixed_modes() -> None:
    with pytest.raises(ValueError, match="loopback"):
        CuttingProxy("192.0.2.1", 80)
    with pytest.raises(ValueError, match="not both"):
        CuttingProxy("127.0.0.1", 80, cut_after_bytes=1, cut_at=[5])
    with pytest.raises(ValueError):
        CuttingProxy("127.0.0.1", 80, cut_at=[5, 5])


async def test_stop_ends_open_connections(sink: Sink) -> None:
    proxy = await CuttingProxy("127.0.0.1", sink.port).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"hello")
    await writer.drain()
    await wait_until(lambda: proxy.bytes_up == 5, timeout=5)  # passed on to the sink
    await asyncio.wait_for(proxy.stop(), 5)
    with contextlib.suppress(ConnectionError):  # an EOF or a reset
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert await asyncio.wait_for(sink.received.get(), 10) == 5


async def test_script_prints_its_url_then_its_counters(sink: Sink) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.proxy", "--target-port", str(sink.port),
        "--cut-after-bytes", "100", "--max-cuts", "1", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        assert await send(port, b"a" * 1000) in (None, b"")
        assert await send(port, b"b" * 1000) == b"got 1000"
        assert [await sink.received.get() for _ in range(2)] == [100, 1000]
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        stats = json.loads(out.decode().strip().splitlines()[-1])
        assert stats["cuts"] == 1 and stats["connections"] == 2
        assert stats["bytes_up"] == 1100 and stats["cut_offsets"] == [100]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
