"""Transcripts over REST: a recording's and a take's, stored, exported, refused when impossible.

A real server on 127.0.0.1 with the real engine (faster-whisper, the ``[asr]`` extra's
whisper base) transcribing espeak-ng speech of known text. The take is three devices in
one room, people speaking in turn, each device louder for its own speaker: its
transcript gives each line to that device, once.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import fast_settings
from tests.support.errors import assert_error_shape
from tests.support.http import Api
from tests.support.speech import SENTENCES, conversation, speech_wav, wav_bytes, word_error_rate
from tests.support.takes import finished_job, record_take
from tests.support.wait import wait_until
from vocalink_lab.audio.transcribe.transcript import CSV_COLUMNS
from vocalink_lab.server import Server

VOICES = ("en-us", "en-gb+f3", "en-gb-scotland")
DEVICES = {"dev-a": "Ana's phone", "dev-b": "Ben's laptop", "dev-c": "Cy's Pi"}


async def _upload_speech(api: Api, recording_id: str, sentences: tuple[str, ...]) -> None:
    status, body = await api.upload(speech_wav(sentences), recording_id=recording_id,
                                    device_id="mic-1")
    assert status == 201, body


async def _transcribed(api: Api, path: str, body: object | None = None) -> dict[str, object]:
    status, job = await api.post_json(path, body if body is not None else {})
    assert status == 202, job
    done = await finished_job(api, job["id"])
    assert done["state"] == "succeeded", done
    return done


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_recording_is_transcribed_stored_exported_and_deleted_with_it(
        threaded: tuple[Server, Api]) -> None:
    server, api = threaded
    said = SENTENCES[:2]
    await _upload_speech(api, "rec-talk", said)
    status, body = await api.get("/api/audio/rec-talk/transcript")
    assert status == 404 and body["code"] == "transcript_not_found"

    job = await _transcribed(api, "/api/audio/rec-talk/transcribe", {"language": "en"})
    summary = job["result"]["transcript"]
    assert summary["kind"] == "recording" and summary["subject_id"] == "rec-talk"
    assert summary["language"] == "en" and summary["segments"] >= 1
    assert word_error_rate(" ".join(said), job["result"]["text"]) < 0.25

    status, data = await api.get("/api/audio/rec-talk/transcript")
    assert status == 200 and data["kind"] == "recording"
    words = [w for s in data["segments"] for w in s["words"]]
    assert len(words) >= 10
    assert all(0 <= w["start"] <= w["end"] <= data["duration_s"] + 0.05 for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    stored = server.store.root / "transcripts" / "recording" / "rec-talk.json"
    assert json.loads(stored.read_text())["segments"] == data["segments"]

    vtt = await api.request("GET", "/api/audio/rec-talk/transcript?format=vtt")
    assert vtt[0] == 200 and vtt[2]["Content-Type"].startswith("text/vtt")
    assert "rec-talk-transcript.vtt" in vtt[2]["Content-Disposition"]
    text = vtt[3].decode()
    assert text.startswith("WEBVTT\n") and text.count(" --> ") == len(data["segments"])
    srt = (await api.request("GET", "/api/audio/rec-talk/transcript?format=srt"))[3].decode()
    assert srt.startswith("1\n00:00:") and "," in srt.splitlines()[1]
    table = (await api.request("GET", "/api/audio/rec-talk/transcript?format=csv"))[3].decode()
    rows = list(csv.DictReader(io.StringIO(table)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(data["segments"])

    # Transcribed again: the one transcript is replaced, not duplicated.
    await _transcribed(api, "/api/audio/rec-talk/transcribe", {"enhance": True})
    status, again = await api.get("/api/audio/rec-talk/transcript")
    assert again["enhanced"] is True
    assert sorted(p.name for p in stored.parent.iterdir()) == ["rec-talk.json"]

    status = (await api.request("DELETE", "/api/audio/rec-talk"))[0]
    assert status == 200 and not stored.exists()
    status, body = await api.get("/api/audio/rec-talk/transcript")
    assert status == 404 and body["code"] == "recording_not_found"
    assert await server.catalog.transcript_row("recording", "rec-talk") is None


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_take_of_three_devices_reads_as_one_transcript_by_device(
        threaded: tuple[Server, Api]) -> None:
    server, api = threaded
    turns = [(0, SENTENCES[0]), (1, SENTENCES[1]), (2, SENTENCES[2]), (0, SENTENCES[3])]
    tracks, placed = conversation(turns, VOICES)
    # No start instants: the fake devices' clocks are not the room's, so the alignment works
    # from the audio alone (where it cannot lock, the tracks stay where the files start).
    await record_take(server, api, "take-talk", DEVICES,
                      files=[wav_bytes(t) for t in tracks], started_at=None)
    status, body = await api.get("/api/takes/take-talk/transcript")
    assert status == 404 and body["code"] == "transcript_not_found"

    job = await _transcribed(api, "/api/takes/take-talk/transcribe", {"language": "en"})
    assert job["params"]["recordings"] == [f"rec-take-talk-{i}" for i in range(3)]
    status, data = await api.get("/api/takes/take-talk/transcript")
    assert data["kind"] == "take" and data["subject_id"] == "take-talk"
    names = list(DEVICES.values())
    for who, sentence, start, end in placed:
        lines = [s for s in data["segments"] if s["start"] < end and s["end"] > start]
        assert {s["device_name"] for s in lines} == {names[who]}, (sentence, lines)
        heard = " ".join(s["text"] for s in lines)
        assert word_error_rate(sentence, heard) < 0.3, (sentence, heard)
        assert abs(lines[0]["start"] - start) < 0.6, (sentence, lines[0], start)
    segments = data["segments"]
    for a, b in zip(segments, segments[1:], strict=False):
        assert b["start"] >= a["end"] - 0.05, ("overlapping lines", a, b)

    # The take's row carries the transcript's summary; the take's export names devices.
    status, take = await api.get("/api/takes/take-talk")
    assert take["transcript"]["segments"] == len(segments)
    vtt = (await api.request("GET", "/api/takes/take-talk/transcript?format=vtt"))[3].decode()
    assert f"<v {names[1]}>" in vtt.replace("&#x27;", "'")

    # Deleting the take deletes its transcript.
    stored = server.store.root / "transcripts" / "take" / "take-talk.json"
    assert stored.exists()
    status = (await api.request("DELETE", "/api/takes/take-talk"))[0]
    assert status == 200 and not stored.exists()


@pytest.mark.asyncio
async def test_what_cannot_be_transcribed_is_refused_before_any_job(
        threaded: tuple[Server, Api]) -> None:
    server, api = threaded
    await _upload_speech(api, "rec-short", SENTENCES[:1])
    cases = [
        ("/api/audio/rec-short/transcribe", {"language": "xx"}, 422, "invalid_parameter"),
        ("/api/audio/rec-short/transcribe", {"languages": "en"}, 422, "invalid_parameter"),
        ("/api/audio/rec-short/transcribe", {"enhance": "yes"}, 422, "invalid_parameter"),
        ("/api/audio/nope/transcribe", {}, 404, "recording_not_found"),
        ("/api/takes/nope/transcribe", {}, 404, "take_not_found"),
    ]
    for path, body, status_wanted, code in cases:
        status, answer = await api.post_json(path, body)
        assert status == status_wanted, (path, body, answer)
        assert_error_shape(answer, status_wanted)
        assert answer["code"] == code, (path, body, answer)
    status, answer = await api.get("/api/audio/rec-short/transcript?format=pdf")
    assert status == 422 and "vtt" in answer["error"]
    status, jobs = await api.get("/api/jobs")
    assert jobs["items"] == []


@pytest.mark.asyncio
@pytest.mark.parametrize("missing", ["model", "extra"])
async def test_without_a_model_or_the_extra_transcribing_is_a_422_that_says_how(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    empty = tmp_path / "no-model"
    empty.mkdir()
    if missing == "extra":  # as if `vocalink-lab[asr]` were not installed
        monkeypatch.setitem(sys.modules, "faster_whisper", None)
    server = Server(fast_settings(tmp_path / "data",
                                  asr_model=empty if missing == "model" else None))
    await server.start()
    api = Api(server.url)
    try:
        status, body = await api.upload(speech_wav(SENTENCES[:1]), recording_id="rec-1")
        assert status == 201, body
        status, answer = await api.post_json("/api/audio/rec-1/transcribe", {})
        assert status == 422, answer
        assert_error_shape(answer, 422)
        assert answer["code"] == "transcription_unavailable"
        assert "\n" not in answer["error"]
        if missing == "model":
            assert "VOCALINK_ASR_MODEL" in answer["error"] and "model.bin" in answer["error"]
        else:
            assert "pip install 'vocalink-lab[asr]'" in answer["error"]
        status, answer = await api.post_json("/api/takes/take-1/transcribe", {})
        assert status == 422 and answer["code"] == "transcription_unavailable"
        status, jobs = await api.get("/api/jobs")
        assert jobs["items"] == []
    finally:
        api.close()
        await server.stop()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_transcription_job_runs_in_the_process_pool_and_can_be_cancelled(
        server: Server) -> None:
    """The product's path: the engine in a spawned worker; a job cancelled mid-way leaves
    nothing stored and no temporary file."""
    api = Api(server.url)
    try:
        await _upload_speech(api, "rec-pool", SENTENCES[:3])
        job = await _transcribed(api, "/api/audio/rec-pool/transcribe", {})
        assert job["result"]["transcript"]["segments"] >= 1
        await _upload_speech(api, "rec-cut", SENTENCES * 3)
        status, started = await api.post_json("/api/audio/rec-cut/transcribe",
                                              {"enhance": True})
        assert status == 202

        async def running() -> bool:
            _, now = await api.get(f"/api/jobs/{started['id']}")
            return now["state"] == "running" and now["progress"] > 0

        await wait_until(running, timeout=60)
        await api.request("DELETE", f"/api/jobs/{started['id']}")
        done = await finished_job(api, started["id"])
        assert done["state"] == "cancelled"
        assert await server.catalog.transcript_row("recording", "rec-cut") is None
        assert list(server.store.uploads_dir.iterdir()) == []
    finally:
        api.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_take_of_one_device_is_transcribed_too(threaded: tuple[Server, Api]) -> None:
    server, api = threaded
    await record_take(server, api, "take-solo", {"dev-a": "Ana's phone"},
                      files=[speech_wav(SENTENCES[4:5])], started_at="take")
    job = await _transcribed(api, "/api/takes/take-solo/transcribe", {})
    assert job["result"]["transcript"]["segments"] >= 1
    status, data = await api.get("/api/takes/take-solo/transcript")
    assert {s["device_name"] for s in data["segments"]} == {"Ana's phone"}
    assert word_error_rate(SENTENCES[4], data["text"]) < 0.3
    assert data["tracks"] == [{"recording_id": "rec-take-solo-0", "device_id": "dev-a",
                               "device_name": "Ana's phone"}]
