"""Every HTTP error leaves the server in ONE JSON shape (STYLE C3), whatever raised it.

``{"ok": false, "error": str, "errors": [str, ...], "status": int}``: exactly these
four keys, ``status`` equal to the HTTP status, ``Content-Type: application/json``.
One representative error per status and per kind of origin: routing (Tornado),
request parsing, our `VocalinkError` tree, the hub, the catalog, uploads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.http import Api, multipart_body
from vocalink_lab.server import Server

ERROR_KEYS = {"ok", "error", "errors", "status"}


def assert_error_shape(
    status: int, headers: Mapping[str, str], raw: bytes, expected_status: int,
    contains: str | None = None,
) -> dict[str, Any]:
    """Assert that a response is the one JSON error shape with ``expected_status``.

    ``contains`` must occur in the ``error`` message (a readable reason, not just a
    status phrase). Returns the parsed body.
    """
    assert status == expected_status, (status, raw[:300])
    ctype = headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/json", ctype
    body = json.loads(raw)
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["ok"] is False
    assert isinstance(body["error"], str) and body["error"].strip(), body
    assert isinstance(body["errors"], list) and body["errors"], body
    assert all(isinstance(e, str) and e.strip() for e in body["errors"]), body
    assert type(body["status"]) is int and body["status"] == status, body
    if contains is not None:
        assert contains in body["error"], body["error"]
    return body


async def _stored_recording(api: Api, recording_id: str = "rec-shape") -> dict[str, Any]:
    status, body = await api.upload(encode("wav", seconds=0.2), recording_id=recording_id)
    assert status == 201, body
    return body["recording"]  # type: ignore[no-any-return]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "path", "kw", "expected", "contains"),
    [
        ("GET", "/no/such/route", {}, 404, "no such route: GET /no/such/route"),
        ("DELETE", "/ping", {}, 405, "DELETE is not allowed on /ping"),
        ("POST", "/api/commands", {"body": "{not json", "headers": {
            "Content-Type": "application/json"}}, 400, "not valid JSON"),
        ("POST", "/api/commands", {"body": json.dumps({"action": "PING", "pad": "x" * (1 << 20)}),
                                   "headers": {"Content-Type": "application/json"}},
         413, "exceeds 1048576 bytes"),
        ("POST", "/api/commands", {"body": "action=PING", "headers": {
            "Content-Type": "text/plain"}}, 415, "expected a JSON body"),
        ("GET", "/api/audio/list?limit=abc", {}, 422, "'limit' must be an integer"),
        ("POST", "/api/commands", {"json_body": {"action": "PING", "targets": ["ghost"]}},
         404, "unknown device(s): ghost"),
        ("GET", "/api/audio/no-such-recording/meta", {}, 404, "no recording with id"),
        ("GET", "/ws/control", {}, 400, "WebSocket"),
    ],
    ids=["404-route", "405", "400-json", "413-json", "415-json", "422-query",
         "404-device", "404-recording", "400-ws-endpoint"],
)
async def test_request_errors_have_the_one_shape(
    api: Api, method: str, path: str, kw: dict[str, Any], expected: int, contains: str
) -> None:
    status, _, headers, raw = await api.request(method, path, **kw)
    body = assert_error_shape(status, headers, raw, expected, contains)
    if expected == 404 and "device" in contains:
        assert body["errors"] == ["no device with id 'ghost' has registered"]
    if expected == 405:
        assert headers["Allow"] == "GET"


@pytest.mark.asyncio
async def test_unsatisfiable_range_is_416_with_content_range(api: Api) -> None:
    recording = await _stored_recording(api)
    status, _, headers, raw = await api.request(
        "GET", f"/api/audio/{recording['id']}", headers={"Range": "bytes=999999999-"})
    assert_error_shape(status, headers, raw, 416, "outside the file")
    assert headers["Content-Range"] == f"bytes */{recording['bytes']}"
    assert "Content-Disposition" not in headers


@pytest.mark.asyncio
async def test_not_audio_is_415(api: Api) -> None:
    status, _, headers, raw = await api.request(
        "POST", "/api/audio/upload", *_multipart(b"just some text, not audio\n" * 50))
    assert_error_shape(status, headers, raw, 415, "not audio")


@pytest.mark.asyncio
async def test_reupload_with_other_bytes_is_409(api: Api) -> None:
    await _stored_recording(api, "rec-409")
    other = encode("wav", seconds=0.2, freq=220.0)
    status, _, headers, raw = await api.request(
        "POST", "/api/audio/upload", *_multipart(other, recording_id="rec-409"))
    assert_error_shape(status, headers, raw, 409, "already stored with other content")


@pytest.mark.asyncio
async def test_invalid_upload_field_is_422(api: Api) -> None:
    status, _, headers, raw = await api.request(
        "POST", "/api/audio/upload",
        *_multipart(encode("wav", seconds=0.2), recording_id="../../etc/passwd"))
    body = assert_error_shape(status, headers, raw, 422, "is not a valid id")
    assert body["errors"] == [body["error"]]


@pytest.mark.asyncio
async def test_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    async with Server(fast_settings(tmp_path / "small", max_upload_bytes=10_000)) as server:
        api = Api(server.url)
        try:
            status, _, headers, raw = await api.request(
                "POST", "/api/audio/upload", *_multipart(encode("wav", seconds=0.5)))
        finally:
            api.close()
    assert_error_shape(status, headers, raw, 413, "exceeds the limit of 10000 bytes")


@pytest.mark.asyncio
async def test_several_problems_are_listed_in_errors(api: Api) -> None:
    status, _, headers, raw = await api.request(
        "POST", "/api/audio/upload",
        *_multipart(encode("wav", seconds=0.2), device_id="a/b", started_at="soon"))
    body = assert_error_shape(status, headers, raw, 422)
    assert len(body["errors"]) == 2
    assert any("device_id 'a/b'" in e for e in body["errors"])
    assert any("started_at" in e for e in body["errors"])


@pytest.mark.asyncio
async def test_a_server_bug_is_500_in_the_same_shape(
    server: Server, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("simulated bug with /secret/path")

    assert server.hub is not None
    monkeypatch.setattr(server.hub, "devices", broken)
    status, _, headers, raw = await api.request("GET", "/api/clients")
    body = assert_error_shape(status, headers, raw, 500, "Internal Server Error")
    assert b"/secret/path" not in raw and body["errors"] == ["Internal Server Error"]


def _multipart(data: bytes, **fields: Any) -> tuple[bytes, dict[str, str]]:
    body, ctype = multipart_body(data, **fields)
    return body, {"Content-Type": ctype}
