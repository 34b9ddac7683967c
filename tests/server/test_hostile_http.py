"""Hostile HTTP at the edge: numbers that are not quite numbers, bodies cut half-way.

Numeric headers (``Upload-Length``, ``Upload-Offset``, ``Content-Length``, ``Range``) are
1 to 19 ASCII digits or the client's error: Python's ``int()`` raises on a superscript
digit that ``str.isdigit`` accepts (headers are Latin-1, byte 0xB2 is one) and on 4,300
digits and more, which used to be a 500. A client that drops its connection in the
middle of a body must not leave its handler waiting for the rest for ever.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
from collections.abc import Mapping

import pytest

from tests.support.audio import encode
from tests.support.errors import assert_error_response
from tests.support.http import Api, multipart_body
from tests.support.rawhttp import raw_request, with_token
from tests.support.wait import wait_until
from vocalink_lab.server import Server
from vocalink_lab.server.tus import TusUploadHandler
from vocalink_lab.server.upload import UploadHandler

pytestmark = pytest.mark.asyncio
TUS = {"Tus-Resumable": "1.0.0"}
ROUTE = "/api/audio/uploads"
WAV = encode("wav", seconds=0.25)

#: Not 1 to 19 ASCII digits: superscripts, too many digits, signs, separators, hex.
NOT_NUMBERS = ["\u00b2", "\u00b9", "1\u00b3", "9" * 5000, "1" * 20, "+1", "-1", "1_000",
               "0x10", "1 2", "12a"]


def ids(values: list[str]) -> list[str]:
    return [v if len(v) <= 12 else f"{v[:8]}...({len(v)}-chars)" for v in values]


# -- raw requests ---------------------------------------------------------------------------


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as bytes and read one response (its ``Content-Length`` long)."""
    answer = await raw_request(port, request)
    return answer.status, answer.headers, answer.body


