"""`TakesPanel`: the sessions as they were recorded — one row per take, and what to do with one.

A take is what a session is recorded in: one START to every device, one file per
device. The panel lists the takes, newest first (time, name, duration, devices, start
skew and its bound, notes); selecting one shows its recordings and the actions a lab
assistant needs on the whole take in one click: Merge (aligned multitrack), Clean
(every original through the auto enhancer), Transcribe (one transcript of the take, each
line by the device that heard it loudest), Download (a ZIP of the take's files and its
merged multitrack, streamed by the server), rename, notes, and Delete (asks first).
Merge, Clean and Transcribe start jobs and return at once: their progress shows in the
Jobs strip. A transcribed take shows its transcript under its recordings, with links to
download it as WebVTT, SRT or CSV.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..protocol.events import Topic
from .panel import Panel, empty_state
from .transcripts import transcript_html, transcript_links

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["TakesPanel", "take_label", "take_recordings_html"]

_NO_TAKE = empty_state("No take yet: press Record above, or start one from a notebook.")
_PICK = empty_state("Select a take to see its recordings, merge, clean, transcribe, "
                    "download or delete it.")


def _when(instant: float | None) -> str:
    if instant is None:
        return "time unknown"
    return dt.datetime.fromtimestamp(instant, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _skew(take: Mapping[str, Any]) -> str:
    skew = take.get("skew") or {}
    if skew.get("flagged"):
        bound = skew.get("bound_ms")
        return "⚠ skew unknown" if bound is None else f"⚠ skew ≤ {bound:.2f} ms"
    if skew.get("skew_ms") is None:
        return ""
    bound = skew.get("bound_ms")
    return f"skew {skew['skew_ms']:.2f} ms" + (f" (≤ {bound:.2f})" if bound is not None else "")


def take_label(take: Mapping[str, Any]) -> str:
    """One line for a take: ``2026-12-07 10:02:11 UTC · Interview 3 · 0:42 · 3 devices``."""
    devices = len(take.get("devices") or ())
    parts = [_when(take.get("started_at")), str(take.get("name") or take["id"]),
             "recording…" if take.get("stopped_at") is None else _duration(take.get("duration_s")),
             f"{devices} device{'s' * (devices != 1)}",
             f"{take.get('recordings', 0)} file{'s' * (take.get('recordings', 0) != 1)}"]
    skew = _skew(take)
    if skew:
        parts.append(skew)
    notes = " ".join(str(take.get("notes") or "").split())
    if notes:
        parts.append(f"“{notes[:40]}{'…' if len(notes) > 40 else ''}”")
    return " · ".join(parts)


def take_recordings_html(recordings: Sequence[Mapping[str, Any]]) -> str:
    """The take's recordings as a small table: kind, device, duration, format, size, id."""
    if not recordings:
        return "<i>No file yet: the devices upload them when the take stops.</i>"
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r.get("kind") or "", r.get("device_name") or r.get("device_id") or "",
            "" if r.get("duration_s") is None else f"{float(r['duration_s']):.1f} s",
            r.get("format") or "",
            "" if r.get("bytes") is None else f"{int(r['bytes']) / 1024:.0f} KiB",
            r.get("id") or "")) + "</tr>"
        for r in recordings)
    head = "".join(f"<th style='text-align:left;padding-right:12px'>{h}</th>" for h in
                   ("kind", "device", "duration", "format", "size", "id"))
    return f"<table style='font-size:13px'><tr>{head}</tr>{rows}</table>"


