"""`DevicesPanel`: every device live — state, level, battery, clock — and the transport buttons."""

from __future__ import annotations

import html
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..protocol.events import Topic
from .panel import Panel
from .render import render_battery, render_clock, render_level, render_outcome, render_state

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["ACTIONS", "DevicesPanel"]

#: The transport commands the panel sends, in button order.
ACTIONS = ("START", "STOP", "PAUSE", "RESUME")
_WIDTHS = ("36px", "190px", "110px", "170px", "70px", "210px", "260px")
_HEADERS = ("", "device", "state", "level", "battery", "clock offset · rtt", "last command")
_DEVICE_TOPICS = Topic.of_family("device")


def _cell(width: str) -> widgets.Layout:
    return widgets.Layout(width=width, min_width=width, overflow="hidden")


class _DeviceRow:
    """The widgets of one device's row (updated in place: only changed values are sent)."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.select = widgets.Checkbox(value=False, indent=False, layout=_cell(_WIDTHS[0]))
        self.name = widgets.HTML(layout=_cell(_WIDTHS[1]))
        self.state = widgets.HTML(layout=_cell(_WIDTHS[2]))
        self.level = widgets.HTML(layout=_cell(_WIDTHS[3]))
        self.battery = widgets.HTML(layout=_cell(_WIDTHS[4]))
        self.clock = widgets.HTML(layout=_cell(_WIDTHS[5]))
        self.command = widgets.HTML(layout=_cell(_WIDTHS[6]))
        self.box = widgets.HBox([self.select, self.name, self.state, self.level, self.battery,
                                 self.clock, self.command])

    def update(self, device: Mapping[str, Any], outcome: Mapping[str, Any] | None) -> None:
        connected = bool(device.get("connected", True))
        name = html.escape(str(device.get("name") or self.device_id))
        self.name.value = (f"<b>{name}</b><br><span style='color:#757575;font-size:smaller'>"
                           f"{html.escape(self.device_id)}</span>")
        self.state.value = render_state(device.get("state"), connected)
        self.level.value = render_level(device.get("level_dbfs"), device.get("peak_dbfs"))
        self.battery.value = render_battery(device.get("battery"))
        self.clock.value = render_clock(device.get("clock"))
        self.command.value = render_outcome(outcome)


class DevicesPanel(Panel):
    """Live table of devices, with Start / Stop / Pause / Resume for a selection.

    One row per device: a checkbox, name, state, level meter (RMS bar, peak tick),
    battery, clock offset and round trip, and the outcome of the last command on it.
    Rows update in place from the Lab's ``device.*`` and ``command.outcome`` events.
    The buttons command the checked devices, or every connected device when none is
    checked, and show each device's acknowledgement.

    Parameters
    ----------
    lab : Controller
        The lab whose devices to show.
    **kwargs
        Passed to `ipywidgets.VBox`.

    Attributes
    ----------
    buttons : dict of str to ipywidgets.Button
        ``START``, ``STOP``, ``PAUSE``, ``RESUME``.
    select_all : ipywidgets.Checkbox
        Checks or unchecks every row.
    summary : ipywidgets.HTML
        How many devices, how many connected.
    last_result : dict or None
        The last command's result as the server answered (``outcomes`` per device).
    """

    def __init__(self, lab: Controller, **kwargs: Any) -> None:
        self._rows: dict[str, _DeviceRow] = {}
        self._devices: dict[str, Mapping[str, Any]] = {}
        self._outcomes: dict[str, dict[str, Any]] = {}
        self.last_result: dict[str, Any] | None = None
        self.summary = widgets.HTML()
        self.select_all = widgets.Checkbox(value=False, indent=False, layout=_cell(_WIDTHS[0]),
                                           tooltip="select all")
        header = widgets.HBox([self.select_all] + [
            widgets.HTML(f"<b>{h}</b>", layout=_cell(w))
            for h, w in zip(_HEADERS[1:], _WIDTHS[1:], strict=True)])
        self._table = widgets.VBox([header])
        self.buttons = {
            action: widgets.Button(description=action.title(),
                                   tooltip=f"{action.title()} the checked devices "
                                           f"(all when none is checked)",
                                   button_style="danger" if action == "START" else "")
            for action in ACTIONS}
        super().__init__(lab, [widgets.HBox(list(self.buttons.values())), self.summary,
                               self._table], **kwargs)
        for action, button in self.buttons.items():
            button.on_click(lambda _, a=action: self.command(a))
        self.select_all.observe(self._on_select_all, "value")
        self._listen(_DEVICE_TOPICS, self._on_device)
        self._listen(Topic.COMMAND_OUTCOME, self._on_outcome)
        self._listen(Topic.LAB_REFRESHED, lambda *_: self.refresh())
        self.refresh()

    # -- reading -----------------------------------------------------------------------------------

    @property
    def selected(self) -> list[str]:
        """Ids of the checked devices, in table order."""
        return [d for d, row in self._rows.items() if row.select.value]

    def select(self, device_ids: list[str] | tuple[str, ...]) -> None:
        """Check exactly these devices."""
        wanted = set(device_ids)
        for device_id, row in self._rows.items():
            row.select.value = device_id in wanted

    @property
    def rows(self) -> list[dict[str, str]]:
        """The table as plain text, one dict per row (device_id, name, state, command)."""
        out = []
        for device_id in self._rows:
            device = self._devices.get(device_id, {})
            connected = bool(device.get("connected", True))
            outcome = self._outcome_for(device_id, device)
            out.append({
                "device_id": device_id,
                "name": str(device.get("name") or device_id),
                "state": str(device.get("state")).upper() if connected else "OFFLINE",
                "command": (f"{outcome.get('action', '')} {outcome.get('status', '')}".strip()
                            if outcome else ""),
            })
        return out

    # -- drawing -----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Redraw every row from the Lab's device list (rows are kept, not rebuilt)."""
        devices = self.lab.device_list()
        self._devices = {d["device_id"]: d for d in devices}
        for device in devices:
            self._update_row(device)
        order = [d["device_id"] for d in devices]
        for gone in [d for d in self._rows if d not in order]:
            del self._rows[gone]
        if list(self._rows) != order:
            self._rows = {d: self._rows[d] for d in order}
        children = (self._table.children[0], *(row.box for row in self._rows.values()))
        if tuple(self._table.children) != children:
            self._table.children = children
        connected = sum(1 for d in devices if d.get("connected"))
        self.summary.value = (f"{len(devices)} device{'s' * (len(devices) != 1)}, "
                              f"{connected} connected" if devices else
                              "<i>No device yet: open the server's URL on a phone, or run "
                              "<code>vocalink device</code>.</i>")

    def _update_row(self, device: Mapping[str, Any]) -> bool:
        """Update one device's row; True when the row is new."""
        device_id = str(device["device_id"])
        row = self._rows.get(device_id)
        new = row is None
        if row is None:
            row = self._rows[device_id] = _DeviceRow(device_id)
        row.update(device, self._outcome_for(device_id, device))
        return new

    def _outcome_for(self, device_id: str, device: Mapping[str, Any]) -> dict[str, Any] | None:
        if device_id in self._outcomes:
            return self._outcomes[device_id]
        last = device.get("last_command")
        return dict(last) if last else None

    # -- events ------------------------------------------------------------------------------------

    def _on_device(self, topic: str, data: Mapping[str, Any]) -> None:
        device = data.get("device")
        if not device:
            return
        self._devices[device["device_id"]] = device
        if topic == Topic.DEVICE_UPDATED and device["device_id"] in self._rows:
            self._update_row(device)  # the hot path: levels, once a second per device
        else:
            self.refresh()  # a new device or one gone offline may move in the order

    def _on_outcome(self, topic: str, data: Mapping[str, Any]) -> None:
        outcome = data.get("outcome") or {}
        device_id = outcome.get("device_id")
        if not device_id:
            return
        self._outcomes[device_id] = {"action": data.get("action"), **outcome}
        self._refresh_row(device_id)

    def _refresh_row(self, device_id: str) -> None:
        device = self._devices.get(device_id)
        if device is not None and device_id in self._rows:
            self._update_row(device)

    def _on_select_all(self, change: Mapping[str, Any]) -> None:
        for row in self._rows.values():
            row.select.value = bool(change["new"])

    # -- commands ----------------------------------------------------------------------------------

    def command(self, action: str) -> None:
        """Send ``action`` (START, STOP, PAUSE, RESUME) to the checked devices (or all).

        Returns at once; the outcome per device shows in the table and `status`.
        """
        action = action.upper()
        calls: dict[str, Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = {
            "START": self.lab.start_recording, "STOP": self.lab.stop_recording,
            "PAUSE": self.lab.pause, "RESUME": self.lab.resume}
        if action not in calls:
            self.report(f"Unknown action '{action}'; one of {', '.join(ACTIONS)}", "error")
            return
        targets = self.selected or None
        self.run(calls[action](targets), action=action.title(),
                 on_done=lambda result: self._show_result(action, result))

    def _show_result(self, action: str, result: dict[str, Any]) -> None:
        self.last_result = result
        outcomes: Mapping[str, Mapping[str, Any]] = result.get("outcomes") or {}
        parts = []
        for device_id, outcome in outcomes.items():
            self._outcomes[device_id] = {"action": action, **outcome}
            self._refresh_row(device_id)
            error = f" ({outcome['error']})" if outcome.get("error") else ""
            name = (self._devices.get(device_id) or {}).get("name") or device_id
            parts.append(f"{name}: {outcome.get('status')}{error}")
        if not parts:
            self.report(f"{action.title()}: no device connected", "error")
            return
        ok = all(o.get("status") == "SUCCESS" for o in outcomes.values())
        self.report(f"{action.title()} — " + "; ".join(parts), "ok" if ok else "error")
