"""Transcribe from the panels: a take's transcript in the Takes tab, a recording's links.

A real Lab and server (jobs in a thread), the real engine, espeak-ng speech. The Takes
tab's Transcribe starts a job; when it ends, the take's transcript shows under its
recordings, each line with the device that heard it loudest, and its WebVTT, SRT and CSV
links download (with the token in the URL, as a browser would, no header).
"""

from __future__ import annotations

import re

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.http import Api
from tests.support.speech import SENTENCES, conversation, speech, wav_bytes, word_error_rate
from tests.support.takes import record_take
from tests.support.wait import wait_until
from tests.widgets.conftest import upload
from vocalink_lab.lab import Lab
from vocalink_lab.widgets.jobs import JobsPanel
from vocalink_lab.widgets.recordings import RecordingsPanel
from vocalink_lab.widgets.takes import TakesPanel
from vocalink_lab.widgets.transcripts import MAX_LINES_SHOWN, transcript_html

DEVICES = {"dev-a": "Ana's phone", "dev-b": "Ben's laptop"}
LINK = re.compile(r"href='([^']+format=(vtt|srt|csv)[^']*)'")


async def _fetch_links(markup: str) -> dict[str, tuple[str, str]]:
    """Every transcript link of ``markup``, fetched as a browser would (no header)."""
    client = AsyncHTTPClient(force_instance=True)
    found = {}
    try:
        for url, fmt in LINK.findall(markup):
            response = await client.fetch(url.replace("&amp;", "&"), raise_error=False)
            assert response.code == 200, (url, response.code)
            found[fmt] = (response.headers["Content-Type"], response.body.decode())
    finally:
        client.close()
    return found


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_takes_tab_transcribes_a_take_and_shows_it_by_device(lab: Lab) -> None:
    tracks, placed = conversation([(0, SENTENCES[0]), (1, SENTENCES[1])],
                                  ("en-us", "en-gb+f3"))
    api = Api(lab.url)
    takes, jobs = TakesPanel(lab), JobsPanel(lab)
    try:
        assert lab.server is not None
        await record_take(lab.server, api, "take-tx", DEVICES,
                          files=[wav_bytes(t) for t in tracks], started_at=None)
        await lab.wait_for_recordings("take-tx", 2, timeout_s=10)
        await wait_until(lambda: any(v == "take-tx" for _, v in takes.takes.options),
                         timeout=10)
        takes.select("take-tx")
        assert takes.transcript.value == "" and takes.transcript_links.value == ""

        takes.transcribe_button.click()
        await takes.wait_idle(timeout=10)
        await wait_until(lambda: any("Transcribe take take-tx" in r.label.value
                                     for r in jobs.rows.values()), timeout=10)
        row = next(r for r in jobs.rows.values() if "Transcribe take" in r.label.value)
        await wait_until(lambda: row.finished, timeout=120)
        assert re.search(r"done: \d+ lines?", row.state.value), row.state.value

        await wait_until(lambda: "Ben&#x27;s laptop" in takes.transcript.value, timeout=20)
        shown = takes.transcript.value
        assert "Ana&#x27;s phone" in shown and "language en" in shown
        for _, sentence, _, _ in placed:
            words = sentence.lower().rstrip(".").split()
            assert sum(w in shown.lower() for w in words) >= len(words) - 2, (sentence, shown)

        files = await _fetch_links(takes.transcript_links.value)
        assert set(files) == {"vtt", "srt", "csv"}
        assert files["vtt"][0].startswith("text/vtt") and files["vtt"][1].startswith("WEBVTT")
        assert "<v Ben's laptop>" in files["vtt"][1]
        assert "[Ana's phone]" in files["srt"][1]
        assert files["csv"][1].splitlines()[0].startswith("start,end,device,")
    finally:
        takes.close()
        jobs.close()
        api.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_recordings_tab_transcribes_the_selected_and_links_them(lab: Lab) -> None:
    await upload(lab, speech(SENTENCES[2:4]), "rec-say", device_id="dev-a")
    panel = RecordingsPanel(lab)
    try:
        panel.transcribe()
        assert "Select" in panel.status.value  # nothing selected: it says what to do
        panel.select(["rec-say"])
        panel.transcribe_button.click()
        await wait_until(lambda: "Transcribed: rec-say" in panel.status.value, timeout=120)
        files = await _fetch_links(panel.transcripts.value)
        assert set(files) == {"vtt", "srt", "csv"}
        text = " ".join(line for line in files["srt"][1].splitlines()
                        if line and not line[0].isdigit())
        assert word_error_rate(" ".join(SENTENCES[2:4]), text) < 0.25
    finally:
        panel.close()


def test_a_long_transcript_is_cut_in_the_panel_and_escaped() -> None:
    segments = [{"start": i * 2.0, "end": i * 2.0 + 1.5, "text": f"line {i} <b>",
                 "confidence": 0.9 if i % 2 else 0.3, "device_name": "A & B"}
                for i in range(MAX_LINES_SHOWN + 7)]
    markup = transcript_html({"segments": segments, "language": "en"})
    assert markup.count("<tr") == MAX_LINES_SHOWN + 2  # the head and the "more" row
    assert "and 7 more lines" in markup and "<b>" not in markup
    assert "line 0 &lt;b&gt;" in markup and "A &amp; B" in markup
    assert "color:#888" in markup  # unsure lines are greyed
    assert "no speech" in transcript_html({"segments": []})
