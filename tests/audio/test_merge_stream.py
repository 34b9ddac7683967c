"""Merging and aligning files in bounded memory: the streamed path gives what the arrays give.

Real files, real decoding: `merge_files` reads, aligns (from lazily read sources) and
writes block by block; `merge` and `align` on the decoded arrays are the reference.
"""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soxr

from tests.support.audio import encode
from vocalink_lab.audio import io
from vocalink_lab.audio.align import Alignment, align
from vocalink_lab.audio.merge import _BLOCK, MERGE_MODES, merge, merge_files
from vocalink_lab.audio.synth import mix_at_snr, noise, speech_like
from vocalink_lab.errors import ParameterError

SR = 16_000
SECONDS = 12.0  # about 3 blocks of merge_files: block joins are exercised
PCM_24 = 2.0**-23  # what writing a 24-bit file may change


def cut(src: np.ndarray, offset_s: float, ppm: float, seconds: float) -> np.ndarray:
    """A device that started ``offset_s`` into ``src`` and whose clock is ``ppm`` fast."""
    whole = math.floor(offset_s * SR)
    frac = offset_s * SR - whole
    seg = src[whole:].astype(np.float64)
    spectrum = np.fft.rfft(seg)
    seg = np.fft.irfft(spectrum * np.exp(2j * np.pi * np.fft.rfftfreq(len(seg)) * frac),
                       len(seg))  # seg[k] = src(whole + frac + k)
    y = soxr.resample(seg, SR, SR * (1 + ppm * 1e-6)) if ppm else seg
    return np.asarray(y[:round(seconds * SR)], dtype=np.float32)


@pytest.fixture(scope="module")
def take(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[float]]:
    """Three devices: a reference, one late and 80 ppm fast (stereo), one early and slow.

    The third is saved at 8 kHz, so merge_files also converts a rate while streaming.
    """
    folder = tmp_path_factory.mktemp("take")
    src = speech_like(SECONDS + 4, SR, seed=5)
    offsets = [1.0, 1.4321, 0.7777]  # into src; relative offsets 0.4321 s and -0.2223 s
    ppms = [0.0, 80.0, -45.0]
    paths = []
    for i, (off, ppm) in enumerate(zip(offsets, ppms, strict=True)):
        y = mix_at_snr(cut(src, off, ppm, SECONDS - i), noise(round((SECONDS - i) * SR),
                                                              seed=i), 25.0)
        path = folder / f"dev{i}.flac"
        if i == 1:
            io.save(path, np.stack([y, 0.5 * y]), SR)
        elif i == 2:
            io.save(path, io.resample(y, orig_sr=SR, target_sr=8000), 8000)
        else:
            io.save(path, y, SR)
        paths.append(path)
    seeds = [o - offsets[0] + 0.003 * i for i, o in enumerate(offsets)]
    return paths, seeds


def in_memory(paths: list[Path], result: dict[str, object], mode: str,
              crossfade_s: float = 0.0) -> np.ndarray:
    """What the whole-array path gives: every file loaded whole, then `merge`."""
    rate = int(result["sample_rate"])  # type: ignore[call-overload]
    tracks = [io.load(p, sr=rate)[0] for p in paths]
    aligned = result["alignment"]
    alignment = None
    if isinstance(aligned, dict):
        alignment = Alignment(tuple(aligned["offsets_s"]), tuple(aligned["drift_ppm"]),
                              tuple(aligned["confidence"]), tuple(aligned["method"]),
                              aligned["reference"], aligned["sr"], tuple(aligned["notes"]))
    return merge(tracks, rate, mode=mode, alignment=alignment, crossfade_s=crossfade_s)


@pytest.mark.parametrize("mode", MERGE_MODES)
def test_streamed_merge_files_equals_the_in_memory_merge(
    take: tuple[list[Path], list[float]], tmp_path: Path, mode: str
) -> None:
    paths, seeds = take
    crossfade = 0.25 if mode == "concat" else 0.0
    dst = tmp_path / "out.wav"
    result = merge_files(paths, dst, mode=mode, seeds_s=seeds, crossfade_s=crossfade)
    expected = in_memory(paths, result, mode, crossfade)
    written, rate = io.load(dst)
    assert rate == result["sample_rate"] == SR
    assert written.shape == expected.shape == (result["channels"], result["frames"])
    assert result["frames"] > 2 * _BLOCK
    np.testing.assert_allclose(written, np.clip(expected, -1, 1), atol=PCM_24, rtol=0)
    if mode != "concat":
        aligned = result["alignment"]
        assert isinstance(aligned, dict)
        assert aligned["method"] == ["reference", "xcorr", "xcorr"]
        # the take's truth: sub-sample offsets, and drift corrected
        np.testing.assert_allclose(aligned["offsets_s"], [0.0, 0.4321, -0.2223], atol=1.0 / SR)
        np.testing.assert_allclose(aligned["drift_ppm"], [0.0, 80.0, -45.0], atol=3.0)


def test_the_aligned_channels_line_up(take: tuple[list[Path], list[float]],
                                      tmp_path: Path) -> None:
    """Drift and fractional offsets are really removed: the channels match sample for sample."""
    paths, seeds = take
    dst = tmp_path / "out.flac"
    merge_files(paths, dst, mode="multichannel", seeds_s=seeds)
    out, _ = io.load(dst)
    both = slice(SR, 9 * SR)  # where all three play
    ref = out[0, both]
    for channel in (1, 2):
        y = out[channel, both]
        gain = float(np.dot(y, ref) / np.dot(ref, ref))
        residual = float(np.sqrt(np.mean((y - gain * ref) ** 2) / np.mean((gain * ref) ** 2)))
        assert residual < 0.12  # 25 dB SNR noise on each: about 0.08 when aligned


