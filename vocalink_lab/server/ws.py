"""``/ws/control``: the devices' WebSocket. It translates frames and never decides."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Any

import tornado.httputil
import tornado.iostream
from websockets.asyncio.connection import Connection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..errors import BadRequest, ProtocolError, UpgradeRequired, VocalinkError
from ..hub import AndroidLink, AndroidSessions, Hub, LinkClosed
from ..protocol import JSON_V1, Codec, Error, Message, Register
from ..protocol.android import is_android_frame
from ..protocol.codec import ref_of
from .auth import Access
from .base import JsonHandler
from .bridge import StreamTransport
from .gate import Gate

__all__ = ["ControlSocket", "DeviceSession", "check_handshake"]

log = logging.getLogger(__name__)

#: WebSocket close code of our own (4000-4999 are for applications); 4001 is the
#: hub's "replaced by a new connection of the same device".
CLOSE_NO_REGISTER = 4002
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, 1.3


class ControlSocket(JsonHandler):
    """``GET /ws/control``: validate the WebSocket handshake, then hand the socket over.

    Tornado parses the HTTP request and answers a broken handshake in the one
    JSON error shape. After the ``101 Switching Protocols`` the connection is
    driven by the ``websockets`` library's asyncio connection on the same event
    loop (a `DeviceSession`): it reads frames as they arrive, where Tornado's
    WebSocket reader re-arms the socket for every frame, which costs a broadcast
    to a thousand devices about twice the CPU (``benchmarks/fanout.py``).
    """

    #: Open to all at the HTTP level: the device's REGISTER is what the hub judges.
    access = Access.DEVICE_SOCKET

    def initialize(self, hub: Hub, register_timeout_s: float, heartbeat_s: float,
                   max_message_bytes: int, sessions: set[DeviceSession], gate: Gate,
                   android: AndroidSessions | None = None) -> None:
        self.hub = hub
        self.android = android
        self.gate = gate
        self.register_timeout_s = register_timeout_s
        self.heartbeat_s = heartbeat_s
        self.max_message_bytes = max_message_bytes
        self.sessions = sessions

    async def get(self, *args: Any, **kwargs: Any) -> None:
        key = check_handshake(self.request.headers)
        self.gate.check_origin(self.request)
        session = DeviceSession(
            self.hub, remote=str(self.request.remote_ip),
            register_timeout_s=self.register_timeout_s, heartbeat_s=self.heartbeat_s,
            max_message_bytes=self.max_message_bytes, android=self.android,
        )
        stream = self.detach()
        # A detached handler never finishes, so Tornado never breaks its cycle with its
        # UI namespace: done here, or each device connection is left to the cyclic
        # collector (a REGISTER flood made full collections of 150 ms).
        self.ui = None  # type: ignore[assignment]  # as Tornado does
        if isinstance(stream, tornado.iostream.SSLIOStream):
            # A TLS session cannot leave its stream: the connection runs on it.
            hand_over = getattr(stream, "hand_over", None)  # a `Listener`'s stream
            if hand_over is not None:
                hand_over()  # counted among the sessions from now on, not twice
            StreamTransport(stream, session.connection).write(_switching_protocols(key))
        else:
            # The kernel socket outlives Tornado's stream: a duplicate descriptor goes to
            # asyncio *before* the 101 is sent. The client sends nothing until it has our
            # 101 (RFC 6455, 4.1), so no frame can land in Tornado's read buffer and be lost.
            sock = stream.socket.dup()
            stream.close()
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: session.connection, sock=sock)
            except OSError as exc:  # the client left meanwhile
                log.debug("device connection from %s lost during the handshake: %s",
                          session.remote, exc)
                sock.close()
                return
            transport.write(_switching_protocols(key))
        self.sessions.add(session)
        try:
            await session.serve()
        finally:
            self.sessions.discard(session)


class DeviceSession:
    """One device's control connection, and the hub's `DeviceLink` to it.

    The first frame must be REGISTER; after it every frame is decoded and handed
    to the hub. A bad frame gets an ERROR reply and the connection stays open.
    A first frame in the VocalLink Android app's dialect (``kind``, not ``type``) hands
    the connection to an `AndroidLink`, which is then the hub's link to that device.
    Keep-alive: a ping every ``heartbeat_s``; a device whose pong does not come
    within ``heartbeat_s`` is disconnected and goes OFFLINE.
    """

    codec: Codec = JSON_V1

    def __init__(self, hub: Hub, *, remote: str, register_timeout_s: float,
                 heartbeat_s: float, max_message_bytes: int,
                 android: AndroidSessions | None = None) -> None:
        self.hub = hub
        self.android = android
        self.dialect: AndroidLink | None = None
        self._remote = remote
        self.register_timeout_s = register_timeout_s
        self.device_id: str | None = None
        protocol = ServerProtocol(state=State.OPEN, max_size=max_message_bytes)
        self.connection = Connection(
            protocol, ping_interval=heartbeat_s, ping_timeout=heartbeat_s,
            close_timeout=heartbeat_s / 2, max_queue=64,
        )
        self._closing: asyncio.Task[None] | None = None

    @property
    def remote(self) -> str:
        """The peer's address."""
        return self._remote

    async def serve(self) -> None:
        """Read frames until the connection ends, then tell the hub."""
        loop = asyncio.get_running_loop()
        register_timer = loop.call_later(self.register_timeout_s, self._register_expired)
        self.connection.start_keepalive()
        try:
            async for message in self.connection:
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            register_timer.cancel()
            if self.dialect is not None:
                self.dialect.closed()
            elif self.device_id is not None:
                # A no-op when this link was replaced by a newer connection of the device.
                self.hub.detach(self.device_id, self)

    def _register_expired(self) -> None:
        if self.dialect is not None and self.dialect.device_id is None:
            self.close(CLOSE_NO_REGISTER, "no session_activate received in time")
        elif self.dialect is None and self.device_id is None:
            self.close(CLOSE_NO_REGISTER, "no REGISTER received in time")

    def _on_message(self, message: str | bytes) -> None:
        if self.dialect is None and self.device_id is None and self.android is not None \
                and is_android_frame(message):
            self.dialect = AndroidLink(self.android, send=self.send_text, close=self.close,
                                       remote=self.remote)
        if self.dialect is not None:
            self.dialect.on_frame(message)
            return
        if isinstance(message, bytes):
            self._reply_error("bad_message", "binary frames are not part of the protocol")
            return
        try:
            msg = self.codec.decode(message)
        except ProtocolError as exc:
            self._reply_error(exc.code, str(exc), exc.ref)
            return
        try:
            if self.device_id is None:
                self._on_first_message(msg)
            else:
                self.hub.handle(self.device_id, msg)
        except VocalinkError as exc:
            self._reply_error(exc.code, str(exc), ref_of(msg))
        except Exception:
            # A bug of ours must not cost the device its connection.
            log.exception("error handling %s from %s", msg.type_name(),
                          self.device_id or self.remote)
            self._reply_error("internal_error",
                              f"the server failed to handle this {msg.type_name()}", ref_of(msg))

    def _on_first_message(self, msg: Message) -> None:
        if not isinstance(msg, Register):
            self._reply_error("not_registered",
                              f"the first frame must be REGISTER, got {msg.type_name()}",
                              ref_of(msg))
            return
        welcome = self.hub.attach(msg, self)
        self.device_id = msg.device_id
        self.send_text(self.codec.encode(welcome))

    # -- DeviceLink ------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Queue one frame without waiting for it to be written."""
        if self.connection.state is not State.OPEN:
            raise LinkClosed(f"connection to {self.device_id or self.remote} is closed")
        try:
            # websockets' broadcast() is its public, synchronous send: no await per device.
            broadcast([self.connection], text, raise_exceptions=True)
        except ExceptionGroup as exc:
            raise LinkClosed(f"connection to {self.device_id or self.remote} failed: "
                             f"{exc.exceptions[0]}") from None

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (idempotent); `serve` ends when it is done."""
        if self._closing is None and self.connection.state is State.OPEN:
            self._closing = asyncio.ensure_future(self.connection.close(code, reason))

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        await self.connection.wait_closed()

    def _reply_error(self, code: str, detail: str, ref: str | None = None) -> None:
        try:
            self.send_text(self.codec.encode(Error(code=code, detail=detail[:4000], ref=ref)))
        except LinkClosed:
            log.debug("could not send ERROR to %s: closed", self.remote)


def check_handshake(headers: tornado.httputil.HTTPHeaders, *,
                    endpoint: str = "the devices' WebSocket endpoint") -> str:
    """Return the client's key; raise 400/426 unless ``headers`` make a WebSocket handshake.

    Only version 13 (RFC 6455) is spoken.

    Parameters
    ----------
    headers : HTTPHeaders
        The request's headers.
    endpoint : str
        What the route is, for the message to a client that is not a WebSocket one.

    Returns
    -------
    str
        ``Sec-WebSocket-Key``.
    """
    if headers.get("Upgrade", "").lower() != "websocket":
        raise BadRequest(
            f"this is {endpoint}: connect with a WebSocket client (Upgrade: websocket)")
    if "upgrade" not in (t.strip().lower() for t in headers.get("Connection", "").split(",")):
        raise BadRequest("a WebSocket handshake needs 'Connection: Upgrade'")
    if not headers.get("Sec-WebSocket-Key") or not headers.get("Host"):
        raise BadRequest("a WebSocket handshake needs the Host and Sec-WebSocket-Key headers")
    version = headers.get("Sec-WebSocket-Version")
    if version != "13":
        raise UpgradeRequired(
            f"WebSocket version {version or '(none)'} is not supported; use version 13",
            headers={"Sec-WebSocket-Version": "13"},
        )
    key = headers["Sec-WebSocket-Key"].strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise BadRequest("Sec-WebSocket-Key must be 16 bytes in base64")
    return key


def _switching_protocols(key: str) -> bytes:
    accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode()
