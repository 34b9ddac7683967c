"""What a vocalink server's mDNS service says: type, instance names and TXT properties.

Shared by the advertiser and the browser, so that both read and write one format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "SERVICE_TYPE",
    "TXT_VERSION",
    "ServerInfo",
    "decode_properties",
    "encode_properties",
    "instance_name",
    "label_of",
    "with_suffix",
]

#: The DNS-SD service type every vocalink server registers.
SERVICE_TYPE = "_vocalink._tcp.local."
#: Version of the TXT record layout (``txtvers``, as DNS-SD recommends).
TXT_VERSION = "1"
_LABEL_BYTES = 63
_SUFFIX = re.compile(r"^(?P<base>.*?) \((?P<n>\d+)\)$")


def instance_name(name: str) -> str:
    """The full mDNS instance name of a server called ``name``."""
    return f"{name}.{SERVICE_TYPE}"


def label_of(instance: str) -> str:
    """The instance label (the server name) of a full instance name."""
    if instance.lower().endswith("." + SERVICE_TYPE):
        return instance[: -len(SERVICE_TYPE) - 1]
    return instance


def with_suffix(name: str, number: int) -> str:
    """``name`` with the mDNS conflict suffix ``" (number)"``, within 63 UTF-8 bytes.

    A name that already ends in ``" (n)"`` gets its number replaced, as Bonjour does:
    ``with_suffix("Studio (2)", 3) == "Studio (3)"``. ``number`` 1 returns ``name``.
    """
    if number <= 1:
        return name
    match = _SUFFIX.match(name)
    base = match.group("base") if match and match.group("base").strip() else name
    suffix = f" ({number})"
    room = _LABEL_BYTES - len(suffix.encode())
    # Cut at a character boundary, never inside a multi-byte UTF-8 sequence.
    trimmed = base.encode()[:room].decode("utf-8", errors="ignore").rstrip()
    return f"{trimmed}{suffix}"


def encode_properties(properties: Mapping[str, str | bool | int]) -> dict[str, str]:
    """TXT properties as strings (booleans as ``"1"`` / ``"0"``)."""
    out = {}
    for key, value in properties.items():
        if isinstance(value, bool):
            out[key] = "1" if value else "0"
        else:
            out[key] = str(value)
    return out


def decode_properties(raw: Mapping[bytes, bytes | None]) -> dict[str, str]:
    """TXT properties from zeroconf (bytes) to text; undecodable bytes are replaced."""
    return {
        key.decode("utf-8", "replace"): (value or b"").decode("utf-8", "replace")
        for key, value in raw.items()
    }


@dataclass(frozen=True)
class ServerInfo:
    """A vocalink server found on the network.

    Attributes
    ----------
    name : str
        The server name (TXT ``name``, else the instance label).
    instance : str
        Full mDNS instance name, e.g. ``"Studio._vocalink._tcp.local."``.
    host : str
        The SRV target host name (``"<server id>.local."``).
    port : int
        TCP port of the HTTP and WebSocket listener.
    addresses : tuple of str
        Addresses the server advertises, IPv4 first.
    properties : dict of str to str
        Every TXT property.
    """

    name: str
    instance: str
    host: str
    port: int
    addresses: tuple[str, ...]
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def server_id(self) -> str | None:
        """The server's stable id (TXT ``id``)."""
        return self.properties.get("id") or None

    @property
    def ws_path(self) -> str:
        """Path of the devices' WebSocket (TXT ``ws``)."""
        return self.properties.get("ws") or "/ws/control"

    @property
    def pairing_required(self) -> bool:
        """Whether devices must pair before they may register (TXT ``pairing``)."""
        return self.properties.get("pairing") == "1"

    @property
    def protocol(self) -> int | None:
        """Wire protocol version (TXT ``proto``)."""
        value = self.properties.get("proto", "")
        return int(value) if value.isdigit() else None

    @property
    def ca_pin(self) -> str | None:
        """The pin of the server's CA (TXT ``ca``): it serves HTTPS, trusted by this pin."""
        return self.properties.get("ca") or None

    def _host_part(self) -> str:
        address = self.addresses[0] if self.addresses else self.host.rstrip(".")
        return f"[{address}]" if ":" in address else address

    @property
    def url(self) -> str:
        """HTTP base URL through the first advertised address."""
        return f"http://{self._host_part()}:{self.port}"

    @property
    def https_url(self) -> str | None:
        """HTTPS base URL (same port) when the server advertises a CA pin, else ``None``."""
        return f"https://{self._host_part()}:{self.port}" if self.ca_pin else None

    @property
    def ws_url(self) -> str:
        """The devices' WebSocket URL through the first advertised address."""
        return f"ws://{self._host_part()}:{self.port}{self.ws_path}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (for ``vocalink discover --json``)."""
        return {
            "name": self.name, "instance": self.instance, "host": self.host,
            "port": self.port, "addresses": list(self.addresses), "url": self.url,
            "ws_url": self.ws_url, "https_url": self.https_url, "server_id": self.server_id,
            "properties": dict(self.properties),
        }
