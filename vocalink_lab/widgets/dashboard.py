"""`Dashboard`: every panel of one Lab in tabs — what ``lab.dashboard()`` and Voila show."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .devices import DevicesPanel
from .enhance import EnhancePanel
from .panel import Panel
from .recordings import RecordingsPanel
from .server import ServerPanel
from .waveform import WaveformPanel

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["Dashboard"]

TITLES = ("Server", "Devices", "Recordings", "Waveform", "Enhance")


class Dashboard(widgets.VBox):  # type: ignore[misc]
    """Server, devices, recordings, waveform and enhance panels of one Lab, in tabs.

    The panels are wired together: selecting recordings shows them in the Waveform
    tab (drawn when that tab is opened) and opens the first in the Enhance tab;
    Tune… in the Recordings tab switches to Enhance.

    Parameters
    ----------
    lab : Controller
        The lab to show and drive.
    **kwargs
        Passed to `ipywidgets.VBox`.

    Attributes
    ----------
    server : ServerPanel
    devices : DevicesPanel
    recordings : RecordingsPanel
    waveform : WaveformPanel
    enhance : EnhancePanel
    tabs : ipywidgets.Tab
        The panels, in that order.

    Examples
    --------
    >>> lab = await Lab.start()  # doctest: +SKIP
    >>> Dashboard(lab)  # doctest: +SKIP
    """

    def __init__(self, lab: Controller, **kwargs: Any) -> None:
        self.lab = lab
        self.server = ServerPanel(lab)
        self.devices = DevicesPanel(lab)
        self.recordings = RecordingsPanel(lab)
        self.waveform = WaveformPanel(lab)
        self.enhance = EnhancePanel(lab)
        self._pending_waveform: list[str] | None = None
        self.tabs = widgets.Tab(children=list(self.panels), titles=TITLES)
        super().__init__([self.tabs], **kwargs)
        self.recordings.on_select(self._on_select)
        self.recordings.on_tune(self._on_tune)
        self.tabs.observe(self._on_tab, "selected_index")

    @property
    def panels(self) -> tuple[Panel, ...]:
        """Every panel, in tab order."""
        return (self.server, self.devices, self.recordings, self.waveform, self.enhance)

    def _on_select(self, ids: list[str]) -> None:
        if ids and ids[0] != self.enhance.recording.value:
            self.enhance.set_recording(ids[0])
        if self.tabs.selected_index == TITLES.index("Waveform"):
            self.waveform.show(ids)
        else:
            self._pending_waveform = ids  # drawn when the tab is opened

    def _on_tune(self, ids: list[str]) -> None:
        if ids:
            self.enhance.set_recording(ids[0])
            self.tabs.selected_index = TITLES.index("Enhance")
        else:
            self.recordings.report("Select a recording to tune", "error")

    def _on_tab(self, change: Mapping[str, Any]) -> None:
        if change["new"] == TITLES.index("Waveform") and self._pending_waveform is not None:
            ids, self._pending_waveform = self._pending_waveform, None
            if ids != self.waveform.recording_ids:
                self.waveform.show(ids)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no panel has an action or drawing running."""
        async with asyncio.timeout(timeout):
            while any(p.busy for p in self.panels):
                await asyncio.gather(*(p.wait_idle() for p in self.panels))

    def close(self) -> None:
        """Close every panel (unsubscribing them from the Lab), then the dashboard."""
        if hasattr(self, "enhance"):  # fully built
            for panel in self.panels:
                panel.close()
        super().close()