def head_bytes(method: str, path: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def create(api: Api, length: int, recording_id: str) -> str:
    meta = f"recording_id {base64.b64encode(recording_id.encode()).decode()}"
    status, body, headers, _ = await api.request(
        "POST", ROUTE, headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": meta})
    assert status == 201, body
    return str(headers["Location"])


async def head_offset(api: Api, url: str) -> int:
    status, _, headers, _ = await api.request("HEAD", url, headers=TUS)
    assert status == 200
    return int(headers["Upload-Offset"])


# -- numeric headers ------------------------------------------------------------------------


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=ids(NOT_NUMBERS))
async def test_upload_length_not_ascii_digits_is_400(server: Server, value: str) -> None:
    assert server.port is not None
    status, headers, body = await raw_exchange(server.port, head_bytes(
        "POST", ROUTE, {**TUS, "Upload-Length": value, "Content-Length": "0"}))
    assert_error_response(status, headers, body, 400,
                          "Upload-Length must be a non-negative integer (at most 19 ASCII "
                          "digits), got", code="bad_request")


async def test_upload_length_of_19_digits_is_a_number(server: Server, api: Api) -> None:
    status, body, _, _ = await api.request(
        "POST", ROUTE, headers={**TUS, "Upload-Length": "9" * 19})
    assert status == 413 and "Upload-Length 9999999999999999999 exceeds" in body["error"], body
    status, body, _, _ = await api.request(  # spaces around the digits are HTTP's own
        "POST", ROUTE, headers={**TUS, "Upload-Length": "\t12 "})
    assert status == 201 and body["length"] == 12, body


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=ids(NOT_NUMBERS))
async def test_upload_offset_not_ascii_digits_is_400(server: Server, api: Api,
                                                     value: str) -> None:
    url = await create(api, 100, "rec-offset")
    assert server.port is not None
    status, headers, body = await raw_exchange(server.port, head_bytes("PATCH", url, {
        **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": value,
        "Content-Length": "0"}))
    assert_error_response(status, headers, body, 400,
                          "Upload-Offset must be a non-negative integer", code="bad_request")
    assert await head_offset(api, url) == 0


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000], ids=["superscript", "5000-digits"])
async def test_tus_content_length_not_ascii_digits_is_400(server: Server, api: Api,
                                                          value: str) -> None:
    url = await create(api, 100, "rec-clen")
    assert server.port is not None
    status, headers, body = await raw_exchange(server.port, head_bytes("PATCH", url, {
        **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
        "Content-Length": value}))
    assert_error_response(status, headers, body, 400,
                          "Content-Length must be a non-negative integer", code="bad_request")
    assert await head_offset(api, url) == 0  # and the upload's lock was released
    status, _, answer, _ = await api.request("PATCH", url, body=b"x" * 10, headers={
        **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert status == 204 and answer["Upload-Offset"] == "10"


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b9", "9" * 5000, "1" * 20],
                         ids=["superscript", "digit-superscript", "5000-digits", "20-digits"])
async def test_upload_content_length_not_ascii_digits_is_400(server: Server,
                                                             value: str) -> None:
    assert server.port is not None
    _, ctype = multipart_body(WAV)
    status, headers, body = await raw_exchange(server.port, head_bytes(
        "POST", "/api/audio/upload", {"Content-Type": ctype, "Content-Length": value}))
    assert_error_response(status, headers, body, 400,
                          "Content-Length must be a non-negative integer",
                          code="bad_request")


RANGES = ["bytes=\u00b2-", "bytes=-\u00b9", "bytes=0-\u00b3", "bytes=1\u00b2-4",
          "bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000,
          "bytes=" + "1" * 20 + "-"]


@pytest.mark.parametrize("value", RANGES, ids=ids(RANGES))
async def test_range_not_ascii_digits_is_416(server: Server, api: Api, value: str) -> None:
    status, body = await api.upload(WAV, recording_id="rec-range")
    assert status == 201, body
    assert server.port is not None
    status, headers, raw = await raw_exchange(server.port, head_bytes(
        "GET", "/api/audio/rec-range", {"Range": value}))
    assert_error_response(status, headers, raw, 416,
                          "must hold positions of at most 19 ASCII digits",
                          code="range_not_satisfiable")
    assert headers["Content-Range"] == f"bytes */{len(WAV)}"


async def test_range_of_19_digits_and_garbage_still_work(server: Server, api: Api) -> None:
    status, body = await api.upload(WAV, recording_id="rec-range")
    assert status == 201, body
    status, _, headers, raw = await api.request("GET", "/api/audio/rec-range",
                                                headers={"Range": "bytes=4-" + "9" * 19})
    assert (status, raw, headers["Content-Range"]) == (
        206, WAV[4:], f"bytes 4-{len(WAV) - 1}/{len(WAV)}")
    for garbage in ("bytes=a-b", "items=0-3", "bytes=0-1,4-5"):  # ignored: the whole file
        status, _, _, raw = await api.request("GET", "/api/audio/rec-range",
                                              headers={"Range": garbage})
        assert (status, raw) == (200, WAV), garbage


# -- bodies cut half-way --------------------------------------------------------------------


def running(cls: type) -> list[asyncio.Task[object]]:
    """The tasks running a request of handler class ``cls`` (Tornado's ``_execute``)."""
    found = []
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and isinstance(frame.f_locals.get("self"), cls):
            found.append(task)
    return found


async def send_part_then_close(port: int, head: bytes, part: bytes,
                               until: object = None) -> None:
    """Send ``head`` and ``part`` of a body, wait for ``until`` (a condition), then close."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, with_token(head) + part)
        if until is not None:
            await wait_until(until, timeout=10)  # type: ignore[arg-type]
    finally:
        sock.close()


def spool_files(server: Server) -> list[str]:
    """Temporary files of one-shot uploads in progress."""
    return sorted(p.name for p in server.store.uploads_dir.glob("upload-*"))


async def test_multipart_upload_cut_mid_body_ends_its_handler(server: Server,
                                                              api: Api) -> None:
    body, ctype = multipart_body(os.urandom(3 << 20), recording_id="rec-cut")
    port = server.port
    assert port is not None
    head = head_bytes("POST", "/api/audio/upload", {"Content-Type": ctype,
                                                     "Content-Length": str(len(body))})

    def writing() -> bool:  # past the first 1 MiB block: the spool file is on disk
        return len(spool_files(server)) == 1 and len(running(UploadHandler)) == 1

    await send_part_then_close(port, head, body[: 2 << 20], until=writing)
    await wait_until(lambda: not running(UploadHandler), timeout=10)
    await wait_until(lambda: not spool_files(server), timeout=10)
    status, listing = await api.get("/api/audio/list")
    assert status == 200 and listing["total"] == 0
    status, body_ = await api.upload(WAV, recording_id="rec-after")
    assert status == 201, body_


async def test_an_upload_sent_whole_is_stored_though_its_client_leaves(
    server: Server, api: Api
) -> None:
    """The client sends every byte and goes without waiting for the answer: kept."""
    wav = encode("wav", seconds=12.0)  # past a 1 MiB spool block
    body, ctype = multipart_body(wav, recording_id="rec-left")
    port = server.port
    assert port is not None
    head = head_bytes("POST", "/api/audio/upload", {"Content-Type": ctype,
                                                     "Content-Length": str(len(body))})
    await send_part_then_close(port, head, body)

    async def stored() -> bool:
        return (await api.get("/api/audio/rec-left/meta"))[0] == 200

    await wait_until(stored, timeout=10)
    await wait_until(lambda: not running(UploadHandler), timeout=10)
    assert spool_files(server) == []
    status, _, _, raw = await api.request("GET", "/api/audio/rec-left")
    assert status == 200 and raw == wav


async def test_tus_patch_cut_mid_body_ends_its_handler_and_keeps_the_bytes(
    server: Server, api: Api
) -> None:
    data = encode("wav", seconds=20.0)  # 1.9 MB
    url = await create(api, len(data), "rec-tus-cut")
    port = server.port
    assert port is not None
    head = head_bytes("PATCH", url, {
        **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
        "Content-Length": str(len(data))})
    sent = 1 << 20
    await send_part_then_close(port, head, data[:sent],
                               until=lambda: len(running(TusUploadHandler)) == 1)
    await wait_until(lambda: not running(TusUploadHandler), timeout=10)
    assert await head_offset(api, url) == sent  # what arrived is kept, as tus wants
    status, _, headers, _ = await api.request("PATCH", url, body=data[sent:], headers={
        **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(sent)},
        timeout=10)  # the lock is free: no wait
    assert status == 204
    assert headers["Vocalink-Sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_cut_chunked_patch_to_a_complete_upload_releases_its_lock(
    server: Server, api: Api
) -> None:
    """The one PATCH that holds the lock without writing: a repeat of a completed upload."""
    url = await create(api, len(WAV), "rec-done")
    status, _, _, _ = await api.request("PATCH", url, body=WAV, headers={
        **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert status == 204
    port = server.port
    assert port is not None
    head = head_bytes("PATCH", url, {
        **TUS, "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(len(WAV)), "Transfer-Encoding": "chunked"})
    await send_part_then_close(port, head, b"10\r\nabc",
                               until=lambda: len(running(TusUploadHandler)) == 1)
    await wait_until(lambda: not running(TusUploadHandler), timeout=10)
    status, _, _, _ = await api.request("DELETE", url, headers=TUS, timeout=10)
    assert status == 204  # it takes the lock: a leaked one would make it wait for ever
    status, body = await api.get("/ping")
    assert status == 200, body
