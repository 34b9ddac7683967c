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

from ..hub import Hub

__all__ = ["EventsSocket"]

log = logging.getLogger(__name__)


class EventsSocket(tornado.websocket.WebSocketHandler):
    """``GET /ws/events[?topics=a,b]``: stream hub events; what the client sends is ignored."""

    def initialize(self, hub: Hub, sockets: set[EventsSocket]) -> None:
        self.hub = hub
        self.sockets = sockets
        self._pump: asyncio.Task[None] | None = None

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    def check_origin(self, origin: str) -> bool:
        # Same rule as the REST API, which has no CORS restriction yet (pairing and
        # controller tokens come with the auth issue).
        return True

    def open(self, *args: Any, **kwargs: Any) -> None:
        raw = self.get_query_argument("topics", "")
        topics = [t for t in raw.split(",") if t] or None
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
