"""The hub's event bus: what UIs (widgets, REST pollers, logs) subscribe to."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..protocol.events import Topic

__all__ = ["Event", "EventBus", "EventQueue", "Topic"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened: a topic, its data, and when (server clock)."""

    topic: str
    data: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    _frame: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def frame(self) -> bytes:
        """The event as one JSON text frame, ``{"topic", "data", "at"}`` in UTF-8.

        Encoded on first use and kept: every subscriber of ``/ws/events`` sends the same
        bytes. Values JSON does not know are written as their ``str()``.
        """
        if self._frame is None:
            text = json.dumps({"topic": self.topic, "data": self.data, "at": self.at},
                              default=str, separators=(",", ":"))
            object.__setattr__(self, "_frame", text.encode())
        assert self._frame is not None
        return self._frame


Callback = Callable[[Event], object]


class EventBus:
    """Synchronous publish/subscribe on the event loop.

    Loop-only: call ``publish`` and ``subscribe`` from the event loop's thread.
    Subscribers run in order of subscription; one that raises is logged and the
    others still run. ``queue()``, ``frames()`` and ``stream()`` offer the same events
    to a reader that takes them at its own pace.
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

    def queue(self, topics: Iterable[str] | None = None, *, max_events: int | None = None,
              max_bytes: int | None = None,
              on_overflow: Callable[[str], object] | None = None) -> EventQueue[Event]:
        """A bounded queue of the events published from now on; see `EventQueue`."""
        return EventQueue(self, topics, _same, max_events=max_events, max_bytes=max_bytes,
                          on_overflow=on_overflow)

    def frames(self, topics: Iterable[str] | None = None, *, max_bytes: int,
               on_overflow: Callable[[str], object] | None = None) -> EventQueue[bytes]:
        """Like `queue`, holding each event's JSON frame only (`Event.frame`), not its data.

        What waits is then the bytes that will be sent and little more: the bound in
        bytes is the memory it takes. The frames are the events' own, shared with every
        other reader.
        """
        return EventQueue(self, topics, _frame, max_bytes=max_bytes, on_overflow=on_overflow)

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
        queue = self.queue(topics, max_events=maxsize)
        try:
            async for event in queue:
                yield event
        finally:
            queue.close()


def _same(event: Event) -> Event:
    return event


def _frame(event: Event) -> bytes:
    return event.frame


class EventQueue(Generic[T]):
    """The events of one reader that takes them at its own pace, bounded.

    Loop-only; made by `EventBus.queue` (events) or `EventBus.frames` (their frames),
    subscribed from then on. ``async for item in queue`` reads it, and ends once the
    queue is closed.

    Parameters
    ----------
    bus : EventBus
        Where the events come from.
    topics : iterable of str, optional
        Only these topics; all by default.
    keep : callable
        What is kept of each event (the event, its frame).
    max_events : int, optional
        At most this many events wait.
    max_bytes : int, optional
        At most this many bytes of JSON frames (`Event.frame`) wait. A single event
        larger than that is still taken when nothing else waits: the reader is not
        behind, the event is big.
    on_overflow : callable, optional
        What happens when an event does not fit. Without it, the oldest events are
        dropped to make room (counted in ``dropped``). With it, the reader is taken to be
        unable to keep up: the queue closes at once, dropping what waited (so that
        nothing more is held for it), and ``on_overflow(reason)`` is called.
    """

    def __init__(self, bus: EventBus, topics: Iterable[str] | None,
                 keep: Callable[[Event], T], *, max_events: int | None = None,
                 max_bytes: int | None = None,
                 on_overflow: Callable[[str], object] | None = None) -> None:
        self._keep = keep
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._wanted = None if topics is None else frozenset(topics)
        self._on_overflow = on_overflow
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        #: Events dropped to make room (only without ``on_overflow``).
        self.dropped = 0
        #: Whether the queue closed because its reader fell behind.
        self.overflowed = False
        self._unsubscribe = bus.subscribe(None, self._put)

    @property
    def closed(self) -> bool:
        """Whether the queue takes no more events."""
        return self._closed

    @property
    def waiting_bytes(self) -> int:
        """Bytes of JSON frames waiting (0 unless ``max_bytes`` is set)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def _full(self, size: int) -> bool:
        if not self._items:
            return False
        return ((self.max_events is not None and len(self._items) >= self.max_events)
                or (self.max_bytes is not None and self._bytes + size > self.max_bytes))

    def _put(self, event: Event) -> None:
        if self._closed or (self._wanted is not None and event.topic not in self._wanted):
            return
        size = len(event.frame) if self.max_bytes is not None else 0
        while self._full(size):
            if self._on_overflow is not None:
                reason = (f"{len(self._items)} events ({self._bytes} bytes) were waiting for "
                          f"this reader")
                self.overflowed = True
                self.close()
                self._on_overflow(reason)
                return
            _, dropped = self._items.popleft()
            self._bytes -= dropped
            self.dropped += 1
        self._items.append((self._keep(event), size))
        self._bytes += size
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """Unsubscribe and drop what waits; a reader waiting for an event stops (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        self._items.clear()
        self._bytes = 0
        self._wake()

    def __aiter__(self) -> EventQueue[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item, size = self._items.popleft()
        self._bytes -= size
        return item
