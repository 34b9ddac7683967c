"""``/recorder``: the browser recorder, the page that turns any phone into a device.

A phone arrives with nothing but a join code in the URL (``/recorder?join=K7QM-2XDF``), so
the page and its files are public; what the page does is judged where it matters: its
REGISTER on ``/ws/control`` and its device key on the uploads. The page is plain ES modules
shipped in the package (``static/recorder/``), served as they are, never cached stale
(``Cache-Control: no-cache``: a phone revalidates, so an upgraded server is picked up).

``/recorder/ca`` is the one-time "trust this server" page a phone reads before its first
HTTPS visit: the CA's fingerprints (to compare with the dashboard's) and the steps on
Android and iOS; ``/recorder/ca.crt`` is the CA certificate itself. Both are public and
served on plain HTTP too, since they come before the trust (the fingerprint, checked
against the dashboard, is what makes a swapped certificate show).

Every answer carries a Content-Security-Policy that lets the page run only its own scripts
and talk only to this server, and ``Referrer-Policy: no-referrer``: the join code is in the
page's URL and must not leave with a request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import tornado.template
import tornado.web

from ..errors import NotFound
from .auth import Access
from .base import ErrorShape
from .tls import TlsMaterial

__all__ = ["CA_FILE_NAME", "RECORDER_DIR", "CaCertificate", "RecorderFiles", "RecorderPage",
           "TrustPage", "content_security_policy"]

#: The page's files, inside the package.
RECORDER_DIR = Path(__file__).resolve().parent / "static" / "recorder"
#: The trust page's template.
TRUST_TEMPLATE = Path(__file__).resolve().parent / "templates" / "trust.html"
#: Read with the module, not on the event loop at a request (autoescaped).
_TRUST = tornado.template.Template(TRUST_TEMPLATE.read_text(encoding="utf-8"),
                                   name="trust.html")
#: What the CA certificate is saved as on a phone.
CA_FILE_NAME = "vocalink-ca.crt"
#: The type a phone offers to install (Android's certificate installer, an iOS profile).
CA_CONTENT_TYPE = "application/x-x509-ca-cert"
#: Content types by extension: modules and the AudioWorklet must be JavaScript (a browser
#: refuses a module served otherwise); the system's mimetypes table is not relied on.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
#: A ``Host`` that can go into a header as it is (the `Gate` already checked it names us).
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def content_security_policy(host: str) -> str:
    """The page's policy: its own scripts, styles and sockets, nothing else.

    ``connect-src 'self'`` covers ``ws:``/``wss:`` of the same host in CSP Level 3, but
    older Safari does not read it so: the socket's origin is named as well.

    Parameters
    ----------
    host : str
        The request's ``Host`` (``name[:port]``).

    Returns
    -------
    str
    """
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


class _PageHeaders(ErrorShape):
    """Public, and every answer with the page's policy and headers."""

    access: ClassVar[Access] = Access.PUBLIC

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", content_security_policy(self.request.host))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Permissions-Policy", "microphone=(self), camera=(), geolocation=()")
        self.set_header("Cross-Origin-Opener-Policy", "same-origin")


class RecorderFiles(_PageHeaders, tornado.web.StaticFileHandler):
    """``GET``/``HEAD /recorder/static/{path}``: the page's files.

    Tornado's static handler (ranges, ETags, no way out of its root); errors leave in the
    one JSON shape like every handler's.
    """

    def get_content_type(self) -> str:
        assert self.absolute_path is not None
        return CONTENT_TYPES.get(Path(self.absolute_path).suffix.lower(),
                                 "application/octet-stream")

    def set_extra_headers(self, path: str) -> None:
        # Revalidate every time (the ETag makes that a 304): a phone never runs a stale
        # page against a newer server.
        self.set_header("Cache-Control", "no-cache")


class RecorderPage(RecorderFiles):
    """``GET``/``HEAD /recorder``: the recorder page (``?join=CODE`` pairs the phone)."""

    async def get(self, path: str = "", include_body: bool = True) -> None:
        await super().get("index.html", include_body)

    def head(self, path: str = "") -> Awaitable[None]:
        return self.get(path, include_body=False)


class _TlsPage(_PageHeaders):
    def initialize(self, tls: Callable[[], TlsMaterial | None],
                   server_name: Callable[[], str]) -> None:
        self.tls = tls
        self.server_name = server_name


class TrustPage(_TlsPage):
    """``GET /recorder/ca``: how to trust this server's CA on a phone, once."""

    def get(self) -> None:
        tls = self.tls()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(_TRUST.generate(
            enabled=tls is not None, server_name=self.server_name(),
            fingerprint=tls.ca_fingerprint if tls else "", sha256=_grouped(tls.ca_sha256)
            if tls else "", ca_name=tls.ca_name if tls else "", file_name=CA_FILE_NAME,
            # On HTTPS at once: the phone that just trusted the CA opens the recorder there.
            recorder_url=f"https://{self.request.host}/recorder"))


class CaCertificate(_TlsPage):
    """``GET /recorder/ca.crt``: the CA certificate (PEM), for a phone to install."""

    def get(self) -> None:
        tls = self.tls()
        if tls is None:
            raise NotFound("this server does not serve HTTPS: there is no certificate to trust")
        self.set_header("Content-Type", CA_CONTENT_TYPE)
        self.set_header("Content-Disposition", f'attachment; filename="{CA_FILE_NAME}"')
        self.set_header("Cache-Control", "no-cache")
        self.finish(tls.ca_pem)


def _grouped(hex_digest: str) -> str:
    """``AB:CD:…``, as phones show a certificate's fingerprint."""
    return ":".join(hex_digest[i:i + 2] for i in range(0, len(hex_digest), 2)).upper()
