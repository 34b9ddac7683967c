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
