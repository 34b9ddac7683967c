"""HTTP helpers for tests: a JSON client and a multipart encoder."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest


def auth_headers(token: str | None = None) -> dict[str, str]:
    """``Authorization: Bearer`` with ``token`` (default: the suite's ``VOCALINK_TOKEN``)."""
    return {"Authorization": f"Bearer {token or os.environ['VOCALINK_TOKEN']}"}


class Api:
    """A real HTTP client (Tornado's) bound to one server's base URL.

    It sends the controller token (``VOCALINK_TOKEN``, or ``token``) with every request,
    as every client of ours does; ``token=""`` sends none.
    """

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.client = AsyncHTTPClient(force_instance=True, max_body_size=2**31)
        self.auth = {} if token == "" else auth_headers(token)

    async def request(
        self, method: str, path: str, body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None, json_body: Any = None, timeout: float = 30,
    ) -> tuple[int, Any, Mapping[str, str], bytes]:
        """Send a request; return ``(status, parsed JSON or None, headers, raw body)``."""
        if json_body is not None:
            body = json.dumps(json_body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        response = await self.client.fetch(
            HTTPRequest(self.base_url + path, method=method, body=body,
                        headers={**self.auth, **(headers or {})},
                        request_timeout=timeout, allow_nonstandard_methods=True),
            raise_error=False,
        )
        raw = response.body or b""
        parsed = None
        if response.headers.get("Content-Type", "").startswith("application/json") and raw:
            parsed = json.loads(raw)
        return response.code, parsed, response.headers, raw

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, parsed, _, _ = await self.request("GET", path, **kw)
        return status, parsed

    async def post_json(self, path: str, obj: Any, **kw: Any) -> tuple[int, Any]:
        status, parsed, _, _ = await self.request("POST", path, json_body=obj, **kw)
        return status, parsed

    async def put_json(self, path: str, obj: Any) -> tuple[int, Any]:
        status, parsed, _, _ = await self.request("PUT", path, json_body=obj)
        return status, parsed

    async def upload(self, data: bytes, filename: str = "take.wav",
                     **fields: Any) -> tuple[int, Any]:
        body, ctype = multipart_body(data, filename=filename, **fields)
        status, parsed, _, _ = await self.request(
            "POST", "/api/audio/upload", body=body, headers={"Content-Type": ctype}
        )
        return status, parsed

    def close(self) -> None:
        self.client.close()


def multipart_body(
    data: bytes | None, filename: str = "take.wav", boundary: str | None = None, **fields: Any
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with a ``file`` part (unless ``data`` is None)."""
    boundary = boundary or f"vl-{uuid.uuid4().hex}"
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    if data is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
