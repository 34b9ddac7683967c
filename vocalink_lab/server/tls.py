"""The server's TLS material: a local CA per data dir, and the certificate it signs.

Browsers give the microphone only to secure contexts, so a phone on the lab's Wi-Fi
reaches the recorder page over HTTPS. No public CA signs for a LAN address or a
``.local`` name: each data dir has its own CA, which a phone trusts once (or which the
agent pins by its fingerprint), and a leaf certificate for the server's current
addresses and names, re-issued when they change.

Files, in ``<data dir>/tls/``:

- ``ca.pem`` (0644) and ``ca.key`` (0600): the CA, made once and kept for its ten
  years. A new CA means every phone must trust again, so it is replaced only when its
  files are missing, unreadable, do not belong together, or it has expired.
- ``server.pem`` (0644), the leaf certificate followed by the CA's (the chain a server
  sends), and ``server.key`` (0600): re-issued freely, they are derived.
- ``lock``: held while the files are checked or written, so that two processes starting
  on one data dir agree on one CA.

A file that cannot be used is renamed ``<name>.old-<UTC time>``, never deleted.
`ensure_tls` is synchronous and, when nothing changed, only reads, parses and compares
(no key generation, no signing): a server calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import durable
from ..errors import ConfigError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CA_LIFETIME",
    "CLOCK_SKEW",
    "LEAF_CERT",
    "LEAF_KEY",
    "LEAF_LIFETIME",
    "RENEW_BEFORE",
    "TLS_DIR",
    "TlsMaterial",
    "ensure_tls",
    "spki_fingerprint",
]

log = logging.getLogger(__name__)

TLS_DIR = "tls"
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
#: The leaf certificate followed by the CA's: what `ssl.SSLContext.load_cert_chain` loads.
LEAF_CERT = "server.pem"
LEAF_KEY = "server.key"
_LOCK = "lock"

CA_LIFETIME = timedelta(days=3650)
#: Browsers refuse leaf certificates valid for longer (398 days since 2020), counted from
#: not-before to not-after; Apple's limit for locally trusted CAs (825 days) is looser.
LEAF_LIFETIME = timedelta(days=397)
#: A leaf expiring sooner than this is re-issued.
RENEW_BEFORE = timedelta(days=30)
#: Not-before lies this far in the past: a phone whose clock lags still accepts a
#: certificate made a moment ago.
CLOCK_SKEW = timedelta(days=1)

_ORGANIZATION = "vocalink"
_LEAF_NAME = "vocalink server"
_MAX_COMMON_NAME = 64  # RFC 5280's upper bound; cryptography enforces it
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


@dataclass(frozen=True)
class TlsMaterial:
    """What a server needs to serve TLS, and what its clients need to trust it.

    Attributes
    ----------
    ca_cert : Path
        The CA certificate (PEM), the file a phone installs.
    leaf_cert : Path
        The server's certificate followed by the CA's (PEM), the chain it sends.
    leaf_key : Path
        The server certificate's private key (PEM, mode 0600).
    ca_pem : bytes
        The CA certificate, PEM.
    ca_fingerprint : str
        SHA-256 of the CA's SubjectPublicKeyInfo (DER), base64: the pin clients check
        (the form of HPKP and Chrome's ``--ignore-certificate-errors-spki-list``).
    ca_sha256 : str
        SHA-256 of the CA certificate (DER), 64 lowercase hex digits: what a phone shows
        a person about a certificate.
    ca_name : str
        The CA's common name, as a phone lists it among its trusted ones.
    sans : tuple of str
        The server certificate's addresses (IPv4, then IPv6) and then its DNS names.
    leaf_not_after : datetime
        When the server certificate expires (UTC).
    """

    ca_cert: Path
    leaf_cert: Path
    leaf_key: Path
    ca_pem: bytes
    ca_fingerprint: str
    ca_sha256: str
    ca_name: str
    sans: tuple[str, ...]
    leaf_not_after: datetime

    def ssl_context(self) -> ssl.SSLContext:
        """A new server-side context: TLS 1.2 or later, serving the certificate chain.

        Returns
        -------
        ssl.SSLContext
            For `asyncio.start_server` or Tornado's ``ssl_options``.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.leaf_cert, self.leaf_key)
        return context


class _Ca(NamedTuple):
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


class _Unusable(Exception):
    """A file exists but cannot be used as it is."""


def ensure_tls(data_dir: Path, *, addresses: Sequence[str], names: Sequence[str],
               now: datetime | None = None) -> TlsMaterial:
    """The data dir's CA and a server certificate for ``addresses`` and ``names``.

    The CA is made on first use and kept. The server certificate is re-issued when the
    wanted addresses and names differ from its own, when it expires within
    `RENEW_BEFORE`, or when the current CA did not sign it; otherwise nothing is written.

    Parameters
    ----------
    data_dir : Path
        The server's data dir; the files live in its ``tls/`` folder.
    addresses : sequence of str
        IPv4 and IPv6 literals the server is reached at (an IPv6 zone, ``%eth0``, is
        dropped: a certificate names an address, not an interface).
    names : sequence of str
        DNS names the server is reached by, e.g. ``localhost`` and ``<server-id>.local``
        (compared in lower case, without a trailing dot).
    now : datetime, optional
        The current time, timezone-aware; by default the clock's.

    Returns
    -------
    TlsMaterial
        The files' paths, the CA and its fingerprints, the certificate's names.

    Raises
    ------
    ConfigError
        An address or a name is invalid (each one is listed), or there are none. It is
        a `ValueError`.
    ValueError
        ``now`` has no timezone.
    InsufficientStorage
        The disk is full; the files that were there are left as they were.
    """
    now = _utc(now)
    wanted = _wanted_sans(addresses, names)
    folder = Path(data_dir) / TLS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / _LOCK):
        ca = _load_ca(folder, now) or _make_ca(folder, _ca_label(names), now)
        leaf = _load_leaf(folder, ca, wanted, now) or _issue_leaf(folder, ca, wanted, now)
    ca_der = ca.cert.public_bytes(serialization.Encoding.DER)
    return TlsMaterial(
        ca_cert=folder / CA_CERT, leaf_cert=folder / LEAF_CERT, leaf_key=folder / LEAF_KEY,
        ca_pem=ca.cert.public_bytes(serialization.Encoding.PEM),
        ca_fingerprint=spki_fingerprint(ca.cert),
        ca_sha256=hashlib.sha256(ca_der).hexdigest(),
        ca_name=_common_name(ca.cert),
        sans=tuple(_show(san) for san in _ordered(_sans_of(leaf))),
        leaf_not_after=leaf.not_valid_after_utc,
    )


