"""The uploader, directly: an outbox item leaves the outbox only once the server has its bytes.

Done means the server accepted the upload and answered with the SAME sha256 as the file's.
Every other answer (a refusal, a server error, a success that names another sha256 or none,
an upload that never completes) leaves the item, and its audio, in the outbox. Checked
against the real server (`server` fixture) and against a small tus server on 127.0.0.1 that
answers whatever the test tells it to.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.http import Api
from vocalink_lab.agent.outbox import Outbox, OutboxItem
from vocalink_lab.agent.spool import FinishedRecording
from vocalink_lab.agent.uploader import UPLOADS_PATH, Uploader, UploadInterrupted, UploadRefused
from vocalink_lab.server import Server

TUS = {"Tus-Resumable": "1.0.0"}
OTHER_SHA = "0" * 64


def queued(tmp_path: Path, recording_id: str = "rec-up-1", *, frames: int = 16000,
           content: bytes | None = None) -> tuple[Outbox, OutboxItem, bytes]:
    """An outbox holding one WAV recording (or ``content`` under its name); also its bytes."""
    spool = tmp_path / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / f"{recording_id}.wav"
    if content is None:
        x = np.random.default_rng(0).uniform(-0.5, 0.5, (frames, 1)).astype(np.float32)
        sf.write(path, x, 16000, subtype="PCM_16")
    else:
        path.write_bytes(content)
    data = path.read_bytes()
    rec = FinishedRecording(path, recording_id, "take-1", "mic-1", 1700000000.5, 16000, 1,
                            frames, len(data), hashlib.sha256(data).hexdigest(), "wav")
    outbox = Outbox(tmp_path / "outbox")
    return outbox, outbox.add(rec), data


def still_queued(outbox: Outbox, item: OutboxItem, data: bytes) -> None:
    """The item is pending, on disk, with its audio intact."""
    again = Outbox(outbox.root).get(item.recording_id)
    assert again is not None, "the item left the outbox"
    assert again.recording == item.recording and again.path.read_bytes() == data


# -- against the real server ---------------------------------------------------------------


async def upload(uploader: Uploader, outbox: Outbox, item: OutboxItem) -> str:
    return await asyncio.to_thread(uploader.upload, outbox, item)


def tus_dir(server: Server) -> Path:
    return server.data_dir / "uploads" / "tus"


@pytest.mark.asyncio
async def test_an_upload_the_server_confirms_leaves_the_outbox(server: Server, api: Api,
                                                                tmp_path: Path) -> None:
    outbox, item, data = queued(tmp_path)
    got = await upload(Uploader(server.url), outbox, item)
    assert got == item.recording_id
    assert outbox.pending() == [] and not item.path.exists() and outbox.orphans() == []
    status, meta = await api.get(f"/api/audio/{got}/meta")
    assert status == 200 and meta["sha256"] == item.recording.sha256
    assert (meta["bytes"], meta["frames"], meta["device_id"], meta["take_id"]) == \
        (len(data), 16000, "mic-1", "take-1")
    assert list(tus_dir(server).glob("*.part")) == []


@pytest.mark.asyncio
async def test_an_interrupted_upload_resumes_on_the_same_server_upload(
        server: Server, api: Api, tmp_path: Path) -> None:
    outbox, item, data = queued(tmp_path)
    # The first attempt created the upload and got 10 000 bytes through, then the link died.
    status, _, headers, _ = await api.request("POST", UPLOADS_PATH, headers={
        **TUS, "Upload-Length": str(len(data)),
        "Upload-Metadata": f"recording_id {base64.b64encode(b'rec-up-1').decode()}"})
    assert status == 201
    url = headers["Location"]
    status, _, _, _ = await api.request("PATCH", url, body=data[:10_000], headers={
        **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert status == 204
    item = outbox.update(item, upload_url=url)

    assert await upload(Uploader(server.url), outbox, item) == "rec-up-1"
    assert outbox.pending() == []
    assert [p.stem for p in tus_dir(server).glob("*.json")] == [url.rsplit("/", 1)[1]]
    status, meta = await api.get("/api/audio/rec-up-1/meta")
    assert status == 200 and meta["sha256"] == item.recording.sha256


@pytest.mark.asyncio
async def test_a_lost_confirmation_is_asked_for_again(server: Server, api: Api,
                                                      tmp_path: Path) -> None:
    """The server stored everything but its answer was lost: HEAD tells, nothing is resent."""
    outbox, item, data = queued(tmp_path)
    uploader = Uploader(server.url)
    real_patch = uploader._patch

    def patch_then_lose_the_answer(*args: object, **kwargs: object) -> object:
        real_patch(*args, **kwargs)  # type: ignore[arg-type]
        raise ConnectionResetError("the answer was lost")

    uploader._patch = patch_then_lose_the_answer  # type: ignore[method-assign]
    with pytest.raises(UploadInterrupted):
        await upload(uploader, outbox, item)
    still_queued(outbox, item, data)
    again = outbox.get(item.recording_id)
    assert again is not None and again.upload_url is not None

    uploader._patch = real_patch  # type: ignore[method-assign]
    assert await upload(uploader, outbox, again) == "rec-up-1"
    assert outbox.pending() == []
    assert len([p for p in tus_dir(server).glob("*.json")]) == 1  # one upload, not two


@pytest.mark.asyncio
async def test_a_file_changed_since_it_was_queued_is_refused_and_kept(
        server: Server, api: Api, tmp_path: Path) -> None:
    """The bytes no longer hash to the recorded sha256: the server refuses, the item stays."""
    outbox, item, _ = queued(tmp_path)
    damaged = bytearray(item.path.read_bytes())
    damaged[-1] ^= 0xFF  # one flipped bit of audio, same size
    item.path.write_bytes(bytes(damaged))
    with pytest.raises(UploadRefused, match="sha256"):
        await upload(Uploader(server.url), outbox, item)
    still_queued(outbox, item, bytes(damaged))
    assert (await api.get(f"/api/audio/{item.recording_id}/meta"))[0] == 404


@pytest.mark.asyncio
async def test_a_file_the_server_refuses_stays_in_the_outbox(server: Server, api: Api,
                                                            tmp_path: Path) -> None:
    outbox, item, text = queued(tmp_path, content=b"not audio at all, " * 100)
    with pytest.raises(UploadRefused, match="415"):
        await upload(Uploader(server.url), outbox, item)
    still_queued(outbox, item, text)
    assert (await api.get(f"/api/audio/{item.recording_id}/meta"))[0] == 404


# -- against a server that answers as told -------------------------------------------------

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeTus:
    """A tus server on 127.0.0.1 whose answers the test sets; it records every request.

    ``patch`` and ``head`` are called with the request and give the answer. By default an
    upload is created at ``/api/audio/uploads/fake`` and every PATCH is a success naming
    the sha256 of the bytes received since offset 0 (a correct server).
    """

    patch: Callable[[Request], Answer] | None = None
    head: Callable[[Request], Answer] | None = None
    requests: list[Request] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)
    url: str = ""

    def answer(self, request: Request) -> Answer:
        self.requests.append(request)
        if request.method == "POST":
            return 201, {"Location": f"{UPLOADS_PATH}/fake"}, b""
        if request.method == "HEAD":
            assert self.head is not None, "no HEAD expected"
            return self.head(request)
        self.received[int(request.headers["upload-offset"]):] = request.body
        if self.patch is not None:
            return self.patch(request)
        return confirm(hashlib.sha256(self.received).hexdigest())

    def patches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]


def confirm(sha256: str | None, recording_id: str = "rec-up-1", status: int = 204,
            body: bytes = b"") -> Answer:
    headers = {"Vocalink-Recording-Id": recording_id, **TUS}
    if sha256 is not None:
        headers["Vocalink-Sha256"] = sha256
    return status, headers, body


def error(status: int, message: str) -> Answer:
    return status, {"Content-Type": "application/json", **TUS}, \
        json.dumps({"error": message}).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FakeHttpServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path,
                          {k.lower(): v for k, v in self.headers.items()}, body)
        status, headers, payload = self.server.fake.answer(request)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_POST = do_PATCH = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


class _FakeHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeTus


@pytest.fixture
def fake() -> Iterator[FakeTus]:
    httpd = _FakeHttpServer(("127.0.0.1", 0), _Handler)
    httpd.fake = FakeTus(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="fake-tus",
                              daemon=True)
    thread.start()
    try:
        yield httpd.fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_the_fake_server_can_confirm_an_upload(fake: FakeTus, tmp_path: Path) -> None:
    """The control: a correct answer empties the outbox, so the refusals below mean something."""
    outbox, item, data = queued(tmp_path)
    assert Uploader(fake.url).upload(outbox, item) == "rec-up-1"
    assert outbox.pending() == [] and not item.path.exists()
    assert bytes(fake.received) == data
    [post] = [r for r in fake.requests if r.method == "POST"]
    assert post.headers["upload-length"] == str(len(data))
    assert f"sha256 {base64.b64encode(item.recording.sha256.encode()).decode()}" in \
        post.headers["upload-metadata"]


@pytest.mark.parametrize(("answer", "raised"), [
    (confirm(OTHER_SHA), UploadRefused),  # the server stored other bytes
    (confirm(None), UploadRefused),  # "stored", but no sha256 to compare
    (confirm(""), UploadRefused),
    (confirm(OTHER_SHA, status=200, body=json.dumps({"id": "rec-up-1",
                                                     "sha256": OTHER_SHA}).encode()),
     UploadRefused),  # another sha256 in the headers and in the body
    (error(400, "bad request"), UploadRefused),
    (error(415, "not audio"), UploadRefused),
    (error(422, "sha256 mismatch"), UploadRefused),
    (error(409, "upload was refused"), UploadInterrupted),
    (error(500, "disk full"), UploadInterrupted),
    (error(503, "restarting"), UploadInterrupted),
], ids=["other-sha256", "no-sha256", "empty-sha256", "other-sha256-in-body", "400", "415",
        "422", "409", "500", "503"])
def test_an_answer_without_the_same_sha256_keeps_the_item(
        fake: FakeTus, tmp_path: Path, answer: Answer, raised: type[Exception]) -> None:
    outbox, item, data = queued(tmp_path)
    fake.patch = lambda request: answer
    with pytest.raises(raised):
        Uploader(fake.url).upload(outbox, item)
    still_queued(outbox, item, data)
    assert len(fake.patches()) == 1 and bytes(fake.received) == data


def test_a_patch_that_takes_everything_but_never_confirms_keeps_the_item(
        fake: FakeTus, tmp_path: Path) -> None:
    """204 with the whole file, yet no recording: not done (HEAD asked, retried, given up)."""
    outbox, item, data = queued(tmp_path)
    done_offset = {**TUS, "Upload-Offset": str(len(data))}
    fake.patch = lambda request: (204, done_offset, b"")
    fake.head = lambda request: (200, {**done_offset, "Upload-Length": str(len(data))}, b"")
    with pytest.raises(UploadInterrupted, match="offset"):
        Uploader(fake.url).upload(outbox, item)
    still_queued(outbox, item, data)
    assert any(r.method == "HEAD" for r in fake.requests)


def test_a_resumed_upload_goes_on_from_the_servers_offset(fake: FakeTus, tmp_path: Path) -> None:
    outbox, item, data = queued(tmp_path)
    item = outbox.update(item, upload_url=f"{UPLOADS_PATH}/fake")
    fake.received[:] = data[:1000]  # what an earlier attempt got through
    fake.head = lambda request: (200, {**TUS, "Upload-Offset": "1000",
                                       "Upload-Length": str(len(data))}, b"")
    assert Uploader(fake.url).upload(outbox, item) == "rec-up-1"
    assert [r.method for r in fake.requests] == ["HEAD", "PATCH"]  # no new upload
    [patch] = fake.patches()
    assert patch.headers["upload-offset"] == "1000" and patch.body == data[1000:]
    assert outbox.pending() == []


@pytest.mark.parametrize("sha256", [OTHER_SHA, None], ids=["other-sha256", "no-sha256"])
def test_a_completed_upload_reporting_another_sha256_keeps_the_item(
        fake: FakeTus, tmp_path: Path, sha256: str | None) -> None:
    """HEAD of an earlier upload says it is complete, but not with this file's bytes."""
    outbox, item, data = queued(tmp_path)
    item = outbox.update(item, upload_url=f"{UPLOADS_PATH}/fake")
    status, headers, _ = confirm(sha256, status=200)
    fake.head = lambda request: (status, {**headers, "Upload-Offset": str(len(data))}, b"")
    with pytest.raises(UploadRefused):
        Uploader(fake.url).upload(outbox, item)
    still_queued(outbox, item, data)
    assert fake.patches() == []


def test_a_completed_upload_with_the_same_sha256_is_done_without_resending(
        fake: FakeTus, tmp_path: Path) -> None:
    outbox, item, _ = queued(tmp_path)
    item = outbox.update(item, upload_url=f"{UPLOADS_PATH}/fake")
    status, headers, _ = confirm(item.recording.sha256, status=200)
    fake.head = lambda request: (status, headers, b"")
    assert Uploader(fake.url).upload(outbox, item) == "rec-up-1"
    assert outbox.pending() == [] and fake.patches() == []
