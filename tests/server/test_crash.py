"""SIGKILL during an upload: completed recordings survive intact, the partial one is not listed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from pathlib import Path

import pytest

from tests.support.audio import encode
from tests.support.http import Api, multipart_body
from tests.support.process import ServeProcess
from tests.support.rawhttp import with_token
from tests.support.wait import wait_until


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under recordings/ and derived/."""
    out = {}
    for folder in ("recordings", "derived"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[path.relative_to(root).as_posix()] = digest
    return out


@pytest.mark.serial
@pytest.mark.asyncio
async def test_sigkill_mid_upload_loses_nothing_completed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    completed = {f"done-{fmt}": encode(fmt, seconds=1.0, seed=i)
                 for i, fmt in enumerate(("wav", "flac", "m4a"))}
    with ServeProcess(data_dir) as serve:
        api = Api(serve.url)
        try:
            for rid, data in completed.items():
                status, body = await api.upload(data, recording_id=rid, device_id="mic-1")
                assert status == 201, body
        finally:
            api.close()

        # A big upload, cut off by the crash after half of its body reached the server.
        big = encode("wav", seconds=120.0, channels=2)  # ~46 MB
        body, ctype = multipart_body(big, recording_id="interrupted", device_id="mic-1")
        reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
        writer.write(with_token(
            f"POST /api/audio/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        ))
        half = len(body) // 2
        writer.write(body[:half])
        await writer.drain()
        uploads = data_dir / "uploads"
        # The server has started writing the upload.
        await wait_until(lambda: any(p.stat().st_size > 0 for p in uploads.iterdir()), 20)
        before = snapshot(data_dir)
        assert serve.proc is not None
        os.kill(serve.proc.pid, signal.SIGKILL)
        serve.proc.wait(10)
        writer.close()

    partial = sorted(p.name for p in (data_dir / "uploads").iterdir())
    assert len(partial) == 1 and partial[0].endswith(".part")

    with ServeProcess(data_dir) as serve:
        api = Api(serve.url)
        try:
            _, listing = await api.get("/api/audio/list")
            assert {r["id"] for r in listing["items"]} == set(completed)
            for rid, data in completed.items():
                status, _, _, raw = await api.request("GET", f"/api/audio/{rid}")
                assert status == 200
                assert hashlib.sha256(raw).hexdigest() == hashlib.sha256(data).hexdigest()
            assert (await api.get("/api/audio/interrupted/meta"))[0] == 404
            _, info = await api.get("/api/server")
            assert info["storage"]["clean"] is True
            assert info["storage"]["partial_uploads"] == [f"uploads/{partial[0]}"]
            # Start-up changed nothing: same files, same bytes, the partial upload kept.
            assert snapshot(data_dir) == before
            assert (data_dir / "uploads" / partial[0]).exists()
            # The device can simply upload again.
            status, body = await api.upload(big, recording_id="interrupted", device_id="mic-1")
            assert status == 201 and body["recording"]["frames"] == 120 * 48000
        finally:
            api.close()
