"""`ServerPanel`: the server's name (rename it), URL, mDNS state, how devices join.

How devices join: a QR code of the phone link (the recorder page over HTTPS, with the join
code, and the CA's pin in its fragment), the join code and the agent's command line; or a
warning that authentication is off.

The controller token is never shown: notebook outputs are saved and shared, and the
token lets anyone who reads it control the server. The join code is shown because it is
meant to be read in the room, is short-lived, and only lets a device record.
"""

from __future__ import annotations

import asyncio
import html
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..links import device_url, join_command, phone_link, trust_url
from ..protocol.events import Topic
from .panel import Panel
from .render import qr_png, render_discovery

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["OPEN_WARNING", "ServerPanel", "device_url", "join_command", "phone_link",
           "trust_url", "validity"]

#: What the panel says when authentication is off.
OPEN_WARNING = "authentication is off: anyone on the network may control this server"


def validity(expires_at: float | None, now: float) -> str:
    """How long a join code stays valid, in words: ``valid 14 min``, or ``expired``.

    Parameters
    ----------
    expires_at : float or None
        When the code expires, in seconds since 1970 (``None``: unknown).
    now : float
        The time now, on the same clock.
    """
    if expires_at is None:
        return ""
    remaining = expires_at - now
    if remaining <= 0:
        return "expired"
    # Rounded up: a 15-minute code reads "valid 15 min" when it is made, and its last
    # minute "valid 1 min", so "expired" is never preceded by "valid 0 min".
    return f"valid {math.ceil(remaining / 60)} min"


def _caption(text: str) -> widgets.HTML:
    return widgets.HTML(f"<div style='text-align:center;color:#757575;font-size:smaller'>"
                        f"{html.escape(text)}</div>")


