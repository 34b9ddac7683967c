"""Phones' browsers as devices: start skew beside a Python agent, upload throughput, page CPU.

The vocalink server runs as a child process on 127.0.0.1 (plain HTTP: a loopback page is a
secure context); Debian's Chromium, driven by Playwright, opens the recorder page in two
browser contexts (two "phones", each with its own IndexedDB and device key), its fake
microphone playing a 1 kHz tone this run writes; one Python agent (a ``tone:440`` source)
runs in this process. Everything is driven through the REST API, as the Lab does.

Measured, in one run:

- **start skew** of a take, browsers and agent together: each recording's first sample in
  server time (its device's ``started_at`` on its own sample clock, mapped through the
  server's SYNC estimate of that device's clock), latest minus earliest (the take's
  ``skew_ms``), for scheduled STARTs, against a naive START (``lead_ms`` 0: each device
  starts when the command arrives) in the same run, alternating. **Measured from each
  device's sample clock against the scheduled instant, not on the audio**: Chromium's
  fake capture starts its file when the capture opens, so a page and the agent hear no
  shared instant (content alignment's ≤ 1 sample is measured on known truth by
  ``benchmarks/align.py``). Also each file's length against the take's.
- **upload throughput** from STOP's instant to the file stored (the page builds its WAV,
  hashes it and sends it through tus; the agent sends its file through tus), in MB/s,
  page against agent.
- **page CPU**: Chromium's renderer processes while the two pages record, per page, in % of
  one core, against the same pages idle (microphone on, not recording), and the agent's
  process CPU over the same window.

Goals: scheduled start skew p99 ≤ 2 ms (browsers are reported at 1-10 ms); every length
within 20 ms of the take's; page CPU while recording ≤ 10 % of one core.

Usage: ``python benchmarks/browser.py`` (10 rounds, a 30 s take for throughput),
``--quick`` (4 rounds, an 8 s take).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import soundfile
from _common import call, percentile, serve_and_run, table

from vocalink_lab.agent import Agent, AgentConfig

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--no-first-run", "--disable-default-apps", "--disable-extensions",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required"]
PAGES = 2
GOAL_SKEW_MS = 2.0
GOAL_LENGTH_MS = 20.0
GOAL_CPU = 10.0  # % of one core, per page
TAKE_S = 1.5
CPU_WINDOW_S = 8.0


def write_tone(path: Path, hz: float = 1000.0, rate: int = 48000, seconds: float = 4.0) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * hz * t), rate, subtype="PCM_16")
    return path


async def until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"not reached within {timeout:g} s: {what}")
        await asyncio.sleep(0.05)


async def open_page(browser: Any, url: str, code: str) -> tuple[Any, Any, str]:
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{url}/recorder?join={code}")

    async def evaluated(expression: str) -> Any:
        if errors:
            raise RuntimeError(f"page error: {errors}")
        return await page.evaluate(expression)

    device_id = await until(lambda: evaluated(
        "window.vocalinkRecorder && window.vocalinkRecorder.deviceId"), 20, "the page's id")
    if await page.is_visible("#enable"):
        await page.click("#enable")
    await until(lambda: evaluated("document.body.dataset.state === 'ready' && "
                                  "document.body.dataset.mic === 'on'"), 30,
                "the page paired, microphone on")
    return context, page, device_id


async def take(url: str, devices: list[str], *, scheduled: bool, seconds: float
               ) -> dict[str, Any]:
    """One take on every device; its report once every file is stored."""
    body: dict[str, Any] = {"action": "START"}
    if not scheduled:
        body["lead_ms"] = 0
    started = await call(url + "/api/commands", "POST", body)
    bad = {d: o for d, o in started["outcomes"].items() if o["status"] != "SUCCESS"}
    if bad or set(started["outcomes"]) != set(devices):
        raise RuntimeError(f"START: {started['outcomes']}")
    await asyncio.sleep(seconds)  # the take's length; what is measured is its files
    stopped = await call(url + "/api/commands", "POST",
                         {"action": "STOP", **({} if scheduled else {"lead_ms": 0})})
    # The take ends at STOP's instant (server time; this machine's clock), later than sent.
    stop_sent = stopped.get("start_at") or time.time()
    take_id = started["take_id"]

    async def stored() -> Any:
        report = await call(url + f"/api/takes/{take_id}")
        return report if len(report["recordings"]) == len(devices) else None

    report = await until(stored, 120, f"the {len(devices)} files of take {take_id}")
    return {"started": started, "stopped": stopped, "report": report, "stop_sent": stop_sent}


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def chromium_processes() -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(renderers, the rest) among this process's Chromium descendants."""
    renderers, rest = [], []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(process.cmdline())
            if "chrom" not in process.name().lower() and "chrom" not in cmdline:
                continue
            (renderers if "--type=renderer" in cmdline else rest).append(process)
    return renderers, rest


async def cpu_window(agent_proc: psutil.Process, seconds: float) -> tuple[float, float, float]:
    """% of one core over ``seconds``: renderers per page, the rest of Chromium, this process."""
    renderers, rest = chromium_processes()
    before = (cpu_seconds(renderers), cpu_seconds(rest), cpu_seconds([agent_proc]))
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    after = (cpu_seconds(renderers), cpu_seconds(rest), cpu_seconds([agent_proc]))
    render, other, ours = ((a - b) / elapsed * 100 for a, b in zip(after, before, strict=True))
    return render / PAGES, other, ours


