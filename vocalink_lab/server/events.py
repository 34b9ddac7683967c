"""``/ws/events``: the hub's events for controllers (notebooks, the dashboard, scripts).

Each event is one JSON text frame ``{"topic": ..., "data": {...}, "at": <server time>}``.
A controller that reads slowly loses the oldest events (the queue is bounded), never
the server's memory; it can always re-read the state over REST.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import tornado.websocket

from ..errors import InvalidParameter
from ..hub import Hub
from ..protocol import Topic
from .base import ErrorShape
from .ws import check_handshake

__all__ = ["EventsSocket"]

log = logging.getLogger(__name__)


class EventsSocket(ErrorShape, tornado.websocket.WebSocketHandler):
    """``GET /ws/events[?topics=a,b]``: stream hub events; what the client sends is ignored.

    A request that is not a WebSocket handshake, or names a topic that does not exist,
    is refused in the one JSON error shape before the upgrade.
    """

    def initialize(self, hub: Hub, sockets: set[EventsSocket]) -> None:
        self.hub = hub
        self.sockets = sockets
        self._pump: asyncio.Task[None] | None = None
        self.topics: list[Topic] | None = None

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    def check_origin(self, origin: str) -> bool:
        # Same rule as the REST API, which has no CORS restriction yet (pairing and
        # controller tokens come with the auth issue).
        return True

    async def get(self, *args: Any, **kwargs: Any) -> None:
        check_handshake(self.request.headers, endpoint="the controllers' event stream")
        self.topics = _topics(self.get_query_argument("topics", ""))
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        topics = self.topics
        self.sockets.add(self)
        stream = self.hub.events.stream(topics, maxsize=1000)
        self._pump = asyncio.get_running_loop().create_task(self._send(stream))

    async def _send(self, stream: Any) -> None:
        try:
            async for event in stream:
                text = json.dumps({"topic": event.topic, "data": event.data, "at": event.at},
                                  default=str)
                await self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            pass
        finally:
            await stream.aclose()

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        self.sockets.discard(self)
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
