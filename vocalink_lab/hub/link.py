"""How the hub talks to a device without knowing the transport."""

from __future__ import annotations

from typing import Protocol

from ..protocol import Codec

__all__ = ["DeviceLink", "LinkClosed"]


class LinkClosed(ConnectionError):
    """The device's connection is gone; the frame was not sent."""


class DeviceLink(Protocol):
    """One live connection to one device (a WebSocket today).

    The hub encodes each message once per codec and hands the text to
    ``send_text``, which must not block and must not be awaited per device:
    a broadcast to a thousand devices is a thousand buffered writes.
    """

    @property
    def codec(self) -> Codec:
        """The dialect this device speaks."""
        ...

    @property
    def remote(self) -> str:
        """The peer's address, for people."""
        ...

    def send_text(self, text: str) -> None:
        """Queue one frame; raise `LinkClosed` if the connection is closed."""
        ...

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (idempotent)."""
        ...
