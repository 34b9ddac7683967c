"""`Dashboard`: every panel of one Lab in tabs — what ``lab.dashboard()`` and Voila show.

The page must open fast, so only the first tab's panel is built with the dashboard. The
others are built in the background once the dashboard is shown (their heavy imports,
pandas and ipydatagrid, in a worker thread), or at once when their tab is opened or
their attribute is read first. The Recordings table gets its rows when its tab is first
shown (or its attribute read): its thousands of rows are not part of the page's first
paint.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import ipywidgets as widgets

from .devices import DevicesPanel
from .enhance import EnhancePanel
from .jobs import JobsPanel
from .panel import Panel, banner
from .record import RecordPanel
from .recordings import RecordingsPanel
from .render import error_message
from .server import ServerPanel
from .takes import TakesPanel
from .waveform import WaveformPanel

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["TITLES", "Dashboard", "PanelTab"]

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Panel)

#: A tab's deferred content (the Recordings rows) comes this long after the tab opens.
LOAD_DELAY_S = 0.1
#: Imported in a worker thread before the background builds (the grids' modules).
_WARM_IMPORTS = ("pandas", "ipydatagrid")


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

    Only the first tab's panel is built with the dashboard; the others are built in the
    background just after (``preload``), or as soon as their tab is opened or their
    attribute read, whichever comes first. Each tab shows "Loading…" until then.

    Parameters
    ----------
    lab : Controller
        The lab to show and drive.
    preload : bool
        Build the other panels in the background on the running loop (without one,
        or with False, they are built on first use only).
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
    devices = PanelTab("Devices", DevicesPanel)
    takes = PanelTab("Takes", TakesPanel)
    recordings = PanelTab("Recordings", functools.partial(RecordingsPanel, defer_rows=True))
    waveform = PanelTab("Waveform", WaveformPanel)
    enhance = PanelTab("Enhance", EnhancePanel)
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
            with contextlib.suppress(RuntimeError):  # no running loop: built on first use
                self._preload = asyncio.get_running_loop().create_task(self._build_rest())

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
        if isinstance(panel, RecordingsPanel):
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

    async def _build_rest(self) -> None:
        """Build the panels not built yet, one by one, letting the loop run in between."""
        await asyncio.sleep(0)  # the dashboard is displayed first
        try:
            for module in _WARM_IMPORTS:
                await asyncio.to_thread(importlib.import_module, module)
        except ImportError:  # the panel that needs it reports it when built
            log.debug("warm import failed", exc_info=True)
        for index in range(len(self.TABS)):
            if self._closed:
                return
            if self.TABS[index].name not in self._built:
                with contextlib.suppress(Exception):  # said in the tab (`_build`)
                    self._build(index)
            await asyncio.sleep(0)

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
        """Wait until the background builds are done and no panel has work running."""
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
