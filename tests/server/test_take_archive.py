"""``GET /api/takes/{id}/archive``: a take's files and manifest as one streamed ZIP."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import socket
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest

from tests.support.errors import assert_error_shape
from tests.support.http import Api
from tests.support.takes import finished_job, record_take
from tests.support.wait import wait_until
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio

#: The ZIP64 extended information extra field's id.
ZIP64_EXTRA = 0x0001


def members_by_id(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    manifest = json.loads(archive.read(archive.namelist()[0]))
    return {m["recording_id"]: archive.getinfo(m["file"]) for m in manifest["members"]}


async def test_the_archive_holds_the_originals_the_merge_and_a_true_manifest(
        threaded: tuple[Server, Api]) -> None:
    server, api = threaded
    originals = await record_take(server, api, "take-duet", {"mic-1": "Alto", "mic-2": "Bass"})
    await api.put_json("/api/takes/take-duet", {"name": "Duet #1 / warm-up"})
    ids = [r["id"] for r in originals]
    _, job = await api.post_json("/api/audio/merge", {"ids": ids, "mode": "multichannel"})
    merged = (await finished_job(api, job["id"]))["result"]["recording"]
    _, job = await api.post_json(f"/api/audio/{ids[0]}/enhance", {"preset": "gentle"})
    enhanced = (await finished_job(api, job["id"]))["result"]["recording"]
    assert merged["take_id"] == enhanced["take_id"] == "take-duet"

    status, _, headers, raw = await api.request("GET", "/api/takes/take-duet/archive")
    assert status == 200
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"] == 'attachment; filename="Duet_1_warm-up.zip"'
    assert "Content-Length" not in headers  # streamed as it is written
    archive = zipfile.ZipFile(io.BytesIO(raw))
    assert archive.testzip() is None
    assert archive.namelist() == [
        "Duet_1_warm-up/manifest.json",
        f"Duet_1_warm-up/Alto-{ids[0]}.wav",
        f"Duet_1_warm-up/Bass-{ids[1]}.wav",
        f"Duet_1_warm-up/merged-{merged['id']}.flac",
    ]  # the enhanced recording is no member: originals and merges only
    for info in archive.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.flag_bits & 0x08  # a data descriptor: written without seeking back
    manifest = json.loads(archive.read("Duet_1_warm-up/manifest.json"))
    assert manifest["take"]["id"] == "take-duet"
    assert manifest["take"]["name"] == "Duet #1 / warm-up"
    assert manifest["take"]["devices"] == ["mic-1", "mic-2"]
    assert manifest["take"]["stopped_at"] is not None
    for member in manifest["members"]:
        _, row = await api.get(f"/api/audio/{member['recording_id']}/meta")
        data = archive.read(member["file"])
        assert hashlib.sha256(data).hexdigest() == member["sha256"] == row["sha256"]
        assert len(data) == member["bytes"] == row["bytes"]
        assert (member["kind"], member["device_id"], member["device_name"]) == (
            row["kind"], row["device_id"], row["device_name"])
    assert [(m["recording_id"], m["kind"], m["device_name"]) for m in manifest["members"]] == [
        (ids[0], "original", "Alto"), (ids[1], "original", "Bass"),
        (merged["id"], "merged", None)]
    assert manifest["members"][2]["parents"] == ids


async def test_a_take_of_megabytes_streams_in_pieces_with_zip64_when_needed(
        threaded: tuple[Server, Api], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, api = threaded
    rows = await record_take(server, api, "take-big", {f"mic-{i}": f"M{i}" for i in range(4)},
                             seconds=16, sr=48000, channels=2)
    total = sum(r["bytes"] for r in rows)
    assert total > 10 * 2**20
    # Members above 1 MiB now need ZIP64 records, as members above 4 GiB do.
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 2**20)
    chunks: list[int] = []
    target = tmp_path / "big.zip"
    tracemalloc.start()
    try:
        with target.open("wb") as out:
            def receive(chunk: bytes) -> None:
                chunks.append(len(chunk))
                out.write(chunk)

            response = await api.client.fetch(HTTPRequest(
                f"{server.url}/api/takes/take-big/archive", headers=api.auth,
                streaming_callback=receive, request_timeout=60), raise_error=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert sum(chunks) == target.stat().st_size > total
    assert len(chunks) > 10
    # Server and client share this process: neither held the archive, nor one member.
    assert peak < min(r["bytes"] for r in rows), (peak, total)
    monkeypatch.undo()
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        infos = members_by_id(archive)
        for row in rows:
            info = infos[row["id"]]
            digest = hashlib.sha256(archive.read(info)).hexdigest()
            assert digest == row["sha256"]
            assert ZIP64_EXTRA in _extra_ids(info.extra)


async def test_an_unknown_take_or_a_bad_id_is_refused_in_the_one_shape(
        server: Server, api: Api) -> None:
    status, body, headers, _ = await api.request("GET", "/api/takes/nope/archive")
    assert status == 404 and "Content-Disposition" not in headers
    assert_error_shape(body, 404, "take_not_found")
    status, body, _, _ = await api.request("GET", "/api/takes/..%2Fx/archive")
    assert status == 422
    assert_error_shape(body, 422, "invalid_parameter")


async def test_the_archive_asks_for_the_controller_token(server: Server, api: Api) -> None:
    await record_take(server, api, "take-locked", {"mic-1": "Alto"})
    for token, status, code in (("", 401, "unauthorized"), ("wrong", 403, "forbidden")):
        other = Api(server.url, token=token)
        try:
            got, body, _, raw = await other.request("GET", "/api/takes/take-locked/archive")
        finally:
            other.close()
        assert got == status and not raw.startswith(b"PK")
        assert_error_shape(body, status, code)


async def test_a_missing_file_is_a_404_before_any_byte_of_zip(server: Server, api: Api) -> None:
    rows = await record_take(server, api, "take-torn", {"mic-1": "Alto", "mic-2": "Bass"})
    (server.data_dir / rows[1]["path"]).unlink()
    status, body, _, _ = await api.request("GET", "/api/takes/take-torn/archive")
    assert status == 404
    assert_error_shape(body, 404, "not_found")
    assert rows[1]["id"] in body["error"]


async def test_a_client_that_leaves_mid_stream_leaves_nothing_behind(
        threaded: tuple[Server, Api], caplog: pytest.LogCaptureFixture) -> None:
    server, api = threaded
    rows = await record_take(server, api, "take-left", {f"mic-{i}": f"M{i}" for i in range(3)},
                             seconds=16, sr=48000, channels=2)
    caplog.set_level(logging.DEBUG, logger="vocalink_lab.server.takes")
    before = _open_recordings(server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # the server must wait
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", server.port or 0))
    await loop.sock_sendall(sock, (
        f"GET /api/takes/take-left/archive HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {os.environ['VOCALINK_TOKEN']}\r\n\r\n").encode())
    received = b""
    while len(received) < 64 * 1024:
        received += await loop.sock_recv(sock, 65536)
    assert received.startswith(b"HTTP/1.1 200")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset, mid-way through the first member

    await wait_until(lambda: "the client left during the archive of take take-left"
                     in caplog.text, timeout=10)
    await wait_until(lambda: _open_recordings(server) == before, timeout=5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # And the server goes on serving: the whole archive, to the next client.
    status, _, _, raw = await api.request("GET", "/api/takes/take-left/archive")
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert archive.testzip() is None and len(archive.namelist()) == len(rows) + 1


def _open_recordings(server: Server) -> set[str]:
    """The files under the data dir this process holds open."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(server.data_dir / "recordings")):
            found.add(target)
    return found


def _extra_ids(extra: bytes) -> set[int]:
    ids, i = set(), 0
    while i + 4 <= len(extra):
        kind, size = struct.unpack("<HH", extra[i:i + 4])
        ids.add(kind)
        i += 4 + size
    return ids
