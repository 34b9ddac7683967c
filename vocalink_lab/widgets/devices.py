"""`DevicesPanel`: every device live — state, level, battery, clock, pairing — and its buttons.

A device waiting for an operator (``pairing == "pending"``) shows as such, with Approve and
Reject in its own row: it appears when someone opens the server's page or runs
``vocalink device`` without a credential, and the operator's attention is on that row.
"""

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
#: A pending device's Approve / Reject take the place of its clock and last command: it
#: gets no command, and the buttons belong where the operator is looking.
_ACTIONS_WIDTH = f"{int(_WIDTHS[5][:-2]) + int(_WIDTHS[6][:-2])}px"
PENDING = "pending"
#: What each pairing state means, for the tooltip under a device's name.
_PAIRING_HELP = {
    "open": "authentication is off: every device is let in",
    "trusted": "presented the controller token",
    "paired": "holds its device key (joined with the join code, or approved)",
    PENDING: "waiting for an operator's approval: it gets no command",
}
_PENDING_BADGE = ('<span style="background:#fff3e0;color:#e65100;font-weight:bold;'
                  'padding:1px 4px;border-radius:3px;font-size:smaller;white-space:nowrap">'
                  'waiting for approval</span>')


def _cell(width: str) -> widgets.Layout:
    return widgets.Layout(width=width, min_width=width, overflow="hidden")


def _is_pending(device: Mapping[str, Any]) -> bool:
    return device.get("pairing") == PENDING


def _render_identity(device_id: str, device: Mapping[str, Any]) -> str:
    """The name, then the id and how the device was let in, small and grey."""
    name = html.escape(str(device.get("name") or device_id))
    line = html.escape(device_id)
    pairing = device.get("pairing")
    if pairing:
        tip = _PAIRING_HELP.get(str(pairing), "")
        remote = device.get("remote")
        if remote:
            tip += f" (from {remote})"
        line += f" · <span title='{html.escape(tip)}'>{html.escape(str(pairing))}</span>"
        if pairing == PENDING and remote:
            # Who is knocking: an address the operator may recognise (or not).
            line += f" · from {html.escape(str(remote))}"
    return f"<b>{name}</b><br><span style='color:#757575;font-size:smaller'>{line}</span>"


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
        self.box = widgets.HBox(self._cells())
        #: Approve / Reject, made when the device is first seen pending (most never are).
        self.approve: widgets.Button | None = None
        self.reject: widgets.Button | None = None
        self._actions: widgets.HBox | None = None

    def _cells(self) -> list[widgets.Widget]:
        return [self.select, self.name, self.state, self.level, self.battery,
                self.clock, self.command]

    def _pending_actions(self, on_approve: Callable[[str], None],
                         on_reject: Callable[[str], None]) -> widgets.HBox:
        if self._actions is None:
            self.approve = widgets.Button(
                description="Approve", button_style="success", icon="check",
                tooltip="Let this device in: it is paired and takes commands from now on",
                layout=widgets.Layout(width="110px"))
            self.reject = widgets.Button(
                description="Reject", icon="times",
                tooltip="Disconnect and forget this device; it can come back only with a "
                        "join code", layout=widgets.Layout(width="110px"))
            self.approve.on_click(lambda _: on_approve(self.device_id))
            self.reject.on_click(lambda _: on_reject(self.device_id))
            self._actions = widgets.HBox([self.approve, self.reject],
                                         layout=_cell(_ACTIONS_WIDTH))
        return self._actions

    def update(self, device: Mapping[str, Any], outcome: Mapping[str, Any] | None, *,
               acting: bool = False,
               on_approve: Callable[[str], None] = lambda _: None,
               on_reject: Callable[[str], None] = lambda _: None) -> None:
        connected = bool(device.get("connected", True))
        pending = _is_pending(device) and connected
        self.name.value = _render_identity(self.device_id, device)
        self.state.value = (_PENDING_BADGE if pending
                            else render_state(device.get("state"), connected))
        self.level.value = render_level(device.get("level_dbfs"), device.get("peak_dbfs"))
        self.battery.value = render_battery(device.get("battery"))
        if pending:
            actions = self._pending_actions(on_approve, on_reject)
            assert self.approve is not None and self.reject is not None
            self.approve.disabled = self.reject.disabled = acting  # one decision at a time
            children = [*self._cells()[:5], actions]
        else:
            self.clock.value = render_clock(device.get("clock"))
            self.command.value = render_outcome(outcome)
            children = self._cells()
        if list(self.box.children) != children:
            self.box.children = children


