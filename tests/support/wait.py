"""Waiting in async tests for something another task or process brings about."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable


async def wait_until(predicate: Callable[[], object], timeout: float = 30.0, *,
                     interval: float = 0.05) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it is true.

    ``predicate`` may be a plain function or a coroutine function (one that asks a
    server over HTTP, say). ``timeout`` only bounds a wait that would otherwise hang:
    a test waits for its condition, never for an amount of time.

    Raises
    ------
    AssertionError
        The condition was still false after ``timeout`` seconds.
    """
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        name = getattr(predicate, "__qualname__", repr(predicate))
        raise AssertionError(f"condition {name} not reached within {timeout:g} s") from None
