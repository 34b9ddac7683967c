"""`DevicesPanel`: every device live in one grid, and Start / Stop / Pause / Resume for its rows.

The table is an ipydatagrid `DataGrid`, one row per device, so the panel holds the same
few widgets at 1 device or 1,000: the grid sorts and filters in the browser (its column
menus) and draws only the visible cells. Device events (levels arrive about once a second
per recording device) only mark rows dirty; the grid is refreshed at most every
`REFRESH_DELAY_S` seconds, or one millisecond per row when that is longer (once a second
at 1,000 rows), and then only what changed is sent: nothing when no shown value moved,
the few rows that did (a ``row-changed`` message each), or, past `ROW_MESSAGES_MAX` rows,
the table in one message. The browser redraws its whole model for each of those messages
(0.3 to 0.5 s for one row as for the table, at 1,000 rows in headless Chromium), hence
the table for many rows, and the longer delay for a big grid; the selection is restored
by device id after a table. Rows keep their place: a device that joins is added at the
end, one that goes offline stays where it is.

A device waiting for an operator (``pairing == "pending"``) is listed above the grid
with Approve and Reject: it appears when someone opens the server's page or runs
``vocalink device`` without a credential, and the operator's attention belongs there
first. That list is bounded (the server keeps at most 64 pending devices), so its
widgets are too.
"""

from __future__ import annotations

import asyncio
import collections
import html
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..protocol.events import Topic
from .gridrows import ids_in_rectangles, rectangles_of, shown_ids
from .panel import Panel
from .render import METER_FLOOR_DBFS, STATE_COLORS, STATUS_COLORS

if TYPE_CHECKING:
    import pandas as pd

    from .controller import Controller

__all__ = ["ACTIONS", "COLUMNS", "REFRESH_DELAY_S", "ROW_MESSAGES_MAX", "DevicesPanel",
           "device_row", "devices_frame"]

#: The transport commands the panel sends, in button order.
ACTIONS = ("START", "STOP", "PAUSE", "RESUME")
#: Columns of the grid (its index, the row header, is the device id).
COLUMNS = ("name", "platform", "pairing", "state", "level_dbfs", "peak_dbfs", "battery_pct",
           "offset_ms", "rtt_ms", "uncertainty_ms", "drift_ppm", "last_command")
#: Device events are coalesced: the grid is refreshed at most this often.
REFRESH_DELAY_S = 0.25
#: ...and a bigger grid less often: the browser redraws its whole model on each refresh.
_DELAY_PER_ROW_S = 0.001
#: More changed rows than this are sent as the whole table, in one message.
ROW_MESSAGES_MAX = 4
PENDING = "pending"
#: States the summary line counts (idle devices are the rest of "connected").
_SUMMARY_STATES = ("RECORDING", "PAUSED", "UPLOADING")
#: The state column of a device waiting for approval.
WAITING = "WAITING FOR APPROVAL"
_DEVICE_TOPICS = Topic.of_family("device")
_NUMBERS = frozenset(("level_dbfs", "peak_dbfs", "battery_pct", "offset_ms", "rtt_ms",
                      "uncertainty_ms", "drift_ppm"))
_PENDING_COLOR = "#e65100"
#: How long after sending a new table an empty selection from the browser is taken for
#: its reset of the old one (see `DevicesPanel._send_table`).
_ECHO_WINDOW_S = 2.0
#: What each pairing state means, for the tooltip in the pending list.
_PAIRING_HELP = {
    "open": "authentication is off: every device is let in",
    "trusted": "presented the controller token",
    "paired": "holds its device key (joined with the join code, or approved)",
    PENDING: "waiting for an operator's approval: it gets no command",
}
_PENDING_BADGE = ('<span style="background:#fff3e0;color:#e65100;font-weight:bold;'
                  'padding:1px 4px;border-radius:3px;font-size:smaller;white-space:nowrap">'
                  'waiting for approval</span>')


def _is_pending(device: Mapping[str, Any]) -> bool:
    return device.get("pairing") == PENDING


