"""Find vocalink servers on the network: `find_servers` and `watch_servers`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal

from zeroconf import DNSQuestionType, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .interfaces import select_interfaces
from .service import SERVICE_TYPE, ServerInfo, decode_properties, label_of

__all__ = ["DiscoveryEvent", "find_servers", "watch_servers"]

log = logging.getLogger(__name__)

#: Ask multicast (QM) questions: on one host a unicast-reply (QU) first question
#: delays discovery by about a second.
_QUESTION = DNSQuestionType.QM


@dataclass(frozen=True)
class DiscoveryEvent:
    """A change seen by `watch_servers`.

    Attributes
    ----------
    kind : {"added", "updated", "removed"}
        ``removed`` carries the last known details of the server.
    server : ServerInfo
    """

    kind: Literal["added", "updated", "removed"]
    server: ServerInfo


def _server_info(info: AsyncServiceInfo) -> ServerInfo:
    properties = decode_properties(info.properties or {})
    addresses = info.parsed_scoped_addresses()
    # IPv4 first: phones and Pis reach it more reliably than a scoped IPv6 address.
    addresses.sort(key=lambda a: ":" in a)
    return ServerInfo(
        name=properties.get("name") or label_of(info.name),
        instance=info.name,
        host=info.server or "",
        port=info.port or 0,
        addresses=tuple(addresses),
        properties=properties,
    )


async def watch_servers(
    *, interfaces: Sequence[str] | None = None, resolve_timeout: float = 3.0
) -> AsyncGenerator[DiscoveryEvent, None]:
    """Yield servers as they appear, change and leave, until the consumer stops.

    Parameters
    ----------
    interfaces : sequence of str, optional
        Addresses or interface names to browse on; ``None`` means all.
    resolve_timeout : float
        Seconds to wait for a new server's address, port and TXT.

    Yields
    ------
    DiscoveryEvent
        ``added`` once a server is resolved, ``updated`` when what it advertises
        changes, ``removed`` when it says goodbye (or its records expire).

    Examples
    --------
    >>> async for event in watch_servers():  # doctest: +SKIP
    ...     print(event.kind, event.server.name, event.server.ws_url)
    """
    selection = select_interfaces(interfaces)
    azc = AsyncZeroconf(interfaces=selection.listen, ip_version=selection.ip_version)
    changes: asyncio.Queue[tuple[str, str, ServerInfo | None]] = asyncio.Queue()
    pending: set[asyncio.Task[None]] = set()

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        found = await info.async_request(azc.zeroconf, int(resolve_timeout * 1000),
                                         question_type=_QUESTION)
        changes.put_nowait(("resolved", name, _server_info(info) if found else None))

    def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            changes.put_nowait(("removed", name, None))
            return
        task = asyncio.get_running_loop().create_task(resolve(name))
        pending.add(task)
        task.add_done_callback(pending.discard)

    browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[on_change],
                                  question_type=_QUESTION)
    known: dict[str, ServerInfo] = {}
    try:
        while True:
            what, name, server = await changes.get()
            key = name.lower()
            if what == "removed":
                gone = known.pop(key, None)
                if gone is not None:
                    yield DiscoveryEvent("removed", gone)
            elif server is None:
                log.debug("could not resolve %s", name)
            elif key not in known:
                known[key] = server
                yield DiscoveryEvent("added", server)
            elif known[key] != server:
                known[key] = server
                yield DiscoveryEvent("updated", server)
    finally:
        for task in pending:
            task.cancel()
        await browser.async_cancel()
        await azc.async_close()


async def find_servers(
    timeout: float = 3.0,
    *,
    name: str | None = None,
    interfaces: Sequence[str] | None = None,
) -> list[ServerInfo]:
    """The vocalink servers that answer within ``timeout`` seconds.

    Parameters
    ----------
    timeout : float
        How long to listen. Registration takes about 1.2 s, so a server that starts
        while this runs is found too.
    name : str, optional
        Return as soon as a server with this name (case-insensitive) or id is found,
        and only it; an empty list if none is found in time.
    interfaces : sequence of str, optional
        Addresses or interface names to browse on; ``None`` means all.

    Returns
    -------
    list of ServerInfo
        Sorted by name.
    """
    found: dict[str, ServerInfo] = {}
    wanted = name.casefold() if name is not None else None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            async with contextlib.aclosing(watch_servers(interfaces=interfaces)) as events:
                async for event in events:
                    server = event.server
                    if event.kind == "removed":
                        found.pop(server.instance.lower(), None)
                        continue
                    if wanted is not None:
                        if wanted in (server.name.casefold(), (server.server_id or "").casefold()):
                            return [server]
                        continue
                    found[server.instance.lower()] = server
    return sorted(found.values(), key=lambda s: (s.name.casefold(), s.instance))
