"""``/recorder``: the browser recorder, the page that turns any phone into a device.

A phone arrives with nothing but a join code in the URL (``/recorder?join=K7QM-2XDF``), so
the page and its files are public; what the page does is judged where it matters: its
REGISTER on ``/ws/control`` and its device key on the uploads. The page is plain ES modules
shipped in the package (``static/recorder/``), served as they are, never cached stale
(``Cache-Control: no-cache``: a phone revalidates, so an upgraded server is picked up).

Every answer carries a Content-Security-Policy that lets the page run only its own scripts
and talk only to this server, and ``Referrer-Policy: no-referrer``: the join code is in the
page's URL and must not leave with a request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from pathlib import Path
from typing import ClassVar

import tornado.web

from .auth import Access
from .base import ErrorShape

__all__ = ["RECORDER_DIR", "RecorderFiles", "RecorderPage", "content_security_policy"]

#: The page's files, inside the package.
RECORDER_DIR = Path(__file__).resolve().parent / "static" / "recorder"
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


class RecorderFiles(ErrorShape, tornado.web.StaticFileHandler):
    """``GET``/``HEAD /recorder/static/{path}``: the page's files.

    Tornado's static handler (ranges, ETags, no way out of its root); errors leave in the
    one JSON shape like every handler's.
    """

    access: ClassVar[Access] = Access.PUBLIC

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", content_security_policy(self.request.host))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Permissions-Policy", "microphone=(self), camera=(), geolocation=()")
        self.set_header("Cross-Origin-Opener-Policy", "same-origin")

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
