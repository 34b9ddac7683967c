"""ipywidgets panels: presentation only, on the Lab's event loop, working in Jupyter and Voila.

Each panel is an `ipywidgets.VBox` subclass that takes a `Controller` (the small
interface a `~vocalink_lab.lab.Lab` satisfies: its live mirror and its actions) in
its constructor, follows it through ``lab.on`` events, and runs its actions as tasks
on the loop (heavy drawing and previews in worker threads). Use them alone or all
together in a `Dashboard` (``lab.dashboard()``)::

    lab = await vl.Lab.start()
    DevicesPanel(lab)     # one panel
    lab.dashboard()       # every panel, in tabs

Images are PNG bytes set on `ipywidgets.Image`, sounds WAV bytes on `ipywidgets.Audio`:
nothing relies on ``plt.show()`` or an ``Output`` captured in a cell, which Voila
does not render from a callback.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .controller import Controller
    from .dashboard import Dashboard
    from .devices import DevicesPanel
    from .enhance import EnhancePanel
    from .jobs import JobsPanel
    from .panel import Panel
    from .record import RecordPanel
    from .recordings import RecordingsPanel
    from .server import ServerPanel
    from .takes import TakesPanel
    from .waveform import WaveformPanel

#: Where each name lives: imported on first use, so that the dashboard's page, which
#: shows a few panels at first, does not wait for the others' modules (numpy, pandas).
_MODULES = {
    "Controller": "controller", "Dashboard": "dashboard", "DevicesPanel": "devices",
    "EnhancePanel": "enhance", "JobsPanel": "jobs", "Panel": "panel",
    "RecordPanel": "record", "RecordingsPanel": "recordings", "ServerPanel": "server",
    "TakesPanel": "takes", "WaveformPanel": "waveform",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Controller",
    "Dashboard",
    "DevicesPanel",
    "EnhancePanel",
    "JobsPanel",
    "Panel",
    "RecordPanel",
    "RecordingsPanel",
    "ServerPanel",
    "TakesPanel",
    "WaveformPanel",
]
