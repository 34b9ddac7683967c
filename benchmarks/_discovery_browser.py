"""Browser child of ``discovery.py``: prints one JSON line per service seen or lost.

``--mode vocalink`` browses with ``vocalink_lab.discovery.watch_servers`` (an event is
printed once the server is resolved: address, port, TXT). ``--mode plain`` is what a
python-zeroconf user writes from its documentation: an ``AsyncServiceBrowser`` with its
defaults, each added service resolved with ``AsyncServiceInfo.async_request``.
Times are ``time.monotonic()``, one clock for every process on Linux. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from vocalink_lab.discovery import SERVICE_TYPE, watch_servers

LOOPBACK = ["127.0.0.1"]


def emit(event: str, name: str) -> None:
    sys.stdout.write(json.dumps({"t": time.monotonic(), "event": event, "name": name}) + "\n")
    sys.stdout.flush()


async def browse_vocalink() -> None:
    emit("ready", "")
    async for event in watch_servers(interfaces=LOOPBACK):
        emit(event.kind, event.server.name)


async def browse_plain() -> None:
    azc = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
    tasks: set[asyncio.Task[None]] = set()

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if await info.async_request(azc.zeroconf, 3000):
            emit("added", name[: -len(SERVICE_TYPE) - 1])

    def handler(zeroconf: Zeroconf, service_type: str, name: str,
                state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            task = asyncio.get_running_loop().create_task(resolve(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif state_change is ServiceStateChange.Removed:
            emit("removed", name[: -len(SERVICE_TYPE) - 1])

    browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[handler])
    emit("ready", "")
    try:
        await asyncio.Event().wait()
    finally:
        await browser.async_cancel()
        await azc.async_close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["vocalink", "plain"], required=True)
    args = parser.parse_args()
    asyncio.run(browse_vocalink() if args.mode == "vocalink" else browse_plain())


if __name__ == "__main__":
    main()
