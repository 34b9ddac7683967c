"""The local CA and the server certificate: made once, re-issued when needed, and served."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vocalink_lab.server.tls import (
    CA_CERT,
    CA_KEY,
    LEAF_CERT,
    LEAF_KEY,
    TLS_DIR,
    TlsMaterial,
    ensure_tls,
)

SERVER_ID = "srv-0123456789ab"
NAMES = ["localhost", f"{SERVER_ID}.local"]
ADDRESSES = ["127.0.0.1", "192.0.2.20"]
FILES = (CA_CERT, CA_KEY, LEAF_CERT, LEAF_KEY)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make(data_dir: Path, *, addresses: list[str] | None = None,
         names: list[str] | None = None, now: datetime | None = None) -> TlsMaterial:
    return ensure_tls(data_dir, addresses=ADDRESSES if addresses is None else addresses,
                      names=NAMES if names is None else names, now=now)


def snapshot(data_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Each file's bytes and mtime: what "nothing was written" compares."""
    folder = data_dir / TLS_DIR
    return {n: ((folder / n).read_bytes(), (folder / n).stat().st_mtime_ns) for n in FILES}


def leaf_of(material: TlsMaterial) -> x509.Certificate:
    return x509.load_pem_x509_certificates(material.leaf_cert.read_bytes())[0]


def ca_of(material: TlsMaterial) -> x509.Certificate:
    return x509.load_pem_x509_certificate(material.ca_pem)


def sans_of(cert: x509.Certificate) -> set[x509.GeneralName]:
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def set_aside(data_dir: Path, name: str) -> list[Path]:
    return sorted((data_dir / TLS_DIR).glob(f"{name}.old-*"))


# --- files --------------------------------------------------------------------------------

