"""A controller of a vocalink server over its REST API and ``/ws/events``.

The Lab and the widgets hold a server through this one interface, whether it runs
in the same kernel (`Lab.start`) or elsewhere (`vocalink serve`, another kernel):
the same requests, the same JSON, the same errors. Error responses become the
package's own exceptions, by the stable ``code`` of the one error shape (an
unknown recording is a `RecordingNotFound`, a bad enhance parameter a
`ParameterError`...), with the server's message, so that a notebook catches the
class it expects and shows one readable line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders
from tornado.websocket import WebSocketClosedError, websocket_connect

from . import errors
from .errors import VocalinkError, from_shape
from .links import RecorderLink
from .pinning import fetch_pinned_ca
from .protocol.events import Topic
from .tokens import client_token

__all__ = ["Client", "EventStream"]

log = logging.getLogger(__name__)

#: Pages of a listing asked for at once.
PAGES_AT_ONCE = 4
#: A listing whose count changed while it was read is read again, this many times at most.
LIST_READS = 3


class Client:
    """Talk to one vocalink server.

    Parameters
    ----------
    url : str
        The server's base URL, e.g. ``http://192.0.2.20:8765``.
    timeout_s : float
        Per-request timeout.
    token : str, optional
        The controller token; by default ``VOCALINK_TOKEN``, else (for a server on this
        machine) the token file of its data dir (`tokens.client_token`).
    data_dir : Path, optional
        The server's data dir, when it is local and known (its token file is read).
    ca : str, optional
        The pin of the server's CA (``/api/server``'s ``tls.ca_fingerprint``; the phone
        link's ``#ca=``, which ``url`` may carry): HTTPS, trusting that CA alone. Without
        it an ``https://`` URL is checked against the system's CAs.

    Examples
    --------
    >>> client = Client("http://127.0.0.1:8765")  # doctest: +SKIP
    >>> await client.command("START")  # doctest: +SKIP
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0, token: str | None = None,
                 data_dir: Path | None = None, ca: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise errors.InvalidParameter(f"'{url}' is not an http:// URL of a server")
        #: The CA pin: with one, every request goes over TLS to the pinned CA.
        self.ca_pin = ca or RecorderLink.parse(url).ca_pin
        scheme = "https" if self.ca_pin else parsed.scheme
        self.url = f"{scheme}://{parsed.netloc}"
        self._ssl: ssl.SSLContext | None = None
        self.timeout_s = timeout_s
        in_url = urllib.parse.parse_qs(parsed.query).get("token")  # `vocalink serve`'s line
        self.token = client_token(self.url, token or (in_url[-1] if in_url else None),
                                  data_dir=data_dir)
        #: Sent with every request (none when no token is known: an open server).
        self.headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = AsyncHTTPClient(force_instance=True, max_body_size=2**34)

    def close(self) -> None:
        """Release the HTTP client."""
        self._http.close()

    async def _ssl_options(self) -> ssl.SSLContext | None:
        """The pinned CA's context (fetched and checked once), or None (the defaults)."""
        if self.ca_pin is None or not self.url.startswith("https:"):
            return None
        if self._ssl is None:
            self._ssl = await asyncio.to_thread(fetch_pinned_ca, self.url, self.ca_pin,
                                                timeout_s=self.timeout_s)
        return self._ssl

    async def request(self, method: str, path: str, body: Any = None, *,
                      query: Mapping[str, Any] | None = None, text: bool = False) -> Any:
        """One JSON request; the parsed answer (its text with ``text``), or its error.

        Raises
        ------
        VocalinkError
            The server refused (its message), or could not be reached.
        """
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        payload = None if body is None else json.dumps(body)
        if payload is None and method in ("POST", "PUT", "PATCH"):
            payload = ""
        request = HTTPRequest(url, method=method, body=payload, request_timeout=self.timeout_s,
                              headers={**self.headers, "Content-Type": "application/json"},
                              allow_nonstandard_methods=True,
                              ssl_options=await self._ssl_options())
        try:
            response = await self._http.fetch(request, raise_error=False)
        except OSError as exc:
            raise VocalinkError(f"cannot reach the server at {self.url}: {exc}") from None
        if response.code == 599:
            raise VocalinkError(f"cannot reach the server at {self.url}: {response.error}")
        if response.code >= 400:
            raise from_shape(response.code, _json(response))
        return response.body.decode("utf-8") if text else _json(response)

    # -- server ------------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        """``GET /api/server``."""
        return dict(await self.request("GET", "/api/server"))

    async def rename(self, name: str) -> dict[str, Any]:
        """Rename the server live; the answer's ``name`` is the name in use."""
        return dict(await self.request("PUT", "/api/server", {"name": name}))

    # -- devices and commands ----------------------------------------------------------------

    async def devices(self) -> list[dict[str, Any]]:
        """Every device the server knows (``GET /api/clients``)."""
        body = await self.request("GET", "/api/clients")
        return list(body["items"] if isinstance(body, Mapping) else body)

    async def approve(self, device_id: str) -> dict[str, Any]:
        """Let a pending device in (``POST /api/clients/{id}/approve``); returns it."""
        return dict(await self.request("POST", f"/api/clients/{_q(device_id)}/approve"))

    async def reject(self, device_id: str) -> dict[str, Any]:
        """Refuse or unpair a device (``POST /api/clients/{id}/reject``); it is forgotten."""
        return dict(await self.request("POST", f"/api/clients/{_q(device_id)}/reject"))

    async def pairing(self, *, new_code: bool = False) -> dict[str, Any]:
        """The join code and the devices waiting (``GET /api/pairing``).

        ``new_code`` replaces the join code first (``POST``).
        """
        return dict(await self.request("POST" if new_code else "GET", "/api/pairing"))

    async def command(self, action: str, targets: Sequence[str] | None = None, *,
                      lead_ms: float | None = None, params: Mapping[str, Any] | None = None,
                      take_id: str | None = None) -> dict[str, Any]:
        """Send a command and wait for every target's outcome (``POST /api/commands``)."""
        body: dict[str, Any] = {"action": action.upper(),
                                "targets": None if targets is None else list(targets)}
        if lead_ms is not None:
            body["lead_ms"] = lead_ms
        if params:
            body["params"] = dict(params)
        if take_id is not None:
            body["take_id"] = take_id
        return dict(await self.request("POST", "/api/commands", body))

    # -- recordings and takes ----------------------------------------------------------------

    async def recordings(self, **filters: Any) -> list[dict[str, Any]]:
        """Every recording (all pages), newest first; filters: take_id, device_id, kind.

        The first page tells how many there are; the others are asked for a few at a
        time (the server reads one while it encodes another). Should the count change
        meanwhile (a recording deleted moves the next pages' rows up, so one would be
        missed), the list is read again, up to `LIST_READS` times.
        """
        size = 1000

        async def page(offset: int) -> dict[str, Any]:
            return dict(await self.request("GET", "/api/audio/list",
                                           query={**filters, "limit": size, "offset": offset}))

        gate = asyncio.Semaphore(PAGES_AT_ONCE)

        async def gated(offset: int) -> dict[str, Any]:
            async with gate:
                return await page(offset)

        for _ in range(LIST_READS):
            first = await page(0)
            total = int(first["total"])
            rest = await asyncio.gather(*(gated(o) for o in range(size, total, size))) \
                if first["next_offset"] is not None else []
            out: list[dict[str, Any]] = []
            seen: set[str] = set()
            for part in (first, *rest):
                for row in part["items"]:  # a row added meanwhile shifts the pages
                    if row["id"] not in seen:
                        seen.add(row["id"])
                        out.append(row)
            if all(int(part["total"]) == total for part in rest):
                break
        return out

    async def recording(self, recording_id: str) -> dict[str, Any]:
        """One recording's catalog row."""
        return dict(await self.request("GET", f"/api/audio/{_q(recording_id)}/meta"))

    async def delete(self, recording_id: str) -> dict[str, Any]:
        """Delete a recording (file and row)."""
        return dict(await self.request("DELETE", f"/api/audio/{_q(recording_id)}"))

    async def download(self, recording_id: str, target: Path | str) -> Path:
        """Save a recording's file to ``target`` (a file, or a folder to put it in)."""
        meta = await self.recording(recording_id)
        path = Path(target)
        if path.is_dir():
            path = path / f"{meta['id']}.{meta['format']}"
        request = HTTPRequest(f"{self.url}/api/audio/{_q(recording_id)}",
                              request_timeout=max(self.timeout_s, 600), headers=self.headers,
                              ssl_options=await self._ssl_options())
        try:
            response = await self._http.fetch(request)
        except HTTPClientError as exc:
            raise from_shape(exc.code, _json(exc.response)) from None
        await asyncio.to_thread(path.write_bytes, response.body)
        return path

    async def takes(self) -> list[dict[str, Any]]:
        """Every take, newest first."""
        out: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = await self.request("GET", "/api/takes",
                                      query={"limit": 1000, "offset": offset})
            out += page["items"]
            offset = offset + len(page["items"])
            if not page["items"] or offset >= page["total"]:
                offset = None
        return out

    async def take(self, take_id: str) -> dict[str, Any]:
        """One take with its recordings and skew report."""
        return dict(await self.request("GET", f"/api/takes/{_q(take_id)}"))

    async def describe_take(self, take_id: str, *, name: str | None = None,
                            notes: str | None = None) -> dict[str, Any]:
        """Set a take's name and/or notes (``PUT /api/takes/{id}``); returns the take.

        A field left out (``None``) keeps its value.
        """
        body = {k: v for k, v in (("name", name), ("notes", notes)) if v is not None}
        return dict(await self.request("PUT", f"/api/takes/{_q(take_id)}", body))

    async def delete_take(self, take_id: str) -> dict[str, Any]:
        """Delete a stopped take with its recordings (``DELETE /api/takes/{id}``).

        Returns ``deleted`` (the id), ``take`` (its row) and ``recordings`` (the ids
        deleted). `Conflict` while the take still records, `TakeNotFound` for none.
        """
        return dict(await self.request("DELETE", f"/api/takes/{_q(take_id)}"))

    async def take_archive(self, take_id: str, target: Path | str) -> Path:
        """Save a take's ZIP (``GET /api/takes/{id}/archive``) to ``target``, streamed.

        Parameters
        ----------
        take_id : str
        target : path
            The file to write, or a folder to put it in under the server's name for it
            (``<take name or id>.zip``).

        Returns
        -------
        Path
            The file written. It appears whole or not at all: the bytes go to a ``.part``
            file beside it, renamed once the last one arrived.

        Raises
        ------
        VocalinkError
            The server refused (`TakeNotFound`...), or the transfer broke (nothing is
            left behind then).
        """
        sink = _FileSink(Path(target), default_name=f"{take_id}.zip")
        request = HTTPRequest(f"{self.url}/api/takes/{_q(take_id)}/archive",
                              request_timeout=max(self.timeout_s, 3600), headers=self.headers,
                              header_callback=sink.header_line,
                              streaming_callback=sink.receive,
                              ssl_options=await self._ssl_options())
        try:
            try:
                response = await self._http.fetch(request, raise_error=False)
            except OSError as exc:
                raise VocalinkError(f"cannot reach the server at {self.url}: {exc}") from None
            if response.code == 599:
                raise VocalinkError(f"the archive of take '{take_id}' did not arrive whole: "
                                    f"{response.error}")
            if response.code >= 400:
                raise from_shape(response.code, _json_bytes(bytes(sink.error_body)))
            return await sink.commit()
        finally:
            await sink.discard()

    # -- jobs ----------------------------------------------------------------------------------

    async def enhance(self, recording_id: str, *, preset: str | None = None,
                      params: Mapping[str, Any] | None = None,
                      format: str = "flac") -> dict[str, Any]:
        """Start enhancing a recording; returns the job (`Lab.wait_job` follows it)."""
        return dict(await self.request("POST", f"/api/audio/{_q(recording_id)}/enhance",
                                       {"preset": preset, "params": dict(params or {}),
                                        "format": format}))

    async def merge(self, recording_ids: Iterable[str], *, mode: str = "multichannel",
                    **options: Any) -> dict[str, Any]:
        """Start merging recordings; returns the job (`Lab.wait_job` follows it)."""
        return dict(await self.request("POST", "/api/audio/merge",
                                       {"ids": list(recording_ids), "mode": mode, **options}))

    async def transcribe(self, recording_id: str | None = None, *, take_id: str | None = None,
                         language: str | None = None,
                         enhance: bool | None = None) -> dict[str, Any]:
        """Start transcribing a recording, or a take by device; returns the job."""
        path = (f"/api/takes/{_q(take_id)}/transcribe" if take_id is not None
                else f"/api/audio/{_q(str(recording_id))}/transcribe")
        return dict(await self.request("POST", path, {
            k: v for k, v in (("language", language), ("enhance", enhance)) if v is not None}))

    async def transcript(self, recording_id: str | None = None, *, take_id: str | None = None,
                         format: str = "json") -> Any:
        """A stored transcript: the JSON (a dict), or the text of a ``vtt``/``srt``/``csv``."""
        path = (f"/api/takes/{_q(take_id)}/transcript" if take_id is not None
                else f"/api/audio/{_q(str(recording_id))}/transcript")
        return await self.request("GET", path, query={"format": format},
                                  text=format != "json")

    async def job(self, job_id: str) -> dict[str, Any]:
        """A job's state, progress and result."""
        return dict(await self.request("GET", f"/api/jobs/{_q(job_id)}"))

    async def jobs(self) -> list[dict[str, Any]]:
        """The jobs the server keeps in memory, newest first (``GET /api/jobs``)."""
        body = await self.request("GET", "/api/jobs")
        return list(body["items"])

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job (``DELETE /api/jobs/{id}``); returns it (a finished one unchanged)."""
        return dict(await self.request("DELETE", f"/api/jobs/{_q(job_id)}"))

    # -- events ----------------------------------------------------------------------------------

    async def open_events(self, topics: Iterable[Topic] | None = None) -> EventStream:
        """Connect to the server's events (``/ws/events``); iterate the result to read them.

        The connection is open when this returns, so a snapshot read afterwards
        misses no change.
        """
        url = self.url.replace("http", "ws", 1) + "/ws/events"
        if topics:
            url += "?topics=" + urllib.parse.quote(",".join(topics))
        try:
            connection = await websocket_connect(HTTPRequest(
                url, headers=self.headers, connect_timeout=self.timeout_s,
                ssl_options=await self._ssl_options()))
        except HTTPClientError as exc:  # refused before the upgrade: the one error shape
            raise from_shape(exc.code, _json(exc.response)) from None
        except OSError as exc:
            raise VocalinkError(f"cannot follow the server's events at {url}: {exc}") from None
        return EventStream(connection)


class EventStream:
    """The server's events, ``{"topic": str, "data": dict, "at": float}`` each.

    ``async for event in stream`` ends when the connection does; `close` ends it.
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._read()

    async def _read(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                message = await self._connection.read_message()
                if message is None:
                    return
                yield json.loads(message)
        except WebSocketClosedError:
            return

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()


class _FileSink:
    """Where a streamed download goes: a ``.part`` file, renamed into place at the end.

    Loop-only. An error answer's body is kept in memory instead (it is the small JSON
    error shape); file writes run in worker threads, and the client reads the next bytes
    only once they are written (Tornado awaits ``receive``).
    """

    #: The most of an error answer kept (the error shape is far smaller).
    MAX_ERROR_BODY = 1 << 20

    def __init__(self, target: Path, *, default_name: str) -> None:
        self.target = target
        self.default_name = default_name
        self.status = 0
        self.headers = HTTPHeaders()
        self.error_body = bytearray()
        self._file: BinaryIO | None = None
        self._final: Path | None = None
        self._partial: Path | None = None

    def header_line(self, line: str) -> None:
        """Tornado's ``header_callback``: the status line, then each header line."""
        if line.startswith("HTTP/"):
            parts = line.split()
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.headers = HTTPHeaders()
        elif line.strip():
            self.headers.parse_line(line)

    async def receive(self, chunk: bytes) -> None:
        """Tornado's ``streaming_callback``: the next bytes of the body."""
        if not 200 <= self.status < 300:
            room = self.MAX_ERROR_BODY - len(self.error_body)
            self.error_body += chunk[:max(room, 0)]
            return
        file = await self._opened()
        await asyncio.to_thread(file.write, chunk)

    async def commit(self) -> Path:
        """Close the file and move it into place; the path written."""
        file = await self._opened()  # an empty body makes an empty file
        self._file = None
        assert self._final is not None and self._partial is not None
        await asyncio.to_thread(_close_and_replace, file, self._partial, self._final)
        self._partial = None
        return self._final

    async def _opened(self) -> BinaryIO:
        if self._file is not None:
            return self._file
        name = _attachment_name(self.headers.get("Content-Disposition"), self.default_name)
        final, partial, opened = await asyncio.to_thread(_open_part, self.target, name)
        self._final, self._partial, self._file = final, partial, opened
        return opened

    async def discard(self) -> None:
        """Remove what was written, unless `commit` moved it into place (idempotent)."""
        file, partial = self._file, self._partial
        self._file = self._partial = None
        if file is not None or partial is not None:
            await asyncio.to_thread(_close_and_unlink, file, partial)


def _open_part(target: Path, name: str) -> tuple[Path, Path, BinaryIO]:
    final = target / name if target.is_dir() else target
    partial = final.with_name(final.name + ".part")
    return final, partial, open(partial, "wb")  # noqa: SIM115 - closed by _FileSink


def _close_and_replace(file: BinaryIO, partial: Path, final: Path) -> None:
    file.close()
    os.replace(partial, final)


def _close_and_unlink(file: BinaryIO | None, partial: Path | None) -> None:
    if file is not None:
        file.close()
    if partial is not None:
        partial.unlink(missing_ok=True)


def _attachment_name(header: str | None, default: str) -> str:
    """The file name of a ``Content-Disposition: attachment; filename="..."``, made safe.

    Only its last path component counts (a server names no folder of ours).
    """
    match = re.search(r'filename="([^"]+)"', header or "")
    name = Path(match.group(1)).name if match else ""
    return name if name not in ("", ".", "..") else default


def _json_bytes(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _json(response: HTTPResponse | None) -> Any:
    """A response's body as JSON; None when there is none or it is not JSON."""
    try:
        return json.loads(response.body) if response is not None and response.body else None
    except ValueError:
        return None


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")
