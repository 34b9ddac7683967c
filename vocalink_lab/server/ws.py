"""``/ws/control``: the devices' WebSocket. It translates frames and never decides."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tornado.httputil
import tornado.websocket

from ..errors import BadRequest, ProtocolError, UpgradeRequired, VocalinkError
from ..hub import Hub, LinkClosed
from ..protocol import JSON_V1, Codec, Error, Message, Register
from .base import JsonErrors

__all__ = ["ControlSocket"]

log = logging.getLogger(__name__)

#: WebSocket close code of our own (4000-4999 are for applications); 4001 is the
#: hub's "replaced by a new connection of the same device".
CLOSE_NO_REGISTER = 4002


class ControlSocket(JsonErrors, tornado.websocket.WebSocketHandler):
    """One device's control connection, and the hub's `DeviceLink` to it.

    The first frame must be REGISTER; after it every frame is decoded and handed
    to the hub. A bad frame gets an ERROR reply and the connection stays open.
    Keep-alive is Tornado's (``websocket_ping_interval``/``_timeout`` settings):
    a device that stops answering pings is closed and goes OFFLINE. A request
    that is not a WebSocket handshake gets the one JSON error shape.
    """

    codec: Codec = JSON_V1

    def initialize(self, hub: Hub, register_timeout_s: float) -> None:
        self.hub = hub
        self.register_timeout_s = register_timeout_s
        self.device_id: str | None = None
        self._register_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._last_heard = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def remote(self) -> str:
        """The peer's address."""
        return str(self.request.remote_ip)

    def check_origin(self, origin: str) -> bool:
        # Devices are not browsers on our origin; authentication (pairing) guards access.
        return True

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # Tornado answers a broken handshake in plain text; check it first so that
        # the answer is the JSON error shape like everywhere else.
        _check_handshake(self.request.headers)
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        loop = asyncio.get_running_loop()
        self._register_timer = loop.call_later(self.register_timeout_s, self._register_expired)
        self._last_heard = loop.time()
        if self.ping_interval:
            self._watchdog = loop.call_later(self.ping_interval / 2, self._watch)

    def on_pong(self, data: bytes) -> None:
        self._last_heard = asyncio.get_running_loop().time()

    def _watch(self) -> None:
        """Declare a device that stopped answering pings OFFLINE at once.

        Tornado sends the pings and closes a connection whose pong is late, but it
        then waits 5 s for a close handshake that a vanished device never sends;
        the hub should not wait that long to show the device OFFLINE.
        """
        interval = float(self.ping_interval or 0)
        loop = asyncio.get_running_loop()
        if self._closed or interval <= 0:
            return
        if loop.time() - self._last_heard > 2.25 * interval:  # one ping + its timeout, missed
            if self.device_id is not None:
                self.hub.detach(self.device_id, self, "stopped answering pings")
            self.close(1001, "ping timed out")
            return
        self._watchdog = loop.call_later(interval / 2, self._watch)

    def _register_expired(self) -> None:
        if self.device_id is None:
            self.close(CLOSE_NO_REGISTER, "no REGISTER received in time")

    def on_message(self, message: str | bytes) -> None:
        self._last_heard = asyncio.get_running_loop().time()
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
            self._reply_error(exc.code, str(exc), _ref(msg))
        except Exception:
            # A bug of ours must not cost the device its connection (Tornado would abort it).
            log.exception("error handling %s from %s", msg.type_name(),
                          self.device_id or self.remote)
            self._reply_error("internal_error",
                              f"the server failed to handle this {msg.type_name()}", _ref(msg))

    def _on_first_message(self, msg: Message) -> None:
        if not isinstance(msg, Register):
            self._reply_error("not_registered",
                              f"the first frame must be REGISTER, got {msg.type_name()}", _ref(msg))
            return
        welcome = self.hub.attach(msg, self)
        self.device_id = msg.device_id
        if self._register_timer is not None:
            self._register_timer.cancel()
            self._register_timer = None
        self.send_text(self.codec.encode(welcome))

    def on_close(self) -> None:
        self._closed = True
        for timer in (self._register_timer, self._watchdog):
            if timer is not None:
                timer.cancel()
        if self.device_id is not None:
            # A no-op when this link was replaced by a newer connection of the device.
            self.hub.detach(self.device_id, self)

    # -- DeviceLink ------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Queue one frame without waiting for it to be written."""
        if self._closed or self.ws_connection is None or self.ws_connection.is_closing():
            raise LinkClosed(f"connection to {self.device_id or self.remote} is closed")
        try:
            future = self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            raise LinkClosed(f"connection to {self.device_id or self.remote} is closed") from None
        future.add_done_callback(_consume_error)

    def close(self, code: int | None = 1000, reason: str | None = "") -> None:
        """Close the connection (idempotent)."""
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            super().close(code, reason)

    def _reply_error(self, code: str, detail: str, ref: str | None = None) -> None:
        try:
            self.send_text(self.codec.encode(Error(code=code, detail=detail[:4000], ref=ref)))
        except LinkClosed:
            log.debug("could not send ERROR to %s: closed", self.remote)


def _check_handshake(headers: tornado.httputil.HTTPHeaders) -> None:
    """Raise 400/426 unless ``headers`` make a WebSocket (version 13) handshake."""
    if headers.get("Upgrade", "").lower() != "websocket":
        raise BadRequest(
            "this is the devices' WebSocket endpoint: connect with a WebSocket client "
            "(Upgrade: websocket)"
        )
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


def _ref(msg: Message) -> str | None:
    for key in ("command_id", "recording_id", "id"):
        value = getattr(msg, key, None)
        if isinstance(value, str):
            return value
    return None


def _consume_error(future: asyncio.Future[None]) -> None:
    # A write to a connection that closed meanwhile: the close handler deals with it.
    if not future.cancelled() and future.exception() is not None:
        log.debug("websocket write failed: %s", future.exception())
