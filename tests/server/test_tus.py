"""Resumable uploads (tus 1.0) on a real server: protocol, errors, restarts, interruptions,
expiry, and a third-party client (tuspy)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from tusclient import client as tus_client

from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.disk import FullDisk
from tests.support.errors import assert_error_shape
from tests.support.http import Api, auth_headers
from tests.support.rawhttp import with_token
from tests.support.wait import wait_until
from vocalink_lab.server import Server
from vocalink_lab.storage import files

pytestmark = pytest.mark.asyncio
TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
ROUTE = "/api/audio/uploads"


def metadata(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def checksum(data: bytes, algorithm: str = "sha1") -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


async def create(api: Api, length: int, **fields: str) -> str:
    status, body, headers, _ = await api.request(
        "POST", ROUTE, headers={**TUS, "Upload-Length": str(length),
                                "Upload-Metadata": metadata(**fields)})
    assert status == 201, body
    assert headers["Tus-Resumable"] == "1.0.0" and "Upload-Expires" in headers
    assert headers["Location"] == f"{ROUTE}/{body['id']}"
    return str(headers["Location"])


async def patch(api: Api, url: str, offset: int, data: bytes,
                **extra: str) -> tuple[int, Any, Mapping[str, str]]:
    status, body, headers, _ = await api.request(
        "PATCH", url, body=data, headers={**PATCH, "Upload-Offset": str(offset), **extra})
    return status, body, headers


async def head_offset(api: Api, url: str) -> int:
    status, _, headers, raw = await api.request("HEAD", url, headers=TUS)
    assert status == 200 and raw == b"" and headers["Cache-Control"] == "no-store"
    return int(headers["Upload-Offset"])


async def test_options_advertises_the_extensions(server: Server, api: Api) -> None:
    status, _, headers, _ = await api.request("OPTIONS", ROUTE)
    assert status == 204
    assert headers["Tus-Version"] == "1.0.0" and headers["Tus-Resumable"] == "1.0.0"
    assert set(headers["Tus-Extension"].split(",")) == {
        "creation", "checksum", "termination", "expiration"}
    assert "sha1" in headers["Tus-Checksum-Algorithm"].split(",")
    assert int(headers["Tus-Max-Size"]) == server.settings.max_upload_bytes


async def test_upload_in_pieces_with_checksums_becomes_a_recording(server: Server,
                                                                   api: Api) -> None:
    data = encode("flac", seconds=2.0)
    url = await create(api, len(data), recording_id="rec-tus-1", device_id="mic-1",
                       take_id="take-9", started_at="1700000000.5", filename="mic.flac",
                       sha256=hashlib.sha256(data).hexdigest())
    pieces = [data[:1000], data[1000:50_000], data[50_000:]]
    offset = 0
    for piece in pieces:
        assert await head_offset(api, url) == offset
        status, _, headers = await patch(api, url, offset, piece, **{
            "Upload-Checksum": checksum(piece, "sha256" if offset else "sha1")})
        assert status == 204, headers
        offset += len(piece)
        assert int(headers["Upload-Offset"]) == offset
    assert headers["Vocalink-Recording-Id"] == "rec-tus-1"
    assert headers["Vocalink-Sha256"] == hashlib.sha256(data).hexdigest()
    status, meta = await api.get("/api/audio/rec-tus-1/meta")
    assert status == 200 and meta["format"] == "flac" and meta["take_id"] == "take-9"
    assert meta["device_id"] == "mic-1" and meta["duration_s"] == pytest.approx(2.0)
    assert meta["original_name"] == "mic.flac"
    status, _, _, raw = await api.request("GET", "/api/audio/rec-tus-1")
    assert status == 200 and raw == data
    # The outcome stays readable: a device that lost the last answer asks again.
    _, _, headers, _ = await api.request("HEAD", url, headers=TUS)
    assert int(headers["Upload-Offset"]) == len(data)
    assert headers["Vocalink-Recording-Id"] == "rec-tus-1"
    status, _, headers = await patch(api, url, len(data), b"")
    assert status == 204 and headers["Vocalink-Recording-Id"] == "rec-tus-1"


@pytest.mark.parametrize(("method", "path", "headers", "status", "message", "code"), [
    ("POST", ROUTE, {"Upload-Length": "10"}, 412, "Tus-Resumable must be 1.0.0",
     "precondition_failed"),
    ("POST", ROUTE, {**TUS}, 400, "Upload-Length is required", "bad_request"),
    ("POST", ROUTE, {**TUS, "Upload-Length": "ten"}, 400, "Upload-Length must be a non-negative",
     "bad_request"),
    ("POST", ROUTE, {**TUS, "Upload-Length": "0"}, 422, "at least 1 byte", "invalid_parameter"),
    ("POST", ROUTE, {**TUS, "Upload-Length": str(1 << 40)}, 413, "exceeds the limit",
     "too_large"),
    ("POST", ROUTE, {**TUS, "Upload-Defer-Length": "1"}, 400, "Upload-Defer-Length",
     "bad_request"),
    ("POST", ROUTE, {**TUS, "Upload-Length": "5", "Upload-Metadata": "recording_id !!"}, 400,
     "not base64-encoded UTF-8", "bad_request"),
    ("POST", ROUTE, {**TUS, "Upload-Length": "5",
                     "Upload-Metadata": metadata(recording_id="../etc")}, 422,
     "recording_id '../etc' is not a valid id", "invalid_parameter"),
    ("POST", ROUTE, {**TUS, "Upload-Length": "5",
                     "Upload-Metadata": metadata(sha256="xyz")}, 422, "sha256 must be 64",
     "invalid_parameter"),
    ("HEAD", ROUTE + "/" + "0" * 32, {**TUS}, 404, "", None),
    ("PATCH", ROUTE + "/" + "0" * 32, {**PATCH, "Upload-Offset": "0"}, 404, "no upload",
     "not_found"),
    ("HEAD", ROUTE + "/not-an-id", {**TUS}, 404, "", None),
])
async def test_refused_requests(server: Server, api: Api, method: str, path: str,
                                headers: dict[str, str], status: int, message: str,
                                code: str | None) -> None:
    got, body, answer, _ = await api.request(method, path, headers=headers)
    assert got == status
    if method != "HEAD":
        assert_error_shape(body, status, code)
        assert message in body["error"], body
    if status == 412:
        assert answer["Tus-Version"] == "1.0.0"


async def test_patch_errors_change_nothing(server: Server, api: Api) -> None:
    data = encode("wav", seconds=0.5)
    url = await create(api, len(data), recording_id="rec-tus-2")
    status, _, _ = await patch(api, url, 0, data[:100])
    assert status == 204
    cases: list[tuple[int, bytes, dict[str, str], int, str, str]] = [
        (0, data[:10], {}, 409, "Upload-Offset is 0 but the upload is at 100", "conflict"),
        (100, data[100:200], {"Upload-Checksum": checksum(b"other")}, 460,
         "does not match Upload-Checksum", "checksum_mismatch"),
        (100, data[100:200], {"Upload-Checksum": "crc32 AAAA"}, 400,
         "unsupported checksum algorithm", "bad_request"),
        (100, data[100:200], {"Upload-Checksum": "sha1 !!"}, 400, "not base64", "bad_request"),
        (100, data[100:] + b"extra", {}, 413, "exceed Upload-Length", "too_large"),
        (100, data[100:200], {"Content-Type": "application/octet-stream"}, 415,
         "PATCH must be application/offset+octet-stream", "unsupported_media_type"),
        (100, data[100:200], {"Tus-Resumable": "0.2.2"}, 412, "Tus-Resumable must be 1.0.0",
         "precondition_failed"),
    ]
    for offset, body_bytes, extra, expected, message, code in cases:
        status, body, headers = await patch(api, url, offset, body_bytes, **extra)
        assert status == expected, (message, body)
        assert_error_shape(body, expected, code)
        assert message in body["error"], (message, body)
        assert await head_offset(api, url) == 100
    status, _, headers = await patch(api, url, 100, data[100:])
    assert status == 204 and headers["Vocalink-Recording-Id"] == "rec-tus-2"


def part_file(server: Server, url: str) -> Path:
    return server.data_dir / "uploads" / "tus" / f"{url.rsplit('/', 1)[1]}.part"


async def test_a_patch_ahead_of_the_offset_is_refused_and_writes_nothing(
        server: Server, api: Api) -> None:
    """Bytes from an offset past the end would leave a hole and misreport the offset."""
    data = encode("wav", seconds=0.5)
    url = await create(api, len(data), recording_id="rec-ahead")
    status, body, headers = await patch(api, url, 1, data[1:50])  # ahead of an empty upload
    assert status == 409 and headers["Upload-Offset"] == "0", body
    assert (await patch(api, url, 0, data[:100]))[0] == 204
    # Just past the end, well past it, and a last piece that would "complete" the upload.
    for ahead in (101, 5_000, len(data) - 10):
        status, body, headers = await patch(api, url, ahead, data[ahead:ahead + 10])
        assert status == 409, (ahead, body)
        assert_error_shape(body, 409, "conflict")
        assert f"Upload-Offset is {ahead} but the upload is at 100" in body["error"]
        assert headers["Upload-Offset"] == "100"
        assert part_file(server, url).read_bytes() == data[:100]
        assert await head_offset(api, url) == 100
    assert (await api.get("/api/audio/rec-ahead/meta"))[0] == 404
    status, _, headers = await patch(api, url, 100, data[100:])
    assert status == 204 and headers["Vocalink-Sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [50_000, 3_000_000], ids=["small-request", "large-request"])
async def test_a_full_disk_mid_patch_is_answered_and_the_upload_resumes(
        server: Server, api: Api, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """The disk fills up while a PATCH is written (the hardware is what we fake).

    A small request fails when its bytes are flushed at the end; a large one while its
    body is still arriving (the spool writes a MiB at a time). Both get the one error
    shape, 507 ``insufficient_storage``, the upload stays where the disk left it, and it
    completes once there is room.
    """
    data = encode("wav", seconds=40.0)  # 3.8 MB
    url = await create(api, len(data), recording_id="rec-full")
    assert (await patch(api, url, 0, data[:100_000]))[0] == 204

    disk = FullDisk(room=0).install(monkeypatch, files)
    status, body, _ = await patch(api, url, 100_000, data[100_000:100_000 + size])
    assert status == 507, body
    assert_error_shape(body, 507, "insufficient_storage")
    assert disk.refused == 1
    assert "No space left on device" in body["error"]
    assert str(server.data_dir) not in body["error"]  # no server paths in answers
    monkeypatch.undo()  # room again
    offset = await head_offset(api, url)
    assert offset == 100_000 == part_file(server, url).stat().st_size
    status, _, headers = await patch(api, url, offset, data[offset:])
    assert status == 204, headers
    assert headers["Vocalink-Sha256"] == hashlib.sha256(data).hexdigest()
    _, meta = await api.get("/api/audio/rec-full/meta")
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()


async def test_partial_upload_survives_a_restart(tmp_path: Path) -> None:
    data = encode("wav", seconds=1.0)
    settings = fast_settings(tmp_path / "data")
    first = Server(settings)
    await first.start()
    api = Api(first.url)
    url = await create(api, len(data), recording_id="rec-restart")
    assert (await patch(api, url, 0, data[:40_000]))[0] == 204
    api.close()
    await first.stop()

    second = Server(settings)
    await second.start()
    api = Api(second.url)
    try:
        assert await head_offset(api, url) == 40_000
        status, _, headers = await patch(api, url, 40_000, data[40_000:])
        assert status == 204
        # After a restart the running hash is gone: the file is hashed again, correctly.
        assert headers["Vocalink-Sha256"] == hashlib.sha256(data).hexdigest()
        _, meta = await api.get("/api/audio/rec-restart/meta")
        assert meta["bytes"] == len(data)
    finally:
        api.close()
        await second.stop()


async def test_an_interrupted_patch_keeps_what_arrived(server: Server, api: Api) -> None:
    data = encode("wav", seconds=1.0)
    url = await create(api, len(data), recording_id="rec-cut")
    port = server.port
    assert port is not None

    def send_half() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = (f"PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
                    f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n")
            sock.sendall(with_token(head.encode()) + data[:30_000])

    await asyncio.to_thread(send_half)

    async def kept() -> bool:  # the server notices the closed connection, then fsyncs
        return await head_offset(api, url) == 30_000

    await wait_until(kept, timeout=10)
    status, _, headers = await patch(api, url, 30_000, data[30_000:])
    assert status == 204 and headers["Vocalink-Sha256"] == hashlib.sha256(data).hexdigest()


async def test_termination(server: Server, api: Api) -> None:
    url = await create(api, 100)
    assert (await patch(api, url, 0, b"x" * 10))[0] == 204
    status, _, _, _ = await api.request("DELETE", url, headers=TUS)
    assert status == 204
    assert (await api.request("HEAD", url, headers=TUS))[0] == 404
    assert list((server.data_dir / "uploads" / "tus").iterdir()) == []


async def test_an_abandoned_upload_expires(server: Server, api: Api) -> None:
    url = await create(api, 100)
    assert (await patch(api, url, 0, b"x" * 10))[0] == 204
    assert server.resumable is not None
    store = server.resumable.store
    # Time is what tests fake: the upload was last touched longer ago than the expiry.
    upload = store.load(url.rsplit("/", 1)[1])
    assert upload is not None
    upload.updated_at -= server.resumable.expiry_s + 1
    store.save(upload)
    status, body, _ = await patch(api, url, 10, b"x" * 10)
    assert status == 410 and "expired" in body["error"]
    assert_error_shape(body, 410, "gone")
    assert await server.resumable.sweep() == 1
    assert list((server.data_dir / "uploads" / "tus").iterdir()) == []
    assert (await api.request("HEAD", url, headers=TUS))[0] == 404


async def test_the_sweeper_runs_by_itself(tmp_path: Path) -> None:
    server = Server(fast_settings(tmp_path / "data", upload_expiry_s=0.4))
    await server.start()
    api = Api(server.url)
    try:
        url = await create(api, 100)
        folder = server.data_dir / "uploads" / "tus"
        assert len(list(folder.iterdir())) == 2
        # The upload expires 0.4 s after its creation; the sweeper looks every 0.1 s.
        await wait_until(lambda: not list(folder.iterdir()), timeout=10)
        assert (await api.request("HEAD", url, headers=TUS))[0] == 404
    finally:
        api.close()
        await server.stop()


async def test_a_refused_file_is_reported_and_not_catalogued(server: Server, api: Api) -> None:
    data = b"not audio at all " * 100
    url = await create(api, len(data), recording_id="rec-text")
    status, body, _ = await patch(api, url, 0, data)
    assert status == 415 and "not audio" in body["error"]
    assert (await api.get("/api/audio/rec-text/meta"))[0] == 404
    status, body, _ = await patch(api, url, len(data), b"")
    assert status == 409 and "upload was refused" in body["error"]


async def test_tuspy_uploads_through_the_endpoint(server: Server, api: Api,
                                                  tmp_path: Path) -> None:
    data = encode("flac", seconds=3.0)
    path = tmp_path / "take.flac"
    path.write_bytes(data)

    def upload() -> str:
        tus = tus_client.TusClient(server.url + ROUTE, headers=auth_headers())
        uploader = tus.uploader(str(path), chunk_size=64 * 1024, upload_checksum=True,
                                metadata={"recording_id": "rec-tuspy", "filename": "take.flac"})
        uploader.upload()
        return str(uploader.url)

    url = await asyncio.to_thread(upload)
    assert url.startswith(server.url + ROUTE + "/")
    _, meta = await api.get("/api/audio/rec-tuspy/meta")
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["format"] == "flac"
    listing = json.loads((await api.request("GET", "/api/audio/list"))[3])
    assert [item["id"] for item in listing["items"]] == ["rec-tuspy"]
