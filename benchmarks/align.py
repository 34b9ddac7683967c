"""Aligning a take: offset and drift error and wall time of `align`, vs full cross-correlation.

A take of N tracks (default 8 x 10 minutes at 16 kHz, mono) is cut from one speech-like
source (`vocalink_lab.audio.synth.speech_like`), so that the truth is known exactly:
track i's sample n is the source at reference time ``offset_i + n / (sr * (1 + ppm_i))``.
Offsets are fractional, within ±3 s; some tracks drift (up to ±230 ppm, the rest 0); each
track has its own gain and its own noise (white + pink, 15 dB SNR). Track 0 is the reference.

Measured, in the same run, on the same tracks:

- ``align seeded``: `vocalink_lab.audio.align.align` with realistic clock metadata as
  seeds (true offset + N(0, 2 ms) error), search ±0.5 s.
- ``align unseeded``: the same without seeds (whole-reference search).
- ``full xcorr`` (the baseline): ``scipy.signal.correlate(ref, track, method="fft")`` over
  the whole length, integer peak; no drift model (its drift is taken as 0).

Errors in samples: at each track's first sample (the offset) and at its last sample
(offset and drift together: where the track ends on the reference timeline); drift error
in ppm. Tracks 1..N-1 (the reference is exact by definition).

Goals: seeded align max offset error <= 1 sample and max drift error <= 1 ppm, and its
wall time below the baseline's.

Usage: ``python benchmarks/align.py`` (8 x 10 min at 16 kHz), ``--quick`` (4 x 2 min).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import soxr
from _common import percentile, table
from scipy import fft as sp_fft
from scipy import signal as sps

from vocalink_lab.audio.align import Alignment, align
from vocalink_lab.audio.synth import mix_at_snr, noise, speech_like

DRIFTS_PPM = [0.0, 40.0, -85.0, 150.0, 0.0, -230.0, 12.0, 0.0]
SNR_DB = 15.0
SEED_ERROR_S = 0.002
GOAL_OFFSET = 1.0  # samples
GOAL_DRIFT = 1.0  # ppm: the timecode class (professional boxes hold 0.2-1.5 ppm)


@dataclass
class Take:
    tracks: list[np.ndarray]
    offsets_s: list[float]
    drifts_ppm: list[float]
    sr: int


@dataclass
class Outcome:
    name: str
    offsets_s: list[float]
    drifts_ppm: list[float]
    seconds: float


def make_take(n: int, minutes: float, sr: int, seed: int) -> Take:
    rng = np.random.default_rng(seed)
    frames = round(minutes * 60 * sr)
    margin_s = 5.0
    src = speech_like(minutes * 60 + 2 * margin_s + 1, sr, seed=seed).astype(np.float64)
    offsets = [0.0] + [float(x) for x in rng.uniform(-3, 3, n - 1)]
    drifts = [0.0] + [DRIFTS_PPM[i % len(DRIFTS_PPM)] for i in range(1, n)]
    tracks = []
    for i, (off, ppm) in enumerate(zip(offsets, drifts, strict=True)):
        start = (margin_s + off) * sr
        whole = math.floor(start)
        # enough source for the drifting track to cover `frames` of its own samples
        need = math.ceil(frames / (1 + ppm * 1e-6)) + 64
        seg = src[whole:whole + need]
        size = sp_fft.next_fast_len(len(seg) + 1024)  # zero padding: no wrap-around at the ends
        spectrum = np.fft.rfft(seg, size)
        # advance by the fractional part: seg'[k] = src(start + k)
        seg = np.fft.irfft(spectrum * np.exp(2j * np.pi * np.fft.rfftfreq(size)
                                             * (start - whole)), size)[:len(seg)]
        y = soxr.resample(seg, sr, sr * (1 + ppm * 1e-6)) if ppm else seg
        y = y[:frames] * rng.uniform(0.2, 1.5)
        hiss = (noise(len(y), seed=seed * 100 + i)
                + noise(len(y), kind="pink", seed=seed * 100 + 50 + i))
        tracks.append(mix_at_snr(y, hiss, SNR_DB))
    return Take(tracks, offsets, drifts, sr)


def full_xcorr(take: Take) -> Outcome:
    t0 = time.perf_counter()
    ref = take.tracks[0]
    offsets = [0.0]
    for trk in take.tracks[1:]:
        r = sps.correlate(ref, trk, mode="full", method="fft")
        lag = int(np.argmax(r)) - (len(trk) - 1)  # ref[n] ~ trk[n - lag]
        offsets.append(lag / take.sr)
    return Outcome("full xcorr (baseline)", offsets, [0.0] * len(take.tracks),
                   time.perf_counter() - t0)


def run_align(take: Take, name: str, seeds: list[float] | None) -> Outcome:
    t0 = time.perf_counter()
    result: Alignment = align(take.tracks, take.sr, seeds_s=seeds)
    seconds = time.perf_counter() - t0
    bad = [i for i, m in enumerate(result.method[1:], 1) if m != "xcorr"]
    if bad:
        print(f"  {name}: tracks {bad} fell back: {[result.notes[i] for i in bad]}")
    return Outcome(name, list(result.offsets_s), list(result.drift_ppm), seconds)


def errors(take: Take, out: Outcome) -> tuple[list[float], list[float], list[float]]:
    """|offset error|, |end error| (samples) and |drift error| (ppm) of tracks 1..N-1."""
    sr = take.sr
    off_err, end_err, drift_err = [], [], []
    for i in range(1, len(take.tracks)):
        last = len(take.tracks[i]) - 1
        true_end = take.offsets_s[i] + last / (sr * (1 + take.drifts_ppm[i] * 1e-6))
        got_end = out.offsets_s[i] + last / (sr * (1 + out.drifts_ppm[i] * 1e-6))
        off_err.append(abs(out.offsets_s[i] - take.offsets_s[i]) * sr)
        end_err.append(abs(got_end - true_end) * sr)
        drift_err.append(abs(out.drifts_ppm[i] - take.drifts_ppm[i]))
    return off_err, end_err, drift_err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=16_000, help="sample rate (Hz)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="4 tracks of 2 minutes")
    args = parser.parse_args()
    n, minutes = (4, 2.0) if args.quick else (args.tracks, args.minutes)

    t0 = time.perf_counter()
    take = make_take(n, minutes, args.rate, args.seed)
    print(f"take: {n} tracks x {minutes:g} min at {args.rate} Hz, mono, {SNR_DB:g} dB SNR, "
          f"drifts {take.drifts_ppm[1:]} ppm (made in {time.perf_counter() - t0:.1f} s)",
          flush=True)
    rng = np.random.default_rng(args.seed + 1)
    seeds = [o + (float(rng.normal(0, SEED_ERROR_S)) if i else 0.0)
             for i, o in enumerate(take.offsets_s)]

    baseline = full_xcorr(take)
    print(f"  baseline done in {baseline.seconds:.1f} s", flush=True)
    seeded = run_align(take, "align seeded", seeds)
    print(f"  align seeded done in {seeded.seconds:.1f} s", flush=True)
    unseeded = run_align(take, "align unseeded", None)
    print(f"  align unseeded done in {unseeded.seconds:.1f} s", flush=True)

    base_off, base_end, _ = errors(take, baseline)
    rows = []
    stats = {}
    for out in (seeded, unseeded, baseline):
        off, end, drift = errors(take, out)
        stats[out.name] = (max(off), max(drift), out.seconds)
        rows.append([out.name, percentile(off, 50), max(off), percentile(end, 50), max(end),
                     max(drift) if out is not baseline else "-", out.seconds,
                     f"{out.seconds / baseline.seconds:.3g}",
                     f"{max(off) / max(max(base_off), 1e-9):.3g}",
                     f"{max(end) / max(max(base_end), 1e-9):.3g}"])
    print(f"\nalign: {n - 1} tracks vs the reference; errors in samples at {args.rate} Hz "
          "(offset: first sample; end: last sample), drift error in ppm; "
          "ratios against the baseline measured above")
    print(table(["method", "offset err p50", "max", "end err p50", "max", "drift err max",
                 "wall s", "time ratio", "offset max ratio", "end max ratio"], rows))
    off_max, drift_max, seconds = stats["align seeded"]
    checks = [
        (f"seeded: max offset error {off_max:.3f} <= {GOAL_OFFSET:g} sample",
         off_max <= GOAL_OFFSET),
        (f"seeded: max drift error {drift_max:.3f} <= {GOAL_DRIFT:g} ppm",
         drift_max <= GOAL_DRIFT),
        (f"seeded: wall {seconds:.2f} s < baseline {baseline.seconds:.2f} s",
         seconds < baseline.seconds),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
