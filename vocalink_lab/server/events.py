"""``/ws/events``: the hub's events for controllers (notebooks, the dashboard, scripts).

Each event is one JSON text frame ``{"topic": ..., "data": {...}, "at": <server time>}``,
encoded once (`Event.frame`) and sent as the same bytes to every controller. What waits
for one controller is those frames only (`EventBus.frames`), bounded in bytes: a
controller that falls that far behind is closed with 1013 (try again later) rather than
buffered for, and reconnects and re-reads the state over REST (the Lab does), so neither
its lag nor the server's memory grows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tornado.websocket

from ..errors import InvalidParameter
from ..hub import Hub
from ..hub.events import EventQueue
from ..protocol import Topic
from .base import ErrorShape
from .gate import Gate
from .ws import check_handshake

__all__ = ["CLOSE_TOO_SLOW", "DEFAULT_QUEUE_BYTES", "EventsSocket"]

log = logging.getLogger(__name__)

#: WebSocket close code for a controller that fell behind (RFC 6455, 7.4.1: "Try Again
#: Later"): reconnect, and re-read the state.
CLOSE_TOO_SLOW = 1013
#: Bytes of events that may wait for one controller (``Settings.events_queue_bytes``).
DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024


class EventsSocket(ErrorShape, tornado.websocket.WebSocketHandler):
    """``GET /ws/events[?topics=a,b]``: stream hub events; what the client sends is ignored.

    A request that is not a WebSocket handshake, or names a topic that does not exist,
    is refused in the one JSON error shape before the upgrade. A controller with more
    than ``max_queue_bytes`` of events waiting is closed with `CLOSE_TOO_SLOW`.
    """

    def initialize(self, hub: Hub, sockets: set[EventsSocket], gate: Gate,
                   max_queue_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        self.hub = hub
        self.gate = gate
        self.sockets = sockets
        self.max_queue_bytes = max_queue_bytes
        self._pump: asyncio.Task[None] | None = None
        self._queue: EventQueue[bytes] | None = None
        self.topics: list[Topic] | None = None

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    def check_origin(self, origin: str) -> bool:
        # get() refuses first, in the one error shape; this is Tornado's own hook for it.
        return self.gate.origin_allowed(self.request)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        check_handshake(self.request.headers, endpoint="the controllers' event stream")
        self.gate.check_origin(self.request)
        self.topics = _topics(self.get_query_argument("topics", ""))
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.sockets.add(self)
        self._queue = self.hub.events.frames(self.topics, max_bytes=self.max_queue_bytes,
                                             on_overflow=self._fell_behind)
        self._pump = asyncio.get_running_loop().create_task(self._send(self._queue))

    async def _send(self, queue: EventQueue[bytes]) -> None:
        try:
            async for frame in queue:
                # One write at a time: what waits is in the bounded queue, never in
                # Tornado's unbounded write buffer.
                await self.write_message(frame)
        except tornado.websocket.WebSocketClosedError:
            pass
        finally:
            queue.close()

    def _fell_behind(self, reason: str) -> None:
        log.info("closing the event stream of %s: %s", self.request.remote_ip, reason)
        # Tornado sends the close frame after what is in flight, and drops the
        # connection if the controller does not answer within 5 s.
        self.close(CLOSE_TOO_SLOW, "too slow: events were dropped; reconnect and re-read")

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        self.sockets.discard(self)
        if self._queue is not None:
            self._queue.close()
        if self._pump is not None:
            self._pump.cancel()


def _topics(raw: str) -> list[Topic] | None:
    """The topics asked for (``a,b``); None for all. Unknown ones are a 422, listed."""
    names = [t.strip() for t in raw.split(",") if t.strip()]
    known = {t.value for t in Topic if t.family != "lab"}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidParameter(
            f"no event topic {', '.join(map(repr, unknown))}; topics: {', '.join(sorted(known))}")
    return [Topic(name) for name in names] or None
