"""Which interfaces mDNS uses, and which addresses it advertises.

Interfaces are enumerated (ifaddr, which zeroconf brings); nothing is sent anywhere to
learn a local address.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import IPVersion

from ..errors import DiscoveryError

__all__ = ["InterfaceSelection", "select_interfaces"]


@dataclass(frozen=True)
class InterfaceSelection:
    """The resolved ``interfaces`` setting.

    Attributes
    ----------
    listen : list of str
        Zeroconf's ``interfaces`` argument: addresses of up, multicast-capable interfaces.
    all_interfaces : bool
        Whether the setting was "all" (``None``).
    ip_version : IPVersion
        Zeroconf's ``ip_version`` argument.
    addresses : tuple of str
        Addresses put in the service's A/AAAA records.
    """

    listen: list[str]
    all_interfaces: bool
    ip_version: IPVersion
    addresses: tuple[str, ...]

    def describe(self) -> str:
        """Short human form, e.g. ``"all interfaces"`` or ``"127.0.0.1"``."""
        listed = ", ".join(self.listen)
        return f"all interfaces ({listed})" if self.all_interfaces else listed


def _adapter_addresses() -> dict[str, list[str]]:
    """Interface name -> its addresses (IPv4 as strings, IPv6 without scope)."""
    out: dict[str, list[str]] = {}
    for adapter in ifaddr.get_adapters():
        addresses = out.setdefault(adapter.nice_name, [])
        for ip in adapter.ips:
            addresses.append(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return out


_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1
_IFF_MULTICAST = 0x1000


def _multicast_problem(name: str) -> str | None:
    """Why interface ``name`` cannot carry mDNS, or ``None`` if it can (or we cannot tell).

    Asks the kernel (SIOCGIFFLAGS) in the current network namespace; zeroconf itself
    would open its sockets and then silently fail every send.
    """
    if not sys.platform.startswith("linux"):
        return None
    import fcntl

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("16sH14x", name.encode()[:15], 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
    except OSError:
        return None
    if not flags & _IFF_UP:
        return f"{name} is down"
    if not flags & _IFF_MULTICAST:
        return f"{name} has multicast off"
    return None


def _is_v4(address: str) -> bool:
    return ipaddress.ip_address(address).version == 4


def select_interfaces(choice: Sequence[str] | None) -> InterfaceSelection:
    """Resolve the ``interfaces`` setting against this machine's interfaces.

    Parameters
    ----------
    choice : sequence of str or None
        ``None``: every interface (IPv4), advertising the non-loopback addresses (the
        loopback ones when there are no others). Otherwise addresses (``"10.0.0.5"``,
        ``"fe80::1"``) or interface names (``"eth0"``, whose IPv4 addresses are used).

    Returns
    -------
    InterfaceSelection

    Raises
    ------
    DiscoveryError
        When an entry matches no interface, or nothing usable remains.
    """
    adapters = _adapter_addresses()
    unusable = {name: why for name in adapters if (why := _multicast_problem(name))}
    if choice is None:
        v4 = sorted({a for name, addrs in adapters.items() if name not in unusable
                     for a in addrs if _is_v4(a)})
        if not v4:
            why = f" ({'; '.join(unusable.values())})" if unusable else ""
            raise DiscoveryError(f"no multicast-capable interface with an IPv4 address{why}")
        public = [a for a in v4 if not ipaddress.ip_address(a).is_loopback]
        return InterfaceSelection(v4, True, IPVersion.V4Only, tuple(public or v4))

    owner = {a: name for name, addrs in adapters.items() for a in addrs}
    chosen: list[str] = []
    problems = []
    for entry in choice:
        entry = entry.strip()
        try:
            address = str(ipaddress.ip_address(entry.split("%")[0]))
        except ValueError:
            if entry not in adapters:
                names = ", ".join(sorted(adapters))
                problems.append(f"no interface named {entry!r} (known: {names})")
                continue
            v4 = [a for a in adapters[entry] if _is_v4(a)]
            if not v4:
                problems.append(f"interface {entry!r} has no IPv4 address")
            chosen.extend(v4)
            continue
        if address not in owner:
            problems.append(f"no interface has address {address}")
            continue
        chosen.append(address)
    problems += sorted({unusable[owner[a]] for a in chosen if owner[a] in unusable})
    if problems:
        raise DiscoveryError("; ".join(problems), errors=problems)
    if not chosen:
        raise DiscoveryError("no interfaces chosen to advertise on")
    unique = list(dict.fromkeys(chosen))
    version = IPVersion.V4Only if all(_is_v4(a) for a in unique) else IPVersion.All
    ordered = sorted(unique, key=lambda a: not _is_v4(a))
    return InterfaceSelection(ordered, False, version, tuple(ordered))