class TakesPanel(Panel):
    """Every take, newest first; merge, clean, download, rename, annotate or delete one.

    Parameters
    ----------
    lab : Controller
        Whose takes to show.
    **kwargs
        Passed to `Panel`.

    Attributes
    ----------
    takes : ipywidgets.Select
        One row per take (`take_label`); its value is the selected take's id.
    detail : ipywidgets.VBox
        The selected take: name, notes, its recordings and the actions.
    name, notes : ipywidgets.Text, ipywidgets.Textarea
        The selected take's name and notes; Save writes them.
    recordings : ipywidgets.HTML
        Its recordings (`take_recordings_html`).
    merge_button, clean_button, transcribe_button, delete_button, save_button : Button
    download : ipywidgets.HTML
        The link to the take's ZIP on the server.
    transcript : ipywidgets.HTML
        The selected take's transcript (`transcript_html`), once it has one.
    transcript_links : ipywidgets.HTML
        Its downloads: WebVTT, SRT, CSV (`transcript_links`).
    confirm_box : ipywidgets.HBox
        Shown after Delete: Confirm delete / Keep it.
    """

    def __init__(self, lab: Controller, **kwargs: Any) -> None:
        self.empty = widgets.HTML(_NO_TAKE)
        self.takes = widgets.Select(options=[], rows=8,
                                    layout=widgets.Layout(width="100%"))
        self.hint = widgets.HTML(_PICK)
        self.name = widgets.Text(description="Name", layout=widgets.Layout(width="360px"))
        self.notes = widgets.Textarea(description="Notes", rows=2,
                                      layout=widgets.Layout(width="100%"))
        self.save_button = widgets.Button(description="Save name and notes", icon="save",
                                          layout=widgets.Layout(width="auto"))
        self.recordings = widgets.HTML()
        self.merge_button = widgets.Button(description="Merge", icon="clone",
                                           button_style="primary",
                                           tooltip="One aligned multitrack file of the take")
        self.clean_button = widgets.Button(description="Clean", icon="magic",
                                           tooltip="Enhance every track with the auto mode")
        self.transcribe_button = widgets.Button(
            description="Transcribe", icon="comment",
            tooltip="Who said what, and when: one transcript of the take, by device")
        self.download = widgets.HTML()
        self.transcript = widgets.HTML()
        self.transcript_links = widgets.HTML()
        self._transcript_shown: tuple[str, Any] | None = None
        self.delete_button = widgets.Button(description="Delete take…", icon="trash",
                                            button_style="danger")
        self.confirm_label = widgets.HTML()
        self.confirm_button = widgets.Button(description="Confirm delete", button_style="danger")
        self.keep_button = widgets.Button(description="Keep it")
        self.confirm_box = widgets.HBox([self.confirm_label, self.confirm_button,
                                         self.keep_button],
                                        layout=widgets.Layout(display="none",
                                                              align_items="center"))
        actions = widgets.HBox([self.merge_button, self.clean_button, self.transcribe_button,
                                self.download, self.delete_button],
                               layout=widgets.Layout(align_items="center",
                                                     flex_flow="row wrap"))
        self.detail = widgets.VBox([widgets.HBox([self.name, self.save_button],
                                                 ),
                                    self.notes, self.recordings, actions, self.confirm_box,
                                    self.transcript_links, self.transcript],
                                   layout=widgets.Layout(display="none"))
        for box in (actions, self.confirm_box, self.detail.children[0]):
            box.add_class("vocalink-gap")
        style = widgets.HTML("<style>.vocalink-gap{gap:8px}.vocalink-takes select"
                             "{font-family:monospace}</style>")
        super().__init__(lab, [style, self.empty, self.takes, self.hint, self.detail], **kwargs)
        self.add_class("vocalink-takes")
        self.takes.observe(lambda _: self._show_selected(), "value")
        self.save_button.on_click(lambda _: self.save())
        self.merge_button.on_click(lambda _: self.merge())
        self.clean_button.on_click(lambda _: self.clean())
        self.transcribe_button.on_click(lambda _: self.transcribe())
        self.delete_button.on_click(lambda _: self.ask_delete())
        self.confirm_button.on_click(lambda _: self.confirm_delete())
        self.keep_button.on_click(lambda _: self._hide_confirm())
        self._listen((Topic.LAB_TAKES.value, Topic.LAB_REFRESHED.value), lambda *_: self.refresh())
        self._listen(Topic.of_family("recording"), self._coalesce(self._show_files))
        self.refresh()

    # -- view ----------------------------------------------------------------------------------

    @property
    def selected(self) -> str | None:
        """The selected take's id."""
        value = self.takes.value
        return None if value is None else str(value)

    def select(self, take_id: str | None) -> None:
        """Select a take by id (None: none)."""
        self.takes.value = take_id

    def _take(self, take_id: str | None) -> dict[str, Any] | None:
        return next((t for t in self.lab.take_list() if str(t["id"]) == take_id), None)

    def refresh(self) -> None:
        """Show the Lab's takes as last known (events call this)."""
        takes = self.lab.take_list()
        options = tuple((take_label(t), str(t["id"])) for t in takes)
        if tuple(self.takes.options) != options:
            keep = self.selected
            self.takes.options = options
            if keep is not None and any(v == keep for _, v in options):
                self.takes.value = keep
        self.empty.layout.display = "none" if takes else "block"
        self.takes.layout.display = "flex" if takes else "none"
        self._show_selected(keep=True)

    def _show_files(self) -> None:
        self._show_selected(keep=True)

    def _show_selected(self, keep: bool = False) -> None:
        take = self._take(self.selected)
        self.detail.layout.display = "flex" if take else "none"
        self.hint.layout.display = "none" if take or not self.takes.options else "block"
        if take is None:
            return
        take_id = str(take["id"])
        if not keep or not self.name.value:
            self.name.value = str(take.get("name") or "")
        if not keep or not self.notes.value:
            self.notes.value = str(take.get("notes") or "")
        files = [r for r in self.lab.recording_list() if r.get("take_id") == take_id]
        files.sort(key=lambda r: (r.get("kind") != "original", str(r.get("device_name") or "")))
        self.recordings.value = take_recordings_html(files)
        url = html.escape(self.lab.browser_url(f"/api/takes/{take_id}/archive"))
        self.download.value = (f"<a href='{url}' download target='_blank' "
                               f"class='vocalink-download-take'>⤓ Download ZIP</a>"
                               if files else "")
        self._show_transcript(take)
        if not keep:
            self._hide_confirm()

    def _show_transcript(self, take: Mapping[str, Any]) -> None:
        """The take's transcript and its downloads, fetched once per version of it."""
        take_id = str(take["id"])
        summary = take.get("transcript")
        if not summary:
            self._transcript_shown = None
            self.transcript_links.value = ""
            self.transcript.value = ""
            return
        version = (take_id, summary.get("created_at"))
        if self._transcript_shown == version:
            return
        self._transcript_shown = version
        self.transcript_links.value = "<b>Transcript</b>: " + transcript_links(
            self.lab, take_id=take_id)
        self.transcript.value = "<i>loading the transcript…</i>"

        async def load() -> dict[str, Any]:
            data: dict[str, Any] = await self.lab.transcript(take_id=take_id, format="json")
            return data

        def show(data: dict[str, Any]) -> None:
            if self.selected == take_id:
                self.transcript.value = transcript_html(data)

        self._spawn(load(), action="Transcript", on_done=show)

    # -- actions -------------------------------------------------------------------------------

    def _need(self, what: str) -> str | None:
        take_id = self.selected
        if take_id is None:
            self.report(f"Select a take to {what}", "error")
        return take_id

    def _originals(self, take_id: str) -> list[str]:
        return [str(r["id"]) for r in self.lab.recording_list()
                if r.get("take_id") == take_id and r.get("kind") == "original"]

    def save(self) -> None:
        """Write the name and notes boxes to the selected take."""
        take_id = self._need("rename")
        if take_id is None:
            return
        self.run(self.lab.describe_take(take_id, name=self.name.value.strip(),
                                        notes=self.notes.value),
                 action="Save", on_done=lambda _: self.report(f"Saved {take_id}", "ok"))

    def merge(self) -> None:
        """Merge the take into one aligned multitrack recording (a job)."""
        take_id = self._need("merge")
        if take_id is None:
            return
        if len(self._originals(take_id)) < 2:
            self.report("This take has fewer than 2 recordings: nothing to merge", "error")
            return
        self.run(self.lab.submit_merge(take_id=take_id), action="Merge",
                 on_done=self._started("Merging", take_id))

    def clean(self) -> None:
        """Enhance every original recording of the take with the auto mode (one job each)."""
        take_id = self._need("clean")
        if take_id is None:
            return
        ids = self._originals(take_id)
        if not ids:
            self.report("This take has no recording yet", "error")
            return

        async def submit() -> list[dict[str, Any]]:
            return [await self.lab.submit_enhance(rid, "auto") for rid in ids]

        self.run(submit(), action="Clean", on_done=self._started("Cleaning", take_id))

    def transcribe(self) -> None:
        """Transcribe the take: its transcript shows here when the job ends."""
        take_id = self._need("transcribe")
        if take_id is None:
            return
        if not self._originals(take_id):
            self.report("This take has no recording yet", "error")
            return
        self.run(self.lab.submit_transcribe(take_id=take_id), action="Transcribe",
                 on_done=self._started("Transcribing", take_id))

    def _started(self, doing: str, take_id: str) -> Callable[[object], None]:
        def done(_: object) -> None:
            self.report(f"{doing} {take_id}: see the progress under Jobs", "ok")
        return done

    def ask_delete(self) -> None:
        """Ask to confirm deleting the selected take and its files."""
        take_id = self._need("delete")
        if take_id is None:
            return
        take = self._take(take_id) or {}
        n = int(take.get("recordings") or 0)
        name = html.escape(str(take.get("name") or take_id))
        self.confirm_label.value = (f"<b>Delete take {name} and its {n} file{'s' * (n != 1)}?"
                                    "</b> This cannot be undone.")
        self.confirm_box.layout.display = "flex"

    def confirm_delete(self) -> None:
        """Delete the take asked about (its recordings too)."""
        take_id = self.selected
        self._hide_confirm()
        if take_id is None:
            return
        self.run(self.lab.delete_take(take_id), action="Delete",
                 on_done=lambda _: self.report(f"Deleted take {take_id}", "ok"))

    def _hide_confirm(self) -> None:
        self.confirm_box.layout.display = "none"
