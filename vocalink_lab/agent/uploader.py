"""Upload outbox items to the server with tus 1.0, resuming after any interruption.

The standard library's ``http.client`` runs in worker threads, so the agent needs no
HTTP package and never blocks its event loop. A PATCH sends everything from the
server's offset to the end: an interruption costs only the bytes in flight, because
the server keeps (and fsyncs) whatever arrived, and the next attempt asks ``HEAD``
where to go on from.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ..tokens import env_token
from .outbox import Outbox, OutboxItem

__all__ = ["Uploader", "UploadInterrupted", "UploadRefused", "UPLOADS_PATH"]

log = logging.getLogger(__name__)

UPLOADS_PATH = "/api/audio/uploads"
TUS = {"Tus-Resumable": "1.0.0"}
#: Bytes handed to the socket at a time when streaming a file.
BLOCK = 1 << 20


class UploadInterrupted(Exception):
    """The upload stopped part-way (network, server restart); retrying resumes it.

    ``progressed`` says whether the server got more bytes during the attempt: the
    server is there, so a retry can go at once instead of backing off.
    """

    progressed: bool = False


class UploadRefused(Exception):
    """The server refused the recording for good (not audio, a conflicting id, ...)."""


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> str:
        try:
            return str(json.loads(self.body)["error"])
        except (ValueError, KeyError, TypeError):
            return f"HTTP {self.status}"


class Uploader:
    """Sends outbox items to one server.

    Parameters
    ----------
    base_url : str
        The server, e.g. ``http://10.0.0.5:8765``.
    timeout_s : float
        Socket timeout of each request (a silent connection counts as interrupted).
    token : str, optional
        The device key (or the controller token), sent as ``Authorization: Bearer``; by
        default ``VOCALINK_TOKEN``, if set.
    ssl_context : ssl.SSLContext, optional
        For ``https://``: whom to trust (the server's pinned CA); by default the system's.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 30.0,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._ssl_context = ssl_context
        self.timeout_s = timeout_s
        token = token or env_token()
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._offsets: list[int] = []
        self._url: str | None = None
        self._connection: http.client.HTTPConnection | None = None

    def upload(self, outbox: Outbox, item: OutboxItem) -> str:
        """Upload ``item`` (resuming its earlier upload, if any); return the recording id.

        Blocking: call it with ``asyncio.to_thread``. The item is taken out of the outbox
        only once the server reports the same SHA-256 as the file's.

        Raises
        ------
        UploadInterrupted
            Retry later; the next call resumes where the server is.
        UploadRefused
            The server will never take this file; it stays in the outbox.
        """
        self._offsets = []
        self._url = item.upload_url
        try:
            return self._upload(outbox, item)
        except (OSError, http.client.HTTPException) as exc:
            interrupted = UploadInterrupted(f"{type(exc).__name__}: {exc}")
            interrupted.progressed = self._progressed(self._url)
            raise interrupted from exc
        except UploadInterrupted as exc:
            exc.progressed = self._progressed(self._url)
            raise

    def _progressed(self, url: str | None) -> bool:
        """Whether the server's offset moved past the first one this attempt saw."""
        if url is None or not self._offsets:
            return False
        try:
            head = self._request("HEAD", url, TUS)
        except (OSError, http.client.HTTPException):
            return False
        return head.status == 200 and int(head.headers.get("upload-offset", 0)) > self._offsets[0]

    def _upload(self, outbox: Outbox, item: OutboxItem) -> str:
        for _ in range(5):  # a few rounds of "the offset moved under us"
            url = item.upload_url
            offset = None
            if url is not None:
                head = self._request("HEAD", url, TUS)
                if head.status == 200:
                    if "vocalink-recording-id" in head.headers:
                        return self._confirm(outbox, item, head)
                    offset = int(head.headers["upload-offset"])
                elif head.status not in (404, 410):
                    self._raise_for(head)
            if offset is None:  # no upload yet, or it expired: start one
                url = self._create(item)
                item = outbox.update(item, upload_url=url)
                self._url = url
                offset = 0
            assert url is not None
            self._offsets.append(offset)
            answer = self._patch(url, item.path, offset, item.recording.bytes)
            if answer.status == 204:
                if "vocalink-recording-id" in answer.headers:
                    return self._confirm(outbox, item, answer)
                continue  # the server took part of it; ask where it is
            if answer.status == 409 and "upload-offset" in answer.headers:
                continue  # our offset was stale (an earlier request was still landing)
            self._raise_for(answer)
        raise UploadInterrupted("the upload offset kept moving; will retry")

    def _confirm(self, outbox: Outbox, item: OutboxItem, answer: _Answer) -> str:
        stored = answer.headers.get("vocalink-sha256", "")
        ours = item.recording.sha256
        if stored != ours:
            raise UploadRefused(
                f"the server stored sha256 {stored or '(none)'} but the file is {ours}; "
                "the recording stays in the outbox")
        recording_id = answer.headers["vocalink-recording-id"]
        outbox.done(item, sha256=stored)
        log.info("uploaded %s (%d bytes)", recording_id, item.recording.bytes)
        return recording_id

    def _create(self, item: OutboxItem) -> str:
        rec = item.recording
        fields = {
            "recording_id": rec.recording_id, "device_id": rec.device_id or "",
            "take_id": rec.take_id or "", "started_at": repr(rec.started_at),
            "sha256": rec.sha256, "filename": item.path.name,
            # The card's fitted clock, compact JSON; the server may ignore it (tus metadata).
            "audio_clock": json.dumps(rec.audio_clock, sort_keys=True, separators=(",", ":"))
            if rec.audio_clock is not None else "",
        }
        metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                            for k, v in fields.items() if v)
        answer = self._request("POST", UPLOADS_PATH, {
            **TUS, "Upload-Length": str(rec.bytes), "Upload-Metadata": metadata})
        if answer.status != 201 or "location" not in answer.headers:
            self._raise_for(answer)
        return answer.headers["location"]

    def _patch(self, url: str, path: Path, offset: int, size: int) -> _Answer:
        headers = {**TUS, "Content-Type": "application/offset+octet-stream",
                   "Upload-Offset": str(offset), "Content-Length": str(size - offset)}
        with open(path, "rb") as source:
            source.seek(offset)
            return self._request("PATCH", url, headers, body=source)

    def _request(self, method: str, url: str, headers: dict[str, str],
                 body: object = None) -> _Answer:
        path = urllib.parse.urlsplit(url).path if "://" in url else url
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout_s, blocksize=BLOCK,
                context=self._ssl_context)
        else:
            connection = http.client.HTTPConnection(self._host, self._port,
                                                    timeout=self.timeout_s, blocksize=BLOCK)
        self._connection = connection
        try:
            connection.request(method, path, body=body,  # type: ignore[arg-type]
                               headers={**self._auth, **headers})
            response = connection.getresponse()
            data = response.read()
            return _Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                           data)
        finally:
            connection.close()

    def abort(self) -> None:
        """Cut the request in progress (from any thread): `upload` raises at once."""
        connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _raise_for(answer: _Answer) -> NoReturn:
        # 401/403: not paired yet, or the key changed; the file itself is fine: try later.
        if answer.status >= 500 or answer.status in (401, 403, 404, 408, 409, 410, 423, 460):
            raise UploadInterrupted(f"{answer.status}: {answer.error()}")
        raise UploadRefused(f"{answer.status}: {answer.error()}")