def _number(value: Any, scale: float = 1.0, digits: int = 2) -> float | None:
    """A finite number, scaled and rounded (rounding is what spares resending a row)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value) * scale
    except (TypeError, ValueError):
        return None
    return round(number, digits) if math.isfinite(number) else None


def _outcome_text(outcome: Mapping[str, Any] | None) -> str:
    if not outcome:
        return ""
    text = f"{outcome.get('action') or ''} {str(outcome.get('status') or '?').upper()}"
    if outcome.get("error"):
        text += f": {outcome['error']}"
    return text.strip()


def device_row(device: Mapping[str, Any],
               outcome: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    """One device's grid row: the values of `COLUMNS`, plain strings and numbers.

    Levels are whole dBFS (the meter's resolution), battery a whole percentage, clock
    figures milliseconds (and ppm) to two decimals: a value that moved less than that
    leaves the row unchanged, and so unsent. Missing numbers are ``None``.

    Parameters
    ----------
    device : mapping
        A device as the server lists it (``GET /api/devices``, ``device.*`` events).
    outcome : mapping, optional
        The last command's outcome on it (``action``, ``status``, ``error``); the
        device's own ``last_command`` when not given.

    Returns
    -------
    tuple
        In `COLUMNS` order.
    """
    connected = bool(device.get("connected", True))
    if connected and _is_pending(device):
        state = WAITING
    else:
        state = str(device.get("state") or "?").upper() if connected else "OFFLINE"
    clock = device.get("clock") or {}
    last = outcome if outcome is not None else device.get("last_command")
    return (
        str(device.get("name") or device.get("device_id")),
        str(device.get("platform") or ""),  # python, browser, android: which kind of device
        str(device.get("pairing") or ""),
        state,
        _number(device.get("level_dbfs"), digits=0),
        _number(device.get("peak_dbfs"), digits=0),
        _number(device.get("battery"), 100, 0),
        _number(clock.get("offset_s"), 1000),
        _number(clock.get("rtt_s"), 1000),
        _number(clock.get("uncertainty_s"), 1000),
        _number(clock.get("drift_ppm")),
        _outcome_text(last),
    )


def devices_frame(ids: Sequence[str], rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """The grid's DataFrame: `device_row` values indexed by device id (named ``id``).

    Number columns are float64 (NaN when missing), the others strings: what the grid
    sends fastest, and sorts right.
    """
    import pandas as pd

    data = {name: _column(i, rows) for i, name in enumerate(COLUMNS)}
    return pd.DataFrame(data, index=pd.Index(list(ids), name="id", dtype=object),
                        columns=list(COLUMNS))


def _column(index: int, rows: Sequence[Sequence[Any]]) -> Any:
    """Column ``index`` of `device_row` rows: float64 with NaN, or a list of strings."""
    import numpy as np

    values = [row[index] for row in rows]
    if COLUMNS[index] in _NUMBERS:
        return np.array([np.nan if v is None else v for v in values], np.float64)
    return [str(v) for v in values]


def _choose(values: Mapping[str, str], default: str) -> str:
    """A Vega expression: the colour of the cell's value, looked up in ``values``."""
    expr = f"'{default}'"
    for value, color in values.items():
        expr = f"cell.value === '{value}' ? '{color}' : ({expr})"
    return expr


def _renderers() -> dict[str, Any]:
    """Per-column renderers: coloured state and outcome, a level bar (a fixed few widgets)."""
    from ipydatagrid import BarRenderer, TextRenderer, VegaExpr

    floor = -METER_FLOOR_DBFS
    bold = "bold 12px sans-serif"
    status = " : ".join(f"indexof(cell.value, '{s}') >= 0 ? '{c}'"
                        for s, c in STATUS_COLORS.items())
    return {
        "state": TextRenderer(font=bold, text_color=VegaExpr(_choose(
            {**STATE_COLORS, WAITING: _PENDING_COLOR}, "#424242"))),
        "pairing": TextRenderer(text_color=VegaExpr(
            f"cell.value === '{PENDING}' ? '{_PENDING_COLOR}' : '#757575'")),
        # The RMS level as a bar from the meter's floor to 0 dBFS, coloured as the old
        # meter was (red near clipping, amber when loud), its value printed on it.
        "level_dbfs": BarRenderer(
            bar_value=VegaExpr(f"isValid(cell.value) ? clamp((cell.value + {floor:g}) / "
                               f"{floor:g}, 0, 1) : 0"),
            bar_color=VegaExpr("cell.value > -1 ? '#c62828' : cell.value > -12 ? "
                               "'#f9a825' : '#2e7d32'"),
            format=".0f", missing="—"),
        "peak_dbfs": TextRenderer(format=".0f", missing="—"),
        "battery_pct": TextRenderer(format=".0f", missing="—", text_color=VegaExpr(
            "isValid(cell.value) && cell.value < 15 ? '#c62828' : '#212121'")),
        "offset_ms": TextRenderer(format="+.2f", missing="not synced"),
        "rtt_ms": TextRenderer(format=".2f", missing="—"),
        "uncertainty_ms": TextRenderer(format=".2f", missing="—"),
        "drift_ppm": TextRenderer(format="+.2f", missing="—"),
        "last_command": TextRenderer(text_color=VegaExpr(f"{status} : '#424242'")),
    }


class _PendingRow:
    """A device waiting for approval: who it is, and Approve / Reject (a few widgets)."""

    def __init__(self, device_id: str, on_approve: Callable[[str], None],
                 on_reject: Callable[[str], None]) -> None:
        self.device_id = device_id
        self.name = widgets.HTML(layout=widgets.Layout(width="420px"))
        self.approve = widgets.Button(
            description="Approve", button_style="success", icon="check",
            tooltip="Let this device in: it is paired and takes commands from now on",
            layout=widgets.Layout(width="110px"))
        self.reject = widgets.Button(
            description="Reject", icon="times",
            tooltip="Disconnect and forget this device; it can come back only with a "
                    "join code", layout=widgets.Layout(width="110px"))
        self.approve.on_click(lambda _: on_approve(device_id))
        self.reject.on_click(lambda _: on_reject(device_id))
        self.box = widgets.HBox([self.name, self.approve, self.reject])

    def update(self, device: Mapping[str, Any], *, acting: bool) -> None:
        name = html.escape(str(device.get("name") or self.device_id))
        line = html.escape(self.device_id)
        remote = device.get("remote")
        tip = _PAIRING_HELP[PENDING] + (f" (from {remote})" if remote else "")
        if remote:
            # Who is knocking: an address the operator may recognise (or not).
            line += f" · from {html.escape(str(remote))}"
        value = (f"{_PENDING_BADGE} <b title='{html.escape(tip)}'>{name}</b> "
                 f"<span style='color:#757575;font-size:smaller'>{line}</span>")
        if self.name.value != value:
            self.name.value = value
        self.approve.disabled = self.reject.disabled = acting  # one decision at a time

    def close(self) -> None:
        """Close its widgets, with their layouts and styles (widgets too, or they linger)."""
        for widget in (self.name, self.approve, self.reject, self.box):
            for part in (getattr(widget, "style", None), widget.layout, widget):
                if part is not None:
                    part.close()


class DevicesPanel(Panel):
    """Live grid of devices, with Start / Stop / Pause / Resume for a selection of rows.

    One grid row per device, indexed by its id: name, pairing (``open``, ``trusted``,
    ``paired`` or ``pending``), state, RMS level (a bar) and peak in dBFS, battery %,
    clock offset, round trip and uncertainty in ms, drift in ppm, and the outcome of the
    last command on it. Sort and filter from the column headers' menus; click rows to
    select them (shift/ctrl for more). Rows are first in the Lab's order (connected
    first, then by name), and keep their place: new devices are added at the end. They
    follow the Lab's ``device.*`` and ``command.outcome`` events, coalesced (see the
    module's docstring); a device that is forgotten (``device.removed``: rejected, or
    it left while pending) loses its row. The buttons command the selected devices, or
    every connected device when none is selected, and show each device's
    acknowledgement.

    Devices waiting for approval are listed above the grid, each with Approve and
    Reject; their grid state reads ``WAITING FOR APPROVAL``. They get no command until
    approved, so a selection that includes one is refused in the status line.

    Parameters
    ----------
    lab : Controller
        The lab whose devices to show.
    height : str
        CSS height of the grid.
    **kwargs
        Passed to `ipywidgets.VBox`.

    Attributes
    ----------
    grid : ipydatagrid.DataGrid
        The table (``selection_mode="row"``), columns `COLUMNS`.
    buttons : dict of str to ipywidgets.Button
        ``START``, ``STOP``, ``PAUSE``, ``RESUME``.
    select_all : ipywidgets.Checkbox
        Selects every row, or clears the selection; checked while every row is selected.
    summary : ipywidgets.HTML
        How many devices, how many connected, recording, paused, uploading, and
        waiting for approval.
    pending_box : ipywidgets.VBox
        The devices waiting for approval, with their buttons (hidden when none).
    last_result : dict or None
        The last command's result as the server answered (``outcomes`` per device).
    refresh_count : int
        How many times the grid was refreshed (events are coalesced into refreshes).
    full_updates : int
        How many of those sent the whole table (devices joined or were forgotten, or
        more than `ROW_MESSAGES_MAX` rows changed).
    rows_sent : int
        How many changed rows were sent one by one, in all.
    last_refresh_s : float
        How long the last refresh took (seconds).
    """

    def __init__(self, lab: Controller, *, height: str = "360px", **kwargs: Any) -> None:
        from ipydatagrid import DataGrid

        self._order: list[str] = []  # device ids in the grid's (data) row order
        self._position: dict[str, int] = {}
        self._values: list[tuple[Any, ...]] = []  # what the grid shows, row by row
        self._devices: dict[str, Mapping[str, Any]] = {}  # as of the last refresh
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._acting: set[str] = set()  # devices with an approval or rejection on its way
        self._selected: list[str] = []
        self._syncing = False
        self._reset_echo: tuple[float, list[str]] | None = None
        self._reselect: list[str] | None = None  # to select again once the browser's order is known
        self._dirty: set[str] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._pending_rows: dict[str, _PendingRow] = {}
        self.last_result: dict[str, Any] | None = None
        self.refresh_count = 0
        self.full_updates = 0
        self.rows_sent = 0
        self.last_refresh_s = 0.0

        self.grid = DataGrid(devices_frame([], []), selection_mode="row", editable=False,
                             base_column_size=90, base_row_header_size=120,
                             # As wide as their headers (and filter icons): a row fits a
                             # laptop's screen.
                             column_widths={"name": 140, "platform": 70, "pairing": 80,
                                            "state": 120,
                                            "level_dbfs": 110, "battery_pct": 105,
                                            "rtt_ms": 75, "uncertainty_ms": 125,
                                            "last_command": 200},
                             renderers=_renderers(),
                             layout=widgets.Layout(height=height, width="100%"))
        self.summary = widgets.HTML()
        self.select_all = widgets.Checkbox(value=False, indent=False, description="all",
                                           tooltip="select every row, or none",
                                           layout=widgets.Layout(width="70px"))
        self.pending_box = widgets.VBox(layout=widgets.Layout(display="none"))
        self.buttons = {
            action: widgets.Button(description=action.title(),
                                   tooltip=f"{action.title()} the selected devices "
                                           f"(all when none is selected)",
                                   button_style="danger" if action == "START" else "")
            for action in ACTIONS}
        super().__init__(lab, [
            widgets.HBox([*self.buttons.values(), self.select_all, self.summary]),
            self.pending_box, self.grid], **kwargs)
        for action, button in self.buttons.items():
            button.on_click(lambda _, a=action: self.command(a))
        self.select_all.observe(self._on_select_all, "value")
        self.grid.observe(self._on_grid_selection, "selections")
        self.grid.observe(self._on_browser_order, "_visible_rows")
        self._listen(_DEVICE_TOPICS, self._on_device)
        self._listen(Topic.COMMAND_OUTCOME, self._on_outcome)
        self._listen(Topic.LAB_REFRESHED, lambda *_: self._mark(self._devices, all_=True))
        self.refresh()

    # -- reading -----------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """Device ids in the grid's row order (before any sort made in the browser)."""
        return list(self._order)

    @property
    def selected(self) -> list[str]:
        """Ids of the selected devices, in the grid's row order."""
        chosen = set(self._selected)
        return [d for d in self._order if d in chosen]

    @property
    def rows(self) -> list[dict[str, str]]:
        """The grid as plain text, one dict per row, as of its last refresh.

        Keys: ``device_id``, ``name``, ``state`` (``WAITING FOR APPROVAL`` for a pending
        device, ``OFFLINE`` for a disconnected one), ``pairing`` (``open``, ``trusted``,
        ``paired``, ``pending``, or ``""`` from a server without pairing) and ``command``
        (the last command's action and status, ``""`` when none).
        """
        out = []
        for device_id, values in zip(self._order, self._values, strict=True):
            outcome = self._outcome_for(device_id, self._devices.get(device_id, {}))
            out.append({
                "device_id": device_id,
                "name": values[COLUMNS.index("name")],
                "state": values[COLUMNS.index("state")],
                "pairing": values[COLUMNS.index("pairing")],
                "command": (f"{outcome.get('action', '')} {outcome.get('status', '')}".strip()
                            if outcome else ""),
            })
        return out

    @property
    def pending(self) -> list[str]:
        """Ids of the devices waiting for approval, in the grid's row order."""
        return [d for d in self._order if _is_pending(self._devices.get(d, {}))]

    def _name(self, device_id: str) -> str:
        device = self._devices.get(device_id) or {}
        return str(device.get("name") or device_id)

    def _outcome_for(self, device_id: str, device: Mapping[str, Any]) -> dict[str, Any] | None:
        if device_id in self._outcomes:
            return self._outcomes[device_id]
        last = device.get("last_command")
        return dict(last) if last else None

    # -- drawing -----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the grid up to date with the Lab now, every row checked.

        Rows whose values did not change are not sent; the whole table is sent when
        devices joined or were forgotten, or more than `ROW_MESSAGES_MAX` rows changed.
        """
        self._dirty.update(self._order)
        self._flush()

    def _mark(self, device_ids: Iterable[str], *, all_: bool = False) -> None:
        """Note rows to check, and refresh after a delay (once, however many are noted)."""
        self._dirty.update(self._order if all_ else device_ids)
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (a script poking the panel): draw now
            self._flush()
            return
        delay = max(REFRESH_DELAY_S, len(self._order) * _DELAY_PER_ROW_S)
        self._flush_handle = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        """The refresh: send what changed since the last one, then forget it."""
        began = time.perf_counter()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        devices = self.lab.device_list()
        self._devices = {str(d["device_id"]): d for d in devices}
        # Rows keep their place (the operator's eye and selection stay on them, and a
        # device going offline costs one row, not the table); newcomers go at the end.
        order = [d for d in self._order if d in self._devices]
        order += [d for d in self._devices if d not in self._position]
        if order != self._order or not self.refresh_count:
            self._send_table(order)
        else:
            self._send_changes([self._position[d] for d in self._dirty if d in self._position])
        self._dirty.clear()
        self._show_pending()
        self._show_summary()
        self.refresh_count += 1
        self.last_refresh_s = time.perf_counter() - began

    def _row_of(self, device_id: str) -> tuple[Any, ...]:
        device = self._devices[device_id]
        return device_row(device, self._outcome_for(device_id, device))

    def _send_table(self, order: list[str], values: list[tuple[Any, ...]] | None = None
                    ) -> None:
        """Send the whole table, in one message; keep the selection by device id."""
        keep = [d for d in self._selected if d in self._devices]
        self._values = [self._row_of(d) for d in order] if values is None else values
        self._syncing = True
        try:
            self.grid.data = devices_frame(order, self._values)
            self._order = order
            self._position = {d: i for i, d in enumerate(order)}
            self.grid.selections = []
        finally:
            self._syncing = False
        self.full_updates += 1
        self._reselect = None
        if keep:
            self.select(keep)  # the same devices, wherever their rows are now
            # A browser clears its selection when it gets a new table, and says so (an
            # empty selection) after this one was sent: that echo must not undo it.
            self._reset_echo = (time.monotonic() + _ECHO_WINDOW_S, keep)
            if self.grid._transforms:
                # Sorted or filtered there: rows are placed by the order it last reported;
                # once it reports the new one, the same devices are selected again.
                self._reselect = keep
        else:
            self._set_selected([])

    def _send_changes(self, positions: Iterable[int]) -> None:
        """Send the rows (at ``positions``) whose values changed: nothing, rows, or the table.

        A ``row-changed`` message is applied in place (the browser keeps its selection,
        sort and filter) but costs the browser a redraw of its whole model, as the table
        does: past `ROW_MESSAGES_MAX` changed rows, the table goes in one message. The
        kernel's copy is updated to match either way, so a page opened later draws the
        same.
        """
        changed: dict[int, tuple[Any, ...]] = {}
        for position in sorted(set(positions)):
            values = self._row_of(self._order[position])
            if values != self._values[position]:
                changed[position] = values
        if not changed:
            return
        if len(changed) > ROW_MESSAGES_MAX:
            fresh = list(self._values)
            for position, values in changed.items():
                fresh[position] = values
            self._send_table(self._order, fresh)
            return
        columns = {c for p, values in changed.items()
                   for c, (old, new) in enumerate(zip(self._values[p], values, strict=True))
                   if old != new}
        for position, values in changed.items():
            self._values[position] = values
        table = self.grid._data["data"]  # the grid's own frame: id, COLUMNS..., its uuid
        for c in sorted(columns):
            table[COLUMNS[c]] = _column(c, self._values)
        for position, values in changed.items():
            self.grid.send({"event_type": "row-changed", "row": position,
                            "value": list(values)})
        self.rows_sent += len(changed)

    def _show_pending(self) -> None:
        """The list above the grid: connected devices waiting for approval (at most 64)."""
        waiting = {d: device for d, device in self._devices.items()
                   if _is_pending(device) and device.get("connected", True)}
        for gone in [d for d in self._pending_rows if d not in waiting]:
            self._pending_rows.pop(gone).close()
        for device_id, device in waiting.items():
            row = self._pending_rows.get(device_id)
            if row is None:
                row = self._pending_rows[device_id] = _PendingRow(
                    device_id, self.approve, self.reject)
            row.update(device, acting=device_id in self._acting)
        children = tuple(self._pending_rows[d].box for d in waiting)
        if tuple(self.pending_box.children) != children:
            self.pending_box.children = children
        self.pending_box.layout.display = "flex" if children else "none"

    def _show_summary(self) -> None:
        devices = list(self._devices.values())
        waiting = sum(1 for d in devices if d.get("connected") and _is_pending(d))
        connected = sum(1 for d in devices if d.get("connected")) - waiting
        summary = (f"&nbsp;{len(devices)} device{'s' * (len(devices) != 1)}, "
                   f"{connected} connected")
        # What they do, at a glance: with a thousand rows the grid shows a screenful.
        doing = collections.Counter(str(d.get("state")) for d in devices if d.get("connected")
                                    and not _is_pending(d))
        for state in _SUMMARY_STATES:
            if doing[state]:
                summary += f" · {doing[state]} {state.lower()}"
        if waiting:
            summary += f", <b style='color:{_PENDING_COLOR}'>{waiting} waiting for approval</b>"
        value = (summary if devices else
                 "<i>No device yet: open the server's URL on a phone, or run "
                 "<code>vocalink device</code>.</i>")
        if self.summary.value != value:
            self.summary.value = value

    # -- selection ---------------------------------------------------------------------------------

    def _view(self) -> list[str]:
        """Ids in the order the browser shows them (sorted/filtered there), else ours."""
        return shown_ids(self.grid, self._order)

    def select(self, device_ids: Sequence[str]) -> None:
        """Select exactly these devices' rows.

        Parameters
        ----------
        device_ids : sequence of str
            The devices; unknown ids, and rows filtered out in the browser, are left out.
        """
        where = {d: i for i, d in enumerate(self._view())}
        wanted = set(device_ids)
        rects = rectangles_of((where[d] for d in wanted if d in where), len(COLUMNS) - 1)
        self._syncing = True  # the ids are known: not read back from the rectangles
        try:
            self.grid.selections = rects
        finally:
            self._syncing = False
        self._set_selected([d for d in self._order if d in wanted and d in where])

    def _on_browser_order(self, change: Mapping[str, Any]) -> None:
        """The browser says which rows it shows, in which order: select the same devices."""
        keep, self._reselect = self._reselect, None
        if keep and not self._syncing:
            self.select(keep)

    def _on_grid_selection(self, change: Mapping[str, Any]) -> None:
        if self._syncing:
            return
        echo, self._reset_echo = self._reset_echo, None
        if echo is not None and not change["new"] and time.monotonic() < echo[0]:
            self.select(echo[1])  # the browser's reset after a new table (see _send_table)
            return
        self._reselect = None  # the operator chose: their choice stands
        self._set_selected(ids_in_rectangles(change["new"], self._view()))

    def _set_selected(self, ids: list[str]) -> None:
        self._selected = ids
        every = bool(self._order) and len(set(ids)) == len(self._order)
        if self.select_all.value != every:
            self._syncing = True  # the box follows the rows; it must not re-select them
            try:
                self.select_all.value = every
            finally:
                self._syncing = False

    def _on_select_all(self, change: Mapping[str, Any]) -> None:
        if not self._syncing:
            self.select(self._order if change["new"] else [])

    # -- events ------------------------------------------------------------------------------------

    def _on_device(self, topic: str, data: Mapping[str, Any]) -> None:
        if topic == Topic.DEVICE_REMOVED:
            # Forgotten by the server (and by the Lab's mirror before it told us).
            self._outcomes.pop(str(data.get("device_id")), None)
            self._mark(())
            return
        device = data.get("device")
        if device:
            # The hot path (levels, once a second per recording device): only noted here.
            self._mark((str(device["device_id"]),))

    def _on_outcome(self, topic: str, data: Mapping[str, Any]) -> None:
        outcome = data.get("outcome") or {}
        device_id = outcome.get("device_id")
        if not device_id:
            return
        self._outcomes[device_id] = {"action": data.get("action"), **outcome}
        self._mark((device_id,))

    # -- commands ----------------------------------------------------------------------------------

    def command(self, action: str) -> None:
        """Send ``action`` (START, STOP, PAUSE, RESUME) to the selected devices (or all).

        Returns at once; the outcome per device shows in the grid and `status`.

        Parameters
        ----------
        action : str
            One of `ACTIONS`, in any case.
        """
        action = action.upper()
        calls: dict[str, Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = {
            "START": self.lab.start_recording, "STOP": self.lab.stop_recording,
            "PAUSE": self.lab.pause, "RESUME": self.lab.resume}
        if action not in calls:
            self.report(f"Unknown action '{action}'; one of {', '.join(ACTIONS)}", "error")
            return
        targets = self.selected or None
        waiting = [d for d in targets or () if _is_pending(self._devices.get(d, {}))]
        if waiting:
            # The server would refuse the whole command (409); say why, and what to do.
            names = ", ".join(self._name(d) for d in waiting)
            one = len(waiting) == 1
            self.report(f"{action.title()}: {names} {'is' if one else 'are'} waiting for "
                        f"approval; approve or uncheck {'it' if one else 'them'} first",
                        "error")
            return
        self.run(calls[action](targets), action=action.title(),
                 on_done=lambda result: self._show_result(action, result))

    def _show_result(self, action: str, result: dict[str, Any]) -> None:
        self.last_result = result
        outcomes: Mapping[str, Mapping[str, Any]] = result.get("outcomes") or {}
        parts = []
        for device_id, outcome in outcomes.items():
            self._outcomes[device_id] = {"action": action, **outcome}
            self._dirty.add(device_id)
            error = f" ({outcome['error']})" if outcome.get("error") else ""
            parts.append(f"{self._name(device_id)}: {outcome.get('status')}{error}")
        if outcomes:
            self._flush()  # the operator just clicked: show the outcomes at once
        if not parts:
            self.report(f"{action.title()}: no device connected", "error")
            return
        ok = all(o.get("status") == "SUCCESS" for o in outcomes.values())
        self.report(f"{action.title()} — " + "; ".join(parts), "ok" if ok else "error")

    # -- pairing -----------------------------------------------------------------------------------

    def approve(self, device_id: str) -> None:
        """Let a pending device in: it is paired, and takes commands from now on.

        Returns at once; the outcome shows in `status` and in the device's row.

        Parameters
        ----------
        device_id : str
            A device waiting for approval (approving one already let in changes nothing).
        """
        name = self._name(device_id)
        self._decide(self.lab.approve(device_id), device_id, action=f"Approve {name}",
                     done=f"Approved {name}: it is paired and takes commands")

    def reject(self, device_id: str) -> None:
        """Refuse a pending device, or unpair a paired one: it is disconnected and forgotten.

        It is refused from then on, until it joins again with a join code. Returns at
        once; its row goes when the server forgets it.

        Parameters
        ----------
        device_id : str
            The device.
        """
        name = self._name(device_id)
        self._decide(self.lab.reject(device_id), device_id, action=f"Reject {name}",
                     done=f"Rejected {name}: disconnected and forgotten (it can come back "
                          f"only with a join code)")

    def _decide(self, coro: Coroutine[Any, Any, object], device_id: str, *, action: str,
                done: str) -> None:
        """Run an approval or rejection, its pending row's buttons disabled until it ends."""
        self._acting.add(device_id)
        self._show_pending()

        async def deciding() -> object:
            try:
                return await coro
            finally:
                self._acting.discard(device_id)
                self._show_pending()  # a failure leaves the buttons usable again

        self.run(deciding(), action=action, on_done=lambda _: self.report(done, "ok"))

    def close(self) -> None:
        """Stop refreshing, then as `Panel.close`."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for row in self._pending_rows.values():
            row.close()
        self._pending_rows = {}
        super().close()
