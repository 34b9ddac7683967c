"""Clock sync from the first take: start skew measured on the audio, beside the take's report.

The vocalink server runs as a child process with its default settings (a device's clock is
measured as it joins, then more and more sparsely up to every 5 s); the simulated devices
run in this process's asyncio loop, their clocks offset uniformly within ±5 s and drifting
within ±200 ppm (seeded). Every device records the room's click track (`ClickSource`:
clicks at multiples of 0.25 s of TRUE time, heard by every device at once), so a device's
true start is read off its uploaded audio (`click_start`), to a small fraction of a sample,
without trusting any clock. A take's start skew is max - min of its devices' true starts.
Beside it, what the server's skew report says (``GET /api/takes/{id}``): ``skew_ms`` and
the ``bound_ms`` it promises the true skew is under.

Two scenarios, at 8 and 50 devices:

- first take: a fresh fleet joins, and a START (the server's default lead) is asked for
  3 s after the last device registered, as a new user would; STOP after 0.5 s; the
  uploads; then the fleet leaves and a new one joins for the next take.
- settled: one fleet, up 30 s before its first round; rounds alternate a scheduled START
  with a naive one (``lead_ms: 0``: every device starts on arrival), the baseline. Before
  each scheduled round, each device's estimated offset is compared with its true one.

Goals on loopback: first-take skew p99 <= 0.5 ms at 8 and at 50 devices; settled p99 <=
0.1 ms; the report's bound covers the measured skew in >= 99 % of the scheduled takes;
naive / settled p99 >= 20x.

Usage: ``python benchmarks/sync.py`` (20 first takes at 8 devices, 10 at 50, 20 settled
rounds each), ``--quick`` (4 devices, 2 first takes, settled after 5 s, 2 rounds; goals
not judged), ``--seed``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    agent_true_start,
    call,
    percentile,
    serve_and_run,
    table,
)

from vocalink_lab.agent import simulate_devices

GOAL_FIRST_MS = 0.5
GOAL_SETTLED_MS = 0.1
GOAL_COVERAGE = 0.99
GOAL_RATIO = 20.0
FIRST_TAKE_AFTER_S = 3.0
SETTLED_AFTER_S = 30.0
TAKE_S = 0.5
PERIOD_S = 0.25
OFFSET_S = 5.0
DRIFT_PPM = 200.0


@dataclass
class Take:
    """One take: its start skew measured on the audio, and what the server reported."""

    skew_ms: float
    reported_ms: float | None
    bound_ms: float | None
    flagged: bool

    @property
    def covered(self) -> bool:
        # The report rounds to the microsecond.
        return self.bound_ms is not None and self.bound_ms + 0.001 >= self.skew_ms


@dataclass
class Scenario:
    name: str
    n: int
    takes: list[Take] = field(default_factory=list)
    naive: list[Take] = field(default_factory=list)
    offset_err_us: list[float] = field(default_factory=list)




async def until_uploaded(agents: list[Any], timeout_s: float = 60.0) -> None:
    """Wait until every device's outbox is empty."""
    async with asyncio.timeout(timeout_s):
        while any(len(agent.outbox or []) for agent in agents):
            await asyncio.sleep(0.05)


async def one_take(url: str, agents: list[Any], *, naive: bool = False) -> Take:
    """START, STOP, the uploads; the skew on the audio and the server's report."""
    body: dict[str, Any] = {"action": "START"}
    if naive:
        body["lead_ms"] = 0
    started = await call(url + "/api/commands", "POST", body)
    try:
        failed = {d: o for d, o in started["outcomes"].items() if o["status"] != "SUCCESS"}
        if failed:
            raise RuntimeError(f"START failed on {failed}")
        await asyncio.sleep(TAKE_S)
    finally:
        await call(url + "/api/commands", "POST", {"action": "STOP", "lead_ms": 0})
    await until_uploaded(agents)
    take = await call(f"{url}/api/takes/{started['take_id']}")
    by_id = {agent.device_id: agent for agent in agents}
    originals = [r for r in take["recordings"] if r["kind"] == "original"]
    if len(originals) != len(agents):
        raise RuntimeError(f"take {take['id']}: {len(originals)} recordings of {len(agents)}")
    starts = await asyncio.gather(*(
        asyncio.to_thread(agent_true_start, url, r, by_id[r["device_id"]], PERIOD_S)
        for r in originals))
    skew = take["skew"]
    return Take((max(starts) - min(starts)) * 1000, skew["skew_ms"], skew["bound_ms"],
                skew["flagged"])


def fleet_clocks(rng: random.Random, n: int) -> tuple[list[float], list[float]]:
    return ([rng.uniform(-OFFSET_S, OFFSET_S) for _ in range(n)],
            [rng.uniform(-DRIFT_PPM, DRIFT_PPM) for _ in range(n)])


async def offset_errors(url: str, agents: list[Any]) -> list[float]:
    """Estimated minus true offset of every device, now, in µs."""
    items = {c["device_id"]: c for c in (await call(url + "/api/clients"))["items"]}
    now = time.time()
    errors = []
    for agent in agents:
        true_offset = agent.clock.now() - time.time()
        clock = items[agent.device_id]["clock"]
        estimate = clock["offset_s"] + clock["drift_ppm"] * 1e-6 * (now - clock["measured_at"])
        errors.append((estimate - true_offset) * 1e6)
    return errors


