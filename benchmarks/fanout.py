"""Fan-out: time from a START/STOP broadcast to the last ACK, vocalink vs `websockets`.

For each fleet size N, every server runs as its own subprocess with its own N
devices, which connect from one other asyncio process (``_fanout_devices.py``,
the same code for every server). A round broadcasts one command and waits for
every ACK; rounds alternate START and STOP. The servers take turns in blocks of
rounds, so that a burst of load from elsewhere on the machine hits them alike.

Measured, per round, in the server's own clock: from just before the command
frame is encoded and sent to when the last ACK has been processed (vocalink's
``issued_at`` -> ``completed_at`` from ``POST /api/commands``; the reference
servers report the same two instants). The HTTP round trip of the trigger, each
process's CPU time per round and the server's RSS are shown too.

Servers: ``websockets`` (the goal's baseline, ``_fanout_baseline.py``: a minimal
`websockets` server, same REGISTER/WELCOME handshake, ``websockets.broadcast``)
and ``vocalink``.

Also, from the START rounds: the time from the command to every device recording (the
last device's first sample; the devices' clocks are this machine's, so their ``started_at``
are true instants) and the start skew (latest - earliest first sample), vocalink's
scheduled START against the baseline's start on arrival. And, for vocalink, how soon every
device's clock is measured after it joins (the devices
answer SYNC; a scheduled command needs each target's clock): the longest time from a
device's REGISTER (``first_seen``) to its first clock estimate, polled from
``/api/clients``.

Goals: vocalink's p99 at 1000 devices <= 1.2 x the baseline's p99; every device's clock
measured within 10 s of joining.

Usage: ``python benchmarks/fanout.py`` (full), ``--quick`` (small and fast).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from _common import (
    AUTH,
    BENCH_DIR,
    PYTHON,
    Child,
    children,
    percentile,
    raise_nofile_limit,
    read_url,
    start_py_spy,
    start_vocalink,
    table,
)

GOAL_N = 1000
GOAL_RATIO = 1.2
GOAL_MEASURED_S = 10.0
#: How often /api/clients is read while waiting for every clock (its figure is this coarse).
MEASURED_POLL_S = 0.5
#: The goal's baseline and vocalink.
SIDES = ("websockets", "vocalink")


@dataclass
class SideResult:
    side: str
    n: int
    connect_s: float = 0.0
    server_ms: list[float] = field(default_factory=list)
    http_ms: list[float] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    server_cpu_s: float = 0.0  # CPU time of the server process over the measured rounds
    devices_cpu_s: float = 0.0  # CPU time of the device process over the measured rounds
    server_rss_mib: float = 0.0  # after the last round
    #: vocalink: the longest time from a device's REGISTER to its first clock estimate (s).
    measured_s: float | None = None
    #: START rounds: from the command to the last device's first sample (ms).
    recording_ms: list[float] = field(default_factory=list)
    #: START rounds: latest minus earliest device's first sample (ms).
    skew_ms: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(self.server_ms, q)

    def per_round_ms(self, seconds: float) -> float:
        return seconds * 1000 / max(len(self.server_ms), 1)


def http_json(base_url: str, method: str, path: str, body: Any = None,
              timeout: float = 60.0) -> tuple[int, Any]:
    """One HTTP request on a fresh connection to a loopback server; ``(status, JSON)``."""
    url = urlsplit(base_url)
    if url.hostname != "127.0.0.1":
        raise ValueError(f"refusing a non-loopback URL: {base_url}")
    conn = http.client.HTTPConnection("127.0.0.1", url.port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {**AUTH, **({"Content-Type": "application/json"} if payload else {})}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def vocalink_round(url: str, action: str, n: int) -> tuple[float, float, list[float]]:
    """``POST /api/commands``; checks that every device ACKed with SUCCESS.

    Returns ``issued_at``, ``completed_at`` and every device's ``started_at`` (START).
    """
    status, body = http_json(url, "POST", "/api/commands", {"action": action})
    if status != 200 or not body.get("complete"):
        raise RuntimeError(f"vocalink {action}: HTTP {status}: {str(body)[:500]}")
    outcomes = body["outcomes"]
    bad = [d for d, o in outcomes.items() if o["status"] != "SUCCESS"]
    if len(outcomes) != n or bad or body["action"] != action:
        raise RuntimeError(f"vocalink {action}: {len(outcomes)} outcomes for {n} devices, "
                           f"{len(bad)} not SUCCESS: {body['counts']}")
    starts = [o["started_at"] for o in outcomes.values() if o.get("started_at") is not None]
    return body["issued_at"], body["completed_at"], starts


def reference_round(url: str, action: str, n: int) -> tuple[float, float, list[float]]:
    """``GET /api/round?action=...`` of the reference servers; the same checks and values."""
    status, body = http_json(url, "GET", f"/api/round?action={action}")
    if status != 200 or not body.get("complete") or not body.get("ok") \
            or body["targets"] != n or body["counts"]["SUCCESS"] != n:
        raise RuntimeError(f"reference {action}: HTTP {status}: {str(body)[:500]}")
    return body["issued_at"], body["completed_at"], body["started_at"]


class Contender:
    """One server with its N devices connected, ready for rounds."""

    def __init__(self, side: str, n: int, args: argparse.Namespace, workdir: Path,
                 procs: list[Child]) -> None:
        self.side = side
        self.n = n
        self.args = args
        self.result = SideResult(side, n)
        self.logs = workdir / f"{side}-{n}"
        self.logs.mkdir()
        self.procs = procs
        self.rounds_done = 0
        self.profiler: Child | None = None
        if side == "vocalink":
            self.server = start_vocalink(self.logs / "data", self.logs, env={
                "VOCALINK_HEARTBEAT_S": str(args.heartbeat_s),
                "VOCALINK_COMMAND_TIMEOUT_S": str(args.command_timeout_s),
            })
        else:
            self.server = Child(side, [
                PYTHON, str(BENCH_DIR / "_fanout_baseline.py"),
                "--heartbeat-s", str(args.heartbeat_s),
                "--command-timeout-s", str(args.command_timeout_s),
            ], log_path=self.logs / f"{side}.log")
        procs.append(self.server)
        self.url = read_url(self.server)
        self.round_fn = vocalink_round if side == "vocalink" else reference_round
        self.fleet = Child(f"{side}-devices", [
            PYTHON, str(BENCH_DIR / "_fanout_devices.py"),
            "--url", self.url.replace("http://", "ws://") + "/ws/control", "--count", str(n),
            "--prefix", f"{side[:2]}", "--max-lifetime-s", str(args.max_lifetime_s),
        ], log_path=self.logs / "devices.log", stdin_pipe=True)
        procs.append(self.fleet)
        self._cpu = {"server": psutil.Process(self.server.pid),
                     "devices": psutil.Process(self.fleet.pid)}

    def wait_ready(self) -> None:
        ready = self.fleet.readline(timeout=self.args.connect_timeout_s)
        if not ready.startswith("READY"):
            raise RuntimeError(f"{self.side} device fleet: {ready}")
        self.result.connect_s = float(ready.split()[2])
        self.fleet.drain_stdout()
        path = "/api/clients" if self.side == "vocalink" else "/api/devices"
        status, body = http_json(self.url, "GET", path)
        if status != 200 or body["connected"] != self.n:
            raise RuntimeError(f"{self.side}: {body} devices connected, expected {self.n}")
        if self.side == "vocalink":
            self.result.measured_s = self._until_measured()

    def _until_measured(self) -> float:
        """The longest time from a device's joining (``first_seen``) to its first clock
        estimate, polled every `MEASURED_POLL_S` (so within that much)."""
        first_estimate: dict[str, float] = {}
        joined: dict[str, float] = {}
        deadline = time.monotonic() + self.args.connect_timeout_s
        while len(first_estimate) < self.n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.side}: only {len(first_estimate)}/{self.n} clocks "
                                   f"measured in {self.args.connect_timeout_s:g} s")
            status, body = http_json(self.url, "GET", "/api/clients")
            now = time.time()
            for item in body["items"]:
                joined[item["device_id"]] = item["first_seen"]
                if item["clock"] is not None:
                    first_estimate.setdefault(item["device_id"], now)
            time.sleep(MEASURED_POLL_S)
        return max(first_estimate[d] - joined[d] for d in first_estimate)

    def run(self, rounds: int, *, measured: bool) -> None:
        """``rounds`` rounds back to back (a short pause between them)."""
        cpu_before = {k: _cpu_s(p) for k, p in self._cpu.items()}
        with self._profiled(measured):
            for _ in range(rounds):
                action = "START" if self.rounds_done % 2 == 0 else "STOP"
                began = time.perf_counter()
                issued_at, completed_at, starts = self.round_fn(self.url, action, self.n)
                http_s = time.perf_counter() - began
                self.rounds_done += 1
                if measured and action == "START":
                    if len(starts) != self.n:
                        raise RuntimeError(f"{self.side}: {len(starts)} started_at of {self.n}")
                    # The devices' clocks are this machine's: their starts are true instants.
                    self.result.recording_ms.append((max(starts) - issued_at) * 1000)
                    self.result.skew_ms.append((max(starts) - min(starts)) * 1000)
                if measured:
                    self.result.server_ms.append((completed_at - issued_at) * 1000)
                    self.result.http_ms.append(http_s * 1000)
                    self.result.actions.append(action)
                time.sleep(self.args.pause_ms / 1000)
        if measured:
            self.result.server_cpu_s += _cpu_s(self._cpu["server"]) - cpu_before["server"]
            self.result.devices_cpu_s += _cpu_s(self._cpu["devices"]) - cpu_before["devices"]
        self.server.check_alive()
        self.fleet.check_alive()

    @contextlib.contextmanager
    def _profiled(self, measured: bool) -> Iterator[None]:
        if not (measured and self.args.py_spy):
            yield
            return
        out = Path(f"{self.args.py_spy}-{self.side}-{self.n}-{self.rounds_done}.txt")
        profiler = start_py_spy(self.server, out, self.logs / "py-spy.log")
        self.procs.append(profiler)
        try:
            yield
        finally:
            profiler.interrupt()

    def finish(self) -> SideResult:
        self.result.server_rss_mib = self._cpu["server"].memory_info().rss / 2**20
        if self.fleet.stop() != 0:
            raise RuntimeError(f"{self.side} device fleet reported failures: "
                               f"{self.fleet.log_path.read_text()[-2000:]}")
        self.server.stop()
        return self.result


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def run_size(n: int, rounds: int, args: argparse.Namespace,
             workdir: Path) -> tuple[list[SideResult], float]:
    """Every server with N devices; rounds in blocks, the servers taking turns.

    Returns the results and the CPU that other processes on the machine used
    meanwhile, in % of one CPU (a disturbed run shows here).
    """
    blocks = max(1, -(-rounds // args.block))
    with children() as procs:
        contenders = [Contender(side, n, args, workdir, procs) for side in args.sides]
        for contender in contenders:
            contender.wait_ready()
            contender.run(args.warmup, measured=False)
        ours = [psutil.Process()] + [psutil.Process(c.pid) for c in procs]
        began, busy_before, ours_before = time.monotonic(), _busy_s(), _total_cpu_s(ours)
        for b in range(blocks):
            size = min(args.block, rounds - b * args.block)
            order = contenders[b % len(contenders):] + contenders[:b % len(contenders)]
            for contender in order:
                contender.run(size, measured=True)
            print(".", end="", flush=True)
        other_s = (_busy_s() - busy_before) - (_total_cpu_s(ours) - ours_before)
        other = max(0.0, other_s / (time.monotonic() - began) * 100)
        return [c.finish() for c in contenders], other


def _busy_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system


def _total_cpu_s(processes: list[psutil.Process]) -> float:
    return sum(_cpu_s(p) for p in processes)


def report_clocks(results: list[SideResult]) -> bool:
    """Every device's clock measured soon after it joined: one line per size, judged."""
    ok = True
    print()
    for r in sorted((r for r in results if r.measured_s is not None), key=lambda r: r.n):
        assert r.measured_s is not None
        passed = r.measured_s <= GOAL_MEASURED_S
        ok &= passed
        print(f"clocks: every one of {r.n} devices measured within {r.measured_s:.1f} s of "
              f"joining (polled every {MEASURED_POLL_S:g} s) <= {GOAL_MEASURED_S:g} s "
              f"-> {'PASS' if passed else 'FAIL'}")
    return ok


