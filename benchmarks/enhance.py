"""Enhance: speed and memory on long files, and quality by input SNR, vs noisereduce itself.

Part 1, speed and memory. A 10-minute and a 20-minute mono 16 kHz WAV (16-bit) are made
once: speech-like voices (`vocalink_lab.audio.synth.speech_like`, a new seed every minute)
in pink noise at 10 dB SNR. Each run is a fresh child process (this script with
``--child``) that imports everything and warms up on a 2 s file, then restarts its peak
RSS counter (``/proc/self/clear_refs``) and does one of:

- ``vocalink``: ``enhance_file(src, dst, EnhanceParams(auto=False, hum=None))`` -- the
  non-auto, non-stationary gate with noisereduce's default parameters, streamed in 30 s
  chunks;
- ``noisereduce`` (the baseline): ``load`` + ``noisereduce.reduce_noise(y, sr)`` with its
  defaults (its own chunks of 600000 samples) + ``save``;
- ``noisereduce whole`` (``chunk_size=None``): the same on the whole array at once
  (skip with ``--no-whole``).

Measured per run: wall time of that call (real-time factor = time / audio duration) and
peak RSS growth over the RSS before it (VmHWM after minus RSS before). Runs alternate
between the sides; the table shows medians.

Part 2, quality. Speech-like clips (``--seconds``, 16 kHz) mixed with white and pink
noise at -5, 0, 5, 10, 20 and 30 dB SNR, a few seeds each, plus the clean clips: SI-SDR
and STOI improvement (output minus input, against the clean voice) for vocalink's auto
mode (``enhance(noisy, sr)``) and for ``noisereduce.reduce_noise(noisy, sr)`` with its
defaults (non-stationary, no noise clip).

Goals: vocalink's time <= 1.1 x noisereduce's (10 min); vocalink's peak RSS growth at
20 min <= 1.1 x its growth at 10 min (memory does not grow with the length); auto's
SI-SDR gain >= noisereduce's in every case at SNR <= 5 dB, and >= 0 dB in every case at
10 dB and above (and on clean clips).

Usage: ``python benchmarks/enhance.py`` (10 and 20 minutes, 2 runs; 3 seeds of 8 s),
``--quick`` (2 and 4 minutes, 1 run; 1 seed of 4 s).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _common import PYTHON, REPO, MiB, median, table

SR = 16000
SIDES = ("vocalink", "noisereduce", "noisereduce whole")
GOAL_TIME = 1.10
GOAL_MEMORY_GROWTH = 1.10
SNRS = (-5.0, 0.0, 5.0, 10.0, 20.0, 30.0)
KINDS = ("white", "pink")


# -- the child: one measured run -------------------------------------------------------------


def child(side: str, src: str, dst: str, warm: str) -> None:
    import noisereduce
    import psutil

    from vocalink_lab.audio import load, save
    from vocalink_lab.audio.enhance import EnhanceParams, enhance_file

    params = EnhanceParams(auto=False, hum=None)

    def run(path: str) -> None:
        if side == "vocalink":
            enhance_file(path, dst, params)
            return
        audio, rate = load(path)
        chunk = None if side == "noisereduce whole" else 600000
        save(dst, noisereduce.reduce_noise(y=audio, sr=rate, chunk_size=chunk), rate)

    run(warm)
    before = psutil.Process().memory_info().rss
    with open("/proc/self/clear_refs", "w") as f:  # the peak RSS (VmHWM) restarts here
        f.write("5")
    began = time.perf_counter()
    run(src)
    seconds = time.perf_counter() - began
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match is not None
    peak = int(match.group(1)) * 1024
    print(json.dumps({"seconds": seconds, "growth": peak - before, "before": before}))


# -- part 1 --------------------------------------------------------------------------------------


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)
    growth_mib: list[float] = field(default_factory=list)


def make_file(path: Path, minutes: int) -> None:
    from vocalink_lab.audio import AudioWriter, synth

    with AudioWriter(path, SR, 1, subtype="PCM_16") as writer:
        for i in range(minutes):
            clean = synth.speech_like(60.0, SR, seed=i)
            noise = synth.noise(clean.size, kind="pink", seed=1000 + i)
            writer.write(synth.mix_at_snr(clean, noise, 10.0))


def measure(side: str, src: Path, dst: Path, warm: Path, timeout: float) -> tuple[float, float]:
    result = subprocess.run(
        [PYTHON, __file__, "--child", side, str(src), str(dst), str(warm)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{side} on {src.name} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return float(measured["seconds"]), measured["growth"] / MiB


def speed_and_memory(args: argparse.Namespace, workdir: Path) -> bool:
    from vocalink_lab.audio import save, synth

    warm = workdir / "warm.wav"
    voice = synth.speech_like(2.0, SR, seed=99)
    save(warm, synth.mix_at_snr(voice, synth.noise(voice.size, seed=98), 10.0), SR)
    sides = [s for s in SIDES if args.whole or s != "noisereduce whole"]
    results: dict[tuple[int, str], Runs] = {}
    for minutes in args.minutes:
        src = workdir / f"{minutes}min.wav"
        began = time.perf_counter()
        make_file(src, minutes)
        print(f"made {src.name} ({minutes} min at {SR} Hz, {src.stat().st_size / MiB:.0f} MiB) "
              f"in {time.perf_counter() - began:.1f} s", flush=True)
        for i in range(args.runs):
            for side in (sides if i % 2 == 0 else sides[::-1]):
                seconds, growth = measure(side, src, workdir / "out.wav", warm, args.timeout_s)
                runs = results.setdefault((minutes, side), Runs())
                runs.seconds.append(seconds)
                runs.growth_mib.append(growth)
                print(f"  {minutes:>3} min  run {i + 1}  {side:<18} {seconds:6.2f} s  "
                      f"peak RSS +{growth:7.1f} MiB", flush=True)
        src.unlink()

    headers = ["side", "minutes", "s (median)", "RTF", "time / noisereduce",
               "peak RSS growth MiB", "RSS / noisereduce"]
    rows: list[list[object]] = []
    for minutes in args.minutes:
        base = results[(minutes, "noisereduce")]
        for side in sides:
            runs = results[(minutes, side)]
            rows.append([side, minutes, median(runs.seconds),
                         f"{median(runs.seconds) / (60 * minutes):.4f}",
                         median(runs.seconds) / median(base.seconds),
                         median(runs.growth_mib),
                         median(runs.growth_mib) / median(base.growth_mib)])
    print()
    print("Part 1: enhance_file vs load + noisereduce.reduce_noise + save "
          f"({SR} Hz mono, non-stationary gate, noisereduce's default parameters)")
    print(table(headers, rows))
    short, long = min(args.minutes), max(args.minutes)
    ratio = (median(results[(short, "vocalink")].seconds)
             / median(results[(short, "noisereduce")].seconds))
    ours = [median(results[(m, "vocalink")].growth_mib) for m in (short, long)]
    theirs = [median(results[(m, "noisereduce")].growth_mib) for m in (short, long)]
    ok_time = ratio <= GOAL_TIME
    ok_memory = ours[1] <= GOAL_MEMORY_GROWTH * ours[0]
    print(f"goal: vocalink time <= {GOAL_TIME:g} x noisereduce's at {short} min: {ratio:.2f} x "
          f"-> {'PASS' if ok_time else 'FAIL'}")
    print(f"goal: vocalink peak RSS growth at {long} min <= {GOAL_MEMORY_GROWTH:g} x at {short} "
          f"min: {ours[1]:.0f} vs {ours[0]:.0f} MiB ({ours[1] / ours[0]:.2f} x; noisereduce "
          f"{theirs[1]:.0f} vs {theirs[0]:.0f} MiB, {theirs[1] / theirs[0]:.2f} x) "
          f"-> {'PASS' if ok_memory else 'FAIL'}")
    return ok_time and ok_memory


# -- part 2 --------------------------------------------------------------------------------------


def quality(args: argparse.Namespace) -> bool:
    import noisereduce

    from vocalink_lab.audio import metrics, synth
    from vocalink_lab.audio.enhance import enhance

    headers = ["noise", "SNR dB", "SI-SDR in", "dSI-SDR auto", "min", "dSI-SDR nr", "min",
               "auto - nr (min)", "dSTOI auto", "dSTOI nr"]
    rows: list[list[object]] = []
    ok = True
    cases: list[tuple[str, float | None]] = [
        (kind, snr) for kind in KINDS for snr in args.snrs]
    cases.append(("clean", None))
    began = time.perf_counter()
    for kind, snr in cases:
        gains: list[tuple[float, float, float, float]] = []
        inputs = []
        for seed in range(args.seeds):
            clean = synth.speech_like(args.seconds, SR, seed=200 + seed)
            if snr is None:
                noisy = clean
            else:
                noise = synth.noise(clean.size, kind=kind, seed=300 + seed)
                noisy = synth.mix_at_snr(clean, noise, snr)
            auto, _ = enhance(noisy, SR)
            default = noisereduce.reduce_noise(y=noisy, sr=SR)
            base_sdr, base_stoi = metrics.si_sdr(noisy, clean), metrics.stoi(noisy, clean, SR)
            inputs.append(base_sdr)
            gains.append((metrics.si_sdr(auto, clean) - base_sdr,
                          metrics.si_sdr(default, clean) - base_sdr,
                          metrics.stoi(auto, clean, SR) - base_stoi,
                          metrics.stoi(default, clean, SR) - base_stoi))
        g = np.array(gains)
        margin = float(np.min(g[:, 0] - g[:, 1]))
        rows.append([kind, "-" if snr is None else f"{snr:g}", statistics.mean(inputs),
                     float(g[:, 0].mean()), float(g[:, 0].min()), float(g[:, 1].mean()),
                     float(g[:, 1].min()), margin, f"{g[:, 2].mean():+.3f}",
                     f"{g[:, 3].mean():+.3f}"])
        if snr is not None and snr <= 5:
            ok = ok and margin >= 0
        else:
            ok = ok and float(g[:, 0].min()) >= 0
    print()
    print(f"Part 2: improvement by input SNR, speech-like {args.seconds:g} s clips at {SR} Hz, "
          f"{args.seeds} seed(s) each ({time.perf_counter() - began:.0f} s); auto = "
          "enhance(noisy, sr), nr = noisereduce.reduce_noise(noisy, sr) defaults")
    print(table(headers, rows))
    print("goal: auto's SI-SDR gain >= noisereduce's in every case at SNR <= 5 dB, and >= 0 "
          f"in every case at 10 dB and above and on clean clips -> {'PASS' if ok else 'FAIL'}")
    return ok


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Enhance: speed, memory and quality, vocalink vs noisereduce.")
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 20],
                        help="file lengths for part 1 (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=2, help="runs per side and length")
    parser.add_argument("--no-whole", dest="whole", action="store_false",
                        help="skip noisereduce with chunk_size=None (2.4 GB at 10 min)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per case in part 2")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length in part 2")
    parser.add_argument("--snrs", type=float, nargs="+", default=list(SNRS))
    parser.add_argument("--skip-speed", action="store_true", help="part 2 only")
    parser.add_argument("--skip-quality", action="store_true", help="part 1 only")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per child run")
    parser.add_argument("--quick", action="store_true",
                        help="2 and 4 minutes, 1 run, 1 seed of 4 s: a smoke test")
    parser.add_argument("--child", nargs=4, metavar=("SIDE", "SRC", "DST", "WARM"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.runs, args.seeds, args.seconds = [2, 4], 1, 1, 4.0
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        child(*args.child)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="vocalink-enhance-"))
    try:
        ok = True
        if not args.skip_speed:
            ok = speed_and_memory(args, workdir) and ok
        if not args.skip_quality:
            ok = quality(args) and ok
        return 0 if ok else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