async def run(url: str, workdir: Path, rounds: int, long_s: float) -> bool:
    from playwright.async_api import async_playwright

    tone = write_tone(workdir / "tone.wav")
    code = (await call(url + "/api/server"))["pairing"]["join_code"]
    agent = Agent(AgentConfig(state_dir=workdir / "agent", server_url=url, device_id="agent",
                              source="tone:440", sample_rate=48000))
    checks: list[tuple[str, bool]] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={tone}"])
        try:
            pages = [await open_page(browser, url, code) for _ in range(PAGES)]
            await agent.start()
            await until(lambda: _connected(agent), 20, "the agent connected")
            devices = [device_id for _, _, device_id in pages] + ["agent"]
            rate = int((await call(url + f"/api/clients/{devices[0]}"))
                       ["capabilities"]["sample_rates"][0])
            print(f"2 pages (Chromium, {rate} Hz) + 1 agent (48000 Hz); "
                  f"waiting for their clocks to settle", flush=True)
            await asyncio.sleep(4.0)  # SYNC rounds: every device's clock estimate

            skews: dict[str, list[float]] = {"scheduled": [], "naive": []}
            lengths_ms: list[float] = []
            for i in range(rounds):
                scheduled = i % 2 == 0
                side = "scheduled" if scheduled else "naive"
                result = await take(url, devices, scheduled=scheduled, seconds=TAKE_S)
                skew = result["report"]["skew"]["skew_ms"]
                skews[side].append(skew)
                if scheduled:
                    expected = result["stopped"]["start_at"] - result["started"]["start_at"]
                    lengths_ms += [abs(r["duration_s"] - expected) * 1000
                                   for r in result["report"]["recordings"]]
                late = {d[:10]: o.get("late_ms") for d, o in result["started"]["outcomes"].items()}
                print(f"  {i + 1:2d}/{rounds}  {side:9s} skew {skew:8.3f} ms   late_ms {late}",
                      flush=True)

            # Throughput: one longer take; from STOP to each file stored.
            result = await take(url, devices, scheduled=True, seconds=long_s)
            throughput: dict[str, list[float]] = {"page": [], "agent": []}
            for row in result["report"]["recordings"]:
                stored_at = row.get("created_at") or row.get("received_at")
                seconds = max(1e-3, float(stored_at) - result["stop_sent"]) \
                    if stored_at else float("nan")
                kind = "agent" if row["device_id"] == "agent" else "page"
                throughput[kind].append(row["bytes"] / 1e6 / seconds)

            # CPU: pages idle, then recording, the same length.
            agent_proc = psutil.Process()
            idle = await cpu_window(agent_proc, CPU_WINDOW_S)
            started = await call(url + "/api/commands", "POST", {"action": "START"})
            await asyncio.sleep(0.5)
            recording = await cpu_window(agent_proc, CPU_WINDOW_S)
            await call(url + "/api/commands", "POST", {"action": "STOP"})
            await until(lambda: _stored(url, started["take_id"], len(devices)), 60,
                        "the CPU take's files")
        finally:
            with contextlib.suppress(Exception):
                await agent.stop()
            await browser.close()

    s99, n99 = percentile(skews["scheduled"], 99), percentile(skews["naive"], 99)
    print(f"\nstart skew of a take, 2 browser pages + 1 agent, {rounds} rounds "
          "(from each device's sample clock, in server time; ms)")
    print(table(["START", "p50", "p99", "max", "naive p99 / this p99"], [
        ["scheduled", percentile(skews["scheduled"], 50), s99, max(skews["scheduled"]),
         n99 / s99 if s99 > 0 else float("inf")],
        ["naive (lead 0)", percentile(skews["naive"], 50), n99, max(skews["naive"]), 1.0],
    ]))
    page_mb = float(np.mean(throughput["page"]))
    agent_mb = float(np.mean(throughput["agent"]))
    print(f"\nupload, STOP to stored, a {long_s:g} s take (MB/s; page {rate} Hz, agent 48 kHz)")
    print(table(["device", "MB/s", "vs agent"], [["page (mean of 2)", page_mb,
                                                   page_mb / agent_mb],
                                                  ["agent", agent_mb, 1.0]]))
    print(f"\nCPU over {CPU_WINDOW_S:g} s (% of one core)")
    print(table(["state", "renderer per page", "rest of Chromium", "this process (agent)"], [
        ["idle (mic on)", *idle], ["recording", *recording],
        ["recording / idle", *(r / i if i > 0 else float("inf")
                               for r, i in zip(recording, idle, strict=True))]]))
    checks.append((f"scheduled start skew p99 {s99:.3f} ms <= {GOAL_SKEW_MS:g} ms",
                   s99 <= GOAL_SKEW_MS))
    worst = max(lengths_ms)
    checks.append((f"every file's length within {worst:.3f} ms of the take's "
                   f"(<= {GOAL_LENGTH_MS:g} ms)", worst <= GOAL_LENGTH_MS))
    checks.append((f"page CPU while recording {recording[0]:.1f} % of one core "
                   f"<= {GOAL_CPU:g} %", recording[0] <= GOAL_CPU))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in checks)


async def _connected(agent: Agent) -> bool:
    return agent.connected.is_set()


async def _stored(url: str, take_id: str, n: int) -> bool:
    return len((await call(url + f"/api/takes/{take_id}"))["recordings"]) == n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="half of them naive")
    parser.add_argument("--quick", action="store_true", help="4 rounds, an 8 s take")
    args = parser.parse_args()
    rounds, long_s = (4, 8.0) if args.quick else (args.rounds, 30.0)
    if not CHROMIUM.is_file():
        print(f"Debian's Chromium ({CHROMIUM}) is missing: run `bash scripts/test.sh`",
              file=sys.stderr)
        return 2
    return serve_and_run("vocalink-browser-", {"VOCALINK_SYNC_INTERVAL_S": "1"},
                         lambda u, w: run(u, w, rounds, long_s))


if __name__ == "__main__":
    sys.exit(main())