def test_the_first_call_makes_a_ca_and_a_server_certificate(tmp_path: Path) -> None:
    material = make(tmp_path, now=T0)

    folder = tmp_path / TLS_DIR
    modes = {n: stat.S_IMODE((folder / n).stat().st_mode) for n in FILES}
    assert modes == {CA_CERT: 0o644, CA_KEY: 0o600, LEAF_CERT: 0o644, LEAF_KEY: 0o600}
    assert material.ca_cert == folder / CA_CERT
    assert (material.leaf_cert, material.leaf_key) == (folder / LEAF_CERT, folder / LEAF_KEY)
    assert material.ca_pem == (folder / CA_CERT).read_bytes()
    assert material.sans == ("127.0.0.1", "192.0.2.20", "localhost", f"{SERVER_ID}.local")

    ca = ca_of(material)
    ca_public = ca.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    assert isinstance(ca_public.curve, ec.SECP256R1)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    common_name = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == f"vocalink local CA ({SERVER_ID}, 2026-03-01)"
    assert ca.issuer == ca.subject
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert timedelta(days=3600) < lifetime <= timedelta(days=3660)

    chain = x509.load_pem_x509_certificates(material.leaf_cert.read_bytes())
    assert chain[1:] == [ca]
    chain[0].verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(material.leaf_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == chain[0].public_key()


def test_a_second_call_with_the_same_names_writes_and_signs_nothing(tmp_path: Path) -> None:
    first = make(tmp_path, now=T0)
    before = snapshot(tmp_path)

    # The same set in another order, with duplicates and spellings that mean the same.
    again = make(tmp_path, addresses=["192.0.2.20", "127.0.0.1", "127.0.0.1"],
                 names=[f"{SERVER_ID.upper()}.local.", "localhost"], now=T0 + timedelta(days=1))

    assert snapshot(tmp_path) == before
    assert again == first
    assert sorted(p.name for p in (tmp_path / TLS_DIR).iterdir()) == sorted([*FILES, "lock"])


def test_a_new_address_reissues_the_server_certificate_and_keeps_the_ca(
        tmp_path: Path) -> None:
    first = make(tmp_path, now=T0)
    before = snapshot(tmp_path)

    second = make(tmp_path, addresses=[*ADDRESSES, "10.0.0.7"], now=T0)

    after = snapshot(tmp_path)
    assert after[CA_CERT] == before[CA_CERT] and after[CA_KEY] == before[CA_KEY]
    assert after[LEAF_CERT][0] != before[LEAF_CERT][0]
    assert after[LEAF_KEY][0] != before[LEAF_KEY][0]
    assert (second.ca_fingerprint, second.ca_pem) == (first.ca_fingerprint, first.ca_pem)
    assert "10.0.0.7" in second.sans
    assert x509.IPAddress(ipaddress.ip_address("10.0.0.7")) in sans_of(leaf_of(second))
    leaf_of(second).verify_directly_issued_by(ca_of(first))

    # An address gone is a change too.
    third = make(tmp_path, addresses=["127.0.0.1"], now=T0)
    assert third.sans == ("127.0.0.1", "localhost", f"{SERVER_ID}.local")
    assert set_aside(tmp_path, LEAF_CERT) == []  # a stale certificate is derived, not kept


def test_an_expiring_server_certificate_is_reissued(tmp_path: Path) -> None:
    first = make(tmp_path, now=T0)
    assert first.leaf_not_after == leaf_of(first).not_valid_after_utc

    # 96 days left: kept.
    kept = make(tmp_path, now=T0 + timedelta(days=300))
    assert kept == first

    # 26 days left: re-issued, from the time given.
    later = T0 + timedelta(days=370)
    renewed = make(tmp_path, now=later)
    assert renewed.ca_pem == first.ca_pem
    assert renewed.leaf_not_after > first.leaf_not_after
    assert leaf_of(renewed).not_valid_before_utc <= later
    assert renewed.leaf_not_after - later > timedelta(days=390)


def test_a_clock_set_back_keeps_the_ca(tmp_path: Path) -> None:
    first = make(tmp_path, now=T0)

    # A Raspberry Pi booting in the past before NTP: the CA is not valid yet then, and
    # replacing it would make every phone trust again; the server certificate is cheap.
    back = make(tmp_path, now=T0 - timedelta(days=400))

    assert back.ca_pem == first.ca_pem
    assert leaf_of(back).not_valid_before_utc <= T0 - timedelta(days=400)
    assert set_aside(tmp_path, CA_CERT) == []


def test_an_expired_ca_is_set_aside_and_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = make(tmp_path, now=T0)
    old_ca = first.ca_pem

    with caplog.at_level(logging.WARNING, logger="vocalink_lab.server.tls"):
        second = make(tmp_path, now=T0 + timedelta(days=3700))

    assert second.ca_pem != old_ca
    [kept] = set_aside(tmp_path, CA_CERT)
    assert kept.read_bytes() == old_ca
    assert "expired" in caplog.text and "trust again" in caplog.text


@pytest.mark.parametrize("damage", ["garbage in ca.pem", "empty ca.key", "no ca.key",
                                    "another key in ca.key", "not a CA in ca.pem"])
def test_a_broken_ca_is_set_aside_not_deleted_and_a_new_one_made(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    first = make(tmp_path, now=T0)
    folder = tmp_path / TLS_DIR
    old = {n: (folder / n).read_bytes() for n in (CA_CERT, CA_KEY)}
    if damage == "garbage in ca.pem":
        (folder / CA_CERT).write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 !\n")
    elif damage == "empty ca.key":
        (folder / CA_KEY).write_bytes(b"")
    elif damage == "no ca.key":
        (folder / CA_KEY).unlink()
    elif damage == "another key in ca.key":
        other = ec.generate_private_key(ec.SECP256R1())
        (folder / CA_KEY).write_bytes(other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    else:  # the server certificate where the CA's should be
        (folder / CA_CERT).write_bytes((folder / LEAF_CERT).read_bytes())
    damaged = {n: (folder / n).read_bytes() for n in (CA_CERT, CA_KEY) if (folder / n).exists()}

    with caplog.at_level(logging.WARNING, logger="vocalink_lab.server.tls"):
        second = make(tmp_path, now=T0)

    # Every file that was there is kept, byte for byte, under another name.
    kept = {p.name.split(".old-")[0]: p.read_bytes()
            for n in (CA_CERT, CA_KEY) for p in set_aside(tmp_path, n)}
    assert kept == damaged
    assert second.ca_pem != old[CA_CERT]
    assert (folder / CA_KEY).read_bytes() != old[CA_KEY]
    assert stat.S_IMODE((folder / CA_KEY).stat().st_mode) == 0o600
    assert "trust again" in caplog.text
    # The server certificate follows the new CA.
    leaf_of(second).verify_directly_issued_by(ca_of(second))
    assert second.ca_fingerprint != first.ca_fingerprint


def test_set_aside_files_never_overwrite_each_other(tmp_path: Path) -> None:
    make(tmp_path, now=T0)
    folder = tmp_path / TLS_DIR
    for round_ in range(3):
        (folder / CA_CERT).write_bytes(f"broken {round_}".encode())
        make(tmp_path, now=T0)  # the same second every time
    kept = sorted(p.read_bytes() for p in set_aside(tmp_path, CA_CERT))
    assert kept == [b"broken 0", b"broken 1", b"broken 2"]


def test_a_server_certificate_not_signed_by_this_ca_is_reissued(tmp_path: Path) -> None:
    ours = make(tmp_path / "ours", now=T0)
    other = make(tmp_path / "other", now=T0)
    for name in (LEAF_CERT, LEAF_KEY):
        (ours.leaf_cert.parent / name).write_bytes((other.leaf_cert.parent / name).read_bytes())

    again = make(tmp_path / "ours", now=T0)

    assert again.ca_pem == ours.ca_pem
    leaf_of(again).verify_directly_issued_by(ca_of(ours))


def test_a_broken_server_key_is_set_aside_and_the_certificate_reissued(tmp_path: Path) -> None:
    first = make(tmp_path, now=T0)
    first.leaf_key.write_bytes(b"oops")

    second = make(tmp_path, now=T0)

    assert [p.read_bytes() for p in set_aside(tmp_path, LEAF_KEY)] == [b"oops"]
    assert second.ca_pem == first.ca_pem
    key = serialization.load_pem_private_key(second.leaf_key.read_bytes(), None)
    assert key.public_key() == leaf_of(second).public_key()


def test_a_key_readable_by_others_is_made_private_again(tmp_path: Path) -> None:
    material = make(tmp_path, now=T0)
    material.leaf_key.chmod(0o644)
    (tmp_path / TLS_DIR / CA_KEY).chmod(0o640)

    assert make(tmp_path, now=T0) == material

    for name in (LEAF_KEY, CA_KEY):
        assert stat.S_IMODE((tmp_path / TLS_DIR / name).stat().st_mode) == 0o600


def test_two_threads_starting_together_agree_on_one_ca(tmp_path: Path) -> None:
    results: list[TlsMaterial] = []
    barrier = threading.Barrier(2)

    def start() -> None:
        barrier.wait()
        results.append(make(tmp_path))

    threads = [threading.Thread(target=start, name=f"tls-test-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert set_aside(tmp_path, CA_CERT) == set_aside(tmp_path, CA_KEY) == []


# --- names --------------------------------------------------------------------------------

def test_ipv4_and_ipv6_literals_become_ip_address_names(tmp_path: Path) -> None:
    material = make(tmp_path, addresses=["2001:db8::1", "::1", "fe80::1%eth0", "127.0.0.1"],
                    names=["localhost"], now=T0)

    assert material.sans == ("127.0.0.1", "::1", "2001:db8::1", "fe80::1", "localhost")
    assert sans_of(leaf_of(material)) == {
        x509.IPAddress(ipaddress.ip_address(a))
        for a in ("127.0.0.1", "::1", "2001:db8::1", "fe80::1")} | {x509.DNSName("localhost")}


def test_invalid_addresses_and_names_are_refused_each_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as raised:
        make(tmp_path, addresses=["127.0.0.1", "192.0.2.300", "[::1]"],
             names=["localhost", "bad name.local", "10.0.0.1", "ünicode.local"])

    message = str(raised.value)
    for bad in ("192.0.2.300", "[::1]", "bad name.local", "10.0.0.1", "ünicode.local"):
        assert repr(bad) in message
    assert len(raised.value.errors) == 5  # type: ignore[attr-defined]
    assert not (tmp_path / TLS_DIR).exists()  # refused before anything is written


@pytest.mark.parametrize(("addresses", "names"), [([], []), ("127.0.0.1", []),
                                                   ([], "localhost")])
def test_no_names_or_a_bare_string_is_refused(tmp_path: Path, addresses: list[str],
                                              names: list[str]) -> None:
    with pytest.raises(ValueError):
        make(tmp_path, addresses=addresses, names=names)


def test_a_naive_time_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone"):
        make(tmp_path, now=datetime(2026, 1, 1))


# --- the certificates' contents -----------------------------------------------------------

def test_the_fingerprints_are_those_of_the_ca(tmp_path: Path) -> None:
    material = make(tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / TLS_DIR / CA_CERT).read_bytes())

    spki = ca.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    assert material.ca_fingerprint == base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert len(material.ca_fingerprint) == 44
    der = ca.public_bytes(serialization.Encoding.DER)
    assert material.ca_sha256 == hashlib.sha256(der).hexdigest()


def test_the_server_certificate_is_one_browsers_accept(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    leaf = leaf_of(make(tmp_path))

    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=397)
    assert leaf.not_valid_before_utc < now - timedelta(minutes=5)  # a lagging phone's clock
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert leaf.signature_hash_algorithm is not None
    assert leaf.signature_hash_algorithm.name == "sha256"


# --- a real handshake ---------------------------------------------------------------------

async def fetch(material: TlsMaterial, *, cadata: str, server_hostname: str,
                host: str = "127.0.0.1") -> bytes:
    """Serve ``hello`` over TLS on ``host``, port 0, and read it back as a client."""
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, host, 0, ssl=material.ssl_context())
    port = server.sockets[0].getsockname()[1]
    try:
        client = ssl.create_default_context(cadata=cadata)
        reader, writer = await asyncio.open_connection(host, port, ssl=client,
                                                       server_hostname=server_hostname)
        try:
            return await reader.readexactly(5)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1",
                                             f"{SERVER_ID}.local"])
async def test_a_client_trusting_the_ca_connects(tmp_path: Path, server_hostname: str) -> None:
    material = make(tmp_path)
    got = await fetch(material, cadata=material.ca_pem.decode(),
                      server_hostname=server_hostname)
    assert got == b"hello"


@pytest.mark.asyncio
async def test_a_client_connects_over_ipv6(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    material = make(tmp_path, addresses=["::1"], names=["localhost"])
    assert await fetch(material, cadata=material.ca_pem.decode(), server_hostname="::1",
                       host="::1") == b"hello"


@pytest.mark.asyncio
async def test_a_client_trusting_another_ca_is_refused(tmp_path: Path) -> None:
    material = make(tmp_path / "ours")
    stranger = make(tmp_path / "theirs")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await fetch(material, cadata=stranger.ca_pem.decode(), server_hostname="localhost")


@pytest.mark.asyncio
@pytest.mark.parametrize("server_hostname", ["other.local", "127.0.0.2"])
async def test_a_name_not_in_the_certificate_is_refused(tmp_path: Path,
                                                        server_hostname: str) -> None:
    material = make(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        await fetch(material, cadata=material.ca_pem.decode(),
                    server_hostname=server_hostname)


def test_the_context_refuses_tls_older_than_1_2(tmp_path: Path) -> None:
    context = make(tmp_path).ssl_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # phones have no client certificates
