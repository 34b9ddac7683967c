"""Dashboard: every panel of one Lab in a displayable widget, wired together."""

from __future__ import annotations

import asyncio

import ipywidgets as widgets
import pytest

from tests.support.wait import wait_until
from tests.widgets.conftest import tone, upload
from vocalink_lab.lab import Lab
from vocalink_lab.widgets import (
    Dashboard,
    DevicesPanel,
    EnhancePanel,
    JobsPanel,
    RecordingsPanel,
    RecordPanel,
    ServerPanel,
    TakesPanel,
    WaveformPanel,
)
from vocalink_lab.widgets.dashboard import TITLES

pytestmark = pytest.mark.asyncio


async def test_lab_dashboard_is_a_displayable_widget_of_every_panel(lab: Lab) -> None:
    await upload(lab, tone(1.0), "rec-1", device_id="phone-1")
    await upload(lab, tone(1.5, 660), "rec-2", device_id="phone-2")
    board = lab.dashboard()
    try:
        assert isinstance(board, Dashboard) and isinstance(board, widgets.DOMWidget)
        assert [type(p) for p in board.panels] == [ServerPanel, DevicesPanel, TakesPanel,
                                                   RecordingsPanel, WaveformPanel, EnhancePanel]
        assert list(board.tabs.children) == list(board.panels)
        assert board.tabs.titles == ("Server", "Devices", "Takes", "Recordings", "Waveform",
                                     "Enhance")
        # The Record button and the jobs are above the tabs, on every tab.
        assert list(board.children) == [board.record, board.jobs, board.tabs]
        assert isinstance(board.record, RecordPanel) and isinstance(board.jobs, JobsPanel)
        bundle = board._repr_mimebundle_()
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == board.model_id
        assert sorted(board.recordings.ids) == ["rec-1", "rec-2"]

        # Selecting a recording opens it in Enhance; Waveform draws it once its tab opens.
        board.recordings.select(["rec-2"])
        await board.wait_idle(timeout=10)
        assert board.enhance.recording.value == "rec-2"
        assert board.enhance.duration_s == pytest.approx(1.5, abs=0.01)
        assert not board.waveform.waveform_image.value  # not drawn while hidden
        board.tabs.selected_index = TITLES.index("Waveform")
        await board.wait_idle(timeout=20)
        assert bytes(board.waveform.waveform_image.value).startswith(b"\x89PNG")
        board.recordings.select(["rec-1"])  # the Waveform tab is open: drawn at once
        await board.wait_idle(timeout=20)
        assert board.waveform.recording_ids == ["rec-1"]

        board.recordings.tune_button.click()
        assert board.tabs.selected_index == TITLES.index("Enhance")
        assert board.enhance.recording.value == "rec-1"

        # Every panel follows the same Lab: a rename shows in the server tab.
        await lab.rename("Dashboard Studio")
        await wait_until(lambda: "Dashboard Studio" in board.server.name_label.value, timeout=5)
    finally:
        board.close()
    assert not lab._listeners  # every panel unsubscribed


async def test_only_the_first_tab_is_built_with_the_dashboard(lab: Lab) -> None:
    await upload(lab, tone(1.0), "rec-1")
    board = Dashboard(lab, preload=False)
    try:
        assert [board.is_built(t) for t in TITLES] == [True] + [False] * 5
        assert isinstance(board.tabs.children[0], ServerPanel)
        assert [c.value for c in board.tabs.children[1:]] == ["<i>Loading…</i>"] * 5
        assert board.tabs.titles == TITLES

        # Opening a tab builds its panel in place; the deferred rows follow.
        board.tabs.selected_index = TITLES.index("Recordings")
        assert board.is_built("recordings") and not board.is_built("devices")
        recordings = board.tabs.children[TITLES.index("Recordings")]
        assert isinstance(recordings, RecordingsPanel)
        await wait_until(lambda: recordings.ids == ["rec-1"], timeout=5)
        assert board.tabs.selected_index == TITLES.index("Recordings")

        # Reading an attribute builds that panel too, and loads it at once.
        assert isinstance(board.enhance, EnhancePanel) and board.is_built("Enhance")
        assert board.tabs.children[TITLES.index("Enhance")] is board.enhance
        assert board.panel("Waveform") is board.waveform
        assert len({id(p) for p in board.panels}) == 6  # built once each
        assert list(board.tabs.children) == list(board.panels)
    finally:
        board.close()
    assert not lab._listeners


async def test_the_other_tabs_modules_are_imported_in_the_background(lab: Lab) -> None:
    """Their modules, yes; their panels, no: a built panel would be drawn with the page."""
    import sys

    from vocalink_lab.widgets.dashboard import _WARM_IMPORTS

    board = Dashboard(lab)
    try:
        await board.wait_idle(timeout=60)
        assert all(name in sys.modules for name in _WARM_IMPORTS)
        assert [board.is_built(t) for t in TITLES] == [True] + [False] * 5
        assert [type(c) for c in board.tabs.children[1:]] == [widgets.HTML] * 5
        # Opening a tab then builds its panel, and the table waits for a quiet moment.
        board.tabs.selected_index = TITLES.index("Recordings")
        recordings = board.tabs.children[TITLES.index("Recordings")]
        assert isinstance(recordings, RecordingsPanel) and recordings.ids == []
    finally:
        board.close()
    assert not lab._listeners


async def test_closing_while_importing_in_the_background_leaks_nothing(lab: Lab) -> None:
    board = Dashboard(lab)
    board.close()
    assert board._preload is not None
    results = await asyncio.gather(board._preload, return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)
                and not isinstance(r, asyncio.CancelledError)]
    assert not lab._listeners
    with pytest.raises(RuntimeError, match="closed"):
        board.panel("devices")  # nothing is built after close


async def test_a_tab_that_cannot_be_built_says_so_in_one_line(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("no ipydatagrid\nhere")

    monkeypatch.setattr(Dashboard.devices, "factory", broken)
    board = Dashboard(lab, preload=False)
    try:
        board.tabs.selected_index = 1  # no exception out of the tab's click
        placeholder = board.tabs.children[1]
        assert "The Devices tab could not be opened: RuntimeError: no ipydatagrid here" \
            in placeholder.value
        assert "Traceback" not in placeholder.value
        with pytest.raises(RuntimeError):
            board.panel("devices")
    finally:
        board.close()
