"""`RecordingsPanel`: the catalog as a sortable, filterable table, and what to do with a selection.

The table is an ipydatagrid `DataGrid`: it sorts and filters in the browser (its column
menus), renders only the visible cells, so 10,000 rows stay smooth, and its JavaScript
ships in its wheel, so it works offline and in Voila. Python-side, a search box and a
kind filter narrow the rows before they are sent. Catalog events refresh the table at
most every `REFRESH_DELAY_S` seconds, however many arrive (an upload burst, a batch job).
"""

from __future__ import annotations

import asyncio
import functools
import html
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from ..protocol.events import Topic
from .gridrows import ids_in_rectangles, rectangles_of, shown_ids
from .panel import QUIET_S, Panel
from .render import error_message
from .transcripts import transcript_links

if TYPE_CHECKING:
    import pandas as pd

    from .controller import Controller

__all__ = ["COLUMNS", "MERGE_MODES", "RecordingsPanel", "recordings_frame", "take_sync_flags"]

#: Columns of the table (the index is the recording id).
COLUMNS = ("kind", "device", "take", "sync", "duration_s", "sample_rate", "channels", "format",
           "size_kb", "created_utc", "parents")
#: Merge modes offered (as `Lab.merge` takes them), the default first.
MERGE_MODES = ("multichannel", "mix", "concat")
#: Catalog events are coalesced: the table redraws at most this often.
REFRESH_DELAY_S = 0.25
#: Deferred rows (`RecordingsPanel.load` with a delay) wait `QUIET_S` after any click on
#: the panel's buttons, but come no later than this after `load`.
ROWS_LATEST_S = 3.0
#: Files larger than this are not sent to the browser to play; download them instead.
PLAY_MAX_BYTES = 64 * 2**20
KINDS = ("all", "original", "enhanced", "merged")
_AUDIO_FORMATS = {"wav": "wav", "flac": "flac", "ogg": "ogg", "opus": "ogg", "mp3": "mpeg",
                  "m4a": "mp4", "webm": "webm", "3gp": "3gpp"}


