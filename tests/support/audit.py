"""What a test process tries on the network: an audit hook on socket events.

The suite runs in a private network namespace, where a connection to anything but
loopback fails; this makes such an attempt visible as well (a test asserts there was
none, e.g. while a model loads), instead of only failing somewhere inside a library.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["audit_network"]

_NET_EVENTS = frozenset({"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
                         "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg"})
_LISTENERS: list[list[tuple[str, str]]] = []
_HOOKED: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _LISTENERS and event in _NET_EVENTS:
        for found in _LISTENERS:
            found.append((event, repr(args)[:200]))


@contextlib.contextmanager
def audit_network() -> Iterator[list[tuple[str, str]]]:
    """Record every socket connect / name lookup of this process while inside.

    The audit hook is added once per process (it cannot be removed) and records only
    while someone listens.
    """
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED.append(True)
    found: list[tuple[str, str]] = []
    _LISTENERS.append(found)
    try:
        yield found
    finally:
        _LISTENERS.remove(found)
