"""EnhancePanel: presets fill the sliders, A/B preview of an excerpt, apply makes a recording."""

from __future__ import annotations

import html
import io
import wave

import pytest

from tests.support.wait import wait_until
from tests.widgets.conftest import SR, upload
from vocalink_lab.audio import synth
from vocalink_lab.audio.enhance import PRESETS
from vocalink_lab.lab import Lab
from vocalink_lab.widgets import EnhancePanel

pytestmark = pytest.mark.asyncio


def noisy_speech(seconds: float = 4.0):  # type: ignore[no-untyped-def]
    clean = synth.speech_like(seconds, SR, seed=3)
    return synth.mix_at_snr(clean, synth.noise(clean.size, kind="pink", seed=4), 5.0)


def wav_frames(value: object) -> int:
    with wave.open(io.BytesIO(bytes(value))) as w:  # type: ignore[call-overload]
        return w.getnframes()


async def test_preset_fills_the_controls_and_overrides_are_the_changes(lab: Lab) -> None:
    panel = EnhancePanel(lab)
    try:
        assert panel.preset.value == "auto" and panel.overrides() == {}
        assert panel.controls["prop_decrease"].disabled  # the auto mode decides it
        panel.preset.value = "strong"
        strong = PRESETS["strong"]
        assert panel.controls["stationary"].value is True
        assert panel.controls["highpass_hz"].value == strong.highpass_hz
        assert panel.controls["n_std_thresh_stationary"].value == strong.n_std_thresh_stationary
        assert not panel.controls["prop_decrease"].disabled
        assert panel.overrides() == {}
        panel.controls["prop_decrease"].value = 0.6
        panel.controls["hum"].value = "50 Hz"
        panel.controls["loudness_on"].value = True
        panel.controls["highpass_hz"].value = 0
        assert panel.overrides() == {"prop_decrease": 0.6, "hum": 50, "loudness_lufs": -23.0,
                                     "highpass_hz": None}
        assert panel.params().prop_decrease == 0.6
        panel.reset_button.click()
        assert panel.overrides() == {}
    finally:
        panel.close()


async def test_preview_then_apply(lab: Lab) -> None:
    await upload(lab, noisy_speech(4.0), "rec-noisy", device_id="phone-1")
    panel = EnhancePanel(lab)
    try:
        panel.preview_button.click()
        assert panel.message_kind == "error" and "recording" in panel.message

        # Before a preview: a hint, and no image or player on the page (nothing broken).
        assert panel.compare.layout.display == "none"
        assert "Preview an excerpt" in panel.compare_hint.value
        assert panel.before_image not in panel.compare.children
        panel.set_recording("rec-noisy")
        await panel.wait_idle(timeout=10)
        assert panel.duration_s == pytest.approx(4.0, abs=0.01)
        assert panel.excerpt.value == pytest.approx((0.0, 4.0), abs=0.01)
        panel.excerpt.value = (1.0, 3.0)
        panel.preset.value = "speech"
        panel.controls["loudness_lufs"].value = -20
        panel.preview_button.click()
        await panel.wait_idle(timeout=30)
        assert panel.message_kind == "ok", panel.message
        assert wav_frames(panel.before_audio.value) == 2 * SR
        assert wav_frames(panel.after_audio.value) == 2 * SR
        assert bytes(panel.before_audio.value) != bytes(panel.after_audio.value)
        assert bytes(panel.before_image.value).startswith(b"\x89PNG")
        assert bytes(panel.after_image.value).startswith(b"\x89PNG")
        assert bytes(panel.before_image.value) != bytes(panel.after_image.value)
        assert panel.before_image in panel.compare.children
        assert panel.compare.layout.display is None
        assert panel.compare_hint.layout.display == "none"
        assert panel.last_preview is not None
        assert panel.last_preview.report.params.loudness_lufs == -20
        assert "SNR estimate" in panel.report_html.value

        panel.apply_button.click()
        await panel.wait_idle(timeout=60)
        assert panel.message_kind == "ok", panel.message
        row = panel.last_applied
        assert row is not None and row["kind"] == "enhanced" and row["parents"] == ["rec-noisy"]
        assert row["params"]["preset"] == "speech"
        assert row["params"]["enhance"]["loudness_lufs"] == -20
        await wait_until(lambda: any(r["id"] == row["id"] for r in lab.recording_list()),
                         timeout=5)
    finally:
        panel.close()


async def test_bad_settings_and_bad_excerpts_are_one_line(lab: Lab) -> None:
    await upload(lab, noisy_speech(2.0), "rec-short")
    panel = EnhancePanel(lab, recording_id="rec-short")
    try:
        await panel.wait_idle(timeout=10)
        panel.excerpt.value = (1.0, 1.0)
        panel.preview()
        assert panel.message == "The excerpt is empty"
        panel.excerpt.value = (0.0, 2.0)
        panel.preset.value = "gentle"
        panel.controls["time_mask_smooth_ms"].value = 0
        panel.controls["freq_mask_smooth_hz"].value = 10  # finer than one FFT bin: invalid
        panel.preview()
        await panel.wait_idle(timeout=30)
        assert panel.message_kind == "error" and panel.message.startswith("Preview failed:")
        assert "\n" not in panel.message and "Traceback" not in panel.message

        panel.set_recording("rec-nope")
        await panel.wait_idle(timeout=10)
        assert panel.message_kind == "error" and "rec-nope" in panel.message
    finally:
        panel.close()


async def test_the_noise_reducer_is_chosen_and_the_gate_settings_follow(lab: Lab) -> None:
    await upload(lab, noisy_speech(3.0), "rec-dnn", device_id="phone-1")
    panel = EnhancePanel(lab)
    try:
        backend = panel.controls["backend"]
        assert [value for _, value in backend.options] == ["auto", "noisereduce", "rnnoise",
                                                           "deepfilternet"]
        assert backend.value == "auto" and not backend.disabled
        panel.preset.value = "strong"
        assert not panel.controls["n_std_thresh_stationary"].disabled
        backend.value = "deepfilternet"
        # A network takes none of the gate's settings: they are greyed out.
        for name in ("stationary", "prop_decrease", "n_std_thresh_stationary",
                     "freq_mask_smooth_hz", "time_mask_smooth_ms"):
            assert panel.controls[name].disabled, name
        assert panel.overrides() == {"backend": "deepfilternet"}
        panel.controls["reduce"].value = False
        assert backend.disabled
        panel.controls["reduce"].value = True

        panel.set_recording("rec-dnn")
        await panel.wait_idle(timeout=10)
        panel.preview_button.click()
        await panel.wait_idle(timeout=60)
        assert panel.message_kind == "ok", panel.message
        assert panel.last_preview is not None
        assert panel.last_preview.report.params.backend == "deepfilternet"
        assert "Noise reducer: <b>DeepFilterNet3</b></div>" in panel.report_html.value

        # Auto compares what is installed and says what it chose.
        panel.preset.value = "auto"
        assert panel.controls["backend"].value == "auto"
        panel.preview_button.click()
        await panel.wait_idle(timeout=120)
        assert panel.message_kind == "ok", panel.message
        report = panel.last_preview.report
        chosen = report.channel_reports[0]
        assert chosen.scores, chosen.decision  # every candidate's estimate
        assert "(the auto mode's choice)" in panel.report_html.value
        assert html.escape(chosen.decision) in panel.report_html.value
    finally:
        panel.close()
