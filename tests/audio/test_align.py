"""Aligning a take's recordings: offsets within a sample, drift within 1 ppm, honest fallbacks.

Every track is cut from one long source signal at a known (fractional) position, so the
truth is known exactly: track i's sample n is the source at ``BASE + d_i + n``, hence at
reference time ``d_i / sr`` (the reference being cut at ``BASE``). Each track gets its own
noise and gain. Drift is simulated by resampling with soxr.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import pytest
import soxr

from vocalink_lab.audio.align import Alignment, Lag, align, gcc_phat
from vocalink_lab.audio.synth import mix_at_snr, noise, speech_like
from vocalink_lab.errors import ParameterError

SR = 48_000
SECONDS = 16.0
BASE = 3 * SR  # where the reference is cut from the source
# integer and fractional, positive and negative (samples at 48 kHz)
OFFSETS = [0.0, 12_345.0, -20_000.37, 777.5, -3.25]
GAINS = [1.0, 0.3, 2.0, 0.7, 0.1]


def shifted(src: np.ndarray, start: float, frames: int) -> np.ndarray:
    """``src(start + n)`` for ``n < frames``, fractional ``start`` by band-limited interpolation."""
    whole = math.floor(start)
    frac = start - whole
    margin = 2048
    seg = src[whole - margin:whole + frames + margin].astype(np.float64)
    spectrum = np.fft.rfft(seg)
    freqs = np.fft.rfftfreq(len(seg))
    out = np.fft.irfft(spectrum * np.exp(2j * np.pi * freqs * frac), len(seg))
    return out[margin:margin + frames]


def make_take(src: np.ndarray, offsets: Sequence[float], *, snr_db: float, seed: int,
              sr: int = SR, seconds: float = SECONDS,
              gains: Sequence[float] = GAINS) -> list[np.ndarray]:
    frames = round(seconds * sr)
    tracks = []
    for i, d in enumerate(offsets):
        clean = shifted(src, 3 * sr + d, frames) * gains[i]
        hiss = noise(frames, seed=1000 * seed + i)
        tracks.append(mix_at_snr(clean, hiss, snr_db))
    return tracks


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_like(SECONDS + 8, SR, seed=7)


@pytest.fixture(scope="module")
def pink() -> np.ndarray:
    return noise(round((SECONDS + 8) * SR), kind="pink", seed=8, amplitude=0.2)


def errors_in_samples(result: Alignment, offsets: Sequence[float], sr: float = SR) -> np.ndarray:
    return np.array([result.offsets_s[i] * sr - d for i, d in enumerate(offsets)])


# -- gcc_phat ---------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 100.0, -257.4, 31.71])
def test_gcc_phat_recovers_a_fractional_delay(speech: np.ndarray, delay: float) -> None:
    b = shifted(speech, BASE, 2 * SR)
    a = shifted(speech, BASE - delay, 2 * SR)  # a[n] = b[n - delay]
    lag = gcc_phat(a, b, SR, max_lag_s=0.01)
    assert isinstance(lag, Lag)
    assert abs(lag.samples - delay) < 0.05
    assert lag.lag_s == pytest.approx(lag.samples / SR)
    assert lag.confidence > 0.5


def test_gcc_phat_confidence_separates_related_from_unrelated(speech: np.ndarray) -> None:
    a, b = make_take(speech, [0.0, 480.0], snr_db=10, seed=1, seconds=3.0)
    related = gcc_phat(a, b, SR)
    unrelated = gcc_phat(a, noise(len(b), seed=99), SR)
    assert abs(related.samples - 480) < 0.5 and related.confidence > 0.5
    assert unrelated.confidence < 0.2


def test_gcc_phat_searches_only_the_given_range(speech: np.ndarray) -> None:
    b = shifted(speech, BASE, SR)
    a = shifted(speech, BASE - 2400, SR)
    assert abs(gcc_phat(a, b, SR, center_s=0.05, max_lag_s=0.01).samples - 2400) < 0.05
    outside = gcc_phat(a, b, SR, center_s=-0.05, max_lag_s=0.01)
    assert outside.confidence < 0.2  # nothing there: whatever it found, it says so


# -- align: offsets at 48 kHz -----------------------------------------------------------------


@pytest.mark.parametrize("snr_db", [10, 20])
@pytest.mark.parametrize("seeded", [False, True], ids=["unseeded", "seeded"])
@pytest.mark.parametrize("signal", ["speech", "pink"])
def test_align_recovers_offsets_within_one_sample(
    request: pytest.FixtureRequest, signal: str, seeded: bool, snr_db: float
) -> None:
    src = request.getfixturevalue(signal)
    tracks = make_take(src, OFFSETS, snr_db=snr_db, seed=snr_db)
    # realistic clock metadata: true offset plus a few ms of error
    seeds = [d / SR + e for d, e in zip(OFFSETS, [0, 0.004, -0.003, 0.002, -0.005],
                                          strict=True)] if seeded else None
    result = align(tracks, SR, seeds_s=seeds)
    err = errors_in_samples(result, OFFSETS)
    assert np.abs(err).max() < 1.0, err
    assert result.method == ("reference",) + ("xcorr",) * (len(OFFSETS) - 1)
    assert min(result.confidence) > 0.4
    assert np.abs(result.drift_ppm).max() < 2.0  # no drift was simulated


def test_align_reports_sub_sample_precision_at_moderate_noise(speech: np.ndarray) -> None:
    tracks = make_take(speech, OFFSETS, snr_db=20, seed=5)
    err = errors_in_samples(align(tracks, SR, drift=False), OFFSETS)
    assert np.abs(err).max() < 0.25, err


def test_multichannel_tracks_are_mixed_down(speech: np.ndarray) -> None:
    mono = make_take(speech, [0.0, 1234.5], snr_db=20, seed=2, seconds=6.0)
    stereo = [np.stack([t, 0.5 * t]) for t in mono]
    err = errors_in_samples(align([stereo[0], mono[1]], SR), [0.0, 1234.5])
    assert np.abs(err).max() < 0.5, err


def test_another_reference_shifts_the_timeline(speech: np.ndarray) -> None:
    offsets = [0.0, 4800.0, -960.25]
    tracks = make_take(speech, offsets, snr_db=20, seed=3, seconds=8.0)
    result = align(tracks, SR, reference=1)
    assert result.reference == 1 and result.method[1] == "reference"
    relative = [d - offsets[1] for d in offsets]
    assert np.abs(errors_in_samples(result, relative)).max() < 0.5


def test_seeds_are_read_relative_to_the_reference(speech: np.ndarray) -> None:
    """Absolute ``started_at`` values (server time) work as seeds: only differences matter."""
    offsets = [0.0, 24_000.0]
    tracks = make_take(speech, offsets, snr_db=20, seed=4, seconds=8.0)
    now = 1_760_000_000.0
    result = align(tracks, SR, seeds_s=[now, now + 0.5 + 0.003], search_s=0.05)
    assert np.abs(errors_in_samples(result, offsets)).max() < 0.5
    assert result.method[1] == "xcorr" and result.notes[1] == ""


def test_a_missing_seed_is_searched_for(speech: np.ndarray) -> None:
    offsets = [0.0, 24_000.0, -7_200.5]
    tracks = make_take(speech, offsets, snr_db=15, seed=12, seconds=8.0)
    result = align(tracks, SR, seeds_s=[0.0, 0.502, None])  # track 2 had no clock estimate
    assert result.method == ("reference", "xcorr", "xcorr")
    assert np.abs(errors_in_samples(result, offsets)).max() < 1.0


def test_short_tracks(speech: np.ndarray) -> None:
    offsets = [0.0, 96.5]
    tracks = make_take(speech, offsets, snr_db=20, seed=6, seconds=1.5)
    assert np.abs(errors_in_samples(align(tracks, SR), offsets)).max() < 0.5


def test_one_track_is_its_own_reference(speech: np.ndarray) -> None:
    result = align([speech[:SR]], SR)
    assert result.offsets_s == (0.0,) and result.method == ("reference",)


# -- align: drift -----------------------------------------------------------------------------

DRIFT_SR = 16_000
DRIFT_SECONDS = 180.0


@pytest.fixture(scope="module")
def drifting_take() -> tuple[list[np.ndarray], list[float], list[float]]:
    """Three minutes at 16 kHz: tracks at +100, -100 and +250 ppm, offsets in samples."""
    src = speech_like(DRIFT_SECONDS + 8, DRIFT_SR, seed=11)
    offsets = [0.0, 8000.0, -12_345.0, 4321.0]
    drifts = [0.0, 100.0, -100.0, 250.0]
    frames = round(DRIFT_SECONDS * DRIFT_SR)
    tracks = []
    for i, (d, ppm) in enumerate(zip(offsets, drifts, strict=True)):
        start = 3 * DRIFT_SR + round(d)
        clean = src[start:start + frames].astype(np.float64)
        # this device samples at DRIFT_SR * (1 + ppm): more samples per reference second
        y = soxr.resample(clean, DRIFT_SR, DRIFT_SR * (1 + ppm * 1e-6)) if ppm else clean
        tracks.append(mix_at_snr(y * GAINS[i], noise(len(y), seed=50 + i), 15))
    return tracks, offsets, drifts


@pytest.mark.parametrize("seeded", [False, True], ids=["unseeded", "seeded"])
def test_align_recovers_drift_within_1_ppm(
    drifting_take: tuple[list[np.ndarray], list[float], list[float]], seeded: bool
) -> None:
    tracks, offsets, drifts = drifting_take
    seeds = [d / DRIFT_SR + 0.002 for d in offsets] if seeded else None
    result = align(tracks, DRIFT_SR, seeds_s=seeds)
    drift_err = np.array(result.drift_ppm) - drifts
    assert np.abs(drift_err).max() < 1.0, result  # the timecode class: 0.2-1.5 ppm
    assert np.abs(errors_in_samples(result, offsets, DRIFT_SR)).max() < 1.0, result
    # the model: the end of each track is where its drift says
    for i in range(1, len(tracks)):
        end = len(tracks[i]) - 1
        true_end = (offsets[i] + end / (1 + drifts[i] * 1e-6)) / DRIFT_SR
        assert abs(float(result.to_reference(i, end)) - true_end) * DRIFT_SR < 1.0


def test_drift_false_assumes_one_clock(
    drifting_take: tuple[list[np.ndarray], list[float], list[float]]
) -> None:
    tracks, _, _ = drifting_take
    with_drift = align(tracks[:2], DRIFT_SR)
    # 100 ppm over 3 minutes is 18 ms: one offset cannot fit every window, and it says so
    without = align(tracks[:2], DRIFT_SR, drift=False)
    assert without.drift_ppm == (0.0, 0.0)
    assert without.confidence[1] < with_drift.confidence[1] / 2


# -- fallbacks --------------------------------------------------------------------------------


def test_a_wrong_seed_is_corrected_by_a_wider_search(speech: np.ndarray) -> None:
    offsets = [0.0, 12_000.0]
    tracks = make_take(speech, offsets, snr_db=15, seed=8, seconds=10.0)
    result = align(tracks, SR, seeds_s=[0.0, 12_000 / SR + 2.0])  # 2 s off, window ±0.5 s
    assert result.method[1] == "xcorr"
    assert "off" in result.notes[1]
    assert np.abs(errors_in_samples(result, offsets)).max() < 1.0


def test_low_confidence_falls_back_to_the_seed(speech: np.ndarray) -> None:
    ref = make_take(speech, [0.0], snr_db=20, seed=9, seconds=6.0)[0]
    unrelated = noise(len(ref), seed=123)
    seeded = align([ref, unrelated], SR, seeds_s=[10.0, 10.25])
    assert seeded.method[1] == "seed"
    assert seeded.offsets_s[1] == pytest.approx(0.25) and seeded.drift_ppm[1] == 0.0
    assert seeded.confidence[1] < 0.2 and "kept the seed" in seeded.notes[1]
    unseeded = align([ref, unrelated], SR)
    assert unseeded.method[1] == "none" and unseeded.offsets_s[1] == 0.0
    silent = align([ref, np.zeros_like(ref)], SR, seeds_s=[0.0, None])
    assert silent.method[1] == "none" and silent.confidence[1] == 0.0


# -- the result -------------------------------------------------------------------------------


def test_alignment_to_dict_is_json(speech: np.ndarray) -> None:
    tracks = make_take(speech, [0.0, 480.0], snr_db=20, seed=10, seconds=4.0)
    calls: list[float] = []
    result = align(tracks, SR, progress=calls.append)
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"offsets_s", "drift_ppm", "confidence", "method", "notes",
                         "reference", "sr"}
    assert data["method"] == ["reference", "xcorr"] and len(data["offsets_s"]) == 2
    assert calls == sorted(calls) and calls[-1] == 1.0


def test_alignment_from_seeds() -> None:
    result = Alignment.from_seeds([100.0, 100.5, None], 3, sr=SR)
    assert result.offsets_s == (0.0, 0.5, 0.0)
    assert result.method == ("reference", "seed", "none")
    assert Alignment.from_seeds(None, 2, sr=SR).offsets_s == (0.0, 0.0)
    with pytest.raises(ParameterError):
        Alignment((0.0,), (0.0, 1.0), (1.0,), ("reference",), 0, SR)


# -- bad parameters ---------------------------------------------------------------------------

GOOD = [np.zeros(1000, np.float32), np.zeros(1000, np.float32)]


@pytest.mark.parametrize(
    ("tracks", "kwargs", "expected", "count"),
    [
        (GOOD, {}, nullcontext(), 0),
        ([], {}, pytest.raises(ParameterError, match="empty"), 1),
        (GOOD, {"sr": 0}, pytest.raises(ParameterError, match="sr"), 1),
        (GOOD, {"seeds_s": [0.0]}, pytest.raises(ParameterError, match="seeds_s"), 1),
        (GOOD, {"reference": 2}, pytest.raises(ParameterError, match="reference"), 1),
        (GOOD, {"search_s": -1.0}, pytest.raises(ParameterError, match="search_s"), 1),
        ([np.zeros((3, 3, 3))], {}, pytest.raises(ParameterError, match="shaped"), 1),
        ([np.array([np.nan, 0.0])], {}, pytest.raises(ParameterError, match="NaN"), 1),
        (GOOD, {"sr": -1, "reference": 5, "windows": 0, "beta": 2.0},
         pytest.raises(ParameterError), 3),
    ],
    ids=["ok", "empty", "rate", "seeds", "reference", "search", "shape", "nan", "several"],
)
def test_bad_parameters_are_all_listed(
    tracks: list[np.ndarray], kwargs: dict[str, object],
    expected: AbstractContextManager[object], count: int,
) -> None:
    args: dict[str, object] = {"sr": SR, **kwargs}
    sr = args.pop("sr")
    with expected as caught:
        align(tracks, sr, **args)  # type: ignore[arg-type]
    if count:
        assert isinstance(caught, pytest.ExceptionInfo)
        assert len(caught.value.errors) >= count
        assert caught.value.status == 422


def test_docstring_examples_run() -> None:
    import doctest
    import importlib
    import pkgutil

    import vocalink_lab.audio.align as package

    # `align` is a package: its examples live in the modules that define the names.
    names = [info.name for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
    results = [doctest.testmod(importlib.import_module(name)) for name in names]
    assert sum(r.failed for r in results) == 0
    assert sum(r.attempted for r in results) >= 2  # `align` and `gcc_phat`
