"""Handler plumbing: the one JSON error shape, JSON bodies, query arguments."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, ClassVar

import tornado.httputil
import tornado.web

from ..errors import (
    BadRequest,
    InvalidParameter,
    PayloadTooLarge,
    UnsupportedMediaType,
    VocalinkError,
    error_shape,
)
from ..protocol import is_safe_id
from .auth import Access, Grant

__all__ = [
    "MAX_HEADER_DIGITS",
    "ErrorShape",
    "IdleTimer",
    "JsonHandler",
    "NotFoundHandler",
    "Refused",
    "check_id",
    "grant_of",
    "header_int",
]

log = logging.getLogger(__name__)

MAX_JSON_BODY = 1 << 20
#: Digits a numeric header may hold: 19 covers every length and offset (2**63 has 19).
MAX_HEADER_DIGITS = 19
_HEADER_INT = re.compile(rf"[ \t]*([0-9]{{1,{MAX_HEADER_DIGITS}}})[ \t]*")


def header_int(raw: str) -> int | None:
    """A header value that is a non-negative integer, or ``None`` if it is not one.

    Only 1 to `MAX_HEADER_DIGITS` ASCII digits count, spaces and tabs around them
    allowed. ``int()`` alone would take other scripts' digits, ``"1_000"`` and ``"+1"``,
    and raise on a superscript digit (which ``str.isdigit`` accepts; headers are read as
    Latin-1, so byte 0xB2 is one) or on a number past 4,300 digits: a 500 instead of
    the client's error.
    """
    match = _HEADER_INT.fullmatch(raw)
    return None if match is None else int(match.group(1))


def required_header_int(name: str, raw: str) -> int:
    """`header_int` of header ``name``'s value ``raw``, or a 400 `BadRequest` saying why."""
    value = header_int(raw)
    if value is None:
        raise BadRequest(f"{name} must be a non-negative integer (at most "
                         f"{MAX_HEADER_DIGITS} ASCII digits), got '{raw[:40]}'")
    return value


class IdleTimer:
    """Calls ``on_idle`` once nothing `touch`-ed it for ``timeout_s`` seconds. Loop-only.

    A touch only stamps the time (cheap, once per body chunk); the timer re-arms itself
    when it fires early, so there is one timer per request, not one per chunk.
    """

    def __init__(self, timeout_s: float, on_idle: Callable[[], None]) -> None:
        self.timeout_s = timeout_s
        self._on_idle = on_idle
        self._last = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start (or restart) counting from now."""
        self.cancel()
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._handle = loop.call_later(self.timeout_s, self._check)

    def touch(self) -> None:
        """Something happened: the idle time starts over."""
        self._last = asyncio.get_running_loop().time()

    def cancel(self) -> None:
        """Stop counting (idempotent)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        silent = loop.time() - self._last
        if silent < self.timeout_s:
            self._handle = loop.call_later(self.timeout_s - silent, self._check)
            return
        self._handle = None
        self._on_idle()


class ErrorShape(tornado.web.RequestHandler):
    """Base of every handler of ours: errors leave in the one JSON shape, with their code.

    ``access`` says what the route asks for (`Access`; the application checks it before
    the handler runs); a controller route unless a handler says otherwise.

    Errors map `VocalinkError` (its ``status``, ``code`` and ``headers``) and
    ``tornado.web.HTTPError`` alike, and a 405 says which methods the route allows. A
    WebSocket handler takes it first among its bases
    (``class X(ErrorShape, tornado.websocket.WebSocketHandler)``), so that a refused
    handshake is answered the same way.
    """

    access: ClassVar[Access] = Access.CONTROLLER

    def set_default_headers(self) -> None:
        grant = grant_of(self.request)
        if grant is not None and grant.set_cookie:
            # The token came in the URL: a browser keeps it, unreadable by scripts and never
            # sent by another site's page.
            self.set_cookie(self.application.settings["auth"].cookie_name,
                            self.get_query_argument("token"), httponly=True,
                            samesite="Strict", path="/")

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, VocalinkError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Render any error, ours or Tornado's, as the one JSON shape."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.clear_header("Content-Disposition")
        self.clear_header("Content-Range")
        if isinstance(exc, VocalinkError):
            body = exc.to_dict()
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message
            if message and exc.args:
                message = message % exc.args
            if not message and status_code == 405:
                message = f"{self.request.method} is not allowed on {self.request.path}"
            body = error_shape(status_code, message or exc.reason or _reason(status_code))
        else:
            body = error_shape(status_code, _reason(status_code))
        if status_code == 405:
            self.set_header("Allow", ", ".join(_allowed_methods(self)))
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, VocalinkError) and value.status < 500:
            log.info("%s %s -> %d: %s", self.request.method, self.request.uri, value.status, value)
        else:
            super().log_exception(typ, value, tb)


