"""``/ws/control``: the devices' WebSocket. It translates frames and never decides."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tornado.websocket

from ..errors import ProtocolError, VocalinkError
from ..hub import Hub, LinkClosed
from ..protocol import JSON_V1, Codec, Error, Message, Register

__all__ = ["ControlSocket"]

log = logging.getLogger(__name__)

#: WebSocket close code of our own (4000-4999 are for applications); 4001 is the
#: hub's "replaced by a new connection of the same device".
CLOSE_NO_REGISTER = 4002


class ControlSocket(tornado.websocket.WebSocketHandler):
    """One device's control connection, and the hub's `DeviceLink` to it.

    The first frame must be REGISTER; after it every frame is decoded and handed
    to the hub. A bad frame gets an ERROR reply and the connection stays open.
    Keep-alive is Tornado's (``websocket_ping_interval``/``_timeout`` settings):
    a device that stops answering pings is closed and goes OFFLINE.
    """

    codec: Codec = JSON_V1

    def initialize(self, hub: Hub, register_timeout_s: float) -> None:
        self.hub = hub
        self.register_timeout_s = register_timeout_s
        self.device_id: str | None = None
        self._register_timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def remote(self) -> str:
        """The peer's address."""
        return str(self.request.remote_ip)

    def check_origin(self, origin: str) -> bool:
        # Devices are not browsers on our origin; authentication (pairing) guards access.
        return True

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        loop = asyncio.get_running_loop()
        self._register_timer = loop.call_later(self.register_timeout_s, self._register_expired)

    def _register_expired(self) -> None:
        if self.device_id is None:
            self.close(CLOSE_NO_REGISTER, "no REGISTER received in time")

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._reply_error("bad_message", "binary frames are not part of the protocol")
            return
        try:
            msg = self.codec.decode(message)
        except ProtocolError as exc:
            self._reply_error(exc.code, str(exc), getattr(exc, "ref", None))
            return
        if self.device_id is None:
            self._on_first_message(msg)
            return
        try:
            self.hub.handle(self.device_id, msg)
        except VocalinkError as exc:
            self._reply_error(exc.code, str(exc), _ref(msg))

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
        if self._register_timer is not None:
            self._register_timer.cancel()
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
