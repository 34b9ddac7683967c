"""WaveformPanel: PNG images of the selected recordings, redrawn for a zoom window."""

from __future__ import annotations

import numpy as np
import pytest

from tests.widgets.conftest import tone, upload
from vocalink_lab.lab import Lab
from vocalink_lab.widgets import WaveformPanel

pytestmark = pytest.mark.asyncio


def png(value: object) -> bytes:
    data = bytes(value)  # type: ignore[call-overload]
    assert data.startswith(b"\x89PNG"), data[:8]
    return data


async def test_draws_a_selected_recording_and_zooms(lab: Lab) -> None:
    await upload(lab, tone(2.0, 440), "rec-a", device_id="phone-a")
    await upload(lab, np.stack([tone(1.0, 300), tone(1.0, 600)]), "rec-b", device_id="phone-b")
    panel = WaveformPanel(lab)
    try:
        assert not panel.waveform_image.value
        panel.show(["rec-a"])
        await panel.wait_idle(timeout=20)
        assert panel.message_kind != "error", panel.message
        whole = png(panel.waveform_image.value)
        png(panel.spectrogram_image.value)
        assert panel.duration_s == pytest.approx(2.0, abs=0.01)
        assert panel.window.value == pytest.approx((0.0, 2.0), abs=0.01)
        assert "rec-a" in panel.title.value

        panel.window.value = (0.5, 0.8)  # the slider, as a user moves it
        await panel.wait_idle(timeout=20)
        zoomed = png(panel.waveform_image.value)
        assert zoomed != whole
        assert "0.50 s to 0.80 s" in panel.title.value

        panel.spectrogram_toggle.value = False
        await panel.wait_idle(timeout=20)
        assert not panel.spectrogram_image.value

        panel.show(["rec-a", "rec-b"])  # two recordings, one of them stereo
        await panel.wait_idle(timeout=20)
        png(panel.waveform_image.value)
        assert panel.recording_ids == ["rec-a", "rec-b"]
        assert panel.window.value == pytest.approx((0.0, 2.0), abs=0.01)

        panel.show(["rec-missing"])
        await panel.wait_idle(timeout=20)
        assert panel.message_kind == "error" and "rec-missing" in panel.message
        assert "Traceback" not in panel.message
    finally:
        panel.close()


async def test_a_newer_request_supersedes_one_still_drawing(lab: Lab) -> None:
    await upload(lab, tone(1.0), "rec-c")
    panel = WaveformPanel(lab)
    try:
        first = panel.show(["rec-c"])
        panel.zoom(0.1, 0.4)
        await panel.wait_idle(timeout=20)
        assert first.cancelled()
        assert "0.10 s to 0.40 s" in panel.title.value
        png(panel.waveform_image.value)
    finally:
        panel.close()


async def test_empty_state_has_a_message_and_no_image_on_the_page(lab: Lab) -> None:
    await upload(lab, tone(1.0), "rec-e")
    panel = WaveformPanel(lab)
    try:
        assert "Select a recording to see its waveform" in panel.title.value
        assert panel.drawings.children == ()  # no <img> without a picture
        assert panel.controls.layout.display == "none"

        panel.show(["rec-e"])
        await panel.wait_idle(timeout=20)
        assert list(panel.drawings.children) == [panel.waveform_image, panel.spectrogram_image]
        assert all(bytes(i.value).startswith(b"\x89PNG") for i in panel.drawings.children)
        assert panel.controls.layout.display is None

        panel.spectrogram_toggle.value = False  # one picture fewer: its image leaves
        await panel.wait_idle(timeout=20)
        assert list(panel.drawings.children) == [panel.waveform_image]

        panel.show([])  # back to nothing selected
        await panel.wait_idle(timeout=20)
        assert "Select a recording to see its waveform" in panel.title.value
        assert panel.drawings.children == ()

        panel.show(["rec-missing"])  # a failed drawing: the empty state, a one-line error
        await panel.wait_idle(timeout=20)
        assert panel.drawings.children == ()
        assert panel.message_kind == "error" and "\n" not in panel.message
        assert "rec-missing" in panel.status.value and "Traceback" not in panel.status.value
    finally:
        panel.close()
