"""Clock sync: offset error and start skew of a scheduled START, vs a naive START.

The vocalink server runs as a child process (``VOCALINK_SYNC_INTERVAL_S=1``); N simulated
devices run in this process's asyncio loop, their clocks offset evenly over -10..+10 s
and drifting over -200..+200 ppm. Since the devices live here, their true clocks are
known exactly (``DeviceClock``, built on ``time.monotonic``).

Rounds alternate:

- scheduled: ``POST /api/commands {"action": "START"}`` (the server's default lead), so
  each device starts at one instant of the server's clock, converted to its own clock
  with the server's offset estimate. Before it, every device's estimated offset
  (``GET /api/clients``, ``offset_at(now)``) is compared with its true offset.
- naive: ``{"action": "START", "lead_ms": 0}``: every device starts on arrival.

Each START is followed by a STOP (``lead_ms`` 0), and the next round waits until the
devices have uploaded that take (they share this process's loop). A device's true start
instant is its reported ``started_at`` (device clock) mapped back to this process's
monotonic clock through its own ``DeviceClock``; a round's start skew is max - min over
devices.

Goal on loopback: scheduled start skew p99 <= 0.5 ms and >= 20x smaller than naive's.

Usage: ``python benchmarks/sync.py`` (N = 10 and 50, 20 rounds), ``--quick`` (N = 10, 6).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import call, children, percentile, read_url, start_vocalink, table

from vocalink_lab.agent import simulate_devices

GOAL_P99_MS = 0.5
GOAL_RATIO = 20.0
SETTLE_S = 4.0
GAP_S = 0.3


@dataclass
class Result:
    n: int
    offset_err_us: list[float] = field(default_factory=list)
    skew_ms: dict[str, list[float]] = field(default_factory=lambda: {"scheduled": [],
                                                                      "naive": []})


async def offset_errors(url: str, agents: list[Any]) -> list[float]:
    """Estimated minus true offset of every device, now, in µs."""
    items = {c["device_id"]: c for c in (await call(url + "/api/clients"))["items"]}
    now = time.time()
    errors = []
    for agent in agents:
        true_offset = agent.clock.now() - time.time()
        clock = items[agent.device_id]["clock"]
        if clock is None:
            raise RuntimeError(f"{agent.device_id}: clock not measured")
        estimate = clock["offset_s"] + clock["drift_ppm"] * 1e-6 * (now - clock["measured_at"])
        errors.append((estimate - true_offset) * 1e6)
    return errors


async def start_round(url: str, agents: list[Any], scheduled: bool) -> float:
    """One START (+ STOP); the start skew in ms."""
    body: dict[str, Any] = {"action": "START"}
    if not scheduled:
        body["lead_ms"] = 0
    result = await call(url + "/api/commands", "POST", body)
    try:
        starts = []
        for agent in agents:
            started_at = result["outcomes"][agent.device_id].get("started_at")
            if started_at is None:
                raise RuntimeError(f"{agent.device_id}: no started_at in {result['outcomes']}")
            starts.append(agent.clock.to_monotonic(started_at))
    finally:
        await call(url + "/api/commands", "POST", {"action": "STOP", "lead_ms": 0})
    return (max(starts) - min(starts)) * 1000


async def until_uploaded(agents: list[Any], timeout_s: float = 60.0) -> None:
    """Wait until every device's outbox is empty."""
    async with asyncio.timeout(timeout_s):
        while any(len(agent.outbox or []) for agent in agents):
            await asyncio.sleep(0.05)


async def run_n(url: str, n: int, rounds: int, state_dir: Path) -> Result:
    offsets = [-10 + 20 * i / (n - 1) for i in range(n)]
    drifts = [-200 + 400 * i / (n - 1) for i in range(n)]
    drifts = drifts[::2] + drifts[1::2]  # not monotonic in the offset
    sim = await simulate_devices(n, server_url=url, state_dir=state_dir, offsets_s=offsets,
                                 drifts_ppm=drifts, sample_rate=48000, prefix=f"n{n}")
    result = Result(n)
    try:
        await sim.wait_connected(60)
        await asyncio.sleep(SETTLE_S)
        for i in range(rounds):
            scheduled = i % 2 == 0
            if scheduled:
                result.offset_err_us += await offset_errors(url, sim.agents)
            side = "scheduled" if scheduled else "naive"
            skew = await start_round(url, sim.agents, scheduled)
            result.skew_ms[side].append(skew)
            print(f"  N={n:3d}  {i + 1:2d}/{rounds}  {side:9s} skew {skew:8.3f} ms", flush=True)
            # All the simulated devices share this process: let the last take's uploads
            # finish, or their threads starve the loop and a START is read late.
            await until_uploaded(sim.agents)
            await asyncio.sleep(GAP_S)
    finally:
        await sim.stop()
    return result


def report(results: list[Result], rounds: int) -> bool:
    rows = []
    checks = []
    for r in results:
        errs = [abs(e) for e in r.offset_err_us]
        sched, naive = r.skew_ms["scheduled"], r.skew_ms["naive"]
        s99, n99 = percentile(sched, 99), percentile(naive, 99)
        ratio = n99 / s99 if s99 > 0 else float("inf")
        bias = sum(r.offset_err_us) / len(r.offset_err_us)
        rows.append([f"N={r.n}", bias, percentile(errs, 50), percentile(errs, 99),
                     percentile(sched, 50) * 1000, s99 * 1000,
                     percentile(naive, 50) * 1000, n99 * 1000, ratio])
        checks.append((f"N={r.n}: scheduled skew p99 {s99:.3f} ms <= {GOAL_P99_MS} ms",
                       s99 <= GOAL_P99_MS))
        checks.append((f"N={r.n}: naive/scheduled p99 ratio {ratio:.1f} >= {GOAL_RATIO:g}",
                       ratio >= GOAL_RATIO))
    print(f"\nclock sync on loopback, {rounds} rounds alternating scheduled/naive "
          "(offset error µs: signed mean, |p50|, |p99|; start skew µs; ratio of p99s)")
    print(table(["devices", "offset bias", "|err| p50", "p99", "sched skew p50", "p99",
                 "naive skew p50", "p99", "ratio"], rows))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in checks)


async def run(url: str, sizes: list[int], rounds: int, workdir: Path) -> bool:
    results = [await run_n(url, n, rounds, workdir / f"devices-{n}") for n in sizes]
    return report(results, rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="per N, half of them naive")
    parser.add_argument("--quick", action="store_true", help="N = 10 only, 6 rounds")
    args = parser.parse_args()
    sizes, rounds = ([10], 6) if args.quick else ([10, 50], args.rounds)
    workdir = Path(tempfile.mkdtemp(prefix="vocalink-sync-"))
    try:
        with children() as started, contextlib.suppress(KeyboardInterrupt):
            server = start_vocalink(workdir / "data", workdir,
                                    {"VOCALINK_SYNC_INTERVAL_S": "1"})
            started.append(server)
            url = read_url(server)
            return 0 if asyncio.run(run(url, sizes, rounds, workdir)) else 1
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
