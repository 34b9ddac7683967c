"""`RecordPanel`: one big Record / Stop button for the whole room, and what it will record.

What a lab assistant needs and nothing more: the button, the time since the take
started, the take's name (editable before the take, written when it starts, and
editable after), and who takes part: devices ready, waiting for approval, offline.
A take started or stopped elsewhere (a notebook, another browser) turns the button
too: it follows the server's ``take.started`` / ``take.stopped`` events, not its own
clicks. The per-device Start / Stop / Pause / Resume stay in the Devices tab.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..protocol.events import Topic
from .panel import Panel

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["RecordPanel", "failures", "format_elapsed", "readiness"]

#: How often the elapsed time is redrawn while a take runs (seconds).
TICK_S = 0.5
_PENDING = "pending"
_BUTTON_CSS = "vocalink-record-button"


def format_elapsed(seconds: float) -> str:
    """``H:MM:SS`` under a day, ``M:SS`` under an hour: ``format_elapsed(75) == '1:15'``."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def readiness(devices: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Devices by whether a START now would reach them: ``ready``, ``pending``, ``offline``.

    Parameters
    ----------
    devices : list of dict
        As `Controller.device_list` gives them.

    Returns
    -------
    dict of str to list of str
        Device names under each key, in the given order.
    """
    out: dict[str, list[str]] = {"ready": [], "pending": [], "offline": []}
    for device in devices:
        name = str(device.get("name") or device.get("device_id"))
        if not device.get("connected", True):
            out["offline"].append(name)
        elif device.get("pairing") == _PENDING:
            out["pending"].append(name)
        else:
            out["ready"].append(name)
    return out


def failures(command: Mapping[str, Any]) -> str:
    """The devices a command did not reach, with why: ``"phone-2 (TIMEOUT)"``, or ""."""
    outcomes = command.get("outcomes") or {}
    return ", ".join(f"{device} ({o.get('error') or o.get('status')})"
                     for device, o in outcomes.items() if o.get("status") != "SUCCESS")


class RecordPanel(Panel):
    """A large Record / Stop toggle for every device, with the elapsed time and the take's name.

    Parameters
    ----------
    lab : Controller
        The lab to drive.
    **kwargs
        Passed to `Panel`.

    Attributes
    ----------
    button : ipywidgets.Button
        Record (when idle) or Stop (while a take runs).
    elapsed : ipywidgets.HTML
        Time since the running take started (``0:00`` when idle).
    take_name : ipywidgets.Text
        The take's name: used when Record is clicked, and renames the running or last
        take when edited then (Enter or leaving the box).
    who : ipywidgets.HTML
        The devices that will take part: ready, waiting for approval, offline.
    take_id : str or None
        The running take, or the last one this panel saw.
    recording : bool
        Whether a take is running.
    """

    def __init__(self, lab: Controller, **kwargs: Any) -> None:
        self.button = widgets.Button(description="● Record", button_style="danger",
                                     tooltip="Start recording on every ready device",
                                     layout=widgets.Layout(width="180px", height="56px"))
        self.button.add_class(_BUTTON_CSS)
        self.elapsed = widgets.HTML("<span style='font-size:28px;font-variant-numeric:"
                                    "tabular-nums'>0:00</span>")
        self.take_name = widgets.Text(placeholder="Name this take (optional)",
                                      description="Take", continuous_update=False,
                                      layout=widgets.Layout(width="320px"))
        self.who = widgets.HTML()
        self.take_id: str | None = None
        self.recording = False
        self._started_at: float | None = None  # the take's start, server time
        self._offset = 0.0  # server time minus ours, from the take.started event
        self._ticker: asyncio.Task[None] | None = None
        style = widgets.HTML("<style>.vocalink-record-button{font-size:20px;font-weight:bold;"
                             "border-radius:28px}.vocalink-record-row{gap:16px}</style>")
        row = widgets.HBox([self.button, self.elapsed, self.take_name],
                           layout=widgets.Layout(align_items="center",
                                                 flex_flow="row wrap"))
        row.add_class("vocalink-record-row")
        super().__init__(lab, [style, row, self.who], **kwargs)
        self.button.on_click(lambda _: self.toggle())
        self.take_name.observe(self._on_name, "value")
        who = self._coalesce(self._show_who)
        self._listen(Topic.of_family("device"), who)
        self._listen((Topic.SERVER_PAIRING.value, Topic.LAB_REFRESHED.value), who)
        self._listen((Topic.TAKE_STARTED.value, Topic.TAKE_STOPPED.value), self._on_take)
        self._adopt_running_take()
        self._show_who()

    # -- state ---------------------------------------------------------------------------------

    def _adopt_running_take(self) -> None:
        """A take already running when the panel is built (the page was reloaded)."""
        running = [t for t in self.lab.take_list()
                   if t.get("started_at") and not t.get("stopped_at")]
        if running:
            take = running[0]
            self._set_recording(str(take["id"]), float(take["started_at"]), take.get("name"))

    def _on_take(self, topic: str, data: Mapping[str, Any]) -> None:
        take_id = str(data.get("take_id") or "")
        if topic == Topic.TAKE_STARTED.value:
            self._set_recording(take_id, float(data.get("at") or time.time()), None)
        elif take_id == self.take_id or self.take_id is None:
            self._set_idle(take_id)

    def _set_recording(self, take_id: str, started_at: float, name: str | None) -> None:
        self.take_id, self.recording = take_id, True
        self._started_at = started_at
        self._offset = 0.0
        if name:
            self.take_name.value = name
        self.button.description, self.button.button_style = "■ Stop", "warning"
        self.button.tooltip = "Stop the take on every device"
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick())
            self._tasks.add(self._ticker)
            self._ticker.add_done_callback(self._tasks.discard)
        self._show_elapsed()

    def _set_idle(self, take_id: str) -> None:
        if take_id:
            self.take_id = take_id
        self.recording = False
        self._show_elapsed()
        self._started_at = None
        self.button.description, self.button.button_style = "● Record", "danger"
        self.button.tooltip = "Start recording on every ready device"
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        while self.recording:
            self._show_elapsed()
            await asyncio.sleep(TICK_S)

    def elapsed_s(self) -> float:
        """Seconds since the running take started (0 when idle)."""
        if self._started_at is None:
            return 0.0
        return max(0.0, time.time() - self._started_at)

    def _show_elapsed(self) -> None:
        text = format_elapsed(self.elapsed_s())
        colour = "#c62828" if self.recording else "#424242"
        value = (f"<span style='font-size:28px;font-variant-numeric:tabular-nums;color:"
                 f"{colour}'>{'● ' if self.recording else ''}{text}</span>")
        if self.elapsed.value != value:
            self.elapsed.value = value

    def _show_who(self) -> None:
        groups = readiness(self.lab.device_list())

        def names(items: list[str]) -> str:
            shown = ", ".join(html.escape(n) for n in items[:6])
            return shown + (f" and {len(items) - 6} more" if len(items) > 6 else "")

        parts = [f"<b style='color:#2e7d32'>{len(groups['ready'])} ready</b>"
                 + (f": {names(groups['ready'])}" if groups["ready"] else "")]
        if groups["pending"]:
            parts.append(f"<b style='color:#ef6c00'>{len(groups['pending'])} waiting for "
                         f"approval</b> (Devices tab): {names(groups['pending'])}")
        if groups["offline"]:
            parts.append(f"<span style='color:#757575'>{len(groups['offline'])} offline: "
                         f"{names(groups['offline'])}</span>")
        value = (" · ".join(parts) if any(groups.values()) else
                 "<i>No device yet: open the server's address on a phone (see the Server "
                 "tab), or run <code>vocalink device</code>.</i>")
        if self.who.value != value:
            self.who.value = value

    # -- actions -------------------------------------------------------------------------------

    def toggle(self) -> None:
        """Record if idle, Stop if a take runs."""
        if self.recording:
            self.stop()
        else:
            self.record()

    def record(self) -> None:
        """Start a take on every ready device, named from `take_name` if it has a name."""
        if not readiness(self.lab.device_list())["ready"]:
            self.report("No device is ready to record: connect one first (Devices tab)",
                        "error")
            return
        name = self.take_name.value.strip()

        async def start() -> dict[str, Any]:
            command = await self.lab.start_recording()
            take_id = str(command.get("take_id") or "")
            if take_id and name:
                await self.lab.describe_take(take_id, name=name)
            return command

        def started(command: dict[str, Any]) -> None:
            failed = failures(command)
            self.report(f"Recording take {command.get('take_id')}"
                        + (f"; not started on {failed}" if failed else ""),
                        "error" if failed else "ok")

        self.run(start(), action="Record", on_done=started)

    def stop(self) -> None:
        """Stop the take on every device; the files upload by themselves."""
        take_id = self.take_id

        def stopped(command: dict[str, Any]) -> None:
            failed = failures(command)
            self.report(f"Stopped take {take_id}; the files are uploading"
                        + (f"; not stopped on {failed}" if failed else ""),
                        "error" if failed else "ok")

        self.run(self.lab.stop_recording(), action="Stop", on_done=stopped)

    def _on_name(self, change: Mapping[str, Any]) -> None:
        name = str(change["new"]).strip()
        take_id = self.take_id
        if not name or take_id is None:
            return  # used when Record is clicked
        self.run(self.lab.describe_take(take_id, name=name), action="Rename",
                 on_done=lambda _: self.report(f"Take {take_id} is now “{name}”", "ok"))
