"""Every HTTP error leaves the server in ONE JSON shape, whatever raised it (docs/conventions.md).

``{"ok": false, "error": str, "errors": [str, ...], "status": int, "code": str}``:
exactly these five keys, ``status`` equal to the HTTP status, ``Content-Type:
application/json``. One representative error per status and per kind of origin:
routing (Tornado), request parsing, the hub, the catalog, uploads; and every class of
our `VocalinkError` tree, raised from each place a handler can raise it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import tornado.web

import vocalink_lab.server.app as server_app
from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.errors import assert_error_response
from tests.support.http import Api, multipart_body
from vocalink_lab.errors import VocalinkError, from_shape
from vocalink_lab.server import Server
from vocalink_lab.server.base import JsonHandler


async def _stored_recording(api: Api, recording_id: str = "rec-shape") -> dict[str, Any]:
    status, body = await api.upload(encode("wav", seconds=0.2), recording_id=recording_id)
    assert status == 201, body
    return body["recording"]  # type: ignore[no-any-return]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "path", "kw", "expected", "contains", "code"),
    [
        ("GET", "/no/such/route", {}, 404, "no such route: GET /no/such/route", "not_found"),
        ("DELETE", "/ping", {}, 405, "DELETE is not allowed on /ping", "method_not_allowed"),
        ("POST", "/api/commands", {"body": "{not json", "headers": {
            "Content-Type": "application/json"}}, 400, "not valid JSON", "bad_request"),
        ("POST", "/api/commands", {"body": json.dumps({"action": "PING", "pad": "x" * (1 << 20)}),
                                   "headers": {"Content-Type": "application/json"}},
         413, "exceeds 1048576 bytes", "too_large"),
        ("POST", "/api/commands", {"body": "action=PING", "headers": {
            "Content-Type": "text/plain"}}, 415, "expected a JSON body", "unsupported_media_type"),
        ("GET", "/api/audio/list?limit=abc", {}, 422, "'limit' must be an integer",
         "invalid_parameter"),
        ("POST", "/api/commands", {"json_body": {"action": "PING", "targets": ["ghost"]}},
         404, "unknown device(s): ghost", "device_not_found"),
        ("GET", "/api/audio/no-such-recording/meta", {}, 404, "no recording with id",
         "recording_not_found"),
        ("GET", "/ws/control", {}, 400, "WebSocket", "bad_request"),
    ],
    ids=["404-route", "405", "400-json", "413-json", "415-json", "422-query",
         "404-device", "404-recording", "400-ws-endpoint"],
)
async def test_request_errors_have_the_one_shape(
    api: Api, method: str, path: str, kw: dict[str, Any], expected: int, contains: str, code: str
) -> None:
    status, _, headers, raw = await api.request(method, path, **kw)
    body = assert_error_response(status, headers, raw, expected, contains, code=code)
    if expected == 404 and "device" in contains:
        assert body["errors"] == ["no device with id 'ghost' has registered"]
    if expected == 405:
        assert headers["Allow"] == "GET"


@pytest.mark.asyncio
async def test_unsatisfiable_range_is_416_with_content_range(api: Api) -> None:
    recording = await _stored_recording(api)
    status, _, headers, raw = await api.request(
        "GET", f"/api/audio/{recording['id']}", headers={"Range": "bytes=999999999-"})
    assert_error_response(status, headers, raw, 416, "outside the file",
                          code="range_not_satisfiable")
    assert headers["Content-Range"] == f"bytes */{recording['bytes']}"
    assert "Content-Disposition" not in headers


@pytest.mark.asyncio
async def test_not_audio_is_415(api: Api) -> None:
    status, _, headers, raw = await api.request(
        "POST", "/api/audio/upload", *_multipart(b"just some text, not audio\n" * 50))
    assert_error_response(status, headers, raw, 415, "not audio", code="not_audio")


@pytest.mark.asyncio
async def test_reupload_with_other_bytes_is_409(api: Api) -> None:
    await _stored_recording(api, "rec-409")
    other = encode("wav", seconds=0.2, freq=220.0)
    status, _, headers, raw = await api.request(
        "POST", "/api/audio/upload", *_multipart(other, recording_id="rec-409"))
    assert_error_response(status, headers, raw, 409, "already stored with other content",
                          code="conflict")


@pytest.mark.asyncio
async def test_invalid_upload_field_is_422(api: Api) -> None:
    status, _, headers, raw = await api.request(
        "POST", "/api/audio/upload",
        *_multipart(encode("wav", seconds=0.2), recording_id="../../etc/passwd"))
    body = assert_error_response(status, headers, raw, 422, "is not a valid id",
                                 code="invalid_parameter")
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
    assert_error_response(status, headers, raw, 413, "exceeds the limit of 10000 bytes",
                          code="too_large")


@pytest.mark.asyncio
async def test_several_problems_are_listed_in_errors(api: Api) -> None:
    status, _, headers, raw = await api.request(
        "POST", "/api/audio/upload",
        *_multipart(encode("wav", seconds=0.2), device_id="a/b", started_at="soon"))
    body = assert_error_response(status, headers, raw, 422)
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
    body = assert_error_response(status, headers, raw, 500, "Internal Server Error",
                                 code="internal_error")
    assert b"/secret/path" not in raw and body["errors"] == ["Internal Server Error"]


def _multipart(data: bytes, **fields: Any) -> tuple[bytes, dict[str, str]]:
    body, ctype = multipart_body(data, **fields)
    return body, {"Content-Type": ctype}


# -- every class of the error tree, from every place a handler raises ---------------------------


def _error_classes() -> list[type[VocalinkError]]:
    """`VocalinkError` and every subclass of it, walked recursively (a new class is included)."""
    found: list[type[VocalinkError]] = []
    stack = [VocalinkError]
    while stack:
        cls = stack.pop()
        if cls.__module__.startswith("vocalink_lab.") and cls not in found:
            found.append(cls)
        stack.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)


ERROR_CLASSES = {cls.__name__: cls for cls in _error_classes()}


def _raise(name: str) -> None:
    raise ERROR_CLASSES[name](f"simulated {name} for a test")


class RaisingHandler(JsonHandler):
    """``GET /test/raise/{where}/{class}``: raises a fresh error from ``prepare`` or ``get``."""

    async def prepare(self) -> None:
        where, name = self.path_args
        if where == "prepare":
            _raise(name)

    async def get(self, where: str, name: str) -> None:
        _raise(name)


@tornado.web.stream_request_body
class RaisingStreamHandler(JsonHandler):
    """``PUT /test/raise-streaming/{class}``: raises from ``data_received``, mid-body."""

    async def data_received(self, chunk: bytes) -> None:
        _raise(self.path_args[0])

    async def put(self, name: str) -> None:
        self.write_json({"raised": False})


@pytest_asyncio.fixture
async def raising_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    """A real server whose app (`make_app`) has the test-only routes above as well."""
    make_app = server_app.make_app

    def make_app_with_raising_routes(**kwargs: Any) -> tornado.web.Application:
        app = make_app(**kwargs)
        app.add_handlers(r".*", [(r"/test/raise/(\w+)/(\w+)", RaisingHandler),
                                 (r"/test/raise-streaming/(\w+)", RaisingStreamHandler)])
        return app

    monkeypatch.setattr(server_app, "make_app", make_app_with_raising_routes)
    async with Server(fast_settings(tmp_path / "data")) as server:
        client = Api(server.url)
        try:
            yield client
        finally:
            client.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["prepare", "handler", "data_received"])
@pytest.mark.parametrize("name", list(ERROR_CLASSES))
async def test_every_error_class_leaves_a_handler_in_the_one_shape(
    raising_api: Api, name: str, where: str
) -> None:
    cls = ERROR_CLASSES[name]
    if where == "data_received":
        status, _, headers, raw = await raising_api.request(
            "PUT", f"/test/raise-streaming/{name}", body=b"x" * 4096)
    else:
        status, _, headers, raw = await raising_api.request("GET", f"/test/raise/{where}/{name}")
    body = assert_error_response(status, headers, raw, cls.status, f"simulated {name}",
                                 code=cls.code)
    assert body["errors"] == [f"simulated {name} for a test"]
    again = from_shape(status, body)
    assert type(again) is cls, (type(again), cls)
    assert (again.status, again.message) == (cls.status, body["error"])


def test_every_code_names_one_class() -> None:
    codes = [cls.code for cls in ERROR_CLASSES.values()]
    assert len(codes) == len(set(codes)), sorted(codes)
    assert len(ERROR_CLASSES) > 20  # the walk found the tree, not only its root


@pytest.mark.asyncio
async def test_a_storage_error_of_the_catalog_is_the_one_shape(server: Server, api: Api) -> None:
    await server.catalog.stop()  # the database is gone from under the handlers
    status, _, headers, raw = await api.request("GET", "/api/audio/list")
    body = assert_error_response(status, headers, raw, 500, "the catalog is not open",
                                 code="storage_error")
    assert type(from_shape(status, body)).__name__ == "StorageError"
