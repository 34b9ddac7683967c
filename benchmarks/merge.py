"""Merge: memory, speed and alignment accuracy of `merge_files` on long takes, vs whole arrays.

A take of 4 tracks (default 10 and 60 minutes, 16 kHz mono FLAC) is cut from one
speech-like source (`vocalink_lab.audio.synth.speech_like`, a new seed every minute),
everything written block by block (the benchmark itself stays small), so that the truth is
known exactly: track i's sample n is the source at reference time
``offset_i + n / (sr * (1 + ppm_i * 1e-6))``, offsets fractions of a sample within ±0.5 s
(a 129-tap windowed-sinc advance), drifts within ±100 ppm (a soxr stream), each track with
its own gain and a little white noise. Track 0 is the reference. The seeds are the true
offsets with a clock-sync error (N(0, 2 ms)), as the server gives them.

Each run is a fresh child process (this script with ``--child``) that imports everything
and warms up on a 2 s take, then restarts its peak RSS counter (``/proc/self/clear_refs``)
and does one of:

- ``streamed``: ``merge_files(srcs, dst, mode="multichannel", seeds_s=...)``, which reads,
  aligns (windows read lazily) and writes block by block;
- ``whole arrays`` (the baseline, yesterday's `merge_files`): ``io.load`` of every track +
  ``align`` on the arrays + ``merge`` on the arrays + ``io.save``, at the shortest length
  only (at 60 minutes it takes GBs).

Measured per run: wall time (real-time factor = time / take duration), peak RSS growth
(VmHWM after minus RSS before), and the alignment error of tracks 1..3 against the truth
(offset error in samples, drift error in ppm).

Goals: the streamed peak RSS growth at the longest length <= 1.2 x at the shortest (flat
memory); the alignment goals of ``benchmarks/align.py`` (max offset error <= 1 sample,
max drift error <= 1 ppm) at every length.

Usage: ``python benchmarks/merge.py`` (10 and 60 minutes), ``--quick`` (2 and 4 minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import PYTHON, REPO, MiB, median, table

SR = 16_000
TRACKS = 4
MARGIN_S = 2.0  # source before the earliest and after the latest track
SEED_ERROR_S = 0.002
GOAL_MEMORY_GROWTH = 1.2
GOAL_OFFSET = 1.0  # samples (benchmarks/align.py)
GOAL_DRIFT = 1.0  # ppm (benchmarks/align.py)
_TAPS_HALF = 64  # the truth's fractional advance: 129 taps, not merge's 33
_BLOCK = 1 << 16


@dataclass
class Take:
    paths: list[Path]
    offsets_s: list[float]
    drifts_ppm: list[float]
    seeds_s: list[float]
    minutes: float


# -- making a take, block by block ------------------------------------------------------------


def write_source(path: Path, minutes: float, seed: int) -> None:
    """The common speech-like source, long enough for every track, a minute at a time."""
    from vocalink_lab.audio import AudioWriter, synth

    seconds = minutes * 60 + 2 * MARGIN_S + 1
    with AudioWriter(path, SR, 1, subtype="FLOAT") as writer:
        k = 0
        while seconds > 0:
            writer.write(synth.speech_like(min(60.0, seconds), SR, seed=seed * 1000 + k))
            seconds -= 60.0
            k += 1


def advance_taps(frac: float) -> np.ndarray:
    """FIR with ``y[n + _TAPS_HALF] = x(n + frac)`` (Kaiser-windowed sinc, beta 10)."""
    k = np.arange(2 * _TAPS_HALF + 1)
    taps = np.sinc(k - _TAPS_HALF + frac) * np.kaiser(len(k), 10.0)
    return taps / taps.sum()


def write_track(source: Path, dst: Path, start: float, ppm: float, frames: int,
                gain: float, seed: int) -> None:
    """``dst[n] = gain * source(start + n / (1 + ppm * 1e-6)) + noise``, block by block."""
    import soxr
    from scipy import signal as sps

    from vocalink_lab.audio import AudioReader, AudioWriter, synth

    whole = math.floor(start)
    taps = advance_taps(start - whole)
    state = np.zeros(len(taps) - 1)
    stream = soxr.ResampleStream(SR, SR * (1 + ppm * 1e-6), 1, dtype="float64",
                                 quality="VHQ") if ppm else None
    skip = _TAPS_HALF  # the FIR's delay
    written = 0
    with AudioReader(source) as reader, AudioWriter(dst, SR, 1, subtype="PCM_16") as writer:
        pos = whole
        block = 0
        while written < frames:
            x = reader.read(pos, _BLOCK)[0].astype(np.float64)
            pos += _BLOCK
            last = x.size < _BLOCK
            y, state = sps.lfilter(taps, 1.0, x, zi=state)
            y, skip = y[skip:], max(0, skip - len(y))
            if stream is not None:
                y = stream.resample_chunk(y, last=last)
            y = y[:frames - written] * gain
            y = y + synth.noise(len(y), seed=seed * 10_000 + block, amplitude=0.003)
            writer.write(y.astype(np.float32))
            written += len(y)
            block += 1
            if last:
                break


def make_take(workdir: Path, minutes: float, seed: int) -> Take:
    rng = np.random.default_rng(seed)
    offsets = [0.0] + [float(x) for x in rng.uniform(-0.5, 0.5, TRACKS - 1)]
    drifts = [0.0] + [float(x) for x in rng.uniform(-100, 100, TRACKS - 1)]
    gains = [float(x) for x in rng.uniform(0.3, 1.2, TRACKS)]
    seeds = [o + (float(rng.normal(0, SEED_ERROR_S)) if i else 0.0)
             for i, o in enumerate(offsets)]
    source = workdir / f"source-{minutes:g}.wav"
    write_source(source, minutes, seed)
    frames = round(minutes * 60 * SR)
    paths = []
    for i in range(TRACKS):
        path = workdir / f"track{i}-{minutes:g}min.flac"
        write_track(source, path, (MARGIN_S + offsets[i]) * SR, drifts[i], frames, gains[i],
                    seed + i)
        paths.append(path)
    source.unlink()
    return Take(paths, offsets, drifts, seeds, minutes)


# -- the child: one measured run -------------------------------------------------------------


def streamed(srcs: list[Path], dst: Path, seeds: list[float]) -> dict[str, Any]:
    from vocalink_lab.audio.merge import merge_files

    result = merge_files(srcs, dst, mode="multichannel", seeds_s=seeds)
    return dict(result["alignment"])


def whole_arrays(srcs: list[Path], dst: Path, seeds: list[float]) -> dict[str, Any]:
    """Yesterday's merge_files: every track loaded whole, aligned and merged as arrays."""
    from vocalink_lab.audio import io
    from vocalink_lab.audio.align import align
    from vocalink_lab.audio.merge import merge

    tracks = [io.load(src)[0] for src in srcs]
    alignment = align(tracks, SR, seeds_s=seeds)
    io.save(dst, merge(tracks, SR, mode="multichannel", alignment=alignment), SR)
    return alignment.to_dict()


