"""Controllers need the token: every route but ``/ping`` (and the devices' socket) says 401.

A real server with authentication on (the suite's ``VOCALINK_TOKEN``), real HTTP clients:
the routes are enumerated from the application itself, so that a route added later is
checked too. The token file, ``?token=`` and its cookie, and ``open`` are covered here;
devices' pairing in ``test_pairing.py``.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import tornado.routing
import tornado.web

from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.errors import assert_error_shape
from tests.support.http import Api, multipart_body
from vocalink_lab.client import Client
from vocalink_lab.errors import Forbidden, Unauthorized
from vocalink_lab.server import Server
from vocalink_lab.tokens import TOKEN_FILE, read_token

pytestmark = pytest.mark.asyncio

#: Methods a handler may implement (Tornado's, and the WebSocket upgrade's GET).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: Open to anyone: liveness, the devices' socket (whose REGISTER is judged instead), and the
#: browser recorder's page and files (a phone arrives with only a join code).
#: The trust page and the CA come before a phone trusts anything (tests/server/test_trust_page).
PUBLIC = {"/ping", "/ws/control", "/recorder", "/recorder/static/x1", "/recorder/ca",
          "/recorder/ca.crt",
          # The VocalLink Android app's, which has no credential (tests/android).
          "/sessions", "/recordings/x1"}


def routes(server: Server) -> list[tuple[str, str]]:
    """Every (method, concrete path) the application routes, from its own rule list."""
    app = server._http.request_callback  # type: ignore[union-attr]
    assert isinstance(app, tornado.web.Application)
    found = []
    for rule in app.wildcard_router.rules:
        assert isinstance(rule.matcher, tornado.routing.PathMatches)
        pattern = rule.matcher.regex.pattern.rstrip("$")
        path = re.sub(r"\([^)]*\)", "x1", pattern).replace("/?", "").replace("\\.", ".")
        handler = rule.target
        assert isinstance(handler, type) and issubclass(handler, tornado.web.RequestHandler)
        for method in METHODS:
            own = getattr(handler, method.lower(), None)
            if own is not getattr(tornado.web.RequestHandler, method.lower()):
                found.append((method, path))
    return found


@pytest_asyncio.fixture
async def anonymous(server: Server) -> AsyncIterator[Api]:
    client = Api(server.url, token="")
    try:
        yield client
    finally:
        client.close()


async def test_every_route_but_ping_asks_for_the_token(server: Server, anonymous: Api) -> None:
    """Missing → 401 (with WWW-Authenticate); wrong → 403; both in the one shape."""
    found = routes(server)
    assert len(found) >= 25, found  # the enumeration found the routes, not nothing
    wrong = Api(server.url, token="not-the-token-at-all")
    try:
        for method, path in [*found, ("GET", "/no/such/route"), ("PROPFIND", "/api/x")]:
            if path in PUBLIC:
                continue
            status, body, headers, _ = await anonymous.request(method, path)
            assert status == 401, (method, path, status)
            assert headers["WWW-Authenticate"] == 'Bearer realm="vocalink"'
            if method != "HEAD":
                assert_error_shape(body, 401)
                assert body["code"] == "unauthorized"
            status, body, _, _ = await wrong.request(method, path)
            assert status == 403, (method, path, status)
            if method != "HEAD":
                assert body["code"] == "forbidden" and "token is wrong" in body["error"]
    finally:
        wrong.close()
    assert ("GET", "/ping") in found
    status, body, _, _ = await anonymous.request("GET", "/ping")
    assert (status, body) == (200, {"status": "server alive"})


async def test_the_token_is_taken_as_bearer_query_or_cookie(server: Server,
                                                           anonymous: Api) -> None:
    token = os.environ["VOCALINK_TOKEN"]
    status, _, headers, _ = await anonymous.request("GET", f"/api/server?token={token}")
    assert status == 200
    cookie = headers["Set-Cookie"]
    name = f"vocalink-token-{server.port}"
    assert cookie.startswith(f"{name}={token}")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    jar = {"Cookie": f"{name}={token}"}
    status, _, _, _ = await anonymous.request("GET", "/api/clients", headers=jar)
    assert status == 200
    # A change on the strength of the cookie alone: only from this server's own page.
    status, body, _, _ = await anonymous.request("PUT", "/api/server", headers=jar,
                                                  json_body={"name": "Hijacked"})
    assert status == 403 and "own page" in body["error"], body
    status, body, _, _ = await anonymous.request(
        "PUT", "/api/server", json_body={"name": "Hijacked"},
        headers={**jar, "Origin": "http://localhost:9999"})
    assert status == 403, body
    status, body, _, _ = await anonymous.request(
        "PUT", "/api/server", json_body={"name": "Studio C"},
        headers={**jar, "Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 200 and body["name"] == "Studio C", body
    status, _, headers, _ = await anonymous.request(
        "GET", "/api/server", headers={"Authorization": "token " + token})
    assert status == 200 and "Set-Cookie" not in headers  # Jupyter's spelling too


async def test_the_client_raises_the_errors_by_class(server: Server) -> None:
    anonymous = Client(server.url)
    anonymous.token, anonymous.headers = None, {}  # as a client that knows no token
    wrong = Client(server.url, token="x" * 20)
    right = Client(server.url)  # VOCALINK_TOKEN, as every client of ours
    try:
        with pytest.raises(Unauthorized, match="controller token"):
            await anonymous.info()
        with pytest.raises(Forbidden, match="token is wrong"):
            await wrong.info()
        assert (await right.info())["auth"] == {"required": True}
    finally:
        for client in (anonymous, wrong, right):
            client.close()


async def test_a_server_keeps_a_token_of_its_own(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without VOCALINK_TOKEN: made on first start, mode 0600, kept across restarts, read
    by a local client from the data dir."""
    monkeypatch.delenv("VOCALINK_TOKEN")
    data = tmp_path / "data"
    first = Server(fast_settings(data))
    await first.start()
    try:
        token = first.token
        assert token is not None and len(token) >= 40
        path = data / TOKEN_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert read_token(data) == token
        client = Client(first.url, data_dir=data)
        assert client.token == token and (await client.info())["auth"]["required"]
        client.close()
    finally:
        await first.stop()
    again = Server(fast_settings(data))
    await again.start()
    try:
        assert again.token == token  # the same token: bookmarks and scripts keep working
    finally:
        await again.stop()


async def test_open_turns_authentication_off_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = Server(fast_settings(tmp_path / "data", open=True))
    with caplog.at_level("WARNING"):
        await server.start()
    try:
        assert server.token is None
        assert any("authentication is OFF" in r.message for r in caplog.records)
        anonymous = Api(server.url, token="")
        status, info, _, _ = await anonymous.request("GET", "/api/server")
        assert status == 200 and info["auth"] == {"required": False}
        assert info["pairing"]["required"] is False and info["pairing"]["join_code"] is None
        body, ctype = multipart_body(encode("wav", seconds=0.1), recording_id="rec-open")
        status, _, _, _ = await anonymous.request("POST", "/api/audio/upload", body=body,
                                                  headers={"Content-Type": ctype})
        assert status == 201
        anonymous.close()
        assert not (tmp_path / "data" / TOKEN_FILE).exists()  # nothing made on purpose
    finally:
        await server.stop()