async def first_takes(url: str, n: int, reps: int, workdir: Path, rng: random.Random,
                      after_s: float) -> Scenario:
    result = Scenario("first take", n)
    for rep in range(reps):
        offsets, drifts = fleet_clocks(rng, n)
        sim = await simulate_devices(n, server_url=url, state_dir=workdir / f"first-{n}-{rep}",
                                     sources=["click"] * n, offsets_s=offsets,
                                     drifts_ppm=drifts, prefix=f"first{n}-{rep}")
        try:
            await sim.wait_connected(60)
            await asyncio.sleep(after_s)
            take = await one_take(url, sim.agents)
        finally:
            await sim.stop()
        result.takes.append(take)
        print(f"  first take  N={n:3d}  {rep + 1:2d}/{reps}  skew {take.skew_ms:6.3f} ms  "
              f"reported {take.reported_ms} ms, bound {take.bound_ms} ms", flush=True)
    return result


async def settled(url: str, n: int, rounds: int, workdir: Path, rng: random.Random,
                  after_s: float) -> Scenario:
    result = Scenario("settled", n)
    offsets, drifts = fleet_clocks(rng, n)
    sim = await simulate_devices(n, server_url=url, state_dir=workdir / f"settled-{n}",
                                 sources=["click"] * n, offsets_s=offsets, drifts_ppm=drifts,
                                 prefix=f"settled{n}")
    try:
        await sim.wait_connected(60)
        await asyncio.sleep(after_s)
        for i in range(rounds):
            naive = i % 2 == 1
            if not naive:
                result.offset_err_us += await offset_errors(url, sim.agents)
            take = await one_take(url, sim.agents, naive=naive)
            (result.naive if naive else result.takes).append(take)
            print(f"  settled     N={n:3d}  {i + 1:2d}/{rounds}  {'naive' if naive else 'sched'}"
                  f"  skew {take.skew_ms:6.3f} ms  reported {take.reported_ms} ms, "
                  f"bound {take.bound_ms} ms", flush=True)
    finally:
        await sim.stop()
    return result


def report(scenarios: list[Scenario], judged: bool) -> bool:
    rows = []
    checks: list[tuple[str, bool]] = []
    for s in scenarios:
        skews = [t.skew_ms for t in s.takes]
        bounds = [t.bound_ms for t in s.takes if t.bound_ms is not None]
        covered = sum(t.covered for t in s.takes) / len(s.takes)
        naive99 = percentile([t.skew_ms for t in s.naive], 99) if s.naive else None
        p99 = percentile(skews, 99)
        errs = [abs(e) for e in s.offset_err_us]
        rows.append([s.name, s.n, len(s.takes), percentile(skews, 50) * 1000, p99 * 1000,
                     percentile(bounds, 50) * 1000 if bounds else None,
                     percentile(bounds, 99) * 1000 if bounds else None,
                     f"{covered:.0%}", sum(t.flagged for t in s.takes),
                     percentile(errs, 99) if errs else None,
                     naive99 * 1000 if naive99 is not None else None,
                     naive99 / p99 if naive99 is not None and p99 > 0 else None])
        goal = GOAL_FIRST_MS if s.name == "first take" else GOAL_SETTLED_MS
        checks.append((f"{s.name}, N={s.n}: start skew p99 {p99:.3f} ms <= {goal} ms",
                       p99 <= goal))
        if naive99 is not None:
            ratio = naive99 / p99 if p99 > 0 else float("inf")
            checks.append((f"settled, N={s.n}: naive / scheduled p99 {ratio:.1f}x >= "
                           f"{GOAL_RATIO:g}x", ratio >= GOAL_RATIO))
    takes = [t for s in scenarios for t in s.takes]
    coverage = sum(t.covered for t in takes) / len(takes)
    checks.append((f"the report's bound covers the measured skew in {coverage:.1%} of "
                   f"{len(takes)} scheduled takes (>= {GOAL_COVERAGE:.0%})",
                   coverage >= GOAL_COVERAGE))
    print("\nstart skew on the audio (µs), the report's bound (µs), offset error |p99| (µs), "
          "naive skew p99 (µs) and the ratio of p99s")
    print(table(["scenario", "devices", "takes", "skew p50", "skew p99", "bound p50",
                 "bound p99", "covered", "flagged", "offset err", "naive p99", "ratio"], rows))
    for text, ok in checks:
        if judged:
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
        else:
            print(f"goal: {text}: not measured (quick sizes)")
    return all(ok for _, ok in checks) or not judged


async def run(url: str, args: argparse.Namespace, workdir: Path) -> bool:
    rng = random.Random(args.seed)
    scenarios = []
    for n, reps in args.first:
        scenarios.append(await first_takes(url, n, reps, workdir, rng, FIRST_TAKE_AFTER_S))
    for n, _ in args.first:
        scenarios.append(await settled(url, n, args.rounds, workdir, rng, args.settle))
    return report(scenarios, judged=not args.quick)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20,
                        help="settled rounds per fleet, half of them naive")
    parser.add_argument("--quick", action="store_true",
                        help="4 devices, 2 first takes, settled after 5 s, 2 rounds")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    if args.quick:
        args.first, args.rounds, args.settle = [(4, 2)], 2, 5.0
    else:
        args.first, args.settle = [(8, 20), (50, 10)], SETTLED_AFTER_S
    return serve_and_run("vocalink-sync-", {},
                         lambda u, w: run(u, args, w))


if __name__ == "__main__":
    sys.exit(main())
