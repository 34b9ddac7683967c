"""`WaveformPanel`: waveform and spectrogram of recordings, zoomable, drawn off the loop."""

from __future__ import annotations

import asyncio
import dataclasses
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .panel import Panel, empty_state
from .render import figure_png

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["MAX_SPECTROGRAM_S", "MAX_TRACKS", "WaveformPanel", "render_views"]

#: At most this many recordings are drawn at once (the first selected ones).
MAX_TRACKS = 6
#: A spectrogram is drawn for windows up to this long (zoom in for longer files).
MAX_SPECTROGRAM_S = 600.0
#: What the panel says while nothing is selected.
EMPTY_MESSAGE = "Select a recording to see its waveform"


def render_views(tracks: Sequence[tuple[Path, str]], start_s: float, end_s: float | None, *,
                 spectrogram: bool = True, width: int = 1600,
                 dpi: int = 80) -> tuple[bytes, bytes | None]:
    """Waveform (and spectrogram) PNGs of a time window of each file, one row per file.

    Blocking (file reads, DSP, rendering): run it in a thread. The whole of a file
    is read block by block (`~vocalink_lab.audio.analysis.envelope_file`); a window
    reads only its own samples.

    Parameters
    ----------
    tracks : sequence of (Path, str)
        Files and their titles.
    start_s, end_s : float
        The window in seconds (``end_s=None``: to the end of each file).
    spectrogram : bool
        Also draw spectrograms (not for windows over `MAX_SPECTROGRAM_S`).
    width : int
        Envelope columns.
    dpi : int
        PNG resolution.

    Returns
    -------
    (bytes, bytes or None)
        The waveform PNG and the spectrogram PNG (None when not drawn).
    """
    from matplotlib.figure import Figure

    from ..audio import analysis, load, probe

    n = max(1, len(tracks))
    wave_fig = Figure(figsize=(10, 0.4 + 1.5 * n), layout="constrained")
    wave_axes = wave_fig.subplots(n, 1, squeeze=False, sharex=True)[:, 0]
    spec_fig = Figure(figsize=(10, 0.4 + 2.0 * n), layout="constrained") if spectrogram else None
    spec_axes = (spec_fig.subplots(n, 1, squeeze=False, sharex=True)[:, 0]
                 if spec_fig is not None else [None] * n)
    for (path, title), wave_ax, spec_ax in zip(tracks, wave_axes, spec_axes, strict=False):
        duration = probe(path).duration_s
        end = duration if end_s is None else min(end_s, duration)
        start = max(0.0, min(start_s, end))
        whole = start <= 0 and end >= duration
        audio = None
        if whole and (spec_ax is None or duration > MAX_SPECTROGRAM_S):
            env = analysis.envelope_file(path, width=width)
        else:
            audio, sr = load(path, start_s=start, duration_s=end - start)
            env = analysis.envelope(audio, sr, width=width, start_s=start)
        analysis.plot_waveform(env, ax=wave_ax, title=title)
        if spec_ax is None:
            continue
        if audio is None:
            spec_ax.text(0.5, 0.5, f"zoom in to {MAX_SPECTROGRAM_S:g} s or less for a "
                         "spectrogram", ha="center", va="center", transform=spec_ax.transAxes)
            spec_ax.set_title(title)
            continue
        spec = analysis.spectrogram(audio, sr)
        spec = dataclasses.replace(spec, times=spec.times + start)
        analysis.plot_spectrogram(spec, ax=spec_ax, title=title)
    wave_png = figure_png(wave_fig, dpi=dpi)
    spec_png = figure_png(spec_fig, dpi=dpi) if spec_fig is not None else None
    return wave_png, spec_png


