"""The one JSON error shape, checked the same way by every test that reads an error.

``{"ok": false, "error": str, "errors": [str, ...], "status": int, "code": str}``:
exactly these five keys (`vocalink_lab.errors.error_shape`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

ERROR_KEYS = {"ok", "error", "errors", "status", "code"}
_CODE = re.compile(r"[a-z][a-z0-9_]*")


def assert_error_shape(body: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert that ``body`` is the one error shape with ``status`` (and ``code``, if given).

    Returns the body, for further checks.
    """
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["ok"] is False, body
    assert isinstance(body["error"], str) and body["error"].strip(), body
    assert isinstance(body["errors"], list) and body["errors"], body
    assert all(isinstance(e, str) and e.strip() for e in body["errors"]), body
    assert type(body["status"]) is int and body["status"] == status, body
    assert isinstance(body["code"], str) and _CODE.fullmatch(body["code"]), body
    if code is not None:
        assert body["code"] == code, body
    return body


def assert_error_response(status: int, headers: Mapping[str, str], raw: bytes,
                          expected_status: int, contains: str | None = None, *,
                          code: str | None = None) -> dict[str, Any]:
    """Assert that an HTTP response is the one error shape, as JSON, with ``expected_status``.

    ``contains`` must occur in the ``error`` message (a readable reason, not only a
    status phrase). Returns the parsed body.
    """
    assert status == expected_status, (status, raw[:300])
    ctype = headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/json", (ctype, raw[:300])
    body = assert_error_shape(json.loads(raw), status, code)
    if contains is not None:
        assert contains in body["error"], body["error"]
    return body