def spki_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of a certificate's SubjectPublicKeyInfo (DER), base64 (with padding).

    It names the key, not the certificate: a pin that survives re-signing.

    Parameters
    ----------
    cert : cryptography.x509.Certificate
        The certificate.

    Returns
    -------
    str
        44 characters.
    """
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # Certificates hold whole seconds: compare and compute in them.
    return now.astimezone(UTC).replace(microsecond=0)


def _wanted_sans(addresses: Sequence[str], names: Sequence[str]) -> frozenset[x509.GeneralName]:
    if isinstance(addresses, str) or isinstance(names, str):
        raise ConfigError("addresses and names are sequences of strings, not one string")
    problems: list[str] = []
    sans: set[x509.GeneralName] = set()
    for address in addresses:
        text = str(address)
        try:
            sans.add(x509.IPAddress(ipaddress.ip_address(text.split("%", 1)[0])))
        except ValueError:
            problems.append(f"{text!r} is not an IP address")
    for given in names:
        name = str(given).lower().removesuffix(".")
        if _is_ip(name):
            problems.append(f"{given!r} is an IP address: pass it in addresses")
        elif len(name) > 253 or not _DNS_NAME.fullmatch(name):
            problems.append(f"{given!r} is not a DNS name (ASCII letters, digits, "
                            "hyphens and dots)")
        else:
            sans.add(x509.DNSName(name))
    if problems:
        raise ConfigError("invalid TLS certificate names: " + "; ".join(problems),
                          errors=problems)
    if not sans:
        raise ConfigError("a TLS certificate needs at least one address or name")
    return frozenset(sans)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _ca_label(names: Iterable[str]) -> str:
    """What tells this CA apart in a phone's list of trusted ones: the server's id."""
    for given in names:
        name = str(given).lower().removesuffix(".")
        if name.endswith(".local") and len(name) > len(".local"):
            return name.removesuffix(".local")
    return socket.gethostname().split(".")[0] or "vocalink"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> bytes | None:
    """A file's bytes, ``None`` when there is none; `_Unusable` when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Unusable(f"{path.name} cannot be read: {exc.strerror or exc}") from exc