class JsonHandler(ErrorShape):
    """Base of every REST handler: JSON in, JSON out, errors in the one shape.

    An error raised by a streaming handler's ``data_received`` is answered the same way.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        receive = cls.__dict__.get("data_received")
        if receive is not None:
            # Tornado closes the connection without any answer when data_received raises.
            setattr(cls, "data_received", _answering_errors(receive))  # noqa: B010

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def write_json(self, obj: Any, status: int = 200) -> None:
        """Write ``obj`` as the JSON response body and finish."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(obj, allow_nan=False, default=str))

    # -- request parsing -------------------------------------------------------------------

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object.

        Raises
        ------
        VocalinkError
            415 for another content type or none, 413 over 1 MiB, 400 if it is not a
            JSON object: not JSON, not UTF-8, ``NaN``/``Infinity`` (Python's
            extensions), unpaired surrogate escapes, or nesting too deep to parse.
        """
        # No default: a web page may POST text/plain (or nothing) to us without a
        # preflight ("no-cors"), never application/json; requiring it keeps other pages out.
        ctype = self.request.headers.get("Content-Type")
        media = (ctype or "").split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            got = f"'{media}'" if media else "no Content-Type"
            raise UnsupportedMediaType(
                f"expected a JSON body (Content-Type: application/json), got {got}")
        body = self.request.body
        if len(body) > MAX_JSON_BODY:
            raise PayloadTooLarge(f"JSON body of {len(body)} bytes exceeds {MAX_JSON_BODY} bytes")
        try:
            obj = json.loads(body or b"null", parse_constant=_no_constant)
        except BadRequest:
            raise
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadRequest("request body nests arrays or objects too deeply") from None
        if not isinstance(obj, dict):
            raise BadRequest("request body must be a JSON object")
        _check_text(obj)
        return obj

    def int_header(self, name: str) -> int | None:
        """A header holding a non-negative integer (`header_int`); ``None`` without it.

        Raises
        ------
        VocalinkError
            400 if it is anything else than 1 to 19 ASCII digits.
        """
        raw = self.request.headers.get(name)
        return None if raw is None else required_header_int(name, raw)

    def int_arg(self, name: str, default: int, *, lo: int, hi: int) -> int:
        """A bounded integer query argument (422 if it is not one)."""
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidParameter(
                f"query argument '{name}' must be an integer, got '{raw[:40]}'"
            ) from None
        if not lo <= value <= hi:
            raise InvalidParameter(
                f"query argument '{name}' must be between {lo} and {hi}, got {value}"
            )
        return value

    def id_arg(self, name: str) -> str | None:
        """An optional id query argument (422 if it is not a valid id)."""
        raw = self.get_query_argument(name, None)
        if raw is not None and not is_safe_id(raw):
            raise InvalidParameter(f"query argument '{name}' is not a valid id: '{raw[:80]}'")
        return raw


def _answering_errors(
    receive: Callable[[Any, bytes], Awaitable[None] | None],
) -> Callable[[Any, bytes], Awaitable[None]]:
    """Wrap a handler's ``data_received``: an error it raises is answered, in the one shape."""

    @functools.wraps(receive)
    async def data_received(self: JsonHandler, chunk: bytes) -> None:
        try:
            pending = receive(self, chunk)
            if pending is not None:
                await pending
        except Exception as exc:
            self.log_exception(*sys.exc_info())
            if not self._finished:  # else the answer is out; Tornado ends the connection
                status = exc.status_code if isinstance(exc, tornado.web.HTTPError) else 500
                self.send_error(status, exc_info=sys.exc_info())

    return data_received


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a safe id; raise 422 otherwise (path traversal included)."""
    if not is_safe_id(value):
        raise InvalidParameter(f"'{value[:80]}' is not a valid {what}")
    return value


class NotFoundHandler(JsonHandler):
    """Every unknown route: 404 in the one JSON shape, whatever the method."""

    def initialize(self) -> None:
        # Tornado answers 405 to methods outside SUPPORTED_METHODS before prepare();
        # on a route that does not exist, any method (PROPFIND, BREW...) is a 404.
        self.SUPPORTED_METHODS = (*type(self).SUPPORTED_METHODS, self.request.method or "GET")

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404, "no such route: %s %s", self.request.method,
                                    self.request.path)


class Refused(NotFoundHandler):
    """A request refused before its route runs (a Host not ours, no token): ``error``."""

    access = Access.PUBLIC

    def initialize(self, error: VocalinkError) -> None:  # type: ignore[override]
        super().initialize()
        self.error = error

    def prepare(self) -> None:
        raise self.error

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if getattr(self.request, "vocalink_close", False):
            # A body whose framing was refused is never read: what follows on the
            # connection is no next request. Tornado closes once the answer is out.
            self.set_header("Connection", "close")
            if hasattr(self.request.connection, "_disconnect_on_finish"):
                self.request.connection._disconnect_on_finish = True  # type: ignore[union-attr]
        super().write_error(status_code, **kwargs)


def grant_of(request: tornado.httputil.HTTPServerRequest) -> Grant | None:
    """Who the application let ``request`` in as (`Auth.check`), if it was checked."""
    grant = getattr(request, "vocalink_grant", None)
    return grant if isinstance(grant, Grant) else None


def _no_constant(name: str) -> Any:
    """``json.loads`` hook: NaN and Infinity are Python's extensions, not JSON."""
    raise BadRequest(f"request body is not valid JSON: {name} is not a JSON number")


def _check_text(obj: Any) -> None:
    """Refuse strings that are not Unicode text (unpaired surrogates from JSON escapes)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(
                    "request body is not valid JSON text: a string holds an unpaired "
                    "UTF-16 surrogate escape"
                ) from None


def _allowed_methods(handler: tornado.web.RequestHandler) -> list[str]:
    """The methods ``handler``'s class implements (for a 405's ``Allow`` header)."""
    base = tornado.web.RequestHandler
    return [m for m in handler.SUPPORTED_METHODS
            if getattr(type(handler), m.lower(), None) is not getattr(base, m.lower(), None)]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"