def take_sync_flags(takes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The ``sync`` column's text for each flagged take (see `skew_report`), by take id.

    A take whose start skew may be over 0.5 ms reads ``⚠ ≤ 0.83 ms``; one with a clock
    never measured ``⚠ unknown``. Takes started in step are left out (an empty cell).
    """
    flags = {}
    for take in takes:
        skew = take.get("skew") or {}
        if skew.get("flagged"):
            bound = skew.get("bound_ms")
            flags[str(take["id"])] = "⚠ unknown" if bound is None else f"⚠ ≤ {bound:.2f} ms"
    return flags


def recordings_frame(rows: Sequence[Mapping[str, Any]],
                     take_flags: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The table's DataFrame: one row per recording, indexed by id, in the given order.

    Columns are plain strings and numbers (what the grid sends fastest and sorts right):
    ``created_utc`` is ``YYYY-MM-DD HH:MM:SS``, ``parents`` a comma-separated list,
    ``sync`` the recording's take's flag from ``take_flags`` (`take_sync_flags`).
    """
    flags = take_flags or {}
    import pandas as pd

    def column(key: str, default: Any = None) -> list[Any]:
        return [r.get(key, default) for r in rows]

    def numbers(key: str) -> np.ndarray:
        return np.array([np.nan if v is None else float(v) for v in column(key)], np.float64)

    created = numbers("created_at")
    stamps = pd.to_datetime(created, unit="s", utc=True)
    frame = pd.DataFrame({
        "kind": [str(v or "") for v in column("kind")],
        "device": [str(r.get("device_name") or r.get("device_id") or "") for r in rows],
        "take": [str(v or "") for v in column("take_id")],
        "sync": [flags.get(str(v), "") if v else "" for v in column("take_id")],
        "duration_s": np.round(numbers("duration_s"), 3),
        "sample_rate": numbers("sample_rate"),
        "channels": numbers("channels"),
        "format": [str(v or "") for v in column("format")],
        "size_kb": np.round(numbers("bytes") / 1024, 1),
        "created_utc": [s if isinstance(s, str) else "" for s in
                        stamps.strftime("%Y-%m-%d %H:%M:%S")],
        "parents": [", ".join(map(str, v or ())) for v in column("parents")],
    }, index=pd.Index([str(r["id"]) for r in rows], name="id", dtype=object))
    return frame


def _matches(row: Mapping[str, Any], needle: str, kind: str) -> bool:
    if kind != "all" and row.get("kind") != kind:
        return False
    if not needle:
        return True
    haystack = " ".join(str(row.get(k) or "") for k in
                        ("id", "device_name", "device_id", "take_id", "kind", "format"))
    return needle in haystack.lower()


class RecordingsPanel(Panel):
    """Every recording in a table; play, download, delete, merge or enhance the selection.

    Click rows to select them (shift/ctrl for more). Sort and filter from the column
    headers' menus; the search box and the kind list filter before the rows are sent.
    Deleting asks for confirmation. Merge and enhance make new recordings, which show
    up through the catalog's events.

    Parameters
    ----------
    lab : Controller
        The lab whose recordings to show.
    height : str
        CSS height of the table.
    defer_rows : bool
        Leave the table empty (its count says how many recordings there are) until
        `load` is called: the `Dashboard` loads it when its tab is first shown, so that
        thousands of rows are not part of the page's first paint.
    **kwargs
        Passed to `ipywidgets.VBox`.

    Attributes
    ----------
    grid : ipydatagrid.DataGrid
        The table (``selection_mode="row"``).
    search : ipywidgets.Text
        Keep rows whose id, device, take, kind or format contains this.
    kind : ipywidgets.Dropdown
        Keep one kind of recording (original, enhanced, merged) or all.
    player : ipywidgets.Audio
        Plays the first selected recording (`play`).
    links : ipywidgets.HTML
        Download links of the selected recordings (the server's ``/api/audio/{id}``).
    merge_mode : ipywidgets.Dropdown
        ``multichannel``, ``mix`` or ``concat``.
    preset : ipywidgets.Dropdown
        The enhance preset the Enhance button applies.
    confirm_box : ipywidgets.HBox
        The delete confirmation, shown after Delete is clicked.
    last_refresh_s : float
        How long the last table refresh took (seconds).
    loaded : bool
        Whether the table holds the rows (False until `load` with ``defer_rows``).
    """

    def __init__(self, lab: Controller, *, height: str = "360px", defer_rows: bool = False,
                 **kwargs: Any) -> None:
        from ipydatagrid import DataGrid

        from ..audio.enhance import PRESETS

        self._ids: list[str] = []
        self._flags: dict[str, str] = {}
        self._selected: list[str] = []
        self._syncing = False
        self._refresh_task: asyncio.Future[None] | None = None
        self._pending_delete: list[str] = []
        self._select_callbacks = widgets.CallbackDispatcher()
        self._tune_callbacks = widgets.CallbackDispatcher()
        self.last_refresh_s = 0.0
        self.loaded = not defer_rows
        self._rows_due: tuple[float, float] | None = None  # (when, at the latest), loop time

        self.grid = DataGrid(recordings_frame([]), selection_mode="row", editable=False,
                             base_column_size=110, base_row_header_size=210,
                             layout=widgets.Layout(height=height, width="100%"))
        self.search = widgets.Text(placeholder="search id, device, take…", description="Filter",
                                   layout=widgets.Layout(width="320px"))
        self.kind = widgets.Dropdown(options=KINDS, value="all", description="Kind",
                                     layout=widgets.Layout(width="200px"))
        self.count = widgets.HTML()
        self.selection_label = widgets.HTML()
        self.links = widgets.HTML()
        self.transcripts = widgets.HTML()
        self.player = widgets.Audio(format="wav", autoplay=True, controls=True,
                                    layout=widgets.Layout(width="420px"))
        self.play_button = widgets.Button(description="Play", tooltip="Play the first selected")
        self.delete_button = widgets.Button(description="Delete…", button_style="warning",
                                            tooltip="Delete the selected (asks first)")
        self.merge_mode = widgets.Dropdown(options=MERGE_MODES, value=MERGE_MODES[0],
                                           layout=widgets.Layout(width="140px"))
        self.merge_button = widgets.Button(description="Merge", tooltip="Merge the selected "
                                           "recordings into a new one")
        self.preset = widgets.Dropdown(options=list(PRESETS), value="auto",
                                       layout=widgets.Layout(width="120px"))
        self.enhance_button = widgets.Button(description="Enhance",
                                             tooltip="Enhance the selected with the preset")
        self.transcribe_button = widgets.Button(
            description="Transcribe", tooltip="Speech to text of the selected (one job each)")
        self.tune_button = widgets.Button(description="Tune…",
                                          tooltip="Open the first selected in the Enhance panel")
        self.confirm_label = widgets.HTML()
        self.confirm_button = widgets.Button(description="Confirm delete", button_style="danger")
        self.cancel_button = widgets.Button(description="Cancel")
        self.confirm_box = widgets.HBox([self.confirm_label, self.confirm_button,
                                         self.cancel_button],
                                        layout=widgets.Layout(display="none"))
        actions = widgets.HBox([
            self.play_button, self.delete_button,
            widgets.HTML("&nbsp;|&nbsp;"), self.merge_mode, self.merge_button,
            widgets.HTML("&nbsp;|&nbsp;"), self.preset, self.enhance_button, self.tune_button,
            widgets.HTML("&nbsp;|&nbsp;"), self.transcribe_button])
        super().__init__(lab, [
            widgets.HBox([self.search, self.kind, self.count]), self.grid,
            self.selection_label, actions, self.confirm_box, self.links, self.transcripts,
            self.player], **kwargs)

        self.grid.observe(self._on_grid_selection, "selections")
        self.search.observe(lambda _: self.schedule_refresh(), "value")
        self.kind.observe(lambda _: self._rows_now(), "value")
        for button, action in (
                (self.play_button, self.play), (self.delete_button, self.delete),
                (self.confirm_button, self.confirm_delete),
                (self.cancel_button, self.cancel_delete), (self.merge_button, self.merge),
                (self.enhance_button, self.enhance),
                (self.transcribe_button, self.transcribe),
                (self.tune_button, lambda: self._tune_callbacks(list(self._selected)))):
            button.on_click(functools.partial(self._clicked, action))
        self._listen((Topic.RECORDING_ADDED, Topic.RECORDING_DELETED, Topic.LAB_REFRESHED,
                      Topic.LAB_TAKES), lambda *_: self.schedule_refresh())
        self.refresh()

    # -- the table --------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """Ids of the rows sent to the table (after the search and kind filters), in order."""
        return list(self._ids)

    def load(self, delay: float | None = None) -> None:
        """Fill the table if its rows were deferred (``defer_rows``); else nothing.

        Now, or ``delay`` seconds later: the `Dashboard` lets the tab's controls reach
        the page first, and the rows follow. A click on the panel's buttons meanwhile
        puts them off until the panel has been quiet `QUIET_S` (at most
        `ROWS_LATEST_S` after this call): the click is answered first.
        """
        if self.loaded:
            return
        self.loaded = True
        if delay is None:
            self.refresh()
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._rows_due = (now + delay, now + max(delay, ROWS_LATEST_S))

        async def when_quiet() -> None:
            while self._rows_due is not None and (wait := self._rows_due[0] - loop.time()) > 0:
                await asyncio.sleep(wait)
            self._rows_due = None
            self.refresh()

        self._refresh_task = self._spawn(when_quiet())
        self.refresh()  # the count says the rows are coming

    def _rows_now(self) -> None:
        """A filter changed: the rows are wanted now, due or not."""
        self._rows_due = None
        self.refresh()

    def _clicked(self, action: Callable[[], object], _button: widgets.Button) -> None:
        if self._rows_due is not None:
            due, latest = self._rows_due
            quiet = asyncio.get_running_loop().time() + QUIET_S
            self._rows_due = (min(max(due, quiet), latest), latest)
        action()

    def refresh(self) -> None:
        """Redraw the table now from the Lab's recordings (keeps the selection by id).

        While the rows are deferred (``defer_rows``, before `load`, and until they are
        due), only the count is.
        """
        if not self.loaded or self._rows_due is not None:
            total = len(self.lab.recording_list())
            coming = " · loading the table…" if self._rows_due is not None and total else ""
            self.count.value = f"&nbsp;{total} recording{'s' * (total != 1)}{coming}"
            self._set_selected([])
            return
        began = time.perf_counter()
        needle = self.search.value.strip().lower()
        kind = self.kind.value
        every = self.lab.recording_list()
        rows = [r for r in every if _matches(r, needle, kind)] if needle or kind != "all" \
            else every
        ids = [str(r["id"]) for r in rows]
        flags = take_sync_flags(self.lab.take_list())
        if ids != self._ids or not self._ids or flags != self._flags:
            keep = [i for i in self._selected if i in set(ids)]
            self._syncing = True
            try:
                self.grid.data = recordings_frame(rows, flags)
                self._ids, self._flags = ids, flags
                self.grid.selections = []
            finally:
                self._syncing = False
            if keep and not self.grid._transforms:
                self.select(keep)  # rows moved: highlight the same recordings again
            else:
                self._set_selected(keep if not self.grid._transforms else [])
        total = len(every)
        shown = f"{len(ids)} of {total}" if len(ids) != total else f"{total}"
        self.count.value = f"&nbsp;{shown} recording{'s' * (total != 1)}"
        self.last_refresh_s = time.perf_counter() - began

    def schedule_refresh(self, delay: float = REFRESH_DELAY_S) -> None:
        """Refresh after ``delay`` seconds; calls in the meantime add nothing more."""
        if self._refresh_task is not None and not self._refresh_task.done():
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            self.refresh()

        self._refresh_task = self._spawn(later())

    # -- selection ------------------------------------------------------------------------------

    @property
    def selected(self) -> list[str]:
        """Ids of the selected recordings, in table order."""
        return list(self._selected)

    def _view(self) -> list[str]:
        """Ids in the order the browser shows them (sorted/filtered there), else ours."""
        return shown_ids(self.grid, self._ids)

    def select(self, recording_ids: Sequence[str]) -> None:
        """Select these recordings in the table (others are unselected)."""
        where = {rid: i for i, rid in enumerate(self._view())}
        self.grid.selections = rectangles_of(
            (where[r] for r in set(recording_ids) if r in where), len(COLUMNS))

    def _on_grid_selection(self, change: Mapping[str, Any]) -> None:
        if self._syncing:
            return
        self._set_selected(ids_in_rectangles(change["new"], self._view()))

    def _set_selected(self, ids: list[str]) -> None:
        changed = ids != self._selected
        self._selected = ids
        count = len(ids)
        shown = ", ".join(ids[:5]) + (f" and {count - 5} more" if count > 5 else "")
        self.selection_label.value = (f"<b>{count} selected</b>: {html.escape(shown)}" if ids
                                      else "<i>Select rows to play, merge, enhance or "
                                           "delete them.</i>")
        self.links.value = " ".join(
            f"<a href='{html.escape(self.lab.browser_url(f'/api/audio/{i}'))}' download "
            "target='_blank'>"
            f"⤓ {html.escape(i)}</a>" for i in ids[:20])
        if changed:
            self._select_callbacks(list(ids))

    def on_select(self, callback: Callable[[list[str]], object], remove: bool = False) -> None:
        """Call ``callback(ids)`` whenever the selection changes (``remove``: stop)."""
        self._select_callbacks.register_callback(callback, remove=remove)

    def on_tune(self, callback: Callable[[list[str]], object], remove: bool = False) -> None:
        """Call ``callback(ids)`` when Tune… is clicked (the Dashboard opens Enhance)."""
        self._tune_callbacks.register_callback(callback, remove=remove)

    def _need(self, n: int, what: str) -> list[str] | None:
        ids = list(self._selected)
        if len(ids) < n:
            self.report(f"Select {'a recording' if n == 1 else f'{n} or more recordings'} "
                        f"to {what}", "error")
            return None
        return ids

    # -- actions ---------------------------------------------------------------------------------

    def play(self) -> None:
        """Load the first selected recording into `player`."""
        ids = self._need(1, "play")
        if ids is None:
            return
        rid = ids[0]

        async def load() -> tuple[bytes, str]:
            path = await self.lab.path_of(rid)
            size = await asyncio.to_thread(lambda: path.stat().st_size)
            if size > PLAY_MAX_BYTES:
                raise ValueError(f"{rid} is {size / 2**20:.0f} MiB, too large to play here; "
                                 "download it instead")
            return await asyncio.to_thread(Path.read_bytes, path), path.suffix.lstrip(".")

        def done(result: tuple[bytes, str]) -> None:
            data, suffix = result
            self.player.format = _AUDIO_FORMATS.get(suffix.lower(), suffix.lower())
            self.player.value = data
            self.report(f"Playing {rid}", "ok")

        self.run(load(), action="Play", on_done=done)

    def delete(self) -> None:
        """Ask to confirm deleting the selected recordings (`confirm_delete` does it)."""
        ids = self._need(1, "delete")
        if ids is None:
            return
        self._pending_delete = ids
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        self.confirm_label.value = (f"<b>Delete {len(ids)} recording{'s' * (len(ids) != 1)}"
                                    f"</b> ({html.escape(shown)}) and their files?&nbsp;")
        self.confirm_box.layout.display = "flex"

    @property
    def pending_delete(self) -> list[str]:
        """Ids awaiting confirmation (empty when nothing is asked)."""
        return list(self._pending_delete)

    def cancel_delete(self) -> None:
        """Forget the pending delete."""
        self._pending_delete = []
        self.confirm_box.layout.display = "none"
        self.report("Delete cancelled")

    def confirm_delete(self) -> None:
        """Delete the recordings that `delete` asked about."""
        ids, self._pending_delete = self._pending_delete, []
        self.confirm_box.layout.display = "none"
        if not ids:
            self.report("Nothing to delete", "error")
            return

        async def delete_all() -> list[str]:
            failures = []
            for rid in ids:
                try:
                    await self.lab.delete(rid)
                except Exception as exc:
                    failures.append(f"{rid}: {error_message(exc)}")
            return failures

        def done(failures: list[str]) -> None:
            self.schedule_refresh(0)
            deleted = len(ids) - len(failures)
            if failures:
                self.report(f"Deleted {deleted}; failed: " + "; ".join(failures), "error")
            else:
                self.report(f"Deleted {deleted} recording{'s' * (deleted != 1)}", "ok")

        self.run(delete_all(), action="Delete", on_done=done)

    def merge(self) -> None:
        """Merge the selected recordings (mode `merge_mode`) into a new one."""
        ids = self._need(2, "merge")
        if ids is None:
            return
        mode = self.merge_mode.value
        self.run(self.lab.merge(ids, mode=mode), action=f"Merge ({mode})",
                 on_done=lambda row: self.report(
                     f"Merged {len(ids)} recordings into {row['id']} ({mode})", "ok"))

    def enhance(self) -> None:
        """Enhance each selected recording with the `preset` (new recordings)."""
        ids = self._need(1, "enhance")
        if ids is None:
            return
        preset = self.preset.value

        async def enhance_all() -> list[str]:
            made = []
            for rid in ids:
                row = await self.lab.enhance(rid, preset)
                made.append(f"{rid} → {row['id']}")
            return made

        self.run(enhance_all(), action=f"Enhance ({preset})",
                 on_done=lambda made: self.report(f"Enhanced ({preset}): " + "; ".join(made),
                                                  "ok"))

    def transcribe(self) -> None:
        """Transcribe each selected recording (a job each); then link its transcripts."""
        ids = self._need(1, "transcribe")
        if ids is None:
            return

        async def transcribe_all() -> list[tuple[str, int]]:
            return [(rid, len(await self.lab.transcribe(rid, progress=False))) for rid in ids]

        def done(made: list[tuple[str, int]]) -> None:
            self.report("Transcribed: " + "; ".join(
                f"{rid} ({n} line{'s' * (n != 1)})" for rid, n in made), "ok")
            self.transcripts.value = "<br>".join(
                f"Transcript of {html.escape(rid)}: "
                + transcript_links(self.lab, recording_id=rid) for rid, _ in made)

        self.run(transcribe_all(), action="Transcribe", on_done=done)