class WaveformPanel(Panel):
    """Waveform and spectrogram of the selected recordings, with a time window to zoom.

    Drawing happens in a worker thread and lands in `Image` widgets (PNG), so it
    works in Voila and never blocks the loop. A newer request supersedes one still
    drawing.

    Parameters
    ----------
    lab : Controller
        Where the recordings come from.
    recording_ids : sequence of str, optional
        What to show first.
    **kwargs
        Passed to `ipywidgets.VBox`.

    Attributes
    ----------
    recording_ids : list of str
        What is shown (at most `MAX_TRACKS`).
    window : ipywidgets.FloatRangeSlider
        The time window in seconds; moving it redraws.
    spectrogram_toggle : ipywidgets.Checkbox
        Draw spectrograms too.
    waveform_image, spectrogram_image : ipywidgets.Image
        The drawings (PNG). Each is on the page (in `drawings`) only while it holds
        one: an image without a picture shows as a broken-image icon.
    drawings : ipywidgets.VBox
        The images that hold a drawing.
    controls : ipywidgets.HBox
        The window, Whole file and spectrogram switch; hidden while nothing is shown.
    duration_s : float
        The longest shown recording's duration.
    """

    def __init__(self, lab: Controller, recording_ids: Sequence[str] = (), **kwargs: Any) -> None:
        self.recording_ids: list[str] = []
        self.duration_s = 0.0
        self._paths: list[tuple[Path, str]] = []
        self._generation = 0
        self._render_task: asyncio.Future[None] | None = None
        self._syncing = False
        self.title = widgets.HTML(empty_state(EMPTY_MESSAGE))
        self.window = widgets.FloatRangeSlider(
            value=(0.0, 1.0), min=0.0, max=1.0, step=0.01, description="Time (s)",
            continuous_update=False, readout_format=".2f",
            layout=widgets.Layout(width="80%"))
        self.whole_button = widgets.Button(description="Whole file",
                                           tooltip="Zoom out to the whole recording")
        self.spectrogram_toggle = widgets.Checkbox(value=True, description="spectrogram",
                                                   indent=False)
        self.waveform_image = widgets.Image(format="png", layout=widgets.Layout(width="100%"))
        self.spectrogram_image = widgets.Image(format="png",
                                               layout=widgets.Layout(width="100%"))
        self.drawings = widgets.VBox([], layout=widgets.Layout(width="100%"))
        self.controls = widgets.HBox(
            [self.window, self.whole_button, self.spectrogram_toggle],
            layout=widgets.Layout(display="none", flex_flow="row wrap", max_width="100%"))
        super().__init__(lab, [self.title, self.controls, self.drawings], **kwargs)
        self.window.observe(self._on_window, "value")
        self.whole_button.on_click(lambda _: self.zoom(0.0, self.duration_s))
        self.spectrogram_toggle.observe(lambda _: self.redraw(), "value")
        if recording_ids:
            self.show(recording_ids)

    def show(self, recording_ids: Sequence[str], start_s: float | None = None,
             end_s: float | None = None) -> asyncio.Future[None]:
        """Show these recordings (the whole of them, or ``start_s`` to ``end_s``).

        Returns the drawing task (await it, or `wait_idle`, to wait for the images).
        """
        self.recording_ids = list(dict.fromkeys(recording_ids))[:MAX_TRACKS]
        self._paths = []
        return self._draw(start_s, end_s, new=True)

    def zoom(self, start_s: float, end_s: float) -> asyncio.Future[None]:
        """Redraw the window ``start_s`` to ``end_s`` (seconds)."""
        return self._draw(start_s, end_s, new=False)

    def redraw(self) -> asyncio.Future[None]:
        """Draw the current window again."""
        start, end = self.window.value
        return self._draw(start, end, new=False)

    def _on_window(self, change: Mapping[str, Any]) -> None:
        if not self._syncing and self.recording_ids:
            start, end = change["new"]
            self._draw(start, end, new=False)

    def _draw(self, start_s: float | None, end_s: float | None, *, new: bool
              ) -> asyncio.Future[None]:
        self._generation += 1
        if self._render_task is not None and not self._render_task.done():
            self._render_task.cancel()  # its thread finishes; its images are dropped
        self._render_task = self._spawn(self._render(self._generation, start_s, end_s, new),
                                        action="Drawing")
        return self._render_task

    async def _render(self, generation: int, start_s: float | None, end_s: float | None,
                      new: bool) -> None:
        ids = list(self.recording_ids)
        if not ids:
            self._set_empty()
            self.report("")
            return
        self.report(f"Drawing {', '.join(ids)}…", "busy")
        try:
            await self._draw_now(generation, ids, start_s, end_s, new)
        except Exception:
            if new and generation == self._generation:
                self._set_empty()  # not the last selection's drawings under a new name
            raise

    def _set_empty(self) -> None:
        """The empty state: the message alone, no controls, no image."""
        self.title.value = empty_state(EMPTY_MESSAGE)
        self._set_images(b"", None)
        self.controls.layout.display = "none"

    def _set_images(self, wave: bytes, spec: bytes | None) -> None:
        """Set the drawings; an image without one leaves the page first (never broken)."""
        pairs = ((self.waveform_image, wave), (self.spectrogram_image, spec or b""))
        for image, png in pairs:  # a picture before the page shows the image,
            if png:
                image.value = png
        self.drawings.children = [image for image, png in pairs if png]
        for image, png in pairs:  # and off the page before it loses it
            if not png:
                image.value = b""

    async def _draw_now(self, generation: int, ids: list[str], start_s: float | None,
                        end_s: float | None, new: bool) -> None:
        if new or not self._paths:
            from ..audio import probe

            titles = self._titles(ids)
            paths = [await self.lab.path_of(rid) for rid in ids]
            infos = await asyncio.gather(*(asyncio.to_thread(probe, p) for p in paths))
            if generation != self._generation:
                return
            self._paths = [(p, titles[rid]) for p, rid in zip(paths, ids, strict=True)]
            self.duration_s = max(info.duration_s for info in infos)
        start = 0.0 if start_s is None else max(0.0, float(start_s))
        end = self.duration_s if end_s is None else min(float(end_s), self.duration_s)
        if end <= start:
            end = min(self.duration_s, start + 0.01) if start < self.duration_s else \
                self.duration_s
            start = max(0.0, end - 0.01)
        self._set_window(start, end)
        whole = start <= 0 and end >= self.duration_s
        wave, spec = await asyncio.to_thread(
            render_views, list(self._paths), start, None if whole else end,
            spectrogram=self.spectrogram_toggle.value)
        if generation != self._generation:
            return
        names = ", ".join(html.escape(t) for _, t in self._paths)
        self.title.value = (f"<b>{names}</b> — {start:.2f} s to {end:.2f} s "
                            f"of {self.duration_s:.2f} s")
        self._set_images(wave, spec)
        self.controls.layout.display = None
        self.report("")

    def _set_window(self, start: float, end: float) -> None:
        self._syncing = True
        try:
            top = max(self.duration_s, 0.01)
            with self.window.hold_trait_notifications():
                if top > self.window.min:
                    self.window.max = top
                self.window.value = (start, end)
        finally:
            self._syncing = False

    def _titles(self, ids: list[str]) -> dict[str, str]:
        wanted = set(ids)
        titles = {rid: rid for rid in ids}
        for row in self.lab.recording_list():
            if row["id"] in wanted:
                who = row.get("device_name") or row.get("kind") or ""
                titles[row["id"]] = f"{row['id']} — {who}" if who else row["id"]
        return titles
