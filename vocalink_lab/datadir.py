"""One server per data dir, across processes: an advisory lock that names its holder.

Standard library only. The Lab takes it before it starts a server on the kernel's loop
(another kernel on the same data dir then attaches instead), and so does
``vocalink serve``: two servers writing one catalog would race (a second ``serve``
refuses to start and names the first).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "DataDirLock"]

LOCK_NAME = "vocalink.lock"


class DataDirLock:
    """An advisory lock on a data dir: one server per data dir, across processes.

    The holder writes its URL into the lock file, so that another kernel can attach
    to it. The lock goes with the process (``flock``): a crashed kernel leaves no
    stale lock behind, only a file that the next holder overwrites.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if free; False if another process holds it.

        Taken, it names this process at once (no URL yet): what a crashed holder left
        in the file is gone, so nobody waiting for this server attaches to that one's.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        self.publish()
        return True

    def publish(self, **info: Any) -> None:
        """Write who holds the lock (pid, url) for others to read."""
        assert self._fd is not None
        data = json.dumps({"pid": os.getpid(), **info}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def holder(self) -> dict[str, Any]:
        """What the holder published (empty if nothing yet)."""
        try:
            text = self.path.read_text()
            return dict(json.loads(text)) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