def test_a_source_that_cannot_seek_is_streamed_through_a_copy(tmp_path: Path) -> None:
    """M4A decodes only from the start: merge_files converts it, and gives merge's samples."""
    phone, other = tmp_path / "phone.m4a", tmp_path / "other.wav"
    phone.write_bytes(encode("m4a", seconds=4.0))
    other.write_bytes(encode("wav", seconds=3.0, sr=48_000, freq=330.0))
    with io.AudioReader(phone) as reader:
        assert not reader.random_access and reader.sample_rate == 44_100
    dst = tmp_path / "out.wav"
    result = merge_files([phone, other], dst, mode="concat", crossfade_s=0.1)
    expected = in_memory([phone, other], result, "concat", 0.1)
    written, rate = io.load(dst)
    assert rate == 48_000 and written.shape == expected.shape
    np.testing.assert_allclose(written, np.clip(expected, -1, 1), atol=PCM_24, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.wav", "out.wav", "phone.m4a"]


@pytest.mark.parametrize("seeded", [True, False])
def test_align_from_lazily_read_sources_equals_align_from_arrays(
    take: tuple[list[Path], list[float]], seeded: bool
) -> None:
    paths = take[0][:2]  # the 16 kHz ones
    seeds = take[1][:2] if seeded else None
    arrays = [io.load(p)[0] for p in paths]
    from_arrays = align(arrays, SR, seeds_s=seeds)
    readers = [io.AudioReader(p) for p in paths]
    try:
        lazy = align(readers, SR, seeds_s=seeds)
    finally:
        for reader in readers:
            reader.close()
    assert lazy.method == from_arrays.method == ("reference", "xcorr")
    np.testing.assert_allclose(np.array(lazy.offsets_s) * SR,
                               np.array(from_arrays.offsets_s) * SR, atol=1e-3)
    np.testing.assert_allclose(lazy.drift_ppm, from_arrays.drift_ppm, atol=1e-3)
    np.testing.assert_allclose(lazy.confidence, from_arrays.confidence, atol=1e-3)


def test_align_refuses_sources_at_another_rate(take: tuple[list[Path], list[float]]) -> None:
    with io.AudioReader(take[0][0]) as ref, io.AudioReader(take[0][2]) as other:
        with pytest.raises(ParameterError, match=r"tracks\[1\] is at 8000 Hz"):
            align([ref, other], SR)
        with pytest.raises(ParameterError, match="all arrays or all sources"):
            align([ref, np.zeros(SR, np.float32)], SR)


def test_merging_long_silent_files_holds_a_window_not_the_tracks(tmp_path: Path) -> None:
    """Two 15-minute silent FLACs: whole tracks would be 55 MiB each in float32.

    Measured here: about 9 MiB streamed (the whole-array path took 385 MiB).
    """
    minutes = 15
    frames = minutes * 60 * SR
    paths = []
    for i in range(2):
        path = tmp_path / f"silent{i}.flac"
        with io.AudioWriter(path, SR, 1, subtype="PCM_16") as writer:
            for _ in range(minutes):
                writer.write(np.zeros(60 * SR, np.float32))
        paths.append(path)
    whole_track = frames * 4
    align([np.ones(SR, np.float32)] * 2, SR)  # imports (scipy) are not the merge's memory
    tracemalloc.start()
    try:
        result = merge_files(paths, tmp_path / "out.flac", mode="multichannel",
                             seeds_s=[0.0, 0.25])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["frames"] == frames + round(0.25 * SR)
    assert result["alignment"]["method"] == ["reference", "seed"]
    assert peak < whole_track / 3, f"peak {peak / 2**20:.1f} MiB"
    with io.AudioReader(tmp_path / "out.flac") as out:
        assert out.frames == result["frames"] and out.channels == 2
        assert all(not block.any() for block in out.blocks(60 * SR))


def test_two_devices_playing_different_tones_merge_on_their_seeds(tmp_path: Path) -> None:
    """The demo devices: a 440 and a 550 Hz sine, 4.1 s at 48 kHz, started together. Nothing
    in them aligns; the coarse search still found a 'line' whose drift was below -100 %,
    and reading the track at it raised (a negative length; 28 of 64 pairs of phases did).
    The seed is kept instead."""
    sr = 48000
    t = np.arange(199_020) / sr  # as long as the take that failed
    paths = []
    for i, hz in enumerate((440.0, 550.0)):
        path = tmp_path / f"tone{i}.wav"
        io.save(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), sr)
        paths.append(path)
    result = merge_files(paths, tmp_path / "merged.flac", mode="multichannel",
                         seeds_s=[0.0, -1e-5])
    alignment = result["alignment"]
    assert isinstance(alignment, dict)
    assert alignment["method"] == ["reference", "seed"]
    assert alignment["offsets_s"] == [0.0, -1e-5] and alignment["drift_ppm"] == [0.0, 0.0]
    merged, rate = io.load(tmp_path / "merged.flac")
    assert rate == sr and merged.shape[0] == 2
