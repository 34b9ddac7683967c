"""Android app start: replayed VocalLink apps against Python agents in the same take.

The VocalLink app cannot schedule by itself: it computes a scheduled action's delay as
``triggerTime - (localNow + theta)`` in float32, whose step at today's epoch milliseconds
is 131072 ms. The server therefore *sends* each scheduled action at its instant minus
the one-way delay (from the clock estimate it builds from the app's own tik/tok probes)
and the app acts on arrival. This measures what that gives, on loopback.

One ``vocalink serve`` child (``VOCALINK_ANDROID=trust``, no mDNS, 127.0.0.1 only). In
this process's loop: Python agents (`simulate_devices`, the baseline) and replayed apps
(`tests.support.android_app.AndroidApp`, the app's network layer and recorder service
frame for frame, with a fake clock, a MediaRecorder start latency and a microphone), all
hearing the room's click track on TRUE time. Every device's clock is off by hundreds of
milliseconds and drifts by 100 ppm. Each take is one scheduled START
(``POST /api/commands``, the server's default lead) and, a few seconds later, a STOP;
every file is uploaded, then read back from the catalog:

- each device's true first sample, from the clicks of the file the catalog holds (the
  apps' decoded m4a, the agents' WAV; `click_start`), against the scheduled instant. The
  apps' figure includes MediaRecorder's start latency (40 ms ± 10 ms here, drawn per app
  and take), which the app never reports: the residual beyond it is what the server's
  timing costs. ``align`` (cross-correlation) finds the exact offsets when merging;
- each file's catalogued ``started_at`` against its true first sample, and the bound the
  server gives (``params.clock.start_uncertainty_s``), which must cover every app file;
- how the start error grows with the theta's age: the apps probe the server every 0.5 s,
  every 5 s (the app's own period, plus up to 1 s) and, in the full run, every 30 s; the
  takes are spread so that the 30 s apps' last probe is 0 to 30 s old at the START. Beside
  it, how far the theta the app holds is from its true offset then (what scheduling by
  the theta would be off by, if float32 allowed it at all);
- what the app's own ``triggerTime`` scheduling would do (`app_delay_ms`, the app's
  float32 arithmetic) for random instants at today's epoch with a 200 ms lead, against the
  same formula in float64 (a Kotlin ``Double``): acted on at once, held 10 s (the cap), on
  time (within 10 ms).

Goals (loopback): every app file's start within 60 ms of the scheduled instant, and
within 10 ms of it beyond MediaRecorder's known latency; the server's bound covers the
catalogued start of 100 % of the app files.

Usage: ``python benchmarks/android.py`` (4 apps probing every 5 s, 2 every 0.5 s, 2 every
30 s, and 4 agents; 8 takes over about a minute and a half), ``--quick`` (1 app, 1 agent,
1 take; goals not judged), ``--seed``, ``--takes``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    BENCH_DIR,
    agent_true_start,
    call,
    fetch,
    percentile,
    serve_and_run,
    table,
)

# The replayed app lives with the tests (it is their fixture too).
sys.path.insert(0, str(BENCH_DIR.parent))

from tests.support.android_app import AndroidApp, ClickTrack, app_delay_ms  # noqa: E402
from vocalink_lab.agent import simulate_devices  # noqa: E402
from vocalink_lab.audio import load  # noqa: E402

#: Goals: the apps' start within this of the scheduled instant (MediaRecorder's latency
#: included), and within `GOAL_RESIDUAL_MS` of it beyond that latency.
GOAL_START_MS = 60.0
GOAL_RESIDUAL_MS = 10.0
GOAL_COVERAGE = 1.0
#: The room's click track (both kinds of device hear the same one).
PERIOD_S = 0.25
#: Seconds between a take's START and its STOP.
TAKE_S = 3.0
#: MediaRecorder's start latency: a mean, and a uniform spread drawn per app and take.
LATENCY_S = 0.040
LATENCY_SPREAD_S = 0.010
#: Every device's clock: an offset of this magnitude (either sign, hundreds of ms)...
OFFSET_MIN_S, OFFSET_MAX_S = 0.2, 0.8
#: ...and this drift (either sign).
DRIFT_PPM = 100.0
#: The lead of the app's own triggerTime in the float32 study, and what counts as on time.
TRIGGER_LEAD_MS = 200
ON_TIME_MS = 10
#: Age bins of the theta at the START (seconds, lower edges).
AGE_BINS = (0.0, 1.0, 10.0)


@dataclass(frozen=True)
class Group:
    """Replayed apps that probe the server's clock alike.

    Attributes
    ----------
    name : str
        For the tables.
    n : int
        Apps in the group.
    period_s, jitter_s : float
        Their tik period and its random extra (the app: 5 s + up to 1 s).
    """

    name: str
    n: int
    period_s: float
    jitter_s: float


@dataclass
class Phone:
    """One replayed app and what the benchmark knows of it."""

    app: AndroidApp
    group: Group
    device_id: str = ""


@dataclass
class FileResult:
    """One device's file of one take.

    Attributes
    ----------
    kind : str
        The group's name, or ``"agents"``.
    error_ms : float
        True first sample minus the scheduled instant.
    latency_ms : float
        MediaRecorder's start latency the replay used (0 for an agent).
    catalog_ms : float
        Catalogued ``started_at`` minus the file's true start (the decoded audio's sample 0).
    bound_ms : float or None
        ``params.clock.start_uncertainty_s``.
    age_s : float or None
        How old the app's last probe (its ``sync_report``) was at the START.
    theta_err_ms : float or None
        The theta the app held at the START minus its true value.
    replay_ms : float or None
        The first sample from the audio minus the replay's own record of it (a check).
    arrival_ms : float or None
        When the app read the START frame minus the scheduled instant: the server's
        timing plus loopback plus this process's loop.
    sent_ms : float or None
        The START's ``late_ms`` for an app: when the server sent the frame, plus half a
        round trip, minus the scheduled instant (the server's own account of its timing).
    """

    kind: str
    error_ms: float
    latency_ms: float = 0.0
    catalog_ms: float = float("nan")
    bound_ms: float | None = None
    age_s: float | None = None
    theta_err_ms: float | None = None
    replay_ms: float | None = None
    arrival_ms: float | None = None
    sent_ms: float | None = None
    #: Which device and take, and how the server placed the start (for a file not covered).
    detail: str = ""

    @property
    def residual_ms(self) -> float:
        """The start error beyond MediaRecorder's latency."""
        return self.error_ms - self.latency_ms

    @property
    def covered(self) -> bool:
        # The catalog rounds to the microsecond.
        return self.bound_ms is not None and abs(self.catalog_ms) <= self.bound_ms + 0.001


@dataclass
class TakeResult:
    """One take: its files, and the server's skew report beside the measured skew."""

    take_id: str
    files: list[FileResult] = field(default_factory=list)
    skew_ms: float = float("nan")
    reported_ms: float | None = None
    bound_ms: float | None = None
    flagged: bool = False
    #: The longest this process's event loop was held up within 0.1 s of the START (ms):
    #: a replayed app acts when its loop reads the frame, so a held-up loop makes it late.
    loop_lag_ms: float = 0.0




def app_start(url: str, recording: dict[str, Any], phone: Phone, near: float,
              workdir: Path) -> float:
    """An app's file as the catalog holds it (m4a, decoded): true time of its sample 0.

    ``near`` (the replay's record) only picks which click is which; the answer is read
    off the audio, so that what the server stored is what is judged.
    """
    path = workdir / f"{recording['id']}.m4a"
    path.write_bytes(fetch(f"{url}/api/audio/{recording['id']}"))
    try:
        samples, _ = load(path)
    finally:
        path.unlink(missing_ok=True)
    # The phone's audio clock runs at its own clock's rate.
    return lossy_click_start(np.asarray(samples, dtype=np.float64).reshape(-1),
                             phone.app.true_sample_rate, near)


def lossy_click_start(y: np.ndarray, rate: float, near: float) -> float:
    """True time of sample 0 of a click-track recording that went through a lossy codec.

    `click_start` reads the first click's phase after digital silence; AAC leaves none
    (its quantisation noise and pre-echo fill the gaps). Instead the recording is
    cross-correlated with the click track rendered on a grid of true instants around
    ``near`` (within a quarter period, so that the clicks are told apart), and the peak
    refined to a fraction of a sample (parabola through its neighbours).

    Parameters
    ----------
    y : numpy.ndarray
        The decoded samples (mono).
    rate : float
        Samples per second of true time.
    near : float
        A guess of the answer within a quarter of the click period.

    Returns
    -------
    float
        True time of ``y[0]``, in seconds since the epoch.
    """
    from scipy.signal import correlate, correlation_lags

    margin = int(PERIOD_S / 4 * rate)
    grid = near + (np.arange(y.size + 2 * margin) - margin) / rate
    ref = ClickTrack(PERIOD_S)(grid).astype(np.float64)
    c = correlate(ref, y, mode="full", method="fft")
    lags = correlation_lags(ref.size, y.size, mode="full")
    window = (lags >= 0) & (lags <= 2 * margin)
    c, lags = c[window], lags[window]
    i = int(np.argmax(c))
    frac = 0.0
    if 0 < i < c.size - 1:
        a, b, d = c[i - 1], c[i], c[i + 1]
        if a - 2 * b + d != 0:
            frac = 0.5 * (a - d) / (a - 2 * b + d)
    # ref[n + lag] == y[n]: y[0] was heard at grid[lag].
    return near + (lags[i] + frac - margin) / rate


def start_frame_arrival(app: AndroidApp, start_at: float) -> float | None:
    """The last ``start`` action the app read, minus ``start_at``, in ms."""
    for frame, at in zip(reversed(app.received), reversed(app.received_at), strict=True):
        if isinstance(frame, dict) and frame.get("msgType") == "start":
            return (at - start_at) * 1000
    return None


class LoopLag:
    """How late this loop wakes from 1 ms sleeps: (true instant, lateness) of each wake."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.001)
            late = loop.time() - before - 0.001
            self.samples.append((time.time(), late))
            if len(self.samples) > 200_000:
                del self.samples[:100_000]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def around(self, at: float, window_s: float = 0.1) -> float:
        """The longest lateness (ms) of a wake within ``window_s`` of ``at``."""
        return 1000 * max((late for t, late in self.samples if abs(t - at) <= window_s),
                          default=0.0)


def true_theta_ms(app: AndroidApp, at: float) -> float:
    """Server minus phone clock at true instant ``at``, in ms: the theta the app should hold."""
    return -(app.offset_s + app.drift_ppm * 1e-6 * (at - app.t_ref)) * 1000


def probe_age(app: AndroidApp, at: float) -> float | None:
    """Seconds from the app's last ``sync_report`` sent before ``at`` to ``at``."""
    for frame, sent in zip(reversed(app.sent), reversed(app.sent_at), strict=True):
        if sent < at and frame.get("msgType") == "sync_report":
            return at - sent
    return None


async def wait_measured(url: str, ids: list[str], timeout_s: float = 60.0) -> None:
    """Until the server has a clock estimate for every device in ``ids``."""
    async with asyncio.timeout(timeout_s):
        while True:
            items = {c["device_id"]: c for c in (await call(url + "/api/clients"))["items"]}
            if all(items.get(d, {}).get("clock") for d in ids):
                return
            await asyncio.sleep(0.1)


async def one_take(url: str, agents: list[Any], phones: list[Phone], rng: random.Random,
                   workdir: Path, lag: LoopLag) -> TakeResult:
    """START, STOP, the uploads; every file's start measured on its audio."""
    index = len(phones[0].app.takes) if phones else 0
    for phone in phones:
        # MediaRecorder's latency varies from start to start; the app never learns it.
        phone.app.start_latency_s = LATENCY_S + rng.uniform(-LATENCY_SPREAD_S,
                                                            LATENCY_SPREAD_S)
    started = await call(url + "/api/commands", "POST", {"action": "START"})
    start_at = started["start_at"]
    # What each app holds at the START: its theta, and how old the probe behind it is.
    held = {p.device_id: (p.app.theta, p.app.start_latency_s) for p in phones}
    try:
        failed = {d: o for d, o in started["outcomes"].items() if o["status"] != "SUCCESS"}
        if failed:
            raise RuntimeError(f"START failed on {failed}")
        await asyncio.sleep(TAKE_S)
    finally:
        await call(url + "/api/commands", "POST", {"action": "STOP"})
    async with asyncio.timeout(60):
        while any(len(a.outbox or []) for a in agents) or any(
                len(p.app.takes) <= index or p.app.takes[index].upload_status is None
                for p in phones):
            await asyncio.sleep(0.05)
    bad = [(p.device_id, p.app.takes[index].upload_status) for p in phones
           if p.app.takes[index].upload_status != 201]
    if bad:
        raise RuntimeError(f"app uploads failed: {bad}")
    take = await call(f"{url}/api/takes/{started['take_id']}")
    originals = [r for r in take["recordings"] if r["kind"] == "original"]
    by_agent = {a.device_id: a for a in agents}
    by_phone = {p.device_id: p for p in phones}
    if len(originals) != len(agents) + len(phones):
        raise RuntimeError(f"take {take['id']}: {len(originals)} recordings of "
                           f"{len(agents) + len(phones)}")
    result = TakeResult(take["id"])
    true_starts = []
    for r in originals:
        bound = (r["params"].get("clock") or {}).get("start_uncertainty_s")
        bound_ms = None if bound is None else bound * 1000
        if r["device_id"] in by_agent:
            sample0 = await asyncio.to_thread(agent_true_start, url, r,
                                                    by_agent[r["device_id"]], PERIOD_S)
            result.files.append(FileResult("agents", (sample0 - start_at) * 1000,
                                           catalog_ms=(r["started_at"] - sample0) * 1000,
                                           bound_ms=bound_ms))
            true_starts.append(sample0)
            continue
        phone = by_phone[r["device_id"]]
        replay = phone.app.takes[index]
        if replay.true_first_sample is None:
            raise RuntimeError(f"{phone.device_id}: the replay captured nothing")
        # Samples the decoded audio holds before the first captured one (none when the
        # file declares its priming): the catalog's started_at is sample 0's.
        priming = ((r["params"].get("android") or {}).get("priming_samples") or 0) \
            / phone.app.true_sample_rate
        sample0 = await asyncio.to_thread(app_start, url, r, phone,
                                          replay.true_first_sample - priming, workdir)
        first = sample0 + priming
        theta, latency = held[phone.device_id]
        result.files.append(FileResult(
            phone.group.name, (first - start_at) * 1000, latency_ms=latency * 1000,
            catalog_ms=(r["started_at"] - sample0) * 1000, bound_ms=bound_ms,
            age_s=probe_age(phone.app, start_at),
            theta_err_ms=float(theta) - true_theta_ms(phone.app, start_at),
            replay_ms=(first - replay.true_first_sample) * 1000,
            arrival_ms=start_frame_arrival(phone.app, start_at),
            sent_ms=started["outcomes"][phone.device_id].get("late_ms"),
            detail=f"{phone.app.name} ({phone.device_id}) in {take['id']}: "
                   f"android={r['params'].get('android')}, clock={r['params'].get('clock')}"))
        true_starts.append(first)
    skew = take["skew"]
    result.skew_ms = (max(true_starts) - min(true_starts)) * 1000
    result.reported_ms, result.bound_ms = skew["skew_ms"], skew["bound_ms"]
    result.flagged = bool(skew["flagged"])
    result.loop_lag_ms = lag.around(start_at)
    return result


def delay_study(n: int, rng: np.random.Generator) -> list[list[object]]:
    """The app's own triggerTime scheduling, float32 (the app) and float64 (the baseline).

    ``n`` random server instants over the next day, each with a phone clock off by up to
    ±1 s and the true theta (server minus phone) as the app's; the trigger is the instant
    plus `TRIGGER_LEAD_MS`.
    """
    base_ms = int(time.time() * 1000)
    server_now = base_ms + rng.integers(0, 86_400_000, n)
    theta = rng.uniform(-1000.0, 1000.0, n).astype(np.float32)
    rows = []
    for arithmetic in ("float32 (app)", "float64 (Double)"):
        at_once = capped = on_time = 0
        for now, th in zip(server_now.tolist(), theta.tolist(), strict=True):
            local = now - round(th)
            trigger = now + TRIGGER_LEAD_MS
            if arithmetic.startswith("float32"):
                delay = app_delay_ms(trigger, local, np.float32(th))
            else:
                d = math.trunc(trigger - (local + th))
                delay = None if d <= 0 else min(d, 10_000)
            if delay is None:
                at_once += 1
            elif delay == 10_000:
                capped += 1
            if delay is not None and abs(delay - TRIGGER_LEAD_MS) <= ON_TIME_MS:
                on_time += 1
        rows.append([arithmetic, n, 100 * at_once / n, 100 * capped / n, 100 * on_time / n,
                     100 * (n - at_once - capped - on_time) / n])
    return rows


def ratio(value: float, baseline: float) -> str:
    """``value / baseline`` as text (``inf`` over a zero baseline)."""
    if not baseline:
        return "inf" if value else "-"
    return f"{value / baseline:.1f}x"


def report(takes: list[TakeResult], groups: list[Group], study: list[list[object]],
           judged: bool) -> bool:
    """Print the tables and the verdict; True when every goal is met (or none judged)."""
    files = [f for t in takes for f in t.files]
    agents = [f for f in files if f.kind == "agents"]
    apps = [f for f in files if f.kind != "agents"]
    agent_max = max(abs(f.error_ms) for f in agents)
    agent_res = max(abs(f.residual_ms) for f in agents)

    print("\nper take: start skew on the audio (every device), the server's skew report, "
          "the apps' START frames sent by the server (its late_ms) and read by the apps "
          "(latest - scheduled), this process's loop lag around the START (ms)")
    rows = []
    for t in takes:
        arrivals = [f.arrival_ms for f in t.files if f.arrival_ms is not None]
        sent = [f.sent_ms for f in t.files if f.sent_ms is not None]
        rows.append([t.take_id, len(t.files), t.skew_ms, t.reported_ms, t.bound_ms,
                     t.flagged, max(sent) if sent else None,
                     max(arrivals) if arrivals else None, t.loop_lag_ms])
    print(table(["take", "files", "skew", "reported", "bound", "flagged", "START sent",
                 "START read", "loop lag"], rows))

    print("\nstart: true first sample - scheduled instant (ms), read off the catalog's files; "
          "the apps' includes MediaRecorder's start latency, which the app cannot report "
          "(align's cross-correlation finds the exact offsets in merge); ratio: to the "
          "agents' max")
    rows = []
    for name in ["agents", *(g.name for g in groups)]:
        fs = [f for f in files if f.kind == name]
        if not fs:
            continue
        errs = [f.error_ms for f in fs]
        res = [abs(f.residual_ms) for f in fs]
        lat = [f.latency_ms for f in fs]
        worst = max(abs(e) for e in errs)
        rows.append([name, len(fs), percentile(errs, 50), worst, ratio(worst, agent_max),
                     f"{min(lat):.1f}-{max(lat):.1f}", max(res), ratio(max(res), agent_res)])
    print(table(["devices", "files", "err p50", "|err| max", "ratio", "latency",
                 "|err-lat| max", "ratio"], rows))
    checks = [f.replay_ms for f in apps if f.replay_ms is not None]
    if checks:
        print(f"(the apps' first samples from their audio agree with the replay's record "
              f"within {max(abs(c) for c in checks):.3f} ms)")

    print("\ncatalog: started_at - true start of the file (ms) against the server's bound "
          "(params.clock.start_uncertainty_s); ratio: apps' |err| max to the agents'")
    rows = []
    cat_agent = max(abs(f.catalog_ms) for f in agents)
    for name, fs in (("agents", agents), ("apps", apps)):
        bounds = [f.bound_ms for f in fs if f.bound_ms is not None]
        worst = max(abs(f.catalog_ms) for f in fs)
        rows.append([name, len(fs), percentile([f.catalog_ms for f in fs], 50), worst,
                     ratio(worst, cat_agent),
                     percentile(bounds, 50) if bounds else None,
                     max(bounds) if bounds else None,
                     f"{sum(f.covered for f in fs)}/{len(fs)}"])
    print(table(["devices", "files", "err p50", "|err| max", "ratio", "bound p50",
                 "bound max", "covered"], rows))
    for f in apps:
        if not f.covered:
            print(f"  NOT covered: started_at off by {f.catalog_ms:+.2f} ms, bound "
                  f"{f.bound_ms} ms; {f.detail}")

    print("\nthe theta's age: the app's last probe before the START (s); the start error "
          "beyond MediaRecorder's latency and the error of the theta the app held (ms), "
          "by age; ratio: to the youngest bin")
    rows = []
    edges = [*AGE_BINS, math.inf]
    young_res = young_theta = None
    for lo, hi in zip(edges, edges[1:], strict=False):
        fs = [f for f in apps if f.age_s is not None and lo <= f.age_s < hi]
        if not fs:
            continue
        res = max(abs(f.residual_ms) for f in fs)
        theta = max(abs(f.theta_err_ms or 0.0) for f in fs)
        if young_res is None:
            young_res, young_theta = res, theta
        rows.append([f"{lo:g}-{hi:g} s", len(fs), f"{min(f.age_s or 0 for f in fs):.1f}-"
                     f"{max(f.age_s or 0 for f in fs):.1f}", res, ratio(res, young_res or 0),
                     theta, ratio(theta, young_theta or 0)])
    print(table(["age", "files", "ages", "|err-lat| max", "ratio", "|theta err| max",
                 "ratio"], rows))
    for g in groups:
        fs = [f for f in apps if f.kind == g.name]
        if fs:
            print(f"  {g.name}: probes every {g.period_s:g} s (+ up to {g.jitter_s:g} s), "
                  f"{len(fs)} files, |err-lat| max {max(abs(f.residual_ms) for f in fs):.2f} "
                  f"ms, |theta err| max {max(abs(f.theta_err_ms or 0.0) for f in fs):.2f} ms")

    print(f"\nthe app's own triggerTime scheduling: random instants at today's epoch, a "
          f"{TRIGGER_LEAD_MS} ms lead, the app's arithmetic against a Double's (%)")
    print(table(["arithmetic", "instants", "at once", "held 10 s", "on time", "other"],
                study))

    worst_start = max(abs(f.error_ms) for f in apps)
    worst_res = max(abs(f.residual_ms) for f in apps)
    coverage = sum(f.covered for f in apps) / len(apps)
    goals = [
        (f"app start within {GOAL_START_MS:g} ms of the scheduled instant (MediaRecorder's "
         f"latency included): |err| max {worst_start:.2f} ms", worst_start <= GOAL_START_MS),
        (f"app start within {GOAL_RESIDUAL_MS:g} ms of the scheduled instant beyond "
         f"MediaRecorder's latency: |err-lat| max {worst_res:.2f} ms",
         worst_res <= GOAL_RESIDUAL_MS),
        (f"the server's bound covers the catalogued start of {coverage:.0%} of "
         f"{len(apps)} app files (>= {GOAL_COVERAGE:.0%})", coverage >= GOAL_COVERAGE),
    ]
    for text, ok in goals:
        if judged:
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
        else:
            print(f"goal: {text}: not measured (quick sizes: one app, one take)")
    return all(ok for _, ok in goals) or not judged


def clock_of(rng: random.Random) -> tuple[float, float]:
    """An offset of hundreds of ms and a drift of ±`DRIFT_PPM`, either sign each."""
    return (rng.choice((-1, 1)) * rng.uniform(OFFSET_MIN_S, OFFSET_MAX_S),
            rng.choice((-1, 1)) * DRIFT_PPM)


async def run(url: str, args: argparse.Namespace, workdir: Path) -> bool:
    """The fleet, the takes, the float32 study; the report's verdict."""
    rng = random.Random(args.seed)
    clocks = [clock_of(rng) for _ in range(args.agents)]
    sim = await simulate_devices(args.agents, server_url=url, state_dir=workdir / "agents",
                                 sources=[f"click:{PERIOD_S:g}"] * args.agents,
                                 offsets_s=[c[0] for c in clocks],
                                 drifts_ppm=[c[1] for c in clocks], prefix="agent")
    phones: list[Phone] = []
    lag = LoopLag()
    lag.start()
    try:
        for group in args.groups:
            for i in range(group.n):
                offset, drift = clock_of(rng)
                app = AndroidApp(url, name=f"app {group.name} {i + 1}", offset_s=offset,
                                 drift_ppm=drift, start_latency_s=LATENCY_S,
                                 sync_period_s=group.period_s, sync_jitter_s=group.jitter_s,
                                 source=ClickTrack(PERIOD_S), seed=rng.randrange(2**31),
                                 recordings_dir=workdir / "phones" / f"{group.name}-{i}")
                phones.append(Phone(app, group))
                await app.stage()
                await app.connect()
        await sim.wait_connected(60)
        for phone in phones:
            await phone.app.wait_for(lambda a: a.activated, timeout=30)
        names = {c["name"]: c["device_id"]
                 for c in (await call(url + "/api/clients"))["items"]}
        for phone in phones:
            phone.device_id = names[phone.app.name]
        await wait_measured(url, [a.device_id for a in sim.agents]
                            + [p.device_id for p in phones])
        t0 = time.monotonic() + args.first_after
        takes = []
        for k in range(args.takes):
            # Takes on a fixed grid, so that the slow probers' theta is of every age.
            await asyncio.sleep(max(0.0, t0 + k * args.gap - time.monotonic()))
            take = await one_take(url, sim.agents, phones, rng, workdir, lag)
            takes.append(take)
            apps = [f for f in take.files if f.kind != "agents"]
            print(f"  take {k + 1}/{args.takes}  {len(take.files)} files  skew "
                  f"{take.skew_ms:6.2f} ms  apps |err-lat| max "
                  f"{max(abs(f.residual_ms) for f in apps):5.2f} ms  ages "
                  f"{', '.join(f'{f.age_s:.1f}' for f in apps if f.age_s is not None)} s",
                  flush=True)
        # What the app would toast or log: error frames from the server, frames it could
        # not decode. None is expected; any is printed, as evidence.
        for p in phones:
            frames = [raw for raw in p.app.received_raw if '"kind":"error"' in raw]
            if frames or p.app.parse_errors:
                print(f"  {p.app.name} ({p.device_id}) met errors: {frames[:3]} "
                      f"{p.app.parse_errors[:3]}")
    finally:
        await lag.stop()
        await asyncio.gather(*(p.app.close() for p in phones), return_exceptions=True)
        await sim.stop()
    study = await asyncio.to_thread(delay_study, args.instants,
                                    np.random.default_rng(args.seed))
    return report(takes, list(args.groups), study, judged=not args.quick)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 app, 1 agent, 1 take")
    parser.add_argument("--takes", type=int, default=None, help="takes (default 8; quick 1)")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    if args.quick:
        args.agents, args.instants, args.gap, args.first_after = 1, 10_000, 0.0, 1.0
        args.groups = (Group("5 s", 1, 5.0, 1.0),)
        args.takes = args.takes or 1
    else:
        args.agents, args.instants, args.gap, args.first_after = 4, 100_000, 8.0, 1.0
        args.groups = (Group("5 s", 4, 5.0, 1.0), Group("0.5 s", 2, 0.5, 0.1),
                       Group("30 s", 2, 30.0, 1.0))
        args.takes = args.takes or 8
    return serve_and_run("vocalink-android-", {"VOCALINK_ANDROID": "trust"},
                         lambda u, w: run(u, args, w))


if __name__ == "__main__":
    sys.exit(main())