class ServerPanel(Panel):
    """The server: its name (renamed live), URL, QR code for phones, mDNS state, pairing.

    The QR code is the phone link (`phone_link`): scanned, it opens the recorder page
    over HTTPS, pairs with the join code while that is valid, and carries the CA's pin.
    When devices must pair (``lab.pairing["required"]``), the join code shows with how
    long it stays valid, the ``vocalink device --join`` command line, and a New code
    button; when authentication is off, one line says so. The controller token is never
    shown.

    Parameters
    ----------
    lab : Controller
        The lab whose server to show.
    **kwargs
        Passed to `ipywidgets.VBox`.

    Attributes
    ----------
    name_input : ipywidgets.Text
        The name to rename the server to.
    rename_button : ipywidgets.Button
        Calls ``lab.rename`` with `name_input`'s value.
    name_label : ipywidgets.HTML
        The name in use (it can differ from the one asked for: "Studio (2)").
    url_label : ipywidgets.HTML
        The server's URL, the phone link, and the page that says how to trust the CA.
    qr : ipywidgets.Image
        A QR code (PNG) of the phone link.
    phone_link : str
        What the QR code holds.
    discovery_label : ipywidgets.HTML
        mDNS advertising state.
    access_label : ipywidgets.HTML
        The join code and how long it stays valid; or, when authentication is off, a
        warning that says so.
    join_command_label : ipywidgets.HTML
        The command line that pairs a device with the join code.
    new_code_button : ipywidgets.Button
        Calls ``lab.new_join_code`` (the old code stops working at once).
    join_code : str or None
        The join code shown (``None`` when authentication is off).
    """

    def __init__(self, lab: Controller, **kwargs: Any) -> None:
        self.name_input = widgets.Text(value=lab.name, description="Name",
                                       placeholder="server name",
                                       layout=widgets.Layout(width="320px"))
        self.rename_button = widgets.Button(description="Rename", tooltip="Rename the server "
                                            "live (devices and mDNS follow)")
        self.name_label = widgets.HTML()
        self.url_label = widgets.HTML()
        self.discovery_label = widgets.HTML()
        self.qr = widgets.Image(format="png", layout=widgets.Layout(width="200px"))
        self.phone_link = ""
        self._qr_text = ""
        self.access_label = widgets.HTML()
        self.join_command_label = widgets.HTML()
        self.new_code_button = widgets.Button(
            description="New code", icon="refresh",
            tooltip="Make a new join code; the one shown stops working at once")
        self.join_code: str | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._join_box = widgets.VBox([self.join_command_label, self.new_code_button])
        self._qr_caption = _caption("scan with a phone to record")
        info = widgets.VBox([self.name_label, self.url_label, self.discovery_label,
                             widgets.HBox([self.name_input, self.rename_button]),
                             self.access_label, self._join_box])
        qr_box = widgets.VBox([self.qr, self._qr_caption])
        super().__init__(lab, [widgets.HBox([info, qr_box])], **kwargs)
        self.rename_button.on_click(lambda _: self.rename())
        self.new_code_button.on_click(lambda _: self.new_join_code())
        self._listen((Topic.SERVER_RENAMED, Topic.SERVER_DISCOVERY, Topic.SERVER_PAIRING,
                      Topic.LAB_REFRESHED),
                     self._on_event)
        self.refresh()

    def rename(self, name: str | None = None) -> None:
        """Rename the server (to ``name``, or to what `name_input` holds); returns at once."""
        wanted = (self.name_input.value if name is None else name).strip()

        def done(in_use: str) -> None:
            self.name_input.value = in_use
            self.refresh()
            note = "" if in_use == wanted else f" ('{wanted}' is taken on the network)"
            self.report(f"Renamed to '{in_use}'{note}", "ok")

        self.run(self.lab.rename(wanted), action="Rename", on_done=done)

    def new_join_code(self) -> None:
        """Replace the join code (the one shown stops working at once); returns at once."""

        def done(code: str) -> None:
            self.refresh()
            self.report(f"New join code {code}; the previous one no longer works", "ok")

        self.run(self.lab.new_join_code(), action="New code", on_done=done)

    def refresh(self) -> None:
        """Redraw from the Lab's current state."""
        info = self.lab.info
        self.name_label.value = f"<b style='font-size:larger'>{html.escape(self.lab.name)}</b>"
        phone = device_url(self.lab.url, info.get("addresses"))
        link = (f"<a href='{html.escape(self.lab.url)}' target='_blank'>"
                f"<code>{html.escape(self.lab.url)}</code></a>")
        if phone != self.lab.url:
            link += f" · devices: <code>{html.escape(phone)}</code>"
        trust = trust_url(self.lab.url, info)
        if trust is not None:
            link += (f"<br>phones trust this server once at <code>{html.escape(trust)}</code>"
                     f" (its CA: <code>{html.escape(str(info['tls']['ca_fingerprint']))}"
                     f"</code>)")
        self.url_label.value = link
        self.discovery_label.value = render_discovery(info.get("discovery") or {})
        self._draw_access(info, phone)

    def _draw_access(self, info: Mapping[str, Any], phone: str) -> None:
        """The join code, its QR code and command line; or the warning that auth is off."""
        pairing = self.lab.pairing
        auth = info.get("auth") or {}
        required = pairing.get("required", auth.get("required"))
        code = pairing.get("join_code") if required else None
        expires_at = pairing.get("join_code_expires_at")
        now = time.time()
        # An expired code is refused by the server: show it as expired, not scannable.
        live = bool(code) and (expires_at is None or float(expires_at) > now)
        self.join_code = str(code) if code else None
        if required is None:  # a server from before pairing: nothing to say
            self.access_label.value = ""
        elif not required:
            self.access_label.value = (f'<span style="color:#e65100;font-weight:bold">'
                                       f'{html.escape(OPEN_WARNING)}</span>')
        elif code:
            when = validity(None if expires_at is None else float(expires_at), now)
            shown = html.escape(str(code))
            text = (f"Join code <b style='font-size:larger'><code>{shown}</code></b>"
                    if live else f"Join code <s><code>{shown}</code></s>")
            if when:
                style = "color:#757575" if live else "color:#c62828;font-weight:bold"
                text += f" · <span style='{style}'>{html.escape(when)}</span>"
            if not live:
                text += " · press <b>New code</b> for one that works"
            self.access_label.value = text
        else:
            self.access_label.value = "Join code: unknown; press <b>New code</b>"
        self.join_command_label.value = (
            f"<code>{html.escape(join_command(str(code), phone))}</code>" if live else "")
        self._join_box.layout.display = "" if required else "none"
        # An expired code is left out of the link: the phone would wait for approval.
        self.phone_link = phone_link(self.lab.url, info, str(code) if live else None)
        if self.phone_link != self._qr_text:
            self.qr.value = qr_png(self.phone_link)
            self._qr_text = self.phone_link
        self._qr_caption.value = _caption(
            "scan with a phone to record" if live or not required
            else "scan with a phone (it waits for approval)").value
        self._schedule_tick(float(expires_at) - now if live and expires_at is not None
                            else None)

    def _schedule_tick(self, remaining: float | None) -> None:
        """Redraw when the minutes left change (a local clock: no request is made)."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if remaining is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside the loop: the next event redraws it
            return
        # The instant the rounded-up minutes drop by one (or the code expires), plus a
        # little, so that the redraw lands on the far side of the boundary.
        delay = remaining - (math.ceil(remaining / 60) - 1) * 60 + 0.05
        self._tick = loop.call_later(delay, self.refresh)

    def _on_event(self, topic: str, data: Mapping[str, Any]) -> None:
        # The server publishes discovery's state as it changes (registration ends about
        # 1.2 s after start-up): the mirror holds it, so there is nothing to poll.
        if topic == Topic.SERVER_RENAMED and data.get("name") and not self.busy:
            self.name_input.value = str(data["name"])
        self.refresh()

    def close(self) -> None:
        """Stop the validity countdown, then close like every panel."""
        tick = getattr(self, "_tick", None)  # None, too, when closed before it was built
        if tick is not None:
            tick.cancel()
            self._tick = None
        super().close()
