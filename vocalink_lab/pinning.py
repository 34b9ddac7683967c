"""Trusting a server's own CA by its pin.

A server on the LAN serves HTTPS with a CA it made for itself (``server/tls.py``). No
system trusts that CA; a client trusts it because its *pin* matches: the SHA-256 of
the CA's SubjectPublicKeyInfo, base64 (the form of HPKP and Chromium's
``--ignore-certificate-errors-spki-list``). The pin travels where the server is found:
the mDNS TXT record (``ca``) and the phone link in the dashboard's QR code, whose
fragment carries it (`links`).

The CA certificate itself is public (``GET /recorder/ca.crt``, on plain HTTP too): a
client fetches it, checks the pin, and trusts that certificate and nothing else.

Stdlib only: the agent installs without ``cryptography``, so the few lines of DER that
lead to the SubjectPublicKeyInfo are walked here.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import urllib.parse
import urllib.request

from .errors import CertificateMismatch, VocalinkError

__all__ = ["CA_PATH", "ca_url", "fetch_pinned_ca", "pinned_context", "spki_pin"]

#: Where a server serves its CA certificate (PEM).
CA_PATH = "/recorder/ca.crt"
#: The largest CA certificate read (ours are under 1 KiB).
MAX_CA_BYTES = 64 * 1024
_SEQUENCE = 0x30
_VERSION = 0xA0  # [0] EXPLICIT


def spki_pin(certificate: bytes | str) -> str:
    """The pin of a certificate: SHA-256 of its SubjectPublicKeyInfo, base64.

    Parameters
    ----------
    certificate : bytes or str
        One certificate, PEM (text or bytes) or DER.

    Returns
    -------
    str
        44 characters.

    Raises
    ------
    ValueError
        Not a certificate.
    """
    der = _der_of(certificate)
    return base64.b64encode(hashlib.sha256(_spki_der(der)).digest()).decode("ascii")


def pinned_context(ca_pem: bytes | str, pin: str) -> ssl.SSLContext:
    """A client context that trusts ``ca_pem`` alone, once its pin is checked.

    Host names are not checked: the CA is this one server's, made by it and pinned, so
    its certificate is the server's whatever address it is reached at (the leaf names
    its LAN addresses, which change with the Wi-Fi).

    Parameters
    ----------
    ca_pem : bytes or str
        The server's CA certificate.
    pin : str
        The pin the server was found with (TXT ``ca``, the link's ``#ca=``).

    Returns
    -------
    ssl.SSLContext

    Raises
    ------
    CertificateMismatch
        The certificate is not the pinned one.
    """
    text = ca_pem.decode("ascii", "replace") if isinstance(ca_pem, bytes) else ca_pem
    try:
        found = spki_pin(text)
    except ValueError as exc:
        raise CertificateMismatch(f"the server's CA certificate is unreadable: {exc}") from None
    if found != pin.strip():
        raise CertificateMismatch(f"the server's CA is not the pinned one (pin {pin.strip()!r}, "
                          f"found {found!r}): check the address, or scan the QR code again")
    context = ssl.create_default_context(cadata=ssl.DER_cert_to_PEM_cert(_der_of(text)))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def ca_url(base_url: str) -> str:
    """Where the server at ``base_url`` serves its CA, over plain HTTP on the same port.

    Parameters
    ----------
    base_url : str
        ``http(s)://host:port``.
    """
    parts = urllib.parse.urlsplit(base_url)
    return urllib.parse.urlunsplit(("http", parts.netloc, CA_PATH, "", ""))


def fetch_pinned_ca(base_url: str, pin: str, *, timeout_s: float = 10.0) -> ssl.SSLContext:
    """Fetch the server's CA (blocking: call it in a thread) and trust it if the pin matches.

    Parameters
    ----------
    base_url : str
        The server, ``http(s)://host:port``.
    pin : str
        The pin it was found with.
    timeout_s : float
        For the request.

    Returns
    -------
    ssl.SSLContext
        `pinned_context` of what was fetched.

    Raises
    ------
    CertificateMismatch
        What the server sent is not the pinned CA.
    VocalinkError
        The server could not be reached, or has no CA (``code`` ``unreachable``).
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = ca_url(base_url)
    try:
        with opener.open(urllib.request.Request(url), timeout=timeout_s) as answer:
            pem = answer.read(MAX_CA_BYTES + 1)
    except OSError as exc:
        raise VocalinkError(f"cannot fetch the server's CA from {url}: {exc}") from None
    if len(pem) > MAX_CA_BYTES:
        raise CertificateMismatch(
            f"{url} sent more than {MAX_CA_BYTES} bytes: not a CA certificate")
    return pinned_context(pem, pin)


def _der_of(certificate: bytes | str) -> bytes:
    if isinstance(certificate, bytes) and certificate[:1] == bytes([_SEQUENCE]):
        return certificate
    text = certificate.decode("ascii", "replace") if isinstance(certificate, bytes) \
        else certificate
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", begin + 1)
    if begin < 0 or end < 0:
        raise ValueError("no PEM certificate found")
    return ssl.PEM_cert_to_DER_cert(text[begin:end + len("-----END CERTIFICATE-----")])


def _tlv(der: bytes, at: int) -> tuple[int, int, int]:
    """``(tag, content start, end)`` of the DER element at ``at``."""
    if at + 2 > len(der):
        raise ValueError("truncated certificate")
    tag, first = der[at], der[at + 1]
    start = at + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 0 < count <= 4 or start + count > len(der):
            raise ValueError("bad length in certificate")
        length = int.from_bytes(der[start:start + count], "big")
        start += count
    if start + length > len(der):
        raise ValueError("truncated certificate")
    return tag, start, start + length


def _spki_der(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo element (RFC 5280, 4.1) of a DER certificate."""
    tag, start, _ = _tlv(der, 0)
    if tag != _SEQUENCE:
        raise ValueError("not a certificate")
    tag, at, _ = _tlv(der, start)  # tbsCertificate
    if tag != _SEQUENCE:
        raise ValueError("not a certificate")
    if der[at] == _VERSION:
        at = _tlv(der, at)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        at = _tlv(der, at)[2]
    tag, _, end = _tlv(der, at)
    if tag != _SEQUENCE:
        raise ValueError("no SubjectPublicKeyInfo in the certificate")
    return der[at:end]
