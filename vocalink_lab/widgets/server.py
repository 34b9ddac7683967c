"""`ServerPanel`: the server's name (rename it), URL, a QR code for phones, mDNS state."""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..protocol.events import Topic
from .panel import Panel
from .render import qr_png, render_discovery

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["ServerPanel", "device_url"]


def device_url(url: str, addresses: Sequence[str] | None = None) -> str:
    """The URL a phone on the LAN can open: a loopback host is swapped for a LAN address.

    Parameters
    ----------
    url : str
        The server's URL as the Lab knows it (``http://127.0.0.1:8765`` when it
        listens on every interface).
    addresses : sequence of str, optional
        The server's addresses (``lab.info["addresses"]``), LAN ones first.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return url
    lan = [a for a in addresses or () if not a.startswith("127.") and ":" not in a]
    if not lan:
        return url
    netloc = lan[0] + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class ServerPanel(Panel):
    """The server: its name (renamed live), URL, QR code for phones, and mDNS state.

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
        The server's URL, and the one phones should open.
    qr : ipywidgets.Image
        A QR code (PNG) of the URL phones should open.
    discovery_label : ipywidgets.HTML
        mDNS advertising state.
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
        self.qr = widgets.Image(format="png", layout=widgets.Layout(width="180px"))
        self._qr_text = ""
        info = widgets.VBox([self.name_label, self.url_label, self.discovery_label,
                             widgets.HBox([self.name_input, self.rename_button])])
        super().__init__(lab, [widgets.HBox([info, self.qr])], **kwargs)
        self.rename_button.on_click(lambda _: self.rename())
        self._listen((Topic.SERVER_RENAMED, Topic.SERVER_DISCOVERY, Topic.LAB_REFRESHED),
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

    def refresh(self) -> None:
        """Redraw from the Lab's current state."""
        info = self.lab.info
        self.name_label.value = f"<b style='font-size:larger'>{html.escape(self.lab.name)}</b>"
        phone = device_url(self.lab.url, info.get("addresses"))
        link = (f"<a href='{html.escape(self.lab.url)}' target='_blank'>"
                f"<code>{html.escape(self.lab.url)}</code></a>")
        if phone != self.lab.url:
            link += f" · phones: <code>{html.escape(phone)}</code>"
        self.url_label.value = link
        self.discovery_label.value = render_discovery(info.get("discovery") or {})
        if phone != self._qr_text:
            self.qr.value = qr_png(phone)
            self._qr_text = phone

    def _on_event(self, topic: str, data: Mapping[str, Any]) -> None:
        # The server publishes discovery's state as it changes (registration ends about
        # 1.2 s after start-up): the mirror holds it, so there is nothing to poll.
        if topic == Topic.SERVER_RENAMED and data.get("name") and not self.busy:
            self.name_input.value = str(data["name"])
        self.refresh()
