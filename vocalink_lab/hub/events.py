"""The hub's event bus: what UIs (widgets, REST pollers, logs) subscribe to."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..protocol.events import Topic

__all__ = ["Event", "EventBus", "Topic"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened: a topic, its data, and when (server clock)."""

    topic: str
    data: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


Callback = Callable[[Event], object]


class EventBus:
    """Synchronous publish/subscribe on the event loop.

    Loop-only: call ``publish`` and ``subscribe`` from the event loop's thread.
    Subscribers run in order of subscription; one that raises is logged and the
    others still run. ``stream()`` offers the same events as an async iterator.
    """

    def __init__(self) -> None:
        self._subscribers: dict[str | None, list[Callback]] = {}

    def subscribe(self, topic: str | None, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event of ``topic`` (``None``: all topics).

        Returns
        -------
        callable
            Call it to unsubscribe (safe to call twice).
        """
        self._subscribers.setdefault(topic, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(topic, [])
            if callback in callbacks:
                callbacks.remove(callback)

        return unsubscribe

    def wants(self, topic: str) -> bool:
        """Whether anyone listens to ``topic``: skip building a payload nobody reads."""
        return bool(self._subscribers.get(topic)) or bool(self._subscribers.get(None))

    def publish(self, topic: str, /, **data: Any) -> Event:
        """Deliver an event to the subscribers of ``topic`` and of all topics."""
        event = Event(topic, data)
        for callback in (*self._subscribers.get(topic, ()), *self._subscribers.get(None, ())):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", callback, topic)
        return event

    async def stream(
        self, topics: Iterable[str] | None = None, *, maxsize: int = 1000
    ) -> AsyncIterator[Event]:
        """Yield events as they are published.

        Parameters
        ----------
        topics : iterable of str, optional
            Only these topics; all by default.
        maxsize : int
            Events kept for a slow consumer; beyond it the oldest are dropped.
        """
        wanted = None if topics is None else set(topics)
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)

        def put(event: Event) -> None:
            if wanted is not None and event.topic not in wanted:
                return
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

        unsubscribe = self.subscribe(None, put)
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()
