"""Blocking functions run by DspPool in tests (importable by name in a spawned worker)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def counted(n: int, *, pause_s: float = 0.01,
            progress: Callable[[float], None] | None = None) -> dict[str, int]:
    """Count to ``n``, reporting progress at each step; return the count and the worker's pid."""
    for i in range(n):
        time.sleep(pause_s)
        if progress is not None:
            progress((i + 1) / n)
    return {"count": n, "pid": os.getpid()}


def failing(message: str, *, progress: Callable[[float], None] | None = None) -> None:
    """Raise ValueError(message)."""
    raise ValueError(message)


def sleepy(pid_file: str, seconds: float, *,
           progress: Callable[[float], None] | None = None) -> None:
    """Write this worker's pid to ``pid_file``, then sleep (a job that takes long)."""
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
