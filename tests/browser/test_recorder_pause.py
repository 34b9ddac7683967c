"""The browser recorder obeys PAUSE and RESUME as the Python agent does.

What is real: the server (a `Server` on 127.0.0.1, port 0, in a loop thread) and its REST
API (``POST /api/commands``, as an operator sends them), Debian's Chromium driven by
Playwright, the page's own JavaScript, its IndexedDB and tus upload, the stored file, and
the frames the page sends on its control connection (read with Playwright's WebSocket
events). What is faked: the microphone (Chromium's fake capture device, a 1 kHz tone).

The agent's semantics (``agent/recorder.py``): PAUSE and RESUME act on arrival (neither
the server nor the agent schedules them); what is heard while paused is not recorded;
the device reports PAUSED in STATUS; the ACK carries the recording id and no
``started_at``; a second PAUSE is refused "already paused", a RESUME unpaused "not
paused", either without a take "not recording". So the file is the take's frames from
START's instant to STOP's, less those from PAUSE's arrival to RESUME's. A scheduled STOP
ends the take at its instant, paused or not (the agent's test:
``tests/agent/test_agent.py::test_a_scheduled_stop_ends_a_paused_take_at_its_instant``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.recorder_support import (
    TONE_HZ,
    LiveServer,
    Watched,
    catalog_row,
    chromium,
    dominant_hz,
    download,
    live,
    open_paired,
    wait_for,
)

__all__ = ["chromium", "live"]  # fixtures, used by name

#: A file's length is what the instants say within this.
LENGTH_TOLERANCE_S = 0.020


def command(live: LiveServer, device_id: str, action: str) -> tuple[dict[str, Any],
                                                                    dict[str, Any]]:
    """Send ``action`` to the device through the REST API; the command and its outcome."""
    sent = live.json("POST", "/api/commands", {"action": action, "targets": [device_id]})
    return sent, sent["outcomes"][device_id]


def recorder(watched: Watched, expression: str) -> Any:
    """Evaluate ``expression`` on ``window.vocalinkRecorder`` (as ``r``) in the page."""
    return watched.evaluate(f"(r => {expression})(window.vocalinkRecorder)")


def start_then_pause(live: LiveServer, watched: Watched, device_id: str
                     ) -> tuple[dict[str, Any], str, dict[str, Any], dict[str, Any]]:
    """START, a second of recording, PAUSE (both succeed, the page says paused).

    Returns the START command, its recording id, the PAUSE command and its outcome.
    """
    started, outcome = command(live, device_id, "START")
    assert outcome["status"] == "SUCCESS", started
    recording_id = outcome["recording_id"]
    watched.wait("window.vocalinkRecorder.take && "
                 "window.vocalinkRecorder.take.elapsed >= 1.0")
    paused, outcome = command(live, device_id, "PAUSE")
    assert outcome["status"] == "SUCCESS", paused
    watched.wait("document.body.dataset.state === 'paused'")
    return started, recording_id, paused, outcome


def statuses(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The STATUS frames among those the page sent."""
    return [frame for frame in sent if frame["type"] == "STATUS"]


def check_file(live: LiveServer, watched: Watched, recording_id: str,
               expected_s: float) -> None:
    """The stored file is the page's (same SHA-256), holds the tone, and lasts as expected."""
    row = catalog_row(live, recording_id, page=watched.page)
    audio, rate, sha256 = download(live, recording_id)
    sent = watched.wait(f"window.vocalinkRecorder.sent[{json.dumps(recording_id)}]")
    assert sent["sha256"] == row["sha256"] == sha256
    assert len(audio) == row["frames"] == sent["frames"]
    assert abs(dominant_hz(audio, rate) - TONE_HZ) <= 5
    print(f"{recording_id}: {len(audio) / rate:.4f} s, expected {expected_s:.4f} s")
    assert abs(len(audio) / rate - expected_s) < LENGTH_TOLERANCE_S, (len(audio) / rate,
                                                                      expected_s)