SIDES = {"streamed": streamed, "whole arrays": whole_arrays}


def child(side: str, spec: str) -> None:
    import psutil

    from vocalink_lab.audio import save, synth

    job = json.loads(spec)
    srcs, dst, seeds = [Path(p) for p in job["srcs"]], Path(job["dst"]), job["seeds"]
    run = SIDES[side]
    warm = [dst.with_name(f"warm{i}.flac") for i in range(2)]
    voice = synth.speech_like(3.0, SR, seed=7)
    save(warm[0], voice[:2 * SR], SR)
    save(warm[1], voice[SR // 2:SR // 2 + 2 * SR], SR)
    run(warm, dst, [0.0, 0.5])
    before = psutil.Process().memory_info().rss
    with open("/proc/self/clear_refs", "w") as f:  # the peak RSS (VmHWM) restarts here
        f.write("5")
    began = time.perf_counter()
    alignment = run(srcs, dst, seeds)
    seconds = time.perf_counter() - began
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert match is not None
    peak = int(match.group(1)) * 1024
    print(json.dumps({"seconds": seconds, "growth": peak - before,
                      "offsets_s": alignment["offsets_s"], "drift_ppm": alignment["drift_ppm"],
                      "method": alignment["method"]}))


# -- the parent ------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    growth_mib: float
    offset_err: float  # samples, max over tracks 1..
    drift_err: float  # ppm, max over tracks 1..
    methods: list[str]


def measure(side: str, take: Take, dst: Path, timeout: float) -> Run:
    spec = json.dumps({"srcs": [str(p) for p in take.paths], "dst": str(dst),
                       "seeds": take.seeds_s})
    result = subprocess.run([PYTHON, __file__, "--child", side, spec], capture_output=True,
                            text=True, timeout=timeout, cwd=REPO, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{side} at {take.minutes:g} min failed:\n{result.stderr[-3000:]}")
    got = json.loads(result.stdout.strip().splitlines()[-1])
    off = [abs(got["offsets_s"][i] - take.offsets_s[i]) * SR for i in range(1, TRACKS)]
    drift = [abs(got["drift_ppm"][i] - take.drifts_ppm[i]) for i in range(1, TRACKS)]
    return Run(float(got["seconds"]), got["growth"] / MiB, max(off), max(drift),
               list(got["method"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--runs", type=int, default=1, help="runs per side and length")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per child run")
    parser.add_argument("--quick", action="store_true", help="2 and 4 minutes")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if args.quick:
        args.minutes = [2.0, 4.0]
    lengths = sorted(args.minutes)
    short, long = lengths[0], lengths[-1]
    workdir = Path(tempfile.mkdtemp(prefix="vocalink-merge-"))
    try:
        runs: dict[tuple[float, str], list[Run]] = {}
        for minutes in lengths:
            began = time.perf_counter()
            take = make_take(workdir, minutes, args.seed)
            print(f"take: {TRACKS} x {minutes:g} min at {SR} Hz, FLAC, offsets "
                  f"{[round(o, 4) for o in take.offsets_s[1:]]} s, drifts "
                  f"{[round(d, 1) for d in take.drifts_ppm[1:]]} ppm "
                  f"(made in {time.perf_counter() - began:.1f} s)", flush=True)
            sides = ["streamed"] + (["whole arrays"] if minutes == short else [])
            for i in range(args.runs):
                for side in (sides if i % 2 == 0 else sides[::-1]):
                    run = measure(side, take, workdir / "out.flac", args.timeout_s)
                    runs.setdefault((minutes, side), []).append(run)
                    print(f"  {minutes:>4g} min  run {i + 1}  {side:<13} {run.seconds:7.2f} s  "
                          f"peak RSS +{run.growth_mib:7.1f} MiB  offset err "
                          f"{run.offset_err:.3f} samples  drift err {run.drift_err:.3f} ppm"
                          + ("" if set(run.methods[1:]) == {"xcorr"} else
                             f"  methods {run.methods}"), flush=True)
            for path in take.paths:
                path.unlink()
        return 0 if report(runs, lengths, short, long) else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(runs: dict[tuple[float, str], list[Run]], lengths: list[float], short: float,
           long: float) -> bool:
    def med(minutes: float, side: str, field: str) -> float:
        return median([getattr(r, field) for r in runs[(minutes, side)]])

    base_s, base_mib = med(short, "whole arrays", "seconds"), med(short, "whole arrays",
                                                                 "growth_mib")
    rows: list[list[object]] = []
    for minutes, side in sorted(runs):
        seconds, mib = med(minutes, side, "seconds"), med(minutes, side, "growth_mib")
        rows.append([side, f"{minutes:g}", mib, f"{mib / base_mib:.3f}", seconds,
                     f"{seconds / (60 * minutes):.4f}", f"{seconds / base_s:.2f}",
                     f"{max(r.offset_err for r in runs[(minutes, side)]):.3f}",
                     f"{max(r.drift_err for r in runs[(minutes, side)]):.3f}"])
    print()
    print(f"merge_files(mode='multichannel') on {TRACKS} tracks at {SR} Hz, FLAC; ratios "
          f"against the whole-array baseline at {short:g} min measured above; RTF = wall / "
          "take duration; align errors are the max over tracks 1..3")
    print(table(["side", "minutes", "peak RSS growth MiB", "RSS / baseline", "wall s", "RTF",
                 "time / baseline", "offset err (samples)", "drift err (ppm)"], rows))
    ours = [med(m, "streamed", "growth_mib") for m in (short, long)]
    ok_memory = ours[1] <= GOAL_MEMORY_GROWTH * ours[0]
    print(f"goal: streamed peak RSS growth at {long:g} min <= {GOAL_MEMORY_GROWTH:g} x at "
          f"{short:g} min: {ours[1]:.1f} vs {ours[0]:.1f} MiB ({ours[1] / ours[0]:.2f} x; "
          f"whole arrays {base_mib:.1f} MiB at {short:g} min) "
          f"-> {'PASS' if ok_memory else 'FAIL'}")
    ok = ok_memory
    for minutes in lengths:
        off = max(r.offset_err for r in runs[(minutes, "streamed")])
        drift = max(r.drift_err for r in runs[(minutes, "streamed")])
        good = off <= GOAL_OFFSET and drift <= GOAL_DRIFT
        print(f"goal: align at {minutes:g} min: max offset error {off:.3f} <= {GOAL_OFFSET:g} "
              f"sample and max drift error {drift:.3f} <= {GOAL_DRIFT:g} ppm "
              f"-> {'PASS' if good else 'FAIL'}")
        ok = ok and good
    return ok


if __name__ == "__main__":
    sys.exit(main())
