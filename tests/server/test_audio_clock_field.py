"""A recording keeps its device's audio clock: the fit of its sound card's clock over the take."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import fast_settings, running
from tests.server.test_hostile_floats import WAV
from tests.support.errors import assert_error_response
from tests.support.http import Api, multipart_body
from tests.support.wait import wait_until
from vocalink_lab.agent import simulate_devices
from vocalink_lab.server import Server
from vocalink_lab.server.ingest import parse_audio_clock

FIT = {"source": "adc", "rate_hz": 48003.84, "ppm": 80.0, "residual_us": 0.4, "points": 250}


@pytest.mark.parametrize(("text", "says"), [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({**FIT, "source": "guess"}), "source must be one of adc, callback"),
    (json.dumps({**FIT, "rate_hz": 0}), "rate_hz must be positive"),
    (json.dumps({**FIT, "residual_us": -1}), "residual_us must be >= 0"),
    (json.dumps({**FIT, "ppm": "80"}), "ppm must be a finite number"),
    ('{"source": "adc", "rate_hz": 1e999, "ppm": 0, "residual_us": 0, "points": 1}',
     "rate_hz must be a finite number"),
    (json.dumps({**FIT, "note": "x" * 600}), "longer than 512"),
])
def test_a_bad_audio_clock_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_audio_clock(text)


@pytest.mark.asyncio
async def test_an_upload_keeps_its_audio_clock_and_refuses_a_bad_one(server: Server,
                                                                      api: Api) -> None:
    status, stored = await api.upload(WAV, recording_id="rec-a", audio_clock=json.dumps(
        {**FIT, "newer_agent_says": 1}))
    assert status == 201, stored
    assert stored["recording"]["params"]["audio_clock"] == FIT
    body, ctype = multipart_body(WAV, filename="take.wav", recording_id="rec-b",
                                 audio_clock='{"source": "adc"}')
    status, _, headers, raw = await api.request("POST", "/api/audio/upload", body=body,
                                                headers={"Content-Type": ctype})
    assert_error_response(status, headers, raw, 422, "audio_clock: rate_hz must be a finite "
                          "number", code="invalid_parameter")
    assert not list((server.data_dir / "recordings").rglob("rec-b*"))


@pytest.mark.asyncio
async def test_a_simulated_card_drifting_from_its_cpu_clock_is_measured(tmp_path: Path) -> None:
    async with running(fast_settings(tmp_path / "data")) as server:
        sim = await simulate_devices(1, server_url=server.url, state_dir=tmp_path / "dev",
                                     sources=["click"], drifts_ppm=[-150.0],
                                     audio_drifts_ppm=[80.0])
        api = Api(server.url)
        try:
            await sim.wait_connected()
            status, started = await api.post_json("/api/commands", {"action": "START"})
            assert status == 200 and started["ok"], started
            [outcome] = started["outcomes"].values()
            agent = sim.agents[0]
            await wait_until(lambda: agent.clock.now() >= outcome["started_at"] + 1.5,
                             timeout=10)
            await api.post_json("/api/commands", {"action": "STOP", "lead_ms": 0})

            async def stored() -> bool:
                _, page = await api.get("/api/audio/list")
                return page["total"] == 1

            await wait_until(stored, timeout=20)
            _, page = await api.get("/api/audio/list")
            [recording] = page["items"]
            audio_clock = recording["params"]["audio_clock"]
            # 80 ppm against the device's own clock, whatever that clock's drift.
            assert audio_clock["ppm"] == pytest.approx(80.0, abs=5.0), audio_clock
            assert audio_clock["source"] in ("adc", "callback")
            # Its fit residual widens the start's uncertainty.
            clock = recording["params"]["clock"]
            assert clock["start_uncertainty_s"] >= audio_clock["residual_us"] * 1e-6
        finally:
            await sim.stop()
            api.close()
