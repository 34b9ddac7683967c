"""The panels' pure formatting: HTML snippets, PNG/WAV bytes, one-line errors."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from matplotlib.figure import Figure

from vocalink_lab.errors import InvalidParameter
from vocalink_lab.widgets.recordings import recordings_frame
from vocalink_lab.widgets.render import (
    error_message,
    figure_png,
    qr_png,
    render_battery,
    render_clock,
    render_discovery,
    render_level,
    render_outcome,
    render_state,
    wav_bytes,
)
from vocalink_lab.widgets.server import device_url


def test_level_meter_bar_and_colours() -> None:
    assert "—" in render_level(None, None)
    quiet = render_level(-60, -50)
    assert "width:0.0%" in quiet and "-60 dBFS" in quiet
    loud = render_level(-6, -0.5)
    assert "width:90.0%" in loud and "#c62828" in loud  # clipping-red near full scale
    assert "#2e7d32" in render_level(-30, -20)


@pytest.mark.parametrize(("battery", "text"), [(None, "—"), (0.5, "50%"), (1, "100%"),
                                                (0.1, "10%")])
def test_battery(battery: float | None, text: str) -> None:
    assert text in render_battery(battery)


def test_clock_state_outcome_discovery() -> None:
    assert "not synced" in render_clock(None)
    assert "+1.50 ms" in render_clock({"offset_s": 0.0015, "rtt_s": 0.0002})
    assert "rtt 0.20 ms" in render_clock({"offset_s": 0.0015, "rtt_s": 0.0002})
    assert "OFFLINE" in render_state("IDLE", connected=False)
    assert "RECORDING" in render_state("RECORDING")
    failed = render_outcome({"action": "START", "status": "FAILED", "error": "mic <busy>"})
    assert "START" in failed and "FAILED" in failed and "mic &lt;busy&gt;" in failed
    assert "disabled" in render_discovery({"state": "disabled", "error": "turned off"})
    assert "Studio" in render_discovery({"state": "advertising", "instance": "Studio._x"})


def test_error_message_is_one_line() -> None:
    assert error_message(InvalidParameter("bad name\n  really")) == "bad name really"
    assert error_message(ValueError("nope")) == "ValueError: nope"
    assert error_message(RuntimeError()) == "RuntimeError"


def test_wav_bytes_round_trip() -> None:
    x = np.stack([np.linspace(-1.5, 1.5, 100), np.zeros(100)]).astype(np.float32)
    data = wav_bytes(x, 8000)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 8000, 100)
        frames = np.frombuffer(w.readframes(100), "<i2").reshape(100, 2)
    assert frames[0, 0] == -32767 and frames[-1, 0] == 32767  # clipped, not wrapped
    assert wav_bytes(np.zeros(10), 8000)[:4] == b"RIFF"


def test_png_encoders() -> None:
    figure = Figure(figsize=(2, 1))
    figure.subplots().plot([0, 1])
    assert figure_png(figure).startswith(b"\x89PNG")
    assert qr_png("http://192.0.2.20:8765").startswith(b"\x89PNG")


def test_device_url_prefers_a_lan_address() -> None:
    assert device_url("http://127.0.0.1:8765", ["192.0.2.20", "127.0.0.1"]) == \
        "http://192.0.2.20:8765"
    assert device_url("http://127.0.0.1:8765", ["127.0.0.1"]) == "http://127.0.0.1:8765"
    assert device_url("http://10.0.0.2:80", ["192.0.2.20"]) == "http://10.0.0.2:80"


def test_frame_of_rows_is_plain_columns() -> None:
    rows = [{"id": "rec-1", "kind": "merged", "device_name": None, "device_id": "d",
             "take_id": None, "duration_s": 1.23456, "sample_rate": 16000, "channels": 2,
             "format": "flac", "bytes": 2048, "created_at": 0.0, "parents": ["a", "b"]}]
    frame = recordings_frame(rows)
    assert frame.loc["rec-1", "device"] == "d"
    assert frame.loc["rec-1", "created_utc"] == "1970-01-01 00:00:00"
    assert frame.loc["rec-1", "parents"] == "a, b" and frame.loc["rec-1", "size_kb"] == 2.0
    assert len(recordings_frame([])) == 0
