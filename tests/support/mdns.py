"""Watch mDNS from inside a test: every event `watch_servers` yields, kept and awaitable."""

from __future__ import annotations

import asyncio
import contextlib

from vocalink_lab.discovery import DiscoveryEvent, ServerInfo, watch_servers

#: The only interface tests browse and advertise on (inside their private namespace).
LOOPBACK = ("127.0.0.1",)


class Watcher:
    """Runs `watch_servers` on loopback in the background and records its events."""

    def __init__(self) -> None:
        self.events: list[DiscoveryEvent] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(0.1)  # let the browser send its first query
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with contextlib.aclosing(watch_servers(interfaces=LOOPBACK)) as events:
            async for event in events:
                self.events.append(event)
                self._changed.set()

    def current(self) -> dict[str, ServerInfo]:
        """Servers present now, by name."""
        present: dict[str, ServerInfo] = {}
        for event in self.events:
            if event.kind == "removed":
                present.pop(event.server.name, None)
            else:
                present[event.server.name] = event.server
        return present

    async def wait_for(self, kind: str, name: str, timeout: float = 10.0) -> ServerInfo:
        """The first ``kind`` event for a server called ``name`` (waiting for it)."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if event.kind == kind and event.server.name == name:
                        return event.server
                self._changed.clear()
                await self._changed.wait()
