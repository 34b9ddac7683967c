"""Hand-written HTTP requests over a raw socket: lying lengths, stalls, odd headers.

What an ordinary client would never send (a ``Host`` that is not ours, a length that
lies, a body cut short) goes out exactly as written, and the answer is read while the
body is still going out.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tests.support.errors import assert_error_response


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    interim: list[int]  # 1xx status codes seen before the final response

    def check(self, status: int, contains: str) -> None:
        assert_error_response(self.status, self.headers, self.body, status, contains)


def with_token(head: bytes) -> bytes:
    """``head`` with the suite's ``Authorization: Bearer`` after its request line.

    Unless it has one already: the request is what a test wrote, and the token is what
    every client of ours sends.
    """
    if b"\r\nauthorization:" in head.lower() or b"\r\n" not in head:
        return head
    line, rest = head.split(b"\r\n", 1)
    token = os.environ["VOCALINK_TOKEN"].encode()
    return line + b"\r\nAuthorization: Bearer " + token + b"\r\n" + rest


async def raw_request(port: int, head: bytes, body: Iterable[bytes] = (), *,
                      timeout: float = 10.0, auth: bool = True,
                      on_sent: Callable[[int], Any] | None = None) -> RawResponse:
    """Send a hand-written request, reading the answer while the body is still going out.

    A server that refuses a body early answers and closes; the client then gets a
    reset on its next write, but the answer is already in its receive buffer. The
    suite's token goes with it (`with_token`) unless ``auth`` is False.
    """
    if auth:
        head = with_token(head)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, head)
            reader = asyncio.ensure_future(read_response(loop, sock))
            sent = 0
            for part in body:
                if reader.done():
                    break
                try:
                    await loop.sock_sendall(sock, part)
                except OSError:
                    break  # refused and closed: the answer is waiting
                sent += len(part)
                if on_sent is not None:
                    await on_sent(sent)
            return await reader
    finally:
        sock.close()


async def read_response(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> RawResponse:
    buffer, interim = b"", []
    while True:
        while b"\r\n\r\n" not in buffer:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, f"connection closed before a response: {buffer!r}"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if 100 <= status < 200 and status != 101:  # 101 ends HTTP on this connection
            interim.append(status)
            continue
        length = int(headers.get("Content-Length", "0"))
        while len(buffer) < length:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, "connection closed in the middle of the response body"
            buffer += chunk
        return RawResponse(status, headers, buffer[:length], interim)
