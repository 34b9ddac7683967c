"""Upload: one large WAV file to ``POST /api/audio/upload``, vocalink vs a plain Tornado PUT.

A valid WAV (48 kHz, stereo, 16-bit PCM, ``--size-mb`` MiB of samples) is made
once in a temp dir. Both servers run as subprocesses; the client is this process
(``http.client``, the body streamed from the file in 1 MiB chunks, never held in
memory). vocalink gets ``multipart/form-data`` (``recording_id``, ``device_id``,
``file`` named take.wav); the baseline (``_upload_baseline.py``: Tornado,
``@stream_request_body``, ``f.write`` per chunk, fsync at the end) gets a PUT of
the raw bytes. Runs alternate between the two servers.

Measured per run: MiB/s = file bytes / wall time from connecting to having the
response; the server process's peak RSS growth = peak RSS while the request runs
(psutil, every 20 ms) minus its RSS just before. Each server first takes one
small warm-up upload (lazy imports, first catalog write), not counted.

Goals: vocalink's median MiB/s >= 70% of the baseline's median, and vocalink's
RSS growth < 32 MiB in every run.

Usage: ``python benchmarks/upload.py`` (500 MiB, 3 runs each), ``--quick``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from _common import (
    AUTH,
    BENCH_DIR,
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
    start_py_spy,
    start_vocalink,
    table,
)

CHUNK = 1 * MiB
GOAL_THROUGHPUT = 0.70
GOAL_RSS_MIB = 32.0
SIDES = ("baseline", "vocalink")


@dataclass
class Run:
    seconds: float
    mib_s: float
    rss_before_mib: float
    rss_growth_mib: float
    server_cpu_s: float


@dataclass
class SideResult:
    side: str
    runs: list[Run] = field(default_factory=list)


def send(base_url: str, method: str, path: str, headers: dict[str, str],
         parts: list[bytes | Path], timeout: float) -> tuple[int, Any]:
    """Stream a request body made of ``parts`` (bytes, or a file read in 1 MiB chunks)."""
    url = urlsplit(base_url)
    if url.hostname != "127.0.0.1":
        raise ValueError(f"refusing a non-loopback URL: {base_url}")
    length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in parts)
    conn = http.client.HTTPConnection("127.0.0.1", url.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {**AUTH, **headers, "Content-Length": str(length)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        assert conn.sock is not None
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        try:
            for part in parts:
                if isinstance(part, bytes):
                    conn.sock.sendall(part)
                    continue
                with open(part, "rb", buffering=0) as f:
                    while n := f.readinto(buffer):
                        conn.sock.sendall(view[:n])
        except OSError as exc:  # the server answered early (an error) and closed
            print(f"  (send stopped: {exc})", file=sys.stderr)
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw[:500]
    finally:
        conn.close()


def upload_vocalink(url: str, wav: WavFile, recording_id: str, timeout: float) -> None:
    boundary = f"vl-bench-{uuid.uuid4().hex}"
    fields = {"recording_id": recording_id, "device_id": "bench-device"}
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ) + (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="take.wav"\r\n'
         "Content-Type: audio/wav\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    status, body = send(url, "POST", "/api/audio/upload",
                        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                        [head, wav.path, tail], timeout)
    if status != 201 or not isinstance(body, dict) or not body.get("created"):
        raise RuntimeError(f"vocalink upload: HTTP {status}: {str(body)[:500]}")
    rec = body["recording"]
    expected = {"id": recording_id, "device_id": "bench-device", "format": "wav",
                "sample_rate": WAV_RATE, "channels": WAV_CHANNELS, "frames": wav.frames,
                "bytes": wav.size, "sha256": wav.sha256, "original_name": "take.wav"}
    wrong = {k: (rec.get(k), v) for k, v in expected.items() if rec.get(k) != v}
    if wrong or body.get("file_id") != recording_id:
        raise RuntimeError(f"vocalink upload: unexpected recording (got, expected): {wrong}")


def upload_baseline(url: str, wav: WavFile, name: str, timeout: float) -> None:
    status, body = send(url, "PUT", f"/upload/{name}",
                        {"Content-Type": "application/octet-stream"}, [wav.path], timeout)
    if status != 201 or not isinstance(body, dict) or body.get("bytes") != wav.size:
        raise RuntimeError(f"baseline upload: HTTP {status}: {str(body)[:500]}")


def measured(server: Child, action: Any, wav: WavFile, args: argparse.Namespace) -> Run:
    process = psutil.Process(server.pid)
    time.sleep(args.settle_s)
    rss_before = process.memory_info().rss
    cpu = process.cpu_times()
    began = time.perf_counter()
    with RssSampler(server.pid, args.sample_ms / 1000) as sampler:
        action()
    seconds = time.perf_counter() - began
    cpu_after = process.cpu_times()
    server.check_alive()
    return Run(
        seconds=seconds,
        mib_s=wav.size / MiB / seconds,
        rss_before_mib=rss_before / MiB,
        rss_growth_mib=(sampler.peak - rss_before) / MiB,
        server_cpu_s=(cpu_after.user + cpu_after.system) - (cpu.user + cpu.system),
    )


def report(results: dict[str, SideResult], wav: WavFile) -> bool:
    headers = ["server", "runs", "MiB/s median", "MiB/s best", "s median",
               "RSS growth MiB median", "RSS growth MiB max", "RSS before MiB", "server CPU s"]
    rows: list[list[object]] = []
    for side in SIDES:
        runs = results[side].runs
        rows.append([side, len(runs), median([r.mib_s for r in runs]),
                     max(r.mib_s for r in runs), median([r.seconds for r in runs]),
                     median([r.rss_growth_mib for r in runs]),
                     max(r.rss_growth_mib for r in runs), median([r.rss_before_mib for r in runs]),
                     median([r.server_cpu_s for r in runs])])
    base, voc = results["baseline"].runs, results["vocalink"].runs
    ratio = median([r.mib_s for r in voc]) / median([r.mib_s for r in base])
    rss_max = max(r.rss_growth_mib for r in voc)
    rows.append(["vocalink/baseline", "", ratio, max(r.mib_s for r in voc)
                 / max(r.mib_s for r in base), "", "", "", "", ""])
    print()
    print(f"upload of a {wav.size / MiB:.1f} MiB WAV; per-run MiB/s: "
          + "; ".join(f"{s} " + ", ".join(f"{r.mib_s:.0f}" for r in results[s].runs)
                      for s in SIDES))
    print(table(headers, rows))
    print()
    ok_speed = ratio >= GOAL_THROUGHPUT
    ok_rss = rss_max < GOAL_RSS_MIB
    print(f"goal: vocalink MiB/s (median) >= {GOAL_THROUGHPUT:.0%} of baseline: {ratio:.0%} "
          f"-> {'PASS' if ok_speed else 'FAIL'}")
    print(f"goal: vocalink server RSS growth < {GOAL_RSS_MIB:g} MiB (worst run): "
          f"{rss_max:.1f} MiB -> {'PASS' if ok_rss else 'FAIL'}")
    return ok_speed and ok_rss


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Large-upload throughput and server memory, vocalink vs plain Tornado.")
    parser.add_argument("--size-mb", type=int, default=500,
                        help="MiB of PCM in the WAV (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server")
    parser.add_argument("--sample-ms", type=float, default=20.0, help="RSS sampling period")
    parser.add_argument("--settle-s", type=float, default=0.5,
                        help="idle time before each run (RSS baseline)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per request")
    parser.add_argument("--quick", action="store_true", help="50 MiB, 2 runs: a smoke test")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--py-spy", metavar="PREFIX",
                        help="profile the servers during each run with py-spy, writing "
                             "collapsed stacks to PREFIX-<server>-<run>.txt")
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.runs = 50, 2
    return args


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vocalink-upload-"))
    try:
        began = time.perf_counter()
        wav = make_wav(workdir / "take.wav", args.size_mb)
        warm = make_wav(workdir / "warm.wav", 1)
        print(f"made {wav.path.name}: {wav.size / MiB:.1f} MiB, {wav.frames} frames "
              f"({time.perf_counter() - began:.1f} s)", flush=True)
        (workdir / "baseline").mkdir()
        results = {side: SideResult(side) for side in SIDES}
        with children() as procs:
            vocalink = start_vocalink(workdir / "vocalink", workdir, env={})
            procs.append(vocalink)
            baseline = Child("baseline", [PYTHON, str(BENCH_DIR / "_upload_baseline.py"),
                                          "--dir", str(workdir / "baseline")],
                             log_path=workdir / "baseline.log")
            procs.append(baseline)
            urls = {"vocalink": read_url(vocalink), "baseline": read_url(baseline)}
            servers = {"vocalink": vocalink, "baseline": baseline}

            def action(side: str, file: WavFile, tag: str) -> Any:
                if side == "vocalink":
                    return lambda: upload_vocalink(urls[side], file, f"rec-{tag}", args.timeout_s)
                return lambda: upload_baseline(urls[side], file, f"{tag}.wav", args.timeout_s)

            for side in SIDES:
                run = measured(servers[side], action(side, warm, "warmup"), warm, args)
                print(f"  warm-up {side:<8} (1 MiB, first upload) RSS +{run.rss_growth_mib:.1f} MiB"
                      f" (from {run.rss_before_mib:.1f} MiB)", flush=True)
            for i in range(args.runs):
                order = SIDES if i % 2 == 0 else SIDES[::-1]
                for side in order:
                    profiler = None
                    if args.py_spy:
                        out = Path(f"{args.py_spy}-{side}-{i}.txt")
                        profiler = start_py_spy(servers[side], out, workdir / "py-spy.log")
                        procs.append(profiler)
                    run = measured(servers[side], action(side, wav, f"run{i}"), wav, args)
                    if profiler is not None:
                        profiler.interrupt()
                    results[side].runs.append(run)
                    print(f"  run {i + 1} {side:<8} {run.mib_s:7.1f} MiB/s  {run.seconds:6.2f} s"
                          f"  RSS +{run.rss_growth_mib:.1f} MiB", flush=True)
        return 0 if report(results, wav) else 1
    finally:
        if args.keep:
            print(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
