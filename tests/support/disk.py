"""A disk that fills up: the hardware fault, faked at the OS call and nowhere else.

`FullDisk` stands in for ``open`` in the modules that write files (``storage.files`` for
the upload spools, ``durable`` for atomic replacements): the files it opens are real, and
their ``write`` takes what room is left, then raises ``OSError(ENOSPC)`` as the kernel
does. Everything above the call (spools, handlers, clean-up) is the real code.
"""

from __future__ import annotations

import builtins
import errno
import os
from types import ModuleType
from typing import Any

import pytest


class FullDisk:
    """A disk with ``room`` bytes left for the files opened through it.

    Parameters
    ----------
    room : int
        Bytes that still fit; a write past them keeps what fits, then fails.
    """

    def __init__(self, room: int = 0) -> None:
        self.room = room
        self.refused = 0  #: writes that failed for want of room

    def install(self, monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> FullDisk:
        """Make ``open`` in each module open its files on this disk (until ``undo``)."""
        for module in modules:
            monkeypatch.setattr(module, "open", self.open, raising=False)
        return self

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        """``builtins.open``, whose writes (in a writing mode) run out of room."""
        opened = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 - the caller closes it
        return _FileOnFullDisk(opened, self) if set(mode) & set("wax+") else opened


class _FileOnFullDisk:
    """A real file object, but for ``write``, which fails once the disk is full."""

    def __init__(self, file: Any, disk: FullDisk) -> None:
        self._file = file
        self._disk = disk

    def write(self, data: bytes) -> int:
        fits = min(len(data), self._disk.room)
        if fits:
            self._file.write(memoryview(data)[:fits])
            self._disk.room -= fits
        if fits < len(data):
            self._disk.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fits

    def __enter__(self) -> _FileOnFullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)
