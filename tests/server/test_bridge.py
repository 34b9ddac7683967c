"""`StreamTransport`: an asyncio protocol driven by a Tornado stream (the wss path).

Real sockets (a connected pair); a protocol that records what it is told.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import tornado.iostream

from tests.support.wait import wait_until
from vocalink_lab.server.bridge import StreamTransport

pytestmark = pytest.mark.asyncio


class Recorder(asyncio.Protocol):
    """Keeps every call; ``connection_lost`` must come exactly once."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.calls: list[str] = []
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.calls.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool | None:
        self.calls.append("eof")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("lost")
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")


@pytest_asyncio.fixture
async def pair() -> AsyncIterator[tuple[StreamTransport, Recorder, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    protocol = Recorder()
    transport = StreamTransport(tornado.iostream.IOStream(ours), protocol)
    try:
        yield transport, protocol, peer
    finally:
        transport.abort()
        peer.close()


async def test_bytes_arrive_in_order_then_eof_then_lost_once(pair) -> None:  # type: ignore[no-untyped-def]
    transport, protocol, peer = pair
    loop = asyncio.get_running_loop()
    sent = bytes(range(256)) * 1024
    await loop.sock_sendall(peer, sent)
    await wait_until(lambda: len(protocol.data) == len(sent))
    assert bytes(protocol.data) == sent
    peer.shutdown(socket.SHUT_WR)
    await wait_until(lambda: "lost" in protocol.calls)
    assert protocol.calls == ["made", "eof", "lost"] and protocol.lost == [None]
    assert transport.is_closing()


async def test_a_peer_that_does_not_read_pauses_writing_then_resumes(pair) -> None:  # type: ignore[no-untyped-def]
    transport, protocol, peer = pair
    loop = asyncio.get_running_loop()
    transport.set_write_buffer_limits(high=64 * 1024)
    chunk = b"x" * 65536
    # A socketpair's kernel buffers take a few hundred KiB: write until the stream holds some.
    written = 0
    while "pause" not in protocol.calls and written < 64 * 2**20:
        transport.write(chunk)
        written += len(chunk)
        await asyncio.sleep(0)
    assert "pause" in protocol.calls and transport.get_write_buffer_size() > 64 * 1024
    received = 0
    while received < written:
        received += len(await loop.sock_recv(peer, 2**20))
    assert received == written
    await wait_until(lambda: "resume" in protocol.calls)
    assert transport.get_write_buffer_size() == 0
    assert protocol.calls.index("pause") < protocol.calls.index("resume")


async def test_close_flushes_what_is_buffered_first(pair) -> None:  # type: ignore[no-untyped-def]
    transport, protocol, peer = pair
    loop = asyncio.get_running_loop()
    payload = b"y" * (3 * 2**20)
    transport.write(payload)
    transport.close()
    transport.write(b"ignored after close")
    assert transport.is_closing()
    received = bytearray()
    while chunk := await loop.sock_recv(peer, 2**20):
        received += chunk
    assert bytes(received) == payload
    await wait_until(lambda: "lost" in protocol.calls)
    assert protocol.calls.count("lost") == 1


async def test_a_peer_leaving_while_reading_is_paused_still_ends_it(pair) -> None:  # type: ignore[no-untyped-def]
    transport, protocol, peer = pair
    loop = asyncio.get_running_loop()
    transport.pause_reading()
    assert not transport.is_reading()
    await asyncio.sleep(0)  # the reader is parked on the pause
    await loop.sock_sendall(peer, b"held back")
    peer.close()
    # Writing finds the peer gone (as a ping would): the stream closes, the reader wakes.
    await wait_until(lambda: transport.write(b"ping") or "lost" in protocol.calls)
    assert protocol.calls.count("lost") == 1


async def test_resumed_reading_delivers_what_waited(pair) -> None:  # type: ignore[no-untyped-def]
    transport, protocol, peer = pair
    loop = asyncio.get_running_loop()
    transport.pause_reading()
    await asyncio.sleep(0)
    await loop.sock_sendall(peer, b"first")
    # Nothing is passed on while paused (a negative: the loop gets a tenth of a second).
    await asyncio.sleep(0.1)
    assert protocol.data == b""
    transport.resume_reading()
    await loop.sock_sendall(peer, b"second")
    await wait_until(lambda: bytes(protocol.data) == b"firstsecond")
