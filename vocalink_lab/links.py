"""The URLs shown to people: the phone link a QR code holds, the trust page, the agent's line.

The phone link opens the recorder page over HTTPS on the server's LAN address, with the
join code (which pairs the phone at once) and the CA's pin in its fragment
(``https://192.0.2.7:8765/recorder?join=K7QM-2XDF#ca=…``). A fragment is never sent to
a server, so the page's requests do not carry it; an agent or ``vl.connect`` given the
same link reads the pin from it (`RecorderLink`) and trusts that CA alone (`pinning`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RecorderLink", "device_url", "join_command", "phone_lines", "phone_link",
           "recorder_link", "trust_url"]


@dataclass(frozen=True)
class RecorderLink:
    """What a phone's link says: the server, its join code, its CA pin.

    Attributes
    ----------
    base_url : str
        ``https://host:port`` (or ``http://`` for a server without TLS).
    join_code : str or None
        The code that pairs the device.
    ca_pin : str or None
        The CA's pin.
    """

    base_url: str
    join_code: str | None
    ca_pin: str | None

    @classmethod
    def parse(cls, url: str) -> RecorderLink:
        """Read a link (`recorder_link`), or any server URL (no code, no pin).

        Parameters
        ----------
        url : str
            ``https://host:port/recorder?join=CODE#ca=PIN``, or ``http://host:port``.

        Raises
        ------
        ValueError
            Not an http(s) URL.
        """
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http(s) URL of a server")
        join = urllib.parse.parse_qs(parts.query).get("join")
        pin = urllib.parse.parse_qs(parts.fragment).get("ca")
        # A pin pasted unescaped has its '+' read as a space; base64 has no spaces.
        return cls(base_url=f"{parts.scheme}://{parts.netloc}",
                   join_code=join[-1] if join else None,
                   ca_pin=pin[-1].replace(" ", "+") if pin else None)


def recorder_link(base_url: str, join_code: str | None = None,
                  ca_pin: str | None = None) -> str:
    """The link a phone opens (and an agent can be given): the page, the code, the pin.

    Parameters
    ----------
    base_url : str
        The server as the phone reaches it, ``https://<LAN address>:<port>``.
    join_code : str, optional
        Pairs the phone at once; without it the phone waits for approval.
    ca_pin : str, optional
        The CA's pin, in the fragment.

    Returns
    -------
    str
    """
    link = base_url.rstrip("/") + "/recorder"
    if join_code:
        link += "?" + urllib.parse.urlencode({"join": join_code})
    if ca_pin:
        link += "#" + urllib.parse.urlencode({"ca": ca_pin})
    return link


def device_url(url: str, addresses: Sequence[str] | None = None) -> str:
    """The URL a phone on the LAN can open: a loopback host is swapped for a LAN address.

    Parameters
    ----------
    url : str
        The server's URL as the Lab knows it (``http://127.0.0.1:8765`` when it
        listens on every interface).
    addresses : sequence of str, optional
        The server's addresses (``lab.info["addresses"]``), LAN ones first.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return url
    lan = [a for a in addresses or () if not a.startswith("127.") and ":" not in a]
    if not lan:
        return url
    netloc = lan[0] + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def phone_link(url: str, info: Mapping[str, Any], join_code: str | None = None) -> str:
    """The link a phone scans: the recorder page over HTTPS, its join code, the CA's pin.

    Without HTTPS (a server only on loopback), the page on the server's URL (a browser on
    this computer can record there; phones cannot reach it).

    Parameters
    ----------
    url : str
        The server's URL as the Lab knows it.
    info : mapping
        ``GET /api/server`` (``lab.info``): ``tls`` and ``addresses``.
    join_code : str, optional
        A code that is valid now: the phone pairs at once (else it waits for approval).
    """
    tls = info.get("tls") or {}
    if tls.get("enabled") and tls.get("https_url"):
        return recorder_link(str(tls["https_url"]), join_code, tls.get("ca_fingerprint"))
    return recorder_link(device_url(url, info.get("addresses")), join_code)


def trust_url(url: str, info: Mapping[str, Any]) -> str | None:
    """The page that explains, on a phone, how to trust the server's CA once (or None)."""
    tls = info.get("tls") or {}
    if not (tls.get("enabled") and tls.get("https_url")):
        return None
    # Plain HTTP: a phone reads it before it trusts anything (the fingerprint it shows is
    # compared with the panel's).
    return "http" + str(tls["https_url"]).removeprefix("https") + "/recorder/ca"


def join_command(code: str, url: str) -> str:
    """The command line that pairs a device with the join code ``code``.

    Parameters
    ----------
    code : str
        The join code (``K7QM-2XDF``).
    url : str
        The server's URL as a device reaches it (`device_url`).
    """
    return f"vocalink device --join {code} --server {url}"


def phone_lines(url: str, info: Mapping[str, Any], join_code: str | None = None) -> list[str]:
    """What ``vocalink serve`` and ``vocalink dashboard`` print for phones (indented lines).

    Parameters
    ----------
    url : str
        The server's URL.
    info : mapping
        ``GET /api/server``.
    join_code : str, optional
        The join code valid now.
    """
    lines = [f"  phones record at: {phone_link(url, info, join_code)}"]
    trust = trust_url(url, info)
    if trust is not None:
        lines.append(f"  phones trust this server once at: {trust} "
                     f"(CA {(info.get('tls') or {}).get('ca_fingerprint')})")
    return lines
