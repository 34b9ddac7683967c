"""Stopping a long-running command cleanly on Ctrl-C or SIGTERM (standard library only).

`vocalink serve`, `vocalink device` and `vocalink dashboard` all run until signalled,
then stop what they started in order (withdraw mDNS, close devices, end child
processes) instead of dying mid-write.
"""

from __future__ import annotations

import asyncio
import signal

__all__ = ["signal_waiter"]


async def signal_waiter() -> asyncio.Task[None]:
    """A task that ends on SIGINT or SIGTERM, its handlers already installed.

    Loop-only. The handlers are in place when this returns, so a signal that
    arrives while the caller is still starting up is not lost; they are removed
    when the task ends (or is cancelled).

    Returns
    -------
    asyncio.Task
        Await it (or race it against other work) to wait for the signal.
    """
    waiter = asyncio.get_running_loop().create_task(_until_signal())
    await asyncio.sleep(0)  # let it install the handlers before anything is printed
    return waiter


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
