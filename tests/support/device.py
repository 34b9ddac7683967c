"""A scripted test device: a real WebSocket client that speaks protocol v1.

It fakes only the hardware: it ACKs commands as told (success, failure, never,
late) and records every frame it gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    websocket_connect,
)

from vocalink_lab.protocol import (
    PROTOCOL_VERSION,
    Ack,
    AckStatus,
    Command,
    Message,
    Register,
    Sync,
    Welcome,
    decode,
    encode,
)


class FakeDevice:
    """Connects, registers and answers commands.

    Parameters
    ----------
    ws_url : str
        The server's ``/ws/control`` URL.
    device_id, name : str
        Identity sent in REGISTER.
    ack : "success", "failed" or "never"
        How to answer COMMANDs.
    ack_delay : float
        Seconds to wait before ACKing.
    clock_offset : float
        Seconds added to this device's clock (for SYNC answers).
    """

    def __init__(self, ws_url: str, device_id: str, name: str | None = None, *,
                 ack: str = "success", ack_delay: float = 0.0, clock_offset: float = 0.0,
                 register: bool = True, token: str | None = None,
                 join_code: str | None = None, ssl_context: Any = None) -> None:
        self.ws_url = ws_url
        #: For ``wss://``: the client's ``ssl.SSLContext`` (trusting the server's CA).
        self.ssl_context = ssl_context
        #: Presented in REGISTER: the suite's controller token (trusted) by default; ``""``
        #: for none (a stranger, pending), or a device key.
        self.token = os.environ.get("VOCALINK_TOKEN") if token is None else (token or None)
        self.join_code = join_code
        self.device_id = device_id
        self.name = name or device_id
        self.ack = ack
        self.ack_delay = ack_delay
        self.clock_offset = clock_offset
        self.register = register
        self.received: list[Message] = []
        self.errors: list[Any] = []
        self.welcome: Welcome | None = None
        self.conn: WebSocketClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._arrived = asyncio.Condition()
        self.closed = asyncio.Event()

    def now(self) -> float:
        return time.time() + self.clock_offset

    async def __aenter__(self) -> FakeDevice:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self.conn = await websocket_connect(
            HTTPRequest(self.ws_url, ssl_options=self.ssl_context))
        self.closed.clear()
        self._reader = asyncio.create_task(self._read())
        if self.register:
            await self.send(Register(device_id=self.device_id, name=self.name,
                                     protocol=PROTOCOL_VERSION, platform="test",
                                     token=self.token, join_code=self.join_code))
            self.welcome = await self.wait_for(Welcome)  # type: ignore[assignment]

    async def send(self, message: Message | str) -> None:
        assert self.conn is not None
        await self.conn.write_message(message if isinstance(message, str) else encode(message))

    async def _read(self) -> None:
        assert self.conn is not None
        while True:
            text = await self.conn.read_message()
            if text is None:
                self.closed.set()
                async with self._arrived:
                    self._arrived.notify_all()
                return
            message = decode(text)
            async with self._arrived:
                self.received.append(message)
                self._arrived.notify_all()
            if isinstance(message, Command):
                asyncio.create_task(self._answer(message))
            elif isinstance(message, Sync) and message.t1 is None:
                t1 = self.now()
                # A probe that crosses our close goes unanswered; reading goes on until the
                # server's close arrives (else `closed` would never be set).
                with contextlib.suppress(WebSocketClosedError):
                    await self.send(Sync(id=message.id, t0=message.t0, t1=t1, t2=self.now()))

    async def _answer(self, command: Command) -> None:
        if self.ack == "never":
            return
        if self.ack_delay:
            await asyncio.sleep(self.ack_delay)
        status = AckStatus.SUCCESS if self.ack == "success" else AckStatus.FAILED
        await self.send(Ack(
            command_id=command.command_id, action=command.action, device_id=self.device_id,
            status=status, error=None if status is AckStatus.SUCCESS else "no microphone",
            started_at=self.now() if command.action.value == "START" else None,
        ))

    async def wait_for(self, kind: type[Message], timeout: float = 5.0,
                       where: Callable[[Any], bool] = lambda m: True) -> Message:
        """The first received message of ``kind`` matching ``where`` (waiting if needed)."""
        async def find() -> Message:
            async with self._arrived:
                while True:
                    for m in self.received:
                        if isinstance(m, kind) and where(m):
                            return m
                    if self.closed.is_set():
                        raise ConnectionError("connection closed")
                    await self._arrived.wait()
        return await asyncio.wait_for(find(), timeout)

    def of_type(self, kind: type[Message]) -> list[Any]:
        return [m for m in self.received if isinstance(m, kind)]

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
