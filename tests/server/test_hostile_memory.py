"""Hostile input, on a real server: memory stays bounded, and every cap answers clearly.

A controller that stops reading ``/ws/events``, a device that announces recordings
without end, a flood of REGISTERs with fresh ids, resumable uploads and jobs beyond their
caps, a merge of inputs that decode to gigabytes: each is bounded, and refused or dropped
with a code (``too_busy`` 503, ``too_large`` 413, close 1013), never buffered for.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import soundfile
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.device import FakeDevice
from tests.support.errors import assert_error_response, assert_error_shape
from tests.support.http import Api, auth_headers
from tests.support.wait import wait_until
from vocalink_lab.errors import TooBusy
from vocalink_lab.lab import connect
from vocalink_lab.protocol import ClientState, Error, Recording, Register, Status, Topic
from vocalink_lab.server import Server
from vocalink_lab.storage import ResumableStore

pytestmark = pytest.mark.asyncio
TUS = {"Tus-Resumable": "1.0.0"}


@pytest_asyncio.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[Any]:
    """Start a real server with some settings changed (a cap made small); stopped after."""
    started: list[Server] = []

    async def make(executor: ThreadPoolExecutor | None = None, **overrides: Any) -> Server:
        server = Server(fast_settings(tmp_path / f"data-{len(started)}", **overrides),
                        executor=executor)
        await server.start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            await server.stop()


def status(i: int) -> Status:
    return Status(state=ClientState.IDLE, level_dbfs=-float(i % 90), battery=0.5,
                  free_bytes=10**9, pending_uploads=i)


def announcement(recording_id: str) -> Recording:
    return Recording(recording_id=recording_id, take_id=None, started_at=1.0,
                     sample_rate=48000, channels=1, frames=48000, bytes=96044,
                     sha256="f" * 64, format="wav")


async def client_info(api: Api, device_id: str) -> dict[str, Any]:
    status_code, body = await api.get(f"/api/clients/{device_id}")
    assert status_code == 200, body
    return dict(body)


# -- /ws/events -------------------------------------------------------------------------------

async def test_a_controller_that_stops_reading_is_closed_with_1013(make_server: Any) -> None:
    server = await make_server(events_queue_bytes=64 * 1024)
    bus = server.hub.events
    # A tiny receive buffer: the kernel holds little for it, the server's queue fills.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    url = f"ws://127.0.0.1:{server.port}/ws/events"
    async with ws_connect(url, sock=sock, max_queue=1, compression=None,
                          additional_headers=auth_headers()) as stalled:
        await wait_until(lambda: bus.wants(Topic.DEVICE_UPDATED))
        async with FakeDevice(server.ws_url, "mic-1") as device:
            # Every STATUS is a device.updated event of about a kilobyte that the stalled
            # controller does not read; bounded in count, it stops once it is dropped.
            for i in range(40_000):
                if not bus.wants(Topic.DEVICE_UPDATED):
                    break
                await device.send(status(i))
            await wait_until(lambda: not bus.wants(Topic.DEVICE_UPDATED))
        # What it had received is still there to read; then the close, with its reason.
        with pytest.raises(ConnectionClosed) as closed:
            async for _ in stalled:
                pass
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert "too slow" in closed.value.rcvd.reason
    await wait_until(lambda: not server.event_sockets)


async def test_a_lab_dropped_for_being_slow_reconnects_and_its_mirror_is_right(
        make_server: Any) -> None:
    server = await make_server(events_queue_bytes=4096)
    lab = await connect(server.url)
    try:
        async with FakeDevice(server.ws_url, "mic-1"):
            await wait_until(lambda: [d["device_id"] for d in lab.device_list()] == ["mic-1"])
            seen: list[str] = []
            lab.on([Topic.LAB_DISCONNECTED, Topic.LAB_REFRESHED],
                   lambda topic, data: seen.append(topic))
            # Two hundred events in one turn of the loop: the Lab cannot read in between,
            # so far more than 4 KiB waits for it, and the server drops it.
            for i in range(200):
                server.hub.rename(f"Studio {i}")
            await wait_until(lambda: Topic.LAB_DISCONNECTED in seen
                             and Topic.LAB_REFRESHED in seen[seen.index(Topic.LAB_DISCONNECTED):])
            # The events it missed are gone; what it re-read is the server's state.
            assert lab.name == "Studio 199"
            [device] = lab.device_list()
            assert device["device_id"] == "mic-1" and device["connected"] is True
            # And it follows again: a later change arrives as an event.
            await lab.client.rename("After the drop")
            await wait_until(lambda: lab.name == "After the drop")
    finally:
        await lab.stop()


# -- devices ----------------------------------------------------------------------------------

async def test_endless_announcements_keep_api_clients_small(make_server: Any) -> None:
    server = await make_server(max_announced_recordings=50)
    api = Api(server.url)
    try:
        async with FakeDevice(server.ws_url, "mic-1") as device:
            await device.send(announcement("rec-up"))
            await wait_until(lambda: "rec-up" in server.hub.registry.get("mic-1").announced)
            status_code, _ = await api.upload(encode("wav"), recording_id="rec-up",
                                              device_id="mic-1")
            assert status_code == 201
            for i in range(3000):
                await device.send(announcement(f"rec-{i:05d}"))

            async def all_taken_in() -> bool:
                info = await client_info(api, "mic-1")
                return bool(info["announcements_dropped"] == 2950)

            await wait_until(all_taken_in)
            status_code, _, _, raw = await api.request("GET", "/api/clients")
            assert status_code == 200 and len(raw) < 4096
            info = await client_info(api, "mic-1")
            assert info["announcements_waiting"] == 50
            # The 50 newest still on their way, and the one that arrived (not dropped by
            # the cap: it is in the catalog).
            assert info["announced_recordings"] == (
                [f"rec-{i:05d}" for i in range(2950, 3000)] + ["rec-up"])
    finally:
        api.close()


async def test_a_new_device_is_refused_when_all_known_ones_are_connected(
        make_server: Any) -> None:
    server = await make_server(max_devices=2)
    api = Api(server.url)
    try:
        async with FakeDevice(server.ws_url, "mic-1") as first, \
                FakeDevice(server.ws_url, "mic-2"):
            newcomer = FakeDevice(server.ws_url, "mic-3", register=False)
            await newcomer.connect()
            await newcomer.send(Register(device_id="mic-3", name="mic-3", protocol=1,
                                         platform="test"))
            error = await newcomer.wait_for(Error)
            assert isinstance(error, Error) and error.code == "too_busy"
            assert "VOCALINK_MAX_DEVICES=2" in error.detail
            await asyncio.wait_for(newcomer.closed.wait(), 10)
            assert newcomer.conn is not None and newcomer.conn.close_code == 1013
            await newcomer.close()
            status_code, body = await api.get("/api/clients/mic-3")
            assert status_code == 404, body
            # One leaves: the newcomer gets in, and the one offline longest is forgotten.
            await first.close()
            await wait_until(lambda: "mic-1" not in server.hub.registry.connected_ids())
            async with FakeDevice(server.ws_url, "mic-3") as again:
                assert again.welcome is not None
                _, clients = await api.get("/api/clients")
                assert sorted(c["device_id"] for c in clients["items"]) == ["mic-2", "mic-3"]
                status_code, body = await api.get("/api/clients/mic-1")
                assert_error_shape(body, 404, "device_not_found")
    finally:
        api.close()


async def test_a_register_flood_with_fresh_ids_keeps_max_devices(make_server: Any) -> None:
    server = await make_server(max_devices=10)
    api = Api(server.url)
    try:
        for i in range(60):  # one after the other: each is offline when the next comes
            async with FakeDevice(server.ws_url, f"flood-{i}") as device:
                assert device.welcome is not None
            await wait_until(lambda: not server.hub.registry.connected_ids())
        _, clients = await api.get("/api/clients")
        assert sorted(c["device_id"] for c in clients["items"]) == [
            f"flood-{i}" for i in range(50, 60)]
    finally:
        api.close()


# -- resumable uploads and jobs ---------------------------------------------------------------

async def create_upload(api: Api, length: int) -> tuple[int, Any, Any, bytes]:
    return await api.request("POST", "/api/audio/uploads",
                             headers={**TUS, "Upload-Length": str(length)})


async def test_resumable_uploads_beyond_the_cap_are_refused_until_one_ends(
        make_server: Any) -> None:
    server = await make_server(max_resumable_uploads=2)
    api = Api(server.url)
    data = encode("wav")
    try:
        locations = []
        for _ in range(2):
            status_code, body, headers, _ = await create_upload(api, len(data))
            assert status_code == 201, body
            locations.append(headers["Location"])
        status_code, _, headers, raw = await create_upload(api, len(data))
        assert_error_response(status_code, headers, raw, 503,
                              "VOCALINK_MAX_RESUMABLE_UPLOADS=2", code="too_busy")
        assert headers["Retry-After"] == "30"
        # An upload that completes makes room...
        status_code, _, _, _ = await api.request(
            "PATCH", locations[0], body=data,
            headers={**TUS, "Content-Type": "application/offset+octet-stream",
                     "Upload-Offset": "0"})
        assert status_code == 204
        status_code, body, headers, _ = await create_upload(api, len(data))
        assert status_code == 201, body
        status_code, _, _, _ = await create_upload(api, len(data))
        assert status_code == 503
        # ...and so does one that is deleted.
        status_code, _, _, _ = await api.request("DELETE", locations[1], headers=TUS)
        assert status_code == 204
        status_code, body, _, _ = await create_upload(api, len(data))
        assert status_code == 201, body
    finally:
        api.close()


async def test_uploads_from_before_a_restart_count_and_expired_ones_do_not(
        tmp_path: Path) -> None:
    before = ResumableStore(tmp_path, max_receiving=2, expiry_s=3600)
    first = before.create(100, {}, "")
    before.create(100, {}, "")
    after_restart = ResumableStore(tmp_path, max_receiving=2, expiry_s=3600)
    with pytest.raises(TooBusy, match="2 uploads are in progress"):
        after_restart.create(100, {}, "")
    # One untouched for longer than the expiry no longer counts (it is swept later).
    first.updated_at -= 7200
    after_restart.save(first)
    assert after_restart.create(100, {}, "").state == "receiving"


async def test_jobs_beyond_the_cap_are_refused_until_one_finishes(make_server: Any) -> None:
    executor = ThreadPoolExecutor(1)
    release = threading.Event()
    executor.submit(release.wait, 60)  # the only worker is busy: the next job waits
    server = await make_server(executor=executor, max_pending_jobs=1)
    api = Api(server.url)
    try:
        for rid in ("rec-a", "rec-b"):
            status_code, _ = await api.upload(encode("wav"), recording_id=rid)
            assert status_code == 201
        merge = {"ids": ["rec-a", "rec-b"], "mode": "mix", "align": False}
        status_code, job = await api.post_json("/api/audio/merge", merge)
        assert status_code == 202, job
        status_code, _, headers, raw = await api.request("POST", "/api/audio/merge",
                                                         json_body=merge)
        assert_error_response(status_code, headers, raw, 503, "VOCALINK_MAX_PENDING_JOBS=1",
                              code="too_busy")
        _, jobs = await api.get("/api/jobs")
        assert [j["id"] for j in jobs["items"]] == [job["id"]]  # the refused one never was
        release.set()

        async def finished() -> bool:
            _, body = await api.get(f"/api/jobs/{job['id']}")
            return bool(body["state"] == "succeeded")

        await wait_until(finished)
        status_code, body = await api.post_json("/api/audio/merge", merge)
        assert status_code == 202, body
    finally:
        release.set()
        api.close()
        await server.stop()
        executor.shutdown(wait=True)


# -- merges that would decode too much --------------------------------------------------------

async def test_a_merge_that_would_decode_too_much_is_413_before_any_work(
        make_server: Any) -> None:
    server = await make_server(max_merge_decoded_bytes=300_000)
    api = Api(server.url)
    try:
        for rid in ("rec-a", "rec-b"):  # 1 s at 48 kHz: 192,000 bytes decoded each
            status_code, _ = await api.upload(encode("wav"), recording_id=rid)
            assert status_code == 201
        merge = {"ids": ["rec-a", "rec-b"], "mode": "multichannel"}
        status_code, _, headers, raw = await api.request("POST", "/api/audio/merge",
                                                         json_body=merge)
        body = assert_error_response(status_code, headers, raw, 413,
                                     "VOCALINK_MAX_MERGE_DECODED_BYTES=300000",
                                     code="too_large")
        assert "0.4 MiB" in body["error"] and "nothing was merged" in body["error"]
        _, jobs = await api.get("/api/jobs")
        assert jobs["items"] == []
        # At a lower output rate the same inputs fit (64,000 bytes each at 16 kHz).
        status_code, job = await api.post_json("/api/audio/merge",
                                               {**merge, "sample_rate": 16000})
        assert status_code == 202, job
    finally:
        api.close()


def silent_flac(path: Path, seconds: int, sr: int = 48000) -> None:
    """An hour of silence compresses to about half a MiB; written a minute at a time."""
    block = np.zeros(60 * sr, dtype=np.int16)
    with soundfile.SoundFile(path, "w", samplerate=sr, channels=1, format="FLAC",
                             subtype="PCM_16") as out:
        for _ in range(seconds // 60):
            out.write(block)


async def test_two_hours_of_silent_flac_are_refused_not_decoded(
        tmp_path: Path) -> None:
    """534 KiB files that decode to 1.3 GiB, under a 1 GiB cap: refused before any work.

    (Merging streams now, in a few MiB; the cap bounds its work and temporary copies.)
    """
    server = Server(fast_settings(tmp_path / "data", max_merge_decoded_bytes=1024**3))
    await server.start()
    api = Api(server.url)
    try:
        await _refuse_two_silent_hours(api, tmp_path)
    finally:
        api.close()
        await server.stop()


async def _refuse_two_silent_hours(api: Api, tmp_path: Path) -> None:
    hour = tmp_path / "hour.flac"
    await asyncio.to_thread(silent_flac, hour, 3600)
    data = hour.read_bytes()
    assert len(data) < 1024**2
    for rid in ("rec-a", "rec-b"):
        status_code, _ = await api.upload(data, filename="hour.flac", recording_id=rid)
        assert status_code == 201
    status_code, _, headers, raw = await api.request(
        "POST", "/api/audio/merge", json_body={"ids": ["rec-a", "rec-b"]})
    body = assert_error_response(status_code, headers, raw, 413, "1318.4 MiB",
                                 code="too_large")
    assert "the largest, 'rec-a', is 659.2 MiB" in body["error"]
    _, jobs = await api.get("/api/jobs")
    assert jobs["items"] == []