def _load_key(path: Path, data: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _Unusable(f"{path.name} is not a private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise _Unusable(f"{path.name} is not an elliptic-curve key")
    if os.stat(path).st_mode & 0o077:  # a copy or a restore may have loosened it
        log.warning("%s was readable by others; making it private (0600)", path)
        os.chmod(path, 0o600)
    return key


def _load_certs(path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise _Unusable(f"{path.name} is not a PEM certificate: {exc}") from exc


def _same_key(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    return _public_der(key.public_key()) == _public_der(cert.public_key())


def _public_der(public: object) -> bytes:
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return b""
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_ca(folder: Path, now: datetime) -> _Ca | None:
    """The stored CA, or ``None`` after setting aside whatever cannot serve as one."""
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    try:
        cert_pem, key_pem = _read(cert_path), _read(key_path)
        if cert_pem is None and key_pem is None:
            return None  # the first start
        if cert_pem is None or key_pem is None:
            raise _Unusable(f"{(key_path if cert_pem is None else cert_path).name} is alone "
                            f"({(cert_path if cert_pem is None else key_path).name} is missing)")
        cert = _load_certs(cert_path, cert_pem)[0]
        key = _load_key(key_path, key_pem)
        if not _same_key(key, cert):
            raise _Unusable("its key does not match its certificate")
        if not _is_ca(cert):
            raise _Unusable("its certificate is not a CA's")
        # Only expiry retires a CA: a clock set back (a Raspberry Pi booting before NTP)
        # must not make every phone trust again.
        if now >= cert.not_valid_after_utc:
            raise _Unusable(f"it expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    except (_Unusable, ValueError, UnsupportedAlgorithm) as exc:  # parsed lazily
        kept = _set_aside([cert_path, key_path], now)
        log.warning("the TLS CA in %s cannot be used (%s): making a new one, which every "
                    "phone must trust again; the old files are kept: %s",
                    folder, exc, ", ".join(p.name for p in kept) or "none")
        return None
    return _Ca(cert, key)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return constraints.ca


def _load_leaf(folder: Path, ca: _Ca, wanted: frozenset[x509.GeneralName],
               now: datetime) -> x509.Certificate | None:
    """The stored server certificate if it still fits, else ``None``."""
    cert_path, key_path = folder / LEAF_CERT, folder / LEAF_KEY
    try:
        cert_pem, key_pem = _read(cert_path), _read(key_path)
        if cert_pem is None or key_pem is None:
            return None
        chain = _load_certs(cert_path, cert_pem)
        key = _load_key(key_path, key_pem)
        reason = _stale(chain, key, ca, wanted, now)
    except (_Unusable, ValueError, UnsupportedAlgorithm) as exc:  # parsed lazily
        kept = _set_aside([cert_path, key_path], now)
        log.warning("the TLS server certificate in %s cannot be used (%s): issuing a new "
                    "one; the old files are kept: %s", folder, exc,
                    ", ".join(p.name for p in kept))
        return None
    if reason is not None:
        log.info("re-issuing the TLS server certificate in %s: %s", folder, reason)
        return None
    return chain[0]


def _stale(chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey, ca: _Ca,
           wanted: frozenset[x509.GeneralName], now: datetime) -> str | None:
    """Why a stored server certificate must be re-issued, or ``None`` if it fits."""
    leaf = chain[0]
    if not _same_key(key, leaf):
        return "its key does not match it"
    if chain[1:] != [ca.cert]:
        return "its chain is not the current CA"
    try:
        leaf.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return "the current CA did not sign it"
    try:
        have = _sans_of(leaf)
    except ValueError:
        return "its names cannot be read"
    if have != wanted:
        added = ", ".join(_show(s) for s in _ordered(wanted - have)) or "none"
        gone = ", ".join(_show(s) for s in _ordered(have - wanted)) or "none"
        return f"its names changed (new: {added}; gone: {gone})"
    if now < leaf.not_valid_before_utc:
        return "it is not valid yet (the clock went back)"
    expires = leaf.not_valid_after_utc
    # Near the CA's own end a new certificate would expire no later: keep it.
    if expires - now < RENEW_BEFORE and expires < ca.cert.not_valid_after_utc:
        return f"it expires on {expires:%Y-%m-%d}"
    return None


def _sans_of(cert: x509.Certificate) -> frozenset[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(ext.value)


def _ordered(sans: Iterable[x509.GeneralName]) -> list[x509.GeneralName]:
    """Addresses (IPv4, then IPv6, by value), then names: one order for files and logs."""
    def key(san: x509.GeneralName) -> tuple[int, int, int, str]:
        value = san.value
        if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return (0, value.version, int(value), "")
        return (1, 0, 0, str(value))
    return sorted(sans, key=key)


def _show(san: x509.GeneralName) -> str:
    return str(san.value)


def _set_aside(paths: Iterable[Path], now: datetime) -> list[Path]:
    """Rename the files that exist to ``<name>.old-<time>``: kept, never deleted."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    kept = []
    for path in paths:
        if not os.path.lexists(path):
            continue
        target = path.with_name(f"{path.name}.old-{stamp}")
        n = 1
        while os.path.lexists(target):
            n += 1
            target = path.with_name(f"{path.name}.old-{stamp}-{n}")
        durable.replace(path, target)
        kept.append(target)
    return kept


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(folder: Path, label: str, now: datetime) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    # The date tells a CA made again apart from the old one in a phone's list.
    tail = f", {now:%Y-%m-%d})"
    head = "vocalink local CA ("
    common_name = head + label[:_MAX_COMMON_NAME - len(head) - len(tail)] + tail
    subject = _name(common_name)
    not_before = now - CLOCK_SKEW
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    # The key first: a crash between the two leaves a pair that does not match, which
    # the next start sets aside, rather than a certificate whose key is lost unnoticed.
    durable.write_bytes_atomic(folder / CA_KEY, _key_pem(key), mode=0o600)
    durable.write_bytes_atomic(folder / CA_CERT, cert.public_bytes(serialization.Encoding.PEM),
                               mode=0o644)
    log.info("made a TLS CA in %s: %s, SPKI sha256 %s", folder, common_name,
             spki_fingerprint(cert))
    return _Ca(cert, key)


def _issue_leaf(folder: Path, ca: _Ca, sans: frozenset[x509.GeneralName],
                now: datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = now - CLOCK_SKEW
    # Never past the CA: a chain is only as valid as its shortest-lived link.
    not_after = min(not_before + LEAF_LIFETIME, ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(_LEAF_NAME))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(_ordered(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, ca.cert))
    durable.write_bytes_atomic(folder / LEAF_KEY, _key_pem(key), mode=0o600)
    durable.write_bytes_atomic(folder / LEAF_CERT, chain, mode=0o644)
    log.info("issued a TLS server certificate in %s for %s, until %s", folder,
             ", ".join(_show(s) for s in _ordered(sans)), f"{not_after:%Y-%m-%d}")
    return cert


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs); a server signs its TLS handshakes."""
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
