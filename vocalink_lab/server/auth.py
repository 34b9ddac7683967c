"""Who may use this server: the controller token, and devices' keys on their uploads.

Every route says what it asks for (`Access`, a class attribute of its handler; a handler
that says nothing is a controller route). Controllers present the controller token as
``Authorization: Bearer <token>``, or once as ``?token=`` in a browser's URL, which is
answered with an HttpOnly, SameSite=Strict cookie, as Jupyter does. Devices upload with
their device key (or the controller token) and enter ``/ws/control`` freely: their
REGISTER is what decides (`hub.Pairing`). Missing: 401; wrong: 403; in the one error shape.

A browser sends the cookie by itself, so a request that changes something on the strength
of the cookie alone must come from this server's own page (its ``Origin``): a page of
another site on the same host (another port) would otherwise ride on it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import tornado.httputil

from ..errors import Forbidden, Unauthorized
from ..hub import Pairing
from ..tokens import same_secret
from .gate import Gate

__all__ = ["Access", "Auth", "Grant"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(enum.Enum):
    """What a route asks for."""

    #: Nothing (``GET /ping``).
    PUBLIC = "public"
    #: The controller token.
    CONTROLLER = "controller"
    #: A device key or the controller token (uploads).
    DEVICE = "device"
    #: The devices' socket: open at the HTTP level; its REGISTER is judged by the hub.
    DEVICE_SOCKET = "device_socket"


@dataclass(frozen=True, slots=True)
class Grant:
    """Who a request was let in as.

    Attributes
    ----------
    controller : bool
        It presented the controller token (or authentication is off).
    device_id : str or None
        The device whose key it presented.
    set_cookie : bool
        It presented the token in the URL: answer with the cookie.
    """

    controller: bool = False
    device_id: str | None = None
    set_cookie: bool = False


class Auth:
    """The server's rules for credentials.

    Parameters
    ----------
    token : str or None
        The controller token; ``None`` turns authentication off (``--open``).
    pairing : callable
        Returns the hub's `Pairing` (devices' keys) once the hub exists.
    port : callable
        Returns the port the server listens on (it names the cookie).
    gate : Gate
        Tells this server's own origin from others.
    """

    def __init__(self, *, token: str | None, pairing: Callable[[], Pairing | None],
                 port: Callable[[], int | None], gate: Gate) -> None:
        self.token = token
        self._pairing = pairing
        self._port = port
        self._gate = gate

    @property
    def required(self) -> bool:
        """Whether authentication is on."""
        return self.token is not None

    @property
    def cookie_name(self) -> str:
        """The cookie's name, one per port: browsers keep cookies per host, not per port."""
        return f"vocalink-token-{self._port() or 0}"

    def check(self, request: tornado.httputil.HTTPServerRequest, access: Access) -> Grant:
        """Let ``request`` in for a route that asks for ``access``, or raise.

        Raises
        ------
        Unauthorized
            No credential at all (401, with ``WWW-Authenticate``).
        Forbidden
            A wrong credential, or the cookie alone on a change from another page (403).
        """
        if access in (Access.PUBLIC, Access.DEVICE_SOCKET) or self.token is None:
            return Grant(controller=self.token is None)
        bearer = _bearer(request)
        query = _query_token(request)
        cookie = request.cookies.get(self.cookie_name)
        given = bearer or query or (cookie.value if cookie is not None else None)
        if not given:
            what = "the controller token" if access is Access.CONTROLLER else (
                "a device key or the controller token")
            raise Unauthorized(f"this server asks for {what}: send 'Authorization: Bearer "
                               "<token>' (the token is printed by `vocalink serve`, kept in "
                               "the data dir's 'token' file, or set in VOCALINK_TOKEN)")
        if same_secret(given, self.token):
            if bearer is None and query is None and request.method not in _SAFE_METHODS:
                self._check_own_page(request)
            return Grant(controller=True,
                         set_cookie=query is not None and bearer is None
                         and request.method == "GET")
        if access is Access.DEVICE and bearer is not None:
            pairing = self._pairing()
            device_id = pairing.device_of(bearer) if pairing is not None else None
            if device_id is not None:
                return Grant(device_id=device_id)
        raise Forbidden("the token is wrong" + ("" if access is Access.CONTROLLER else
                                                " (neither a device key nor the controller "
                                                "token)"))

    def _check_own_page(self, request: tornado.httputil.HTTPServerRequest) -> None:
        origin = request.headers.get("Origin")
        if origin is None or not self._gate.origin_allowed(request):
            raise Forbidden("a change made with the cookie alone must come from this "
                            "server's own page; send 'Authorization: Bearer <token>'")


def _bearer(request: tornado.httputil.HTTPServerRequest) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (or ``token <token>``, as Jupyter)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def _query_token(request: tornado.httputil.HTTPServerRequest) -> str | None:
    values = request.query_arguments.get("token")
    if not values:
        return None
    try:
        return values[-1].decode("utf-8").strip() or None
    except UnicodeDecodeError:
        return None