class DevicesPanel(Panel):
    """Live table of devices, with Start / Stop / Pause / Resume for a selection.

    One row per device: a checkbox, name (with its id and how it was let in: ``open``,
    ``trusted`` or ``paired``), state, level meter (RMS bar, peak tick), battery, clock
    offset and round trip, and the outcome of the last command on it. Rows update in
    place from the Lab's ``device.*`` and ``command.outcome`` events; a device that is
    forgotten (``device.removed``: rejected, or it left while pending) loses its row.
    The buttons command the checked devices, or every connected device when none is
    checked, and show each device's acknowledgement.

    A device waiting for approval says so in its state column, and has Approve and
    Reject buttons in its row instead of a clock and a last command: it gets no command
    until approved, so a selection that includes it is refused in the status line.

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
        self._acting: set[str] = set()  # devices with an approval or rejection on its way
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
        """The table as plain text, one dict per row.

        Keys: ``device_id``, ``name``, ``state`` (``WAITING FOR APPROVAL`` for a pending
        device, ``OFFLINE`` for a disconnected one), ``pairing`` (``open``, ``trusted``,
        ``paired``, ``pending``, or ``""`` from a server without pairing) and ``command``.
        """
        out = []
        for device_id in self._rows:
            device = self._devices.get(device_id, {})
            connected = bool(device.get("connected", True))
            outcome = self._outcome_for(device_id, device)
            state = (str(device.get("state")).upper() if connected else "OFFLINE")
            out.append({
                "device_id": device_id,
                "name": self._name(device_id),
                "state": "WAITING FOR APPROVAL" if connected and _is_pending(device) else state,
                "pairing": str(device.get("pairing") or ""),
                "command": (f"{outcome.get('action', '')} {outcome.get('status', '')}".strip()
                            if outcome else ""),
            })
        return out

    @property
    def pending(self) -> list[str]:
        """Ids of the devices waiting for approval, in table order."""
        return [d for d in self._rows if _is_pending(self._devices.get(d, {}))]

    def _name(self, device_id: str) -> str:
        return str((self._devices.get(device_id) or {}).get("name") or device_id)

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
        waiting = sum(1 for d in devices if d.get("connected") and _is_pending(d))
        connected = sum(1 for d in devices if d.get("connected")) - waiting
        summary = (f"{len(devices)} device{'s' * (len(devices) != 1)}, "
                   f"{connected} connected")
        if waiting:
            summary += f", <b style='color:#e65100'>{waiting} waiting for approval</b>"
        self.summary.value = (summary if devices else
                              "<i>No device yet: open the server's URL on a phone, or run "
                              "<code>vocalink device</code>.</i>")

    def _update_row(self, device: Mapping[str, Any]) -> bool:
        """Update one device's row; True when the row is new."""
        device_id = str(device["device_id"])
        row = self._rows.get(device_id)
        new = row is None
        if row is None:
            row = self._rows[device_id] = _DeviceRow(device_id)
        row.update(device, self._outcome_for(device_id, device),
                   acting=device_id in self._acting, on_approve=self.approve,
                   on_reject=self.reject)
        return new

    def _outcome_for(self, device_id: str, device: Mapping[str, Any]) -> dict[str, Any] | None:
        if device_id in self._outcomes:
            return self._outcomes[device_id]
        last = device.get("last_command")
        return dict(last) if last else None

    # -- events ------------------------------------------------------------------------------------

    def _on_device(self, topic: str, data: Mapping[str, Any]) -> None:
        if topic == Topic.DEVICE_REMOVED:
            # Forgotten by the server (and by the Lab's mirror before it told us).
            device_id = str(data.get("device_id"))
            self._devices.pop(device_id, None)
            self._outcomes.pop(device_id, None)
            self.refresh()
            return
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
            self._refresh_row(device_id)
            error = f" ({outcome['error']})" if outcome.get("error") else ""
            name = (self._devices.get(device_id) or {}).get("name") or device_id
            parts.append(f"{name}: {outcome.get('status')}{error}")
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
        """Run an approval or rejection, its row's buttons disabled until it ends."""
        self._acting.add(device_id)
        self._refresh_row(device_id)

        async def deciding() -> object:
            try:
                return await coro
            finally:
                self._acting.discard(device_id)
                self._refresh_row(device_id)  # a failure leaves the buttons usable again

        self.run(deciding(), action=action, on_done=lambda _: self.report(done, "ok"))
