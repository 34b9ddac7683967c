"""Merging a take: concat with crossfades, aligned multichannel, aligned mix, and files."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import pytest
import soxr

from vocalink_lab.audio import io
from vocalink_lab.audio.align import Alignment
from vocalink_lab.audio.merge import MERGE_MODES, merge, merge_files, timeline_start
from vocalink_lab.audio.synth import mix_at_snr, noise, speech_like, tone
from vocalink_lab.errors import ParameterError

SR = 48_000


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return speech_like(6.0, SR, seed=21)


def placed(offsets_s: list[float], drift_ppm: list[float] | None = None) -> Alignment:
    n = len(offsets_s)
    drift = tuple(drift_ppm or [0.0] * n)
    return Alignment(tuple(offsets_s), drift, (1.0,) * n, ("xcorr",) * n, 0, SR)


# -- multichannel -----------------------------------------------------------------------------


def test_multichannel_puts_each_track_at_its_offset(voice: np.ndarray) -> None:
    late, early = voice[4800:], voice[:SR * 4]  # start 0.1 s later; a part that starts 0.25 s early
    early = np.concatenate([np.full(12_000, 0.25, np.float32), early])
    out = merge([voice, late, early], SR, mode="multichannel",
                alignment=placed([0.0, 0.1, -0.25]))
    assert out.dtype == np.float32 and out.shape == (3, 12_000 + len(voice))
    assert timeline_start(placed([0.0, 0.1, -0.25]), SR) == -0.25
    ref = out[0, 12_000:]
    np.testing.assert_array_equal(ref, voice)  # the reference is copied, not interpolated
    np.testing.assert_array_equal(out[0, :12_000], 0)
    np.testing.assert_array_equal(out[1, 12_000 + 4800:], late)
    np.testing.assert_array_equal(out[1, :12_000 + 4800], 0)
    np.testing.assert_array_equal(out[2, :12_000], 0.25)
    np.testing.assert_array_equal(out[2, 12_000:12_000 + SR * 4], voice[:SR * 4])


def test_multichannel_applies_fractional_offsets(voice: np.ndarray) -> None:
    # a copy of the voice delayed by 10.5 samples: shifting it back by the measured offset
    # must give the voice, within the interpolation error of the 33-tap filter
    spectrum = np.fft.rfft(voice.astype(np.float64))
    freqs = np.fft.rfftfreq(len(voice))
    delayed = np.fft.irfft(spectrum * np.exp(-2j * np.pi * freqs * 10.5), len(voice))
    track = delayed[100:]  # track[n] = voice(n + 100 - 10.5): at reference time 89.5 / SR
    out = merge([voice, track], SR, mode="multichannel", alignment=placed([0.0, 89.5 / SR]))
    middle = slice(SR, 5 * SR)
    err = out[1, middle] - out[0, middle]
    assert float(np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(out[0, middle] ** 2))) < 0.01


def test_multichannel_corrects_drift(voice: np.ndarray) -> None:
    """A device 200 ppm fast, 5 s long: without correction its end is off by 1 ms (48 samples)."""
    fast = soxr.resample(voice.astype(np.float64), SR, SR * (1 + 200e-6)).astype(np.float32)
    corrected = merge([voice, fast], SR, mode="multichannel",
                      alignment=placed([0.0, 0.0], [0.0, 200.0]))
    uncorrected = merge([voice, fast], SR, mode="multichannel")
    tail = slice(4 * SR, 5 * SR)

    def residual(out: np.ndarray) -> float:
        return float(np.sqrt(np.mean((out[1, tail] - out[0, tail]) ** 2)))

    assert residual(corrected) < 0.02 * residual(uncorrected)
    assert abs(corrected.shape[1] - len(voice)) <= 2


def test_multichannel_mixes_a_stereo_track_down(voice: np.ndarray) -> None:
    stereo = np.stack([voice, 0.5 * voice])
    out = merge([stereo, voice], SR, mode="multichannel")
    assert out.shape == (2, len(voice))
    np.testing.assert_allclose(out[0], 0.75 * voice, atol=1e-6)


def test_gains_scale_channels(voice: np.ndarray) -> None:
    out = merge([voice, voice], SR, mode="multichannel", gains=[1.0, -0.5])
    np.testing.assert_allclose(out[1], -0.5 * voice, atol=1e-7)


# -- mix --------------------------------------------------------------------------------------


def test_mix_of_a_signal_and_its_aligned_copy_is_the_signal(voice: np.ndarray) -> None:
    copy = 1.0 * voice[24_000:]
    out = merge([voice, copy], SR, mode="mix", alignment=placed([0.0, 0.5]))
    assert out.shape == (1, len(voice))
    np.testing.assert_allclose(out[0, 24_000:], voice[24_000:], atol=1e-6)
    np.testing.assert_allclose(out[0, :24_000], 0.5 * voice[:24_000], atol=1e-6)  # alone: 1/2


def test_mix_does_not_clip() -> None:
    full = np.ones(SR, np.float32)
    out = merge([full, full, -full * 0.5], SR, mode="mix", gains=[1.0, 2.0, 1.0])
    assert float(np.abs(out).max()) <= 1.0
    np.testing.assert_allclose(out, (1 + 2 - 0.5) / 4, atol=1e-6)


def test_mix_keeps_the_channels_and_upmixes_mono(voice: np.ndarray) -> None:
    stereo = np.stack([voice, np.zeros_like(voice)])
    out = merge([stereo, voice], SR, mode="mix")
    assert out.shape == (2, len(voice))
    np.testing.assert_allclose(out[0], voice, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.5 * voice, atol=1e-6)


# -- concat -----------------------------------------------------------------------------------


def test_concat_without_crossfade_is_end_to_end(voice: np.ndarray) -> None:
    a, b = voice[:SR], voice[SR:3 * SR]
    out = merge([a, b], SR, mode="concat")
    assert out.shape == (1, 3 * SR)
    np.testing.assert_array_equal(out[0], voice[:3 * SR])


def test_concat_length_is_sum_minus_crossfades() -> None:
    parts = [tone(1.0, SR, 440), tone(0.5, SR, 330), tone(2.0, SR, 220)]
    out = merge(parts, SR, mode="concat", crossfade_s=0.1)
    assert out.shape == (1, round(3.5 * SR) - 2 * round(0.1 * SR))
    # away from the joints each part is untouched
    np.testing.assert_allclose(out[0, :SR - 4800], parts[0][:SR - 4800], atol=1e-7)
    np.testing.assert_allclose(out[0, -SR:], parts[2][-SR:], atol=1e-7)


def test_crossfade_does_not_click() -> None:
    """Two sines that meet a quarter period apart: a hard cut jumps, a crossfade does not."""
    a = tone(1.0, SR, 440, amplitude=0.5)
    b = tone(1.0, SR, 440, amplitude=0.5, phase=math.pi / 2)  # starts at its peak
    hard = merge([a, b], SR, mode="concat")[0]
    soft = merge([a, b], SR, mode="concat", crossfade_s=0.02)[0]
    smooth = float(np.abs(np.diff(a)).max())  # the steepest step of the sine itself
    assert float(np.abs(np.diff(hard)).max()) > 10 * smooth
    assert float(np.abs(np.diff(soft)).max()) < 1.5 * smooth


def test_crossfade_keeps_the_power_of_unrelated_signals() -> None:
    a = noise(SR, seed=1, amplitude=0.1)
    b = noise(SR, seed=2, amplitude=0.1)
    out = merge([a, b], SR, mode="concat", crossfade_s=0.5)[0]
    joint = out[SR // 2:SR]  # the whole crossfade
    assert float(np.sqrt(np.mean(joint ** 2))) == pytest.approx(0.1, rel=0.05)


def test_concat_upmixes_mono_next_to_stereo(voice: np.ndarray) -> None:
    stereo = np.stack([voice[:SR], -voice[:SR]])
    out = merge([stereo, voice[SR:2 * SR]], SR, mode="concat")
    assert out.shape == (2, 2 * SR)
    np.testing.assert_array_equal(out[1, SR:], voice[SR:2 * SR])


# -- bad parameters ---------------------------------------------------------------------------

ONE = np.zeros(1000, np.float32)


@pytest.mark.parametrize(
    ("tracks", "kwargs", "expected", "count"),
    [
        ([ONE, ONE], {"mode": "mix"}, nullcontext(), 0),
        ([ONE], {"mode": "stack"}, pytest.raises(ParameterError, match="mode"), 1),
        ([], {"mode": "mix"}, pytest.raises(ParameterError, match="empty"), 1),
        ([ONE, ONE], {"mode": "mix", "sr": [SR, 44_100]},
         pytest.raises(ParameterError, match="different sample rates"), 1),
        ([ONE, ONE], {"mode": "mix", "crossfade_s": 0.1},
         pytest.raises(ParameterError, match="'concat' only"), 1),
        ([ONE, ONE], {"mode": "concat", "crossfade_s": 1.0},
         pytest.raises(ParameterError, match="crossfade"), 2),
        ([ONE, ONE], {"mode": "mix", "gains": [1.0]}, pytest.raises(ParameterError, match="gains"),
         1),
        ([ONE, ONE], {"mode": "mix", "gains": [0.0, 0.0]},
         pytest.raises(ParameterError, match="silent"), 1),
        ([ONE, ONE], {"mode": "mix", "alignment": Alignment.from_seeds(None, 3, sr=SR)},
         pytest.raises(ParameterError, match="alignment"), 1),
        ([np.zeros((2, 100)), np.zeros((3, 100))], {"mode": "mix"},
         pytest.raises(ParameterError, match="channel"), 1),
        ([ONE, np.zeros((4, 4, 4))], {"mode": "nope", "sr": [SR, 8000], "crossfade_s": -1.0},
         pytest.raises(ParameterError), 4),
    ],
    ids=["ok", "mode", "empty", "rates", "crossfade-mode", "crossfade-long", "gains-length",
         "gains-zero", "alignment", "channels", "several"],
)
def test_bad_parameters_are_all_listed(
    tracks: list[np.ndarray], kwargs: dict[str, object],
    expected: AbstractContextManager[object], count: int,
) -> None:
    args: dict[str, object] = {"sr": SR, **kwargs}
    sr = args.pop("sr")
    with expected as caught:
        merge(tracks, sr, **args)  # type: ignore[arg-type]
    if count:
        assert isinstance(caught, pytest.ExceptionInfo)
        assert len(caught.value.errors) >= count, caught.value.errors
        assert caught.value.status == 422


# -- files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def take_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[float]]:
    """Three phones: 48 kHz, 44.1 kHz and 48 kHz stereo, starting at 0, +0.3 s and -0.2 s."""
    src = speech_like(9.0, SR, seed=31)
    folder = tmp_path_factory.mktemp("take")
    offsets = [0.0, 0.3, -0.2]
    paths = []
    for i, (off, rate, channels) in enumerate(zip(offsets, [48_000, 44_100, 48_000], [1, 1, 2],
                                                  strict=True)):
        start = round((1.0 + off) * SR)
        clean = src[start:start + 6 * SR]
        y = mix_at_snr(clean, noise(len(clean), seed=40 + i), 20)
        if rate != SR:
            y = soxr.resample(y, SR, rate)
        audio = np.tile(y, (channels, 1))
        path = folder / f"phone{i}.{'flac' if i == 1 else 'wav'}"
        io.save(path, audio, rate)
        paths.append(path)
    return paths, offsets


def test_merge_files_aligns_phones_at_different_rates(
    take_files: tuple[list[Path], list[float]], tmp_path: Path
) -> None:
    paths, offsets = take_files
    calls: list[float] = []
    dst = tmp_path / "merged.flac"
    report = merge_files(paths, dst, mode="multichannel",
                         seeds_s=[100.0, 100.303, 99.798], progress=calls.append)
    assert report["sample_rate"] == 48_000 and report["channels"] == 3
    assert report["mode"] == "multichannel" and report["start_s"] == pytest.approx(-0.2)
    got = report["alignment"]["offsets_s"]
    assert all(m == "xcorr" for m in report["alignment"]["method"][1:])
    assert np.abs(np.subtract(got, offsets)).max() * SR < 1.0, got
    audio, rate = io.load(dst)
    assert (rate, audio.shape) == (48_000, (3, report["frames"]))
    assert report["duration_s"] == pytest.approx(report["frames"] / 48_000)
    # channels line up: phone 1 (resampled from 44.1 kHz) correlates with phone 0 at lag 0
    a, b = audio[0, SR:4 * SR], audio[1, SR:4 * SR]
    assert float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b))) > 0.8
    assert calls[0] == 0.0 and calls[-1] == 1.0 and calls == sorted(calls)


def test_merge_files_without_align_uses_the_seeds(
    take_files: tuple[list[Path], list[float]], tmp_path: Path
) -> None:
    paths, _ = take_files
    report = merge_files(paths, tmp_path / "m.wav", mode="mix", align=False,
                         seeds_s=[5.0, 5.3, 4.8], sample_rate=16_000)
    assert report["alignment"]["method"] == ["reference", "seed", "seed"]
    assert report["alignment"]["offsets_s"] == pytest.approx([0.0, 0.3, -0.2])
    assert report["sample_rate"] == 16_000 and report["channels"] == 2  # phone 2 is stereo
    assert report["frames"] == pytest.approx(6.5 * 16_000, abs=2)


def test_merge_files_concat(take_files: tuple[list[Path], list[float]], tmp_path: Path) -> None:
    paths, _ = take_files
    report = merge_files(paths[:2], tmp_path / "c.wav", mode="concat", crossfade_s=0.5)
    assert report["alignment"] is None and report["start_s"] == 0.0
    assert report["frames"] == 12 * SR - SR // 2


def test_merge_files_checks_parameters_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ParameterError) as caught:
        merge_files([tmp_path / "missing.wav"], tmp_path / "out.mp3", mode="blend",
                    seeds_s=[0.0, 1.0], sample_rate=0)
    assert len(caught.value.errors) == 4
    assert not (tmp_path / "out.mp3").exists()


def test_modes_are_listed() -> None:
    assert MERGE_MODES == ("concat", "multichannel", "mix")
