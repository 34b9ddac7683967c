"""`Dashboard`: every panel of one Lab in tabs — what ``lab.dashboard()`` and Voila show.

The page must open fast, so only the first tab's panel is built with the dashboard; the
others are built when their tab is first opened or their attribute read (a few
milliseconds each), while their heavy imports, pandas and ipydatagrid, are done in a
worker thread as soon as the dashboard is shown. Panels are not built ahead: the
browser draws every widget it is told of when the page opens, hidden tabs' too, and a
kernel pre-heated by Voila would have built them all before the visitor came. The
Recordings table gets its rows when its tab is first shown (or its attribute read): its
thousands of rows are not part of the page's first paint.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import ipywidgets as widgets

from .jobs import JobsPanel
from .panel import QUIET_S, Panel, banner
from .record import RecordPanel
from .render import error_message
from .server import ServerPanel

if TYPE_CHECKING:
    from .controller import Controller
    from .devices import DevicesPanel
    from .enhance import EnhancePanel
    from .recordings import RecordingsPanel
    from .takes import TakesPanel
    from .waveform import WaveformPanel

__all__ = ["TITLES", "Dashboard", "PanelTab"]

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Panel)

#: A tab's deferred content (the Recordings rows) comes this long after the tab opens,
#: later while its buttons are being clicked (`RecordingsPanel.load`): opening the tab
#: counts as a click.
LOAD_DELAY_S = QUIET_S
#: Imported in a worker thread when the dashboard is shown: the other tabs' modules and
#: theirs (the grids', numpy's), so that opening a tab waits for no import.
_WARM_IMPORTS = ("numpy", "pandas", "ipydatagrid", f"{__package__}.devices",
                 f"{__package__}.takes", f"{__package__}.recordings",
                 f"{__package__}.waveform", f"{__package__}.enhance")


def _lazy(module: str, name: str, **options: Any) -> Callable[[Controller], Any]:
    """A panel factory that imports its module when first used (the page opens sooner)."""

    def build(lab: Controller) -> Any:
        panel_class = getattr(importlib.import_module(f".{module}", __package__), name)
        return panel_class(lab, **options)

    return build


class PanelTab(Generic[P]):
    """One tab of the `Dashboard`: its title and how to build its panel.

    A class attribute of `Dashboard`; reading it on a dashboard gives the panel, built
    (and shown once, see `Dashboard.panel`) on first access.

    Parameters
    ----------
    title : str
        The tab's title.
    factory : callable
        Builds the panel from the Lab (the panel's class, usually).
    """

    def __init__(self, title: str, factory: Callable[[Controller], P]) -> None:
        self.title = title
        self.factory = factory
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> PanelTab[P]: ...

    @overload
    def __get__(self, obj: Dashboard, owner: type) -> P: ...

    def __get__(self, obj: Dashboard | None, owner: type) -> PanelTab[P] | P:
        if obj is None:
            return self
        panel: P = obj.panel(self.name)
        return panel


class Dashboard(widgets.VBox):  # type: ignore[misc]
    """One Lab's app: the Record button and the jobs on top, every other panel in a tab.

    The tabs: server, devices, takes, recordings, waveform and enhance.

    The panels are wired together: selecting recordings shows them in the Waveform
    tab (drawn when that tab is opened) and opens the first in the Enhance tab;
    Tune… in the Recordings tab switches to Enhance.

    Only the first tab's panel is built with the dashboard; the others as soon as their
    tab is opened or their attribute read. Each tab shows "Loading…" until then.

    Parameters
    ----------
    lab : Controller
        The lab to show and drive.
    preload : bool
        Import the modules the other panels need (pandas, ipydatagrid) in a worker
        thread at once, so that opening their tab waits for no import (without a
        running loop, or with False, they are imported on first use).
    **kwargs
        Passed to `ipywidgets.VBox`.

    Attributes
    ----------
    record : RecordPanel
        The big Record / Stop button, above the tabs (built with the dashboard).
    jobs : JobsPanel
        Every enhance and merge job with its progress, under it (hidden when none).
    server : ServerPanel
    devices : DevicesPanel
    takes : TakesPanel
    recordings : RecordingsPanel
    waveform : WaveformPanel
    enhance : EnhancePanel
    tabs : ipywidgets.Tab
        The panels, in that order (a "Loading…" placeholder for one not built yet).
    TABS : tuple of PanelTab
        The tabs, in order. A new panel is one `PanelTab` attribute and its place here.

    Examples
    --------
    >>> lab = await Lab.start()  # doctest: +SKIP
    >>> Dashboard(lab)  # doctest: +SKIP
    """

    server = PanelTab("Server", ServerPanel)
    devices: PanelTab[DevicesPanel] = PanelTab("Devices", _lazy("devices", "DevicesPanel"))
    takes: PanelTab[TakesPanel] = PanelTab("Takes", _lazy("takes", "TakesPanel"))
    recordings: PanelTab[RecordingsPanel] = PanelTab(
        "Recordings", _lazy("recordings", "RecordingsPanel", defer_rows=True))
    waveform: PanelTab[WaveformPanel] = PanelTab("Waveform", _lazy("waveform", "WaveformPanel"))
    enhance: PanelTab[EnhancePanel] = PanelTab("Enhance", _lazy("enhance", "EnhancePanel"))
    TABS: tuple[PanelTab[Any], ...] = (server, devices, takes, recordings, waveform, enhance)

    def __init__(self, lab: Controller, *, preload: bool = True, **kwargs: Any) -> None:
        self.lab = lab
        self._built: dict[str, Panel] = {}
        self._shown: set[str] = set()
        self._closed = False
        self._pending_waveform: list[str] | None = None
        self._preload: asyncio.Future[None] | None = None
        self._placeholders = [self._placeholder() for _ in self.TABS]
        self.tabs = widgets.Tab(children=self._placeholders,
                                titles=[tab.title for tab in self.TABS])
        self.record = RecordPanel(lab)
        self.jobs = JobsPanel(lab)
        super().__init__([self.record, self.jobs, self.tabs], **kwargs)
        self.add_class("vocalink-dashboard")
        self.tabs.observe(self._on_tab, "selected_index")
        self._show(0)
        if preload:
            with contextlib.suppress(RuntimeError):  # no running loop: imported on first use
                self._preload = asyncio.get_running_loop().create_task(self._warm())

    @staticmethod
    def _placeholder() -> widgets.Widget:
        return widgets.HTML("<i>Loading…</i>", layout=widgets.Layout(padding="8px"))

    # -- the panels --------------------------------------------------------------------------

    def _index(self, name: str) -> int:
        for i, tab in enumerate(self.TABS):
            if name in (tab.name, tab.title):
                return i
        raise KeyError(f"no tab {name!r}")

    def panel(self, name: str) -> Panel:
        """The panel of a tab (by attribute name or title), built now if it is not yet.

        Reading a panel counts as showing it: the Recordings table, say, gets its rows.
        """
        index = self._index(name)
        panel = self._build(index)
        self._activate(index, panel)
        return panel

    def is_built(self, name: str) -> bool:
        """Whether a tab's panel (attribute name or title) has been built."""
        return self.TABS[self._index(name)].name in self._built

    @property
    def panels(self) -> tuple[Panel, ...]:
        """Every panel, in tab order (building those not built yet)."""
        return tuple(self.panel(tab.name) for tab in self.TABS)

    def _build(self, index: int) -> Panel:
        tab = self.TABS[index]
        built = self._built.get(tab.name)
        if built is not None:
            return built
        if self._closed:
            raise RuntimeError("the dashboard is closed")
        try:
            panel: Panel = tab.factory(self.lab)
        except Exception as exc:  # said in the tab, in one line; raised to a caller
            log.exception("building the %s panel", tab.title)
            self._placeholders[index].value = banner(
                f"The {tab.title} tab could not be opened: {error_message(exc)}")
            raise
        self._built[tab.name] = panel
        if tab.name == "recordings":
            panel.on_select(self._on_select)
            panel.on_tune(self._on_tune)
        children = list(self.tabs.children)
        children[index] = panel
        self.tabs.children = children
        self._placeholders[index].close()
        return panel

    def _activate(self, index: int, panel: Panel, delay: float | None = None) -> None:
        """Call a panel's ``load(delay)``, if it has one, the first time it is shown or read.

        A deferred table (the Recordings rows) gets its content, now or ``delay`` s later.
        """
        name = self.TABS[index].name
        if name in self._shown:
            return
        self._shown.add(name)
        load = getattr(panel, "load", None)
        if callable(load):
            load(delay)

    def _show(self, index: int) -> None:
        """Its tab was opened: build the panel now; its rows come just after."""
        with contextlib.suppress(Exception):  # said in the tab (`_build`)
            self._activate(index, self._build(index), delay=LOAD_DELAY_S)

    async def _warm(self) -> None:
        """Import the other panels' heavy modules in a worker thread."""
        try:
            for module in _WARM_IMPORTS:
                await asyncio.to_thread(importlib.import_module, module)
        except ImportError:  # the panel that needs it reports it when built
            log.debug("warm import failed", exc_info=True)

    # -- wiring ------------------------------------------------------------------------------

    def _on_select(self, ids: list[str]) -> None:
        if ids and ids[0] != self.enhance.recording.value:
            self.enhance.set_recording(ids[0])
        if self.tabs.selected_index == self._index("waveform"):
            self.waveform.show(ids)
        else:
            self._pending_waveform = ids  # drawn when the tab is opened

    def _on_tune(self, ids: list[str]) -> None:
        if ids:
            self.enhance.set_recording(ids[0])
            self.tabs.selected_index = self._index("enhance")
        else:
            self.recordings.report("Select a recording to tune", "error")

    def _on_tab(self, change: Mapping[str, Any]) -> None:
        if change["new"] is None or self._closed:
            return
        self._show(change["new"])
        if change["new"] == self._index("waveform") and self._pending_waveform is not None:
            ids, self._pending_waveform = self._pending_waveform, None
            if ids != self.waveform.recording_ids:
                self.waveform.show(ids)

    # -- lifecycle ---------------------------------------------------------------------------

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until the background imports are done and no panel has work running."""
        async with asyncio.timeout(timeout):
            if self._preload is not None and not self._preload.done():
                await asyncio.gather(self._preload, return_exceptions=True)
            while any(p.busy for p in self._always() + list(self._built.values())):
                await asyncio.gather(*(p.wait_idle() for p in
                                       self._always() + list(self._built.values())))

    def _always(self) -> list[Panel]:
        """The panels outside the tabs (built with the dashboard)."""
        return [p for p in (getattr(self, "record", None), getattr(self, "jobs", None))
                if p is not None]

    def close(self) -> None:
        """Close every panel built (unsubscribing them from the Lab), then the dashboard."""
        self._closed = True
        preload = getattr(self, "_preload", None)
        if preload is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                preload.cancel()
        for panel in [*self._always(), *getattr(self, "_built", {}).values()]:
            panel.close()
        for placeholder in getattr(self, "_placeholders", ()):
            placeholder.close()
        super().close()


#: The tabs' titles, in order.
TITLES = tuple(tab.title for tab in Dashboard.TABS)
