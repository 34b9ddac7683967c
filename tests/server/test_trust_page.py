"""``/recorder/ca``: the page a phone reads to trust the server once, and the CA it installs.

Real servers on 127.0.0.1 (TLS forced on, and off); plain HTTP without a token, as a phone
comes before it trusts anything.
"""

from __future__ import annotations

import html
import ssl
from pathlib import Path

import pytest

from tests.conftest import fast_settings, running
from tests.support.errors import assert_error_shape
from tests.support.http import Api
from vocalink_lab.pinning import spki_pin

pytestmark = pytest.mark.asyncio


async def test_the_trust_page_shows_the_fingerprints_and_the_steps(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data", tls=True, name="Room <B>")) as server:
        assert server.tls is not None
        anyone = Api(server.url, token="")
        status, _, headers, raw = await anyone.request("GET", "/recorder/ca")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        page = raw.decode()
        assert server.tls.ca_fingerprint in page
        grouped = ":".join(server.tls.ca_sha256[i:i + 2] for i in range(0, 64, 2)).upper()
        assert grouped in page
        assert "Android" in page and "iPhone" in page and server.tls.ca_name in page
        assert html.escape("Room <B>") in page and "Room <B>" not in page  # escaped
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["Referrer-Policy"] == "no-referrer"
        assert f'href="https://127.0.0.1:{server.port}/recorder"' in page


async def test_the_ca_certificate_is_the_pinned_one(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data", tls=True)) as server:
        assert server.tls is not None
        anyone = Api(server.url, token="")
        for path in ("/recorder/ca.crt",):
            status, _, headers, raw = await anyone.request("GET", path)
            assert status == 200
            assert headers["Content-Type"] == "application/x-x509-ca-cert"
            assert 'filename="vocalink-ca.crt"' in headers["Content-Disposition"]
            assert raw == server.tls.ca_pem
            assert spki_pin(raw) == server.tls.ca_fingerprint
            # It is a CA certificate Python's ssl module reads as one.
            context = ssl.create_default_context(cadata=raw.decode())
            assert len(context.get_ca_certs()) == 1


async def test_without_tls_the_page_says_so_and_there_is_no_certificate(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data", tls=False)) as server:
        anyone = Api(server.url, token="")
        status, _, _, raw = await anyone.request("GET", "/recorder/ca")
        assert status == 200 and b"does not serve HTTPS" in raw
        status, parsed, _, _ = await anyone.request("GET", "/recorder/ca.crt")
        assert status == 404
        assert_error_shape(parsed, 404, "not_found")
        assert "no certificate" in parsed["error"]
