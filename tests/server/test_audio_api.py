"""Uploads of every accepted format, and the recordings API: list, download, meta, delete."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tests.support.audio import FORMATS, encode
from tests.support.device import FakeDevice
from tests.support.http import Api
from vocalink_lab.hub import Topic
from vocalink_lab.server import Server


@pytest.mark.asyncio
@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_every_phone_and_browser_format_is_accepted(server: Server, api: Api,
                                                          fmt: str) -> None:
    data = encode(fmt, seconds=1.5)
    # The client's claims (file name, nothing else) must not matter: facts come from the file.
    status, body = await api.upload(data, filename="recording.bin", recording_id=f"rec-{fmt}",
                                    device_id="mic-1", take_id="take-1",
                                    sha256=hashlib.sha256(data).hexdigest())
    assert status == 201, body
    rec = body["recording"]
    assert body["file_id"] == f"rec-{fmt}" and body["created"] is True
    assert rec["format"] == FORMATS[fmt] and rec["channels"] == 1
    assert rec["sample_rate"] in (8000, 16000, 44100, 48000)
    assert abs(rec["duration_s"] - 1.5) < 0.03, rec
    assert rec["bytes"] == len(data) and rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert rec["path"] == f"recordings/take-1/rec-{fmt}.{FORMATS[fmt]}"
    assert rec["original_name"] == "recording.bin" and rec["kind"] == "original"
    stored = server.data_dir / rec["path"]
    assert stored.read_bytes() == data
    status, raw_headers, raw = await _download(api, f"rec-{fmt}")
    assert status == 200 and raw == data


async def _download(api: Api, rid: str, headers: dict[str, str] | None = None
                    ) -> tuple[int, object, bytes]:
    status, _, response_headers, raw = await api.request("GET", f"/api/audio/{rid}",
                                                         headers=headers)
    return status, response_headers, raw


@pytest.mark.asyncio
async def test_stereo_wav_facts_come_from_the_file(server: Server, api: Api) -> None:
    data = encode("wav", seconds=2.0, sr=44100, channels=2)
    status, body = await api.upload(data, filename="claims-mono-8k.mp3")
    assert status == 201
    rec = body["recording"]
    assert (rec["format"], rec["sample_rate"], rec["channels"], rec["frames"]) == (
        "wav", 44100, 2, 88200)
    assert rec["id"].startswith("rec-") and rec["take_id"] is None
    assert rec["path"].startswith("recordings/_no_take/")


@pytest.mark.asyncio
async def test_upload_is_idempotent_by_recording_id(server: Server, api: Api) -> None:
    data = encode("flac", seconds=1.0)
    first = await api.upload(data, recording_id="rec-1", device_id="mic-1")
    again = await api.upload(data, recording_id="rec-1", device_id="mic-1")
    assert first[0] == 201 and again[0] == 200
    assert again[1]["duplicate"] is True and again[1]["recording"] == first[1]["recording"]
    other = encode("flac", seconds=1.0, freq=880)
    status, body = await api.upload(other, recording_id="rec-1")
    assert status == 409 and "already stored with other content" in body["error"]
    _, listing = await api.get("/api/audio/list")
    assert listing["total"] == 1
    assert list((server.data_dir / "uploads").iterdir()) == []
    assert (server.data_dir / first[1]["recording"]["path"]).read_bytes() == data


@pytest.mark.asyncio
async def test_concurrent_retries_of_one_recording_store_it_once(server: Server,
                                                                 api: Api) -> None:
    data = encode("wav", seconds=3.0)
    results = await asyncio.gather(*(api.upload(data, recording_id="rec-x") for _ in range(5)))
    assert sorted(status for status, _ in results) == [200, 200, 200, 200, 201]
    _, listing = await api.get("/api/audio/list")
    assert listing["total"] == 1
    files = [p for p in (server.data_dir / "recordings").rglob("*") if p.is_file()]
    assert len(files) == 1


@pytest.mark.asyncio
async def test_device_name_is_recorded_and_event_published(server: Server, api: Api) -> None:
    added = []
    server.hub.events.subscribe(Topic.RECORDING_ADDED, added.append)  # type: ignore[union-attr]
    async with FakeDevice(server.ws_url, "mic-9", "Window mic"):
        status, body = await api.upload(encode("wav"), recording_id="r9", device_id="mic-9",
                                        started_at="1700000000.25")
    assert status == 201
    assert body["recording"]["device_name"] == "Window mic"
    # The device answers SYNC with its own clock (offset 0): converted, it barely moves.
    assert body["recording"]["started_at"] == pytest.approx(1700000000.25, abs=0.001)
    assert [e.data["recording"]["id"] for e in added] == ["r9"]


async def _seed(api: Api) -> list[str]:
    ids = []
    for i in range(7):
        status, body = await api.upload(encode("wav", seconds=0.2, seed=i), recording_id=f"r{i}",
                                        device_id=f"mic-{i % 2}", take_id=f"take-{i % 3}")
        assert status == 201
        ids.append(body["file_id"])
    return ids


@pytest.mark.asyncio
async def test_list_filters_and_paginates(server: Server, api: Api) -> None:
    await _seed(api)
    status, page = await api.get("/api/audio/list?limit=3")
    assert status == 200 and page["total"] == 7 and page["next_offset"] == 3
    assert [r["id"] for r in page["items"]] == ["r6", "r5", "r4"]
    _, page = await api.get("/api/audio/list?limit=3&offset=6")
    assert [r["id"] for r in page["items"]] == ["r0"] and page["next_offset"] is None
    _, page = await api.get("/api/audio/list?order=oldest&limit=2")
    assert [r["id"] for r in page["items"]] == ["r0", "r1"]
    _, page = await api.get("/api/audio/list?device_id=mic-1")
    assert {r["id"] for r in page["items"]} == {"r1", "r3", "r5"}
    _, page = await api.get("/api/audio/list?take_id=take-0&device_id=mic-0")
    assert {r["id"] for r in page["items"]} == {"r0", "r6"}
    _, page = await api.get("/api/audio/list?kind=original")
    assert page["total"] == 7
    _, page = await api.get("/api/audio/list?kind=merged")
    assert page["total"] == 0 and page["items"] == []


@pytest.mark.asyncio
async def test_download_ranges_head_and_etag(server: Server, api: Api) -> None:
    data = encode("wav", seconds=1.0)
    _, body = await api.upload(data, recording_id="r1")
    sha = body["recording"]["sha256"]
    status, headers, raw = await _download(api, "r1")
    assert status == 200 and raw == data
    assert headers["Content-Type"] == "audio/wav"  # type: ignore[index]
    assert headers["Accept-Ranges"] == "bytes" and headers["ETag"] == f'"{sha}"'  # type: ignore[index]
    assert 'filename="r1.wav"' in headers["Content-Disposition"]  # type: ignore[index]
    for header, expected, content_range in [
        ("bytes=0-99", data[:100], f"bytes 0-99/{len(data)}"),
        ("bytes=100-", data[100:], f"bytes 100-{len(data) - 1}/{len(data)}"),
        ("bytes=-10", data[-10:], f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"),
        (f"bytes=5-{len(data) * 2}", data[5:], f"bytes 5-{len(data) - 1}/{len(data)}"),
    ]:
        status, headers, raw = await _download(api, "r1", {"Range": header})
        assert status == 206 and raw == expected, header
        assert headers["Content-Range"] == content_range  # type: ignore[index]
    status, headers, raw = await _download(api, "r1", {"Range": "bytes=0-1,5-6"})
    assert status == 200 and raw == data  # several ranges: the whole file, as RFC 9110 allows
    status, _, head_headers, raw = await api.request("HEAD", "/api/audio/r1")
    assert status == 200 and raw == b"" and head_headers["Content-Length"] == str(len(data))
    status, _, _, raw = await api.request("GET", "/api/audio/r1",
                                          headers={"If-None-Match": f'"{sha}"'})
    assert status == 304 and raw == b""


@pytest.mark.asyncio
async def test_large_download_streams(server: Server, api: Api) -> None:
    data = encode("wav", seconds=30.0, channels=2)  # ~11 MB: many blocks
    await api.upload(data, recording_id="big")
    status, _, raw = await _download(api, "big")
    assert status == 200 and hashlib.sha256(raw).digest() == hashlib.sha256(data).digest()


@pytest.mark.asyncio
async def test_meta_and_delete(server: Server, api: Api) -> None:
    await _seed(api)
    status, meta = await api.get("/api/audio/r3/meta")
    assert status == 200 and meta["id"] == "r3" and meta["device_id"] == "mic-1"
    path: Path = server.data_dir / meta["path"]
    assert path.exists()
    deleted = []
    server.hub.events.subscribe(Topic.RECORDING_DELETED, deleted.append)  # type: ignore[union-attr]
    status, body, _, _ = await api.request("DELETE", "/api/audio/r3")
    assert status == 200 and body["deleted"] == "r3"
    assert not path.exists() and len(deleted) == 1
    assert (await api.get("/api/audio/r3/meta"))[0] == 404
    assert (await api.get("/api/audio/r3"))[0] == 404
    status, body, _, _ = await api.request("DELETE", "/api/audio/r3")
    assert status == 404 and body["error"] == "no recording with id 'r3'"
    _, page = await api.get("/api/audio/list")
    assert page["total"] == 6


@pytest.mark.asyncio
async def test_missing_file_is_reported_not_crashed(server: Server, api: Api) -> None:
    _, body = await api.upload(encode("wav"), recording_id="r1")
    (server.data_dir / body["recording"]["path"]).unlink()
    status, body = await api.get("/api/audio/r1")
    assert status == 404 and "its file" in body["error"] and "missing" in body["error"]
