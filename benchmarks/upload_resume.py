"""Resumable upload: a 200 MiB WAV sent by the agent's tus `Uploader`, cut 10 times vs never.

A valid WAV (48 kHz, stereo, PCM_16, ``--size-mb`` MiB of samples, written in blocks
with soundfile) is made once in a temp dir. The server is ``vocalink serve`` in a child
process; the device side is this process: `vocalink_lab.agent.uploader.Uploader` sending
an `Outbox` item (a hard link to the WAV, so each run has a fresh file and a fresh
recording id) to ``/api/audio/uploads`` through a `tests.support.proxy.CuttingProxy` run
as a child process (``python -m tests.support.proxy``), a fresh one per run:

- uninterrupted: a proxy that never cuts (the same path as the interrupted case);
- interrupted: a proxy with ``cut_at`` = ``--cuts`` offsets evenly spaced over the
  upload's bytes (k * size / (cuts + 1)); whenever `UploadInterrupted` is raised the
  upload is retried at once (as the agent does when the attempt made progress), from the
  item as the outbox now has it, until it returns the recording id.

Runs alternate between the two. Measured per run: seconds from the first ``upload`` call
to its return (MiB/s = file bytes / seconds), the cuts the proxy really made (its JSON
line on SIGTERM), the attempts, the server's CPU time. The server's RSS is sampled every
``--sample-ms`` ms (psutil) from just before the first measured run to the end of the
last; growth = peak minus the RSS before the first run (after a small warm-up upload,
itself cut once, which is not counted). After every run ``GET /api/audio/<id>/meta``
must report the file's sha256, size and frames, and the outbox must be empty.

Goals: median interrupted seconds <= 1.5 x median uninterrupted seconds; exactly
``--cuts`` cuts in every interrupted run; server RSS peak growth < 32 MiB.

Usage: ``python benchmarks/upload_resume.py`` (200 MiB, 3 runs each), ``--quick``
(20 MiB, 1 run each; the time goal is not judged there: each cut has a fixed cost of a
few milliseconds, which a 20 MiB upload cannot absorb).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _common import (
    AUTH,
    PYTHON,
    WAV_CHANNELS,
    WAV_RATE,
    Child,
    MiB,
    RssSampler,
    WavFile,
    children,
    make_wav,
    median,
    read_url,
    start_vocalink,
    table,
)

from vocalink_lab.agent.outbox import Outbox
from vocalink_lab.agent.spool import FinishedRecording
from vocalink_lab.agent.uploader import Uploader, UploadInterrupted

GOAL_RATIO = 1.5
GOAL_RSS_MIB = 32.0
SIDES = ("uninterrupted", "interrupted")


@dataclass
class Run:
    seconds: float
    mib_s: float
    cuts: int
    connections: int
    attempts: int
    not_progressed: int  # interruptions whose UploadInterrupted said progressed=False
    rss_peak_growth_mib: float
    server_cpu_s: float
    verified: bool


@dataclass
class SideResult:
    side: str
    runs: list[Run] = field(default_factory=list)


@contextmanager
def proxy_child(target_url: str, workdir: Path, tag: str,
                cut_at: list[int] | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """A ``tests.support.proxy`` process; yields its URL and the stats it prints on SIGTERM."""
    argv = [PYTHON, "-m", "tests.support.proxy", "--verbose",
            "--target-port", target_url.rsplit(":", 1)[1]]
    if cut_at:
        argv += ["--cut-at", ",".join(map(str, cut_at))]
    child = Child(f"proxy-{tag}", argv, log_path=workdir / f"proxy-{tag}.log")
    stats: dict[str, Any] = {}
    try:
        url = child.readline(30)
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"proxy: expected a loopback URL, got {url!r}")
        yield url, stats
        child.check_alive()
        os.kill(child.pid, signal.SIGTERM)
        stats.update(json.loads(child.readline(30)))
    finally:
        child.stop()


def get_json(base_url: str, path: str) -> tuple[int, Any]:
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=AUTH)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def delete(base_url: str, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", int(base_url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.request("DELETE", path, headers=AUTH)
        conn.getresponse().read()
    finally:
        conn.close()


def verify(server_url: str, wav: WavFile, recording_id: str) -> bool:
    status, row = get_json(server_url, f"/api/audio/{recording_id}/meta")
    expected = {"id": recording_id, "sha256": wav.sha256, "bytes": wav.size,
                "frames": wav.frames, "channels": WAV_CHANNELS, "sample_rate": WAV_RATE}
    wrong = {k: ((row or {}).get(k), v) for k, v in expected.items()
             if status != 200 or (row or {}).get(k) != v}
    if wrong:
        print(f"  !! {recording_id}: catalog row differs (got, expected): {wrong}",
              file=sys.stderr)
    return not wrong


def upload(proxy_url: str, wav: WavFile, workdir: Path, recording_id: str,
           timeout_s: float, max_attempts: int) -> tuple[float, int, int]:
    """Queue a fresh copy of the WAV and upload it, retrying at once when interrupted.

    Returns (seconds, attempts, interruptions that did not report progress).
    """
    outbox_dir = workdir / f"outbox-{recording_id}"
    source = workdir / f"{recording_id}.wav"
    os.link(wav.path, source)
    outbox = Outbox(outbox_dir)
    item = outbox.add(FinishedRecording(
        path=source, recording_id=recording_id, take_id=None, device_id="bench",
        started_at=time.time(), sample_rate=WAV_RATE, channels=WAV_CHANNELS, frames=wav.frames,
        bytes=wav.size, sha256=wav.sha256, format="wav"))
    uploader = Uploader(proxy_url, timeout_s=timeout_s)
    attempts = not_progressed = 0
    began = time.perf_counter()
    while True:
        attempts += 1
        try:
            got = uploader.upload(outbox, item)
            break
        except UploadInterrupted as exc:
            not_progressed += not exc.progressed
            if attempts >= max_attempts:
                raise RuntimeError(f"{recording_id}: still interrupted after {attempts} "
                                   f"attempts: {exc}") from exc
            again = outbox.get(recording_id)  # with the upload URL the last attempt stored
            if again is None:
                raise RuntimeError(f"{recording_id} left the outbox unsent") from exc
            item = again
    seconds = time.perf_counter() - began
    if got != recording_id or len(outbox):
        raise RuntimeError(f"upload returned {got!r}; outbox: {outbox!r}")
    shutil.rmtree(outbox_dir)
    return seconds, attempts, not_progressed


def measured(side: str, server: Child, server_url: str, wav: WavFile, workdir: Path,
             tag: str, cuts: int, sampler: RssSampler | None,
             args: argparse.Namespace) -> Run:
    cut_at = ([wav.size * k // (cuts + 1) for k in range(1, cuts + 1)]
              if side == "interrupted" else None)
    recording_id = f"bench-{tag}-{side}-{uuid.uuid4().hex[:8]}"
    process = psutil.Process(server.pid)
    with proxy_child(server_url, workdir, f"{tag}-{side}", cut_at) as (proxy_url, stats):
        time.sleep(args.settle_s)
        if sampler is not None:
            sampler.mark()
        cpu = process.cpu_times()
        seconds, attempts, not_progressed = upload(
            proxy_url, wav, workdir, recording_id, args.timeout_s, max_attempts=4 * cuts + 10)
        cpu_after = process.cpu_times()
        peak = sampler.window() if sampler is not None else 0
    server.check_alive()
    verified = verify(server_url, wav, recording_id)
    delete(server_url, f"/api/audio/{recording_id}")  # keep the temp dir small
    return Run(
        seconds=seconds, mib_s=wav.size / MiB / seconds, cuts=stats["cuts"],
        connections=stats["connections"], attempts=attempts, not_progressed=not_progressed,
        rss_peak_growth_mib=(peak - sampler.start_rss) / MiB if sampler is not None else 0.0,
        server_cpu_s=(cpu_after.user + cpu_after.system) - (cpu.user + cpu.system),
        verified=verified,
    )


def report(results: dict[str, SideResult], wav: WavFile, sampler: RssSampler,
           cuts: int, judge_time: bool) -> bool:
    headers = ["upload", "runs", "s median", "MiB/s median", "MiB/s best", "cuts",
               "attempts", "connections", "server CPU s", "RSS peak growth MiB"]
    rows: list[list[object]] = []
    for side in SIDES:
        runs = results[side].runs
        rows.append([side, len(runs), median([r.seconds for r in runs]),
                     median([r.mib_s for r in runs]), max(r.mib_s for r in runs),
                     "/".join(str(r.cuts) for r in runs),
                     "/".join(str(r.attempts) for r in runs),
                     "/".join(str(r.connections) for r in runs),
                     median([r.server_cpu_s for r in runs]),
                     max(r.rss_peak_growth_mib for r in runs)])
    plain, cut = results["uninterrupted"].runs, results["interrupted"].runs
    ratio = median([r.seconds for r in cut]) / median([r.seconds for r in plain])
    rows.append(["interrupted/uninterrupted", "", ratio, "", "", "", "", "", "", ""])
    rss_growth = (sampler.peak - sampler.start_rss) / MiB
    print()
    print(f"tus upload of a {wav.size / MiB:.1f} MiB WAV through a cutting proxy; "
          "per-run s: " + "; ".join(f"{s} " + ", ".join(f"{r.seconds:.2f}"
                                                        for r in results[s].runs)
                                    for s in SIDES))
    print(table(headers, rows))
    print(f"server RSS: {sampler.start_rss / MiB:.1f} MiB before the runs, peak "
          f"{sampler.peak / MiB:.1f} MiB, last {sampler.last / MiB:.1f} MiB "
          f"({sampler.samples} samples)")
    not_progressed = sum(r.not_progressed for r in cut)
    if not_progressed:
        print(f"note: {not_progressed} interruption(s) reported progressed=False "
              "(the agent would back off there; this benchmark retries at once)")
    print()
    ok_ratio = ratio <= GOAL_RATIO or not judge_time
    ok_cuts = all(r.cuts == cuts for r in cut) and all(r.cuts == 0 for r in plain)
    ok_rss = rss_growth < GOAL_RSS_MIB
    ok_stored = all(r.verified for side in SIDES for r in results[side].runs)
    verdict = {True: "PASS", False: "FAIL"}
    print(f"goal: interrupted s (median) <= {GOAL_RATIO:g} x uninterrupted: {ratio:.2f} x "
          + (f"-> {verdict[ok_ratio]}" if judge_time else
             "-> not judged with --quick (the cuts' fixed cost dominates a small file)"))
    print(f"goal: exactly {cuts} cuts in every interrupted run (0 otherwise): "
          f"{', '.join(str(r.cuts) for r in cut)} -> {verdict[ok_cuts]}")
    print(f"goal: server RSS peak growth < {GOAL_RSS_MIB:g} MiB: {rss_growth:.1f} MiB "
          f"-> {verdict[ok_rss]}")
    print(f"goal: every catalog row has the file's sha256, size and frames "
          f"-> {verdict[ok_stored]}")
    return ok_ratio and ok_cuts and ok_rss and ok_stored


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A tus upload cut N times vs not cut: time, cuts, server memory.")
    parser.add_argument("--size-mb", type=float, default=200,
                        help="MiB of PCM in the WAV (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind")
    parser.add_argument("--cuts", type=int, default=10, help="cuts per interrupted upload")
    parser.add_argument("--sample-ms", type=float, default=50.0, help="RSS sampling period")
    parser.add_argument("--settle-s", type=float, default=0.5, help="idle time before each run")
    parser.add_argument("--timeout-s", type=float, default=60.0,
                        help="the Uploader's socket timeout")
    parser.add_argument("--quick", action="store_true", help="20 MiB, 1 run each: a smoke test")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.runs = 20, 1
    return args


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vocalink-upload-resume-"))
    try:
        began = time.perf_counter()
        wav = make_wav(workdir / "take.wav", args.size_mb)
        warm = make_wav(workdir / "warm.wav", 2)
        print(f"made {wav.path.name}: {wav.size / MiB:.1f} MiB, {wav.frames} frames "
              f"({time.perf_counter() - began:.1f} s)", flush=True)
        results = {side: SideResult(side) for side in SIDES}
        with children() as procs:
            server = start_vocalink(workdir / "vocalink", workdir, env={})
            procs.append(server)
            url = read_url(server)
            for side in SIDES:  # lazy imports, first catalog write, first interruption
                run = measured(side, server, url, warm, workdir, "warmup", 1, None, args)
                print(f"  warm-up {side:<13} (2 MiB) {run.seconds:.2f} s, {run.cuts} cut(s)",
                      flush=True)
            time.sleep(args.settle_s)
            with RssSampler(server.pid, args.sample_ms / 1000) as sampler:
                for i in range(args.runs):
                    order = SIDES if i % 2 == 0 else SIDES[::-1]
                    for side in order:
                        run = measured(side, server, url, wav, workdir, f"run{i}", args.cuts,
                                       sampler, args)
                        results[side].runs.append(run)
                        print(f"  run {i + 1} {side:<13} {run.seconds:6.2f} s "
                              f"{run.mib_s:7.1f} MiB/s  cuts {run.cuts:2d}  "
                              f"attempts {run.attempts:2d}  "
                              f"RSS peak +{run.rss_peak_growth_mib:.1f} MiB"
                              f"{'' if run.verified else '  NOT VERIFIED'}", flush=True)
        return 0 if report(results, wav, sampler, args.cuts, judge_time=not args.quick) else 1
    finally:
        if args.keep:
            print(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
