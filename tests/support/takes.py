"""Takes for the server's tests: recorded by fake devices, then files uploaded; jobs awaited."""

from __future__ import annotations

from typing import Any

from tests.support.audio import encode
from tests.support.device import FakeDevice
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.server import Server

__all__ = ["finished_job", "record_take"]


async def record_take(server: Server, api: Api, take_id: str, devices: dict[str, str], *,
                      seconds: float = 1.0, sr: int = 16000, channels: int = 1,
                      files: list[bytes] | None = None,
                      started_at: str | None = "1700000000") -> list[dict[str, Any]]:
    """A take recorded by fake devices (START, STOP), then one WAV uploaded per device.

    The WAVs are tones, or ``files`` (one per device, in order) when given. Each upload
    says its recording started at ``started_at`` (server time), or at the take's start
    when it is ``"take"``.
    """
    fakes = [FakeDevice(server.ws_url, device_id, name) for device_id, name in devices.items()]
    for fake in fakes:
        await fake.connect()
    try:
        status, _ = await api.post_json("/api/commands", {"action": "START", "take_id": take_id,
                                                          "lead_ms": 0})
        assert status == 200
        status, _ = await api.post_json("/api/commands", {"action": "STOP", "lead_ms": 0})
        assert status == 200
        rows = []
        if started_at == "take":  # the take's row is written just after its START
            seen: dict[str, Any] = {}

            async def catalogued() -> bool:
                status, take = await api.get(f"/api/takes/{take_id}")
                seen.update(take if status == 200 else {})
                return "started_at" in seen

            await wait_until(catalogued, timeout=5)
            started_at = repr(seen["started_at"])
        for i, device_id in enumerate(devices):
            data = (files[i] if files is not None else
                    encode("wav", seconds, sr=sr, channels=channels, freq=300 + 100 * i, seed=i))
            status, body = await api.upload(data, recording_id=f"rec-{take_id}-{i}",
                                            device_id=device_id, take_id=take_id,
                                            started_at=started_at)
            assert status == 201, body
            rows.append(body["recording"])
    finally:
        for fake in fakes:
            await fake.close()

    async def stopped() -> bool:
        _, take = await api.get(f"/api/takes/{take_id}")
        return take is not None and take.get("stopped_at") is not None

    await wait_until(stopped, timeout=5)
    return rows


async def finished_job(api: Api, job_id: str) -> dict[str, Any]:
    """The job once it ended (succeeded, failed or cancelled), as the server lists it."""
    seen: dict[str, Any] = {}

    async def done() -> bool:
        _, job = await api.get(f"/api/jobs/{job_id}")
        seen.update(job)
        return job["state"] in ("succeeded", "failed", "cancelled")

    await wait_until(done, timeout=60)
    return seen
