"""Handler plumbing: the one JSON error shape, JSON bodies, query arguments."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

import tornado.web

from ..errors import (
    BadRequest,
    InvalidParameter,
    PayloadTooLarge,
    UnsupportedMediaType,
    VocalinkError,
)
from ..protocol import is_safe_id

__all__ = ["JsonHandler", "NotFoundHandler", "check_id", "error_body"]

log = logging.getLogger(__name__)

MAX_JSON_BODY = 1 << 20


def error_body(status: int, message: str, errors: list[str] | None = None) -> dict[str, Any]:
    """The one JSON error shape: ``{"ok": false, "error", "errors", "status"}``."""
    return {"ok": False, "error": message, "errors": errors or [message], "status": status}


class JsonHandler(tornado.web.RequestHandler):
    """Base of every REST handler: JSON in, JSON out, errors in one shape."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def write_json(self, obj: Any, status: int = 200) -> None:
        """Write ``obj`` as the JSON response body and finish."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(obj, allow_nan=False, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Render any error, ours or Tornado's, as the one JSON shape."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, VocalinkError):
            body = exc.to_dict()
        elif isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message
            body = error_body(status_code, message or _reason(status_code))
        else:
            body = error_body(status_code, _reason(status_code))
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.clear_header("Content-Disposition")
        self.clear_header("Content-Range")
        self.finish(json.dumps(body))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, VocalinkError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, VocalinkError) and value.status < 500:
            log.info("%s %s -> %d: %s", self.request.method, self.request.uri, value.status, value)
        else:
            super().log_exception(typ, value, tb)

    # -- request parsing -------------------------------------------------------------------

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object.

        Raises
        ------
        VocalinkError
            415 for another content type, 413 over 1 MiB, 400 if it is not a
            JSON object.
        """
        ctype = self.request.headers.get("Content-Type", "application/json")
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(
                f"expected a JSON body (Content-Type: application/json), got '{media}'"
            )
        body = self.request.body
        if len(body) > MAX_JSON_BODY:
            raise PayloadTooLarge(f"JSON body of {len(body)} bytes exceeds {MAX_JSON_BODY} bytes")
        try:
            obj = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise BadRequest("request body must be a JSON object")
        return obj

    def int_arg(self, name: str, default: int, *, lo: int, hi: int) -> int:
        """A bounded integer query argument (422 if it is not one)."""
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidParameter(f"query argument '{name}' must be an integer, got '{raw[:40]}'") from None
        if not lo <= value <= hi:
            raise InvalidParameter(f"query argument '{name}' must be between {lo} and {hi}, got {value}")
        return value

    def id_arg(self, name: str) -> str | None:
        """An optional id query argument (422 if it is not a valid id)."""
        raw = self.get_query_argument(name, None)
        if raw is not None and not is_safe_id(raw):
            raise InvalidParameter(f"query argument '{name}' is not a valid id: '{raw[:80]}'")
        return raw


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a safe id; raise 422 otherwise (path traversal included)."""
    if not is_safe_id(value):
        raise InvalidParameter(f"'{value[:80]}' is not a valid {what}")
    return value


class NotFoundHandler(JsonHandler):
    """Every unknown route: 404 in the one JSON shape, whatever the method."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404, "no such route: %s %s", self.request.method,
                                    self.request.path)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"