@pytest.mark.slow
@pytest.mark.serial
def test_pause_leaves_out_what_is_heard_until_resume_and_the_page_reports_paused(
        live: LiveServer, chromium: Any) -> None:
    """START, PAUSE, RESUME, STOP: the file is START to STOP less PAUSE to RESUME."""
    sent: list[dict[str, Any]] = []
    watched, device_id = open_paired(chromium, live, sent=sent)
    page = watched.page
    try:
        started, recording_id, paused, outcome = start_then_pause(live, watched, device_id)
        assert outcome["recording_id"] == recording_id and outcome["started_at"] is None
        assert page.text_content("#state") == "PAUSED"
        # The page itself reports PAUSED (the server also infers it from the ACK, so its
        # frames are read), for this recording, and the server shows it.
        report = wait_for(lambda: [s for s in statuses(sent) if s["state"] == "PAUSED"],
                          what="a STATUS saying PAUSED", page=page)[0]
        assert report["recording_id"] == recording_id
        wait_for(lambda: (live.client(device_id) or {}).get("state") == "PAUSED",
                 what="the server showing PAUSED", page=page)
        # Nothing is recorded while paused: once the capture has passed the pause's frame
        # (what was heard before PAUSE came still arrives a few ms after it), a second of
        # capture passes and the take stays as it was.
        watched.wait("window.vocalinkRecorder.capture.endFrame > "
                     "window.vocalinkRecorder.take.pauses[0].from")
        captured, end, rate = recorder(watched, "[r.take.captured, r.capture.endFrame, "
                                                "r.capture.sampleRate]")
        watched.wait(f"window.vocalinkRecorder.capture.endFrame >= {end + rate}")
        assert recorder(watched, "r.take.captured") == captured
        assert page.text_content("#state") == "PAUSED"
        again, outcome = command(live, device_id, "PAUSE")
        assert (outcome["status"], outcome["error"]) == ("FAILED", "already paused"), again

        resumed, outcome = command(live, device_id, "RESUME")
        assert outcome["status"] == "SUCCESS", resumed
        assert outcome["recording_id"] == recording_id and outcome["started_at"] is None
        watched.wait("document.body.dataset.state === 'recording'")
        watched.wait(f"window.vocalinkRecorder.take.captured >= {captured + rate}")
        wrong, outcome = command(live, device_id, "RESUME")
        assert (outcome["status"], outcome["error"]) == ("FAILED", "not paused"), wrong
        stopped, outcome = command(live, device_id, "STOP")
        assert outcome["status"] == "SUCCESS" and outcome["recording_id"] == recording_id

        # Scheduled START and STOP, PAUSE and RESUME on arrival (when issued, give or take
        # the loopback's milliseconds).
        assert started["start_at"] is not None and stopped["start_at"] is not None
        assert paused["start_at"] is None and resumed["start_at"] is None
        expected = (stopped["start_at"] - started["start_at"]
                    - (resumed["issued_at"] - paused["issued_at"]))
        check_file(live, watched, recording_id, expected)

        # What it reported: RECORDING, then PAUSED with its length standing still, then
        # RECORDING again, for the one recording.
        wait_for(lambda: statuses(sent)[-1]["state"] == "IDLE", what="an IDLE STATUS",
                 page=page)
        states = [s["state"] for s in statuses(sent)
                  if s.get("recording_id") == recording_id]
        runs = [state for i, state in enumerate(states) if i == 0 or states[i - 1] != state]
        assert runs == ["RECORDING", "PAUSED", "RECORDING"], states
        # Over a pause of more than a second, its length grew by no more than what was
        # heard before PAUSE came: the audio thread hands it over just after, within a
        # few ms, or a hundred on a loaded machine (65 ms measured with both cores busy).
        lengths = [s["elapsed_s"] for s in statuses(sent) if s["state"] == "PAUSED"]
        assert len(lengths) >= 2 and max(lengths) - min(lengths) < 0.15, lengths
        late, outcome = command(live, device_id, "PAUSE")
        assert (outcome["status"], outcome["error"]) == ("FAILED", "not recording"), late
        watched.check()
    finally:
        watched.close()


@pytest.mark.slow
@pytest.mark.serial
def test_a_stop_while_paused_ends_the_take_at_the_pause(
        live: LiveServer, chromium: Any) -> None:
    """START, PAUSE, STOP: the file ends where the pause began, and STOP is answered at once."""
    sent: list[dict[str, Any]] = []
    watched, device_id = open_paired(chromium, live, sent=sent)
    try:
        started, recording_id, paused, _ = start_then_pause(live, watched, device_id)
        end, rate = recorder(watched, "[r.capture.endFrame, r.capture.sampleRate]")
        watched.wait(f"window.vocalinkRecorder.capture.endFrame >= {end + rate // 2}")
        stopped, outcome = command(live, device_id, "STOP")
        assert outcome["status"] == "SUCCESS" and outcome["recording_id"] == recording_id, \
            stopped
        check_file(live, watched, recording_id, paused["issued_at"] - started["start_at"])
        watched.wait("document.body.dataset.state === 'ready'")
        assert "PAUSED" in {s["state"] for s in statuses(sent)}
        watched.check()
    finally:
        watched.close()
