"""Who may address this server from a browser: the ``Host`` and a socket's ``Origin``.

A page on another site cannot read our answers (no CORS headers are ever sent), but it
can still send requests: through a name it controls and rebinds to our address (DNS
rebinding: the browser then treats our server as the attacker's own origin), or by
opening a WebSocket, which browsers allow across origins. So every request must name
this server in ``Host`` (an address literal, ``localhost``, its ``.local`` names, the
machine's name, or a name the settings allow), and a socket opened by a page must come
from this server's own origin or an allowed one. Clients that are not browsers (the
agent, the Lab) send no ``Origin`` and are not concerned.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Iterable

import tornado.httputil

from ..errors import Forbidden

__all__ = ["Gate"]


class Gate:
    """The server's rules for ``Host`` and ``Origin``.

    Parameters
    ----------
    server_id : callable
        Returns the server's id once known (its mDNS host is ``<id>.local``), else None.
    allowed_hosts : iterable of str, optional
        More host names a request may use (a reverse proxy's, a DNS name of the lab's).
    allowed_origins : iterable of str, optional
        More origins whose pages may open the WebSockets (``https://lab.example.org``).
    """

    def __init__(self, *, server_id: Callable[[], str | None],
                 allowed_hosts: Iterable[str] | None = None,
                 allowed_origins: Iterable[str] | None = None) -> None:
        self._server_id = server_id
        machine = socket.gethostname().lower().rstrip(".")
        self._names = {"localhost", machine, f"{machine.split('.')[0]}.local",
                       *(h.lower().rstrip(".") for h in allowed_hosts or ())}
        self._origins = {_origin(o) for o in allowed_origins or ()}

    def host_allowed(self, host: str) -> bool:
        """Whether a ``Host`` header (``name[:port]``) names this server."""
        name = (urllib.parse.urlsplit("//" + host).hostname or "").rstrip(".")
        if not name:
            return False
        try:
            ipaddress.ip_address(name)
            return True  # an address cannot be rebound: the page's origin is that address
        except ValueError:
            pass
        server_id = self._server_id()
        return name in self._names or (server_id is not None
                                       and name == f"{server_id.lower()}.local")

    def check_host(self, request: tornado.httputil.HTTPServerRequest) -> None:
        """Raise `Forbidden` unless the request names this server.

        Raises
        ------
        Forbidden
            403, naming the host and the setting that would allow it.
        """
        if not self.host_allowed(request.host):
            raise Forbidden(f"this server does not answer to the name '{request.host[:100]}' "
                            "(use its address or add the name to VOCALINK_ALLOWED_HOSTS)")

    def origin_allowed(self, request: tornado.httputil.HTTPServerRequest) -> bool:
        """Whether the request comes from no browser, or from an allowed page's origin."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser
        own = _origin(f"{request.protocol}://{request.host}")
        return _origin(origin) in {own, *self._origins}

    def check_origin(self, request: tornado.httputil.HTTPServerRequest) -> None:
        """Raise `Forbidden` when a page of another origin opens a WebSocket.

        Raises
        ------
        Forbidden
            403, naming the origin and the setting that would allow it.
        """
        if not self.origin_allowed(request):
            origin = request.headers.get("Origin", "")
            raise Forbidden(f"a page from {origin[:100]} may not open this socket (only this "
                            "server's own pages, or origins in VOCALINK_ALLOWED_ORIGINS)")


def _origin(value: str) -> str:
    """``scheme://host[:port]`` in lower case, the default port left out."""
    parts = urllib.parse.urlsplit(value.strip().lower())
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return value
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")