def report_starts(results: list[SideResult]) -> None:
    """START -> every device recording, and the start skew: vocalink schedules, the
    baseline starts each device on arrival."""
    rows = []
    for r in sorted(results, key=lambda r: (r.n, SIDES.index(r.side))):
        rows.append([r.n, r.side, len(r.skew_ms), percentile(r.recording_ms, 50),
                     percentile(r.recording_ms, 99), percentile(r.skew_ms, 50),
                     percentile(r.skew_ms, 99), max(r.skew_ms)])
    print()
    print("START -> every device recording (ms, from issued_at to the last device's first "
          "sample; vocalink schedules it 0.2 s ahead), and start skew (ms, latest - earliest "
          "first sample; the baseline starts each device on arrival)")
    print(table(["devices", "server", "STARTs", "recording p50", "p99", "skew p50", "skew p99",
                 "skew max"], rows))
    for r in results:
        if r.side == "vocalink" and r.n == GOAL_N:
            print(f"start skew p99 at {r.n} devices: {percentile(r.skew_ms, 99):.3f} ms "
                  f"(scheduled, clocks measured by the server)")


def report(results: list[SideResult], args: argparse.Namespace) -> bool | None:
    headers = ["devices", "server", "rounds", "p50 ms", "p99 ms", "max ms", "HTTP p50 ms",
               "HTTP p99 ms", "server CPU ms/rd", "devices CPU ms/rd", "server RSS MiB"]
    rows: list[list[object]] = []
    verdict = None
    for n in sorted({r.n for r in results}):
        by_side = {r.side: r for r in results if r.n == n}
        for side in SIDES:
            r = by_side.get(side)
            if r is not None:
                rows.append([n, side, len(r.server_ms), r.p(50), r.p(99), max(r.server_ms),
                             percentile(r.http_ms, 50), percentile(r.http_ms, 99),
                             r.per_round_ms(r.server_cpu_s), r.per_round_ms(r.devices_cpu_s),
                             r.server_rss_mib])
        if "websockets" in by_side and "vocalink" in by_side:
            base, voc = by_side["websockets"], by_side["vocalink"]
            rows.append([n, "vocalink/websockets", "", voc.p(50) / base.p(50),
                         voc.p(99) / base.p(99), max(voc.server_ms) / max(base.server_ms),
                         "", "", voc.server_cpu_s / base.server_cpu_s, "", ""])
            if n == GOAL_N:
                verdict = voc.p(99) <= GOAL_RATIO * base.p(99)
    print()
    print("fan-out: broadcast -> last ACK in the server's clock (issued_at -> completed_at); "
          f"heartbeat {args.heartbeat_s:g} s; CPU per round includes the HTTP trigger")
    print(table(headers, rows))
    print()
    goal = f"goal: vocalink p99 at {GOAL_N} devices <= {GOAL_RATIO} x baseline (websockets) p99"
    if verdict is None:
        print(f"{goal}: not measured (no {GOAL_N}-device run of both)")
    else:
        voc = next(r for r in results if r.n == GOAL_N and r.side == "vocalink")
        base = next(r for r in results if r.n == GOAL_N and r.side == "websockets")
        print(f"{goal}: {voc.p(99):.2f} ms vs {base.p(99):.2f} ms = "
              f"{voc.p(99) / base.p(99):.2f} x -> {'PASS' if verdict else 'FAIL'}")
    return verdict


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Broadcast -> last ACK latency, vocalink vs a websockets baseline.")
    parser.add_argument("--sizes", default="10,100,1000",
                        help="fleet sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=300,
                        help="measured rounds per server and size (default: %(default)s)")
    parser.add_argument("--block", type=int, default=20,
                        help="rounds a server runs before the next one takes its turn")
    parser.add_argument("--warmup", type=int, default=6, help="unmeasured rounds first")
    parser.add_argument("--pause-ms", type=float, default=20.0, help="pause between rounds")
    parser.add_argument("--heartbeat-s", type=float, default=2.0,
                        help="WebSocket ping interval of every server (vocalink's default)")
    parser.add_argument("--command-timeout-s", type=float, default=30.0)
    parser.add_argument("--connect-timeout-s", type=float, default=180.0)
    parser.add_argument("--max-lifetime-s", type=float, default=3600.0,
                        help="device fleets exit by themselves after this long")
    parser.add_argument("--quick", action="store_true",
                        help="sizes 10,100 and 40 rounds: a smoke test")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--json", metavar="PATH", help="also write every round's numbers here")
    parser.add_argument("--py-spy", metavar="PREFIX",
                        help="profile the servers during measured rounds with py-spy, writing "
                             "collapsed stacks to PREFIX-<server>-<devices>-<round>.txt")
    args = parser.parse_args()
    if args.quick:
        args.sizes = "10,100"
        args.rounds = 40
        args.warmup = min(args.warmup, 2)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.sides = list(SIDES)
    return args


def main() -> int:
    args = parse_args()
    raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="vocalink-fanout-"))
    results: list[SideResult] = []
    try:
        for n in args.sizes:
            print(f"{n} devices, {args.rounds} rounds per server ", end="", flush=True)
            began = time.monotonic()
            size_results, other = run_size(n, args.rounds, args, workdir)
            print(f" {time.monotonic() - began:.0f} s; meanwhile other processes on this "
                  f"machine used {other:.0f}% of one CPU (of {psutil.cpu_count()})", flush=True)
            results += size_results
        verdict = report(results, args)
        report_starts(results)
        if not report_clocks(results):
            verdict = False
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    finally:
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if verdict is not False else 1


if __name__ == "__main__":
    sys.exit(main())
