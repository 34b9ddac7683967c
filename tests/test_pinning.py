"""Pinning a server's own CA: the pin, the trusting context, the phone link.

Real certificates (the server's own `ensure_tls`, and a second CA that is not it), real
TLS handshakes against a real server on 127.0.0.1; the agent, the Client and the Lab
over HTTPS by the pin alone.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

from tests.conftest import fast_settings, running
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab import pinning
from vocalink_lab.agent import Agent, AgentConfig
from vocalink_lab.client import Client
from vocalink_lab.errors import CertificateMismatch
from vocalink_lab.lab import connect
from vocalink_lab.links import RecorderLink, recorder_link
from vocalink_lab.pinning import fetch_pinned_ca, spki_pin
from vocalink_lab.server.tls import ensure_tls, spki_fingerprint

PIN_OF_NOTHING = "A" * 43 + "="


def material(root: Path):  # type: ignore[no-untyped-def]
    return ensure_tls(root, addresses=["127.0.0.1"], names=["localhost", "srv.local"])


def test_the_pin_read_without_cryptography_is_cryptographys(tmp_path: Path) -> None:
    from cryptography import x509

    for folder in ("a", "b"):
        tls = material(tmp_path / folder)
        expected = spki_fingerprint(x509.load_pem_x509_certificate(tls.ca_pem))
        assert spki_pin(tls.ca_pem) == expected == tls.ca_fingerprint
        assert spki_pin(tls.ca_pem.decode()) == expected
        assert spki_pin(ssl.PEM_cert_to_DER_cert(tls.ca_pem.decode())) == expected
        leaf = tls.leaf_cert.read_text()  # leaf, then CA: the first certificate counts
        assert spki_pin(leaf) == spki_fingerprint(x509.load_pem_x509_certificate(leaf.encode()))
    assert spki_pin(material(tmp_path / "a").ca_pem) != spki_pin(material(tmp_path / "b").ca_pem)


@pytest.mark.parametrize("junk", [b"", b"\x30", b"\x30\x82\xff\xff", b"not a certificate",
                                  b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                                  b"\x30\x03\x02\x01\x00"])
def test_what_is_not_a_certificate_is_a_clear_error(junk: bytes) -> None:
    with pytest.raises(ValueError):
        spki_pin(junk)
    with pytest.raises(CertificateMismatch, match="unreadable"):
        pinning.pinned_context(junk, PIN_OF_NOTHING)


def test_the_context_trusts_the_pinned_ca_and_refuses_another(tmp_path: Path) -> None:
    ours, theirs = material(tmp_path / "ours"), material(tmp_path / "theirs")
    context = pinning.pinned_context(ours.ca_pem, ours.ca_fingerprint)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1
    with pytest.raises(CertificateMismatch, match="not the pinned one"):
        pinning.pinned_context(theirs.ca_pem, ours.ca_fingerprint)


@pytest.mark.parametrize(("link", "base", "code", "pin"), [
    ("https://192.0.2.7:8765/recorder?join=K7QM-2XDF#ca=abc%2B%2F%3D",
     "https://192.0.2.7:8765", "K7QM-2XDF", "abc+/="),
    ("http://192.0.2.7:8765", "http://192.0.2.7:8765", None, None),
    ("http://127.0.0.1:8765/?token=secret", "http://127.0.0.1:8765", None, None),
    ("https://[2001:db8::7]:8765/recorder#ca=xyz", "https://[2001:db8::7]:8765", None, "xyz"),
    # Pasted by hand, unescaped: '+' must stay a '+'.
    ("https://192.0.2.7:1/recorder#ca=ab+c/=", "https://192.0.2.7:1", None, "ab+c/="),
])
def test_a_link_is_read_back(link: str, base: str, code: str | None, pin: str | None) -> None:
    assert RecorderLink.parse(link) == RecorderLink(base, code, pin)


def test_a_link_made_is_read_back_the_same() -> None:
    pin = "q1Z+x/0AbC9e3F+2kLmNoPqRsTuVwXyZ0123456789a="
    link = recorder_link("https://192.0.2.7:8765/", "K7QM-2XDF", pin)
    assert link.startswith("https://192.0.2.7:8765/recorder?join=K7QM-2XDF#ca=")
    assert RecorderLink.parse(link) == RecorderLink("https://192.0.2.7:8765", "K7QM-2XDF", pin)
    assert recorder_link("http://127.0.0.1:1") == "http://127.0.0.1:1/recorder"
    with pytest.raises(ValueError):
        RecorderLink.parse("ftp://192.0.2.7/")


# -- against a real server --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_ca_is_fetched_on_plain_http_and_checked(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data", tls=True)) as server:
        assert server.tls is not None
        context = await asyncio.to_thread(fetch_pinned_ca, server.url, server.tls.ca_fingerprint)
        assert context.get_ca_certs()[0]["subject"]  # the server's CA, parsed
        other = material(tmp_path / "other")
        with pytest.raises(CertificateMismatch):
            await asyncio.to_thread(fetch_pinned_ca, server.url, other.ca_fingerprint)


@pytest.mark.asyncio
async def test_the_client_and_the_lab_speak_https_by_the_pin(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data", tls=True)) as server:
        assert server.tls is not None
        pin = server.tls.ca_fingerprint
        client = Client(f"{server.url}#ca={pin}")  # http:// with a pin: HTTPS on that port
        try:
            assert client.url == f"https://127.0.0.1:{server.port}"
            info = await client.info()
            assert info["tls"]["ca_fingerprint"] == pin
        finally:
            client.close()
        lab = await connect(server.url, ca=pin)
        try:
            assert lab.client.url.startswith("https://") and lab.name == server.name
        finally:
            await lab.stop()
        impostor = Client(server.url, ca=material(tmp_path / "other").ca_fingerprint)
        try:
            with pytest.raises(CertificateMismatch, match="not the pinned one"):
                await impostor.info()
        finally:
            impostor.close()


@pytest.mark.asyncio
async def test_an_agent_given_the_phone_link_pairs_records_and_uploads_over_tls(
        tmp_path: Path) -> None:
    """The link in the dashboard's QR code is all an agent needs: the code pairs it, the
    pin makes it speak ``wss://`` and HTTPS to that CA alone."""
    async with running(fast_settings(tmp_path / "data", tls=True)) as server:
        assert server.tls is not None
        code = server.pairing_info()["join_code"]
        link = recorder_link(f"https://127.0.0.1:{server.port}", code, server.tls.ca_fingerprint)
        agent = Agent(AgentConfig(state_dir=tmp_path / "device", server_url=link, token=None,
                                  device_id="pi-1"))
        api = Api(server.url)
        await agent.start()
        try:
            await asyncio.wait_for(agent.paired.wait(), 10)
            assert agent.server_url == f"https://127.0.0.1:{server.port}"
            session = next(iter(server.sessions))
            assert session.connection.transport.get_extra_info("ssl_object") is not None
            status, started = await api.post_json("/api/commands", {"action": "START"})
            assert status == 200, started
            await wait_until(lambda: agent.recording_id is not None, 5)
            status, stopped = await api.post_json("/api/commands", {"action": "STOP"})
            assert status == 200, stopped
            await wait_until(lambda: len(agent.uploaded) == 1, 15)
            _, listing = await api.get("/api/audio/list")
            assert [r["device_id"] for r in listing["items"]] == ["pi-1"]
        finally:
            await agent.stop()


@pytest.mark.asyncio
async def test_an_agent_with_a_wrong_pin_never_registers_and_says_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vocalink_lab.agent")
    async with running(fast_settings(tmp_path / "data", tls=True)) as server:
        wrong = material(tmp_path / "other").ca_fingerprint
        agent = Agent(AgentConfig(state_dir=tmp_path / "device", server_url=server.url,
                                  ca_pin=wrong, device_id="pi-2"))
        await agent.start()
        try:
            await wait_until(lambda: "not the pinned one" in caplog.text, 10)
            assert not server.sessions and "pi-2" not in {
                d["device_id"] for d in (await Api(server.url).get("/api/clients"))[1]["items"]}
        finally:
            await agent.stop()
