"""Dashboard: every panel of one Lab in a displayable widget, wired together."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

from tests.support.wait import wait_until
from tests.widgets.conftest import tone, upload
from vocalink_lab.lab import Lab
from vocalink_lab.widgets import (
    Dashboard,
    DevicesPanel,
    EnhancePanel,
    RecordingsPanel,
    ServerPanel,
    WaveformPanel,
)

pytestmark = pytest.mark.asyncio


async def test_lab_dashboard_is_a_displayable_widget_of_every_panel(lab: Lab) -> None:
    await upload(lab, tone(1.0), "rec-1", device_id="phone-1")
    await upload(lab, tone(1.5, 660), "rec-2", device_id="phone-2")
    board = lab.dashboard()
    try:
        assert isinstance(board, Dashboard) and isinstance(board, widgets.DOMWidget)
        assert [type(p) for p in board.panels] == [ServerPanel, DevicesPanel, RecordingsPanel,
                                                   WaveformPanel, EnhancePanel]
        assert list(board.tabs.children) == list(board.panels)
        assert board.tabs.titles == ("Server", "Devices", "Recordings", "Waveform", "Enhance")
        bundle = board._repr_mimebundle_()
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == board.model_id
        assert sorted(board.recordings.ids) == ["rec-1", "rec-2"]

        # Selecting a recording opens it in Enhance; Waveform draws it once its tab opens.
        board.recordings.select(["rec-2"])
        await board.wait_idle(timeout=10)
        assert board.enhance.recording.value == "rec-2"
        assert board.enhance.duration_s == pytest.approx(1.5, abs=0.01)
        assert not board.waveform.waveform_image.value  # not drawn while hidden
        board.tabs.selected_index = 3
        await board.wait_idle(timeout=20)
        assert bytes(board.waveform.waveform_image.value).startswith(b"\x89PNG")
        board.recordings.select(["rec-1"])  # the Waveform tab is open: drawn at once
        await board.wait_idle(timeout=20)
        assert board.waveform.recording_ids == ["rec-1"]

        board.recordings.tune_button.click()
        assert board.tabs.selected_index == 4
        assert board.enhance.recording.value == "rec-1"

        # Every panel follows the same Lab: a rename shows in the server tab.
        await lab.rename("Dashboard Studio")
        await wait_until(lambda: "Dashboard Studio" in board.server.name_label.value, timeout=5)
    finally:
        board.close()
    assert not lab._listeners  # every panel unsubscribed
