"""Discovery: register -> discovered and rename -> new name discovered, vocalink vs zeroconf.

Both sides run in this process's private network namespace (the benchmark re-executes
itself under ``unshare --net``, like the test suite), on loopback only, and are watched by
a browser in another process (``_discovery_browser.py``), which stamps each event with the
system-wide monotonic clock.

- vocalink: ``Server.start()`` (advertise on) until the vocalink browser
  (``watch_servers``) has resolved it; ``PUT /api/server`` until the new name is resolved;
  ``Server.stop()`` until the browser sees it leave.
- plain zeroconf: ``AsyncZeroconf.async_register_service`` until a plain
  ``AsyncServiceBrowser`` + ``AsyncServiceInfo.async_request`` has resolved it; a rename is
  register(new) then unregister(old), as vocalink does; ``async_unregister_service`` until
  it leaves.

Both register with RFC 6762 probing (about 1.2 s), which dominates; vocalink does not skip it.
The two sides alternate, each iteration with fresh names. Goal: vocalink's medians within
1.1x of plain zeroconf's.

Usage: ``python benchmarks/discovery.py`` (20 iterations), ``--quick`` (3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from benchmarks._common import AUTH, PYTHON, REPO, median, percentile, table  # noqa: E402
from tests.support import netns  # noqa: E402
from vocalink_lab.config import Settings  # noqa: E402
from vocalink_lab.discovery import SERVICE_TYPE  # noqa: E402
from vocalink_lab.server import Server  # noqa: E402

LOOPBACK = ("127.0.0.1",)
GOAL = 1.10
SIDES = ("vocalink", "plain")
STEPS = ("register", "rename", "stop")


class Browser:
    """A browser child process; its events, awaitable by name."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.events: dict[tuple[str, str], float] = {}
        self._changed = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            PYTHON, str(BENCH_DIR / "_discovery_browser.py"), "--mode", self.mode,
            stdout=asyncio.subprocess.PIPE, cwd=REPO)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.seen("ready", "", timeout=30)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            event = json.loads(raw)
            self.events.setdefault((event["event"], event["name"]), event["t"])
            self._changed.set()

    async def seen(self, event: str, name: str, timeout: float = 20) -> float:
        """Monotonic time of the first ``event`` for ``name``."""
        async with asyncio.timeout(timeout):
            while (event, name) not in self.events:
                self._changed.clear()
                await self._changed.wait()
        return self.events[(event, name)]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


@dataclass
class Results:
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, side: str, step: str, seconds: float) -> None:
        self.times.setdefault((side, step), []).append(seconds * 1000)


async def timed(browser: Browser, event: str, name: str,
                action: Callable[[], Awaitable[object]]) -> float:
    began = time.monotonic()
    await action()
    return await browser.seen(event, name) - began


def put_name(url: str, name: str) -> None:
    request = urllib.request.Request(url + "/api/server", method="PUT",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={**AUTH, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        if json.loads(response.read())["name"] != name:
            raise RuntimeError("the server did not take the name")


async def vocalink_round(i: int, browser: Browser, workdir: Path, results: Results) -> None:
    name, renamed = f"VL {i}", f"VL {i} renamed"
    settings = Settings(data_dir=workdir / f"vl-{i}", host="127.0.0.1", port=0, name=name,
                        advertise=True, interfaces=LOOPBACK)
    server = Server(settings)
    try:
        results.add("vocalink", "register", await timed(browser, "added", name, server.start))
        await server.advertised()
        # The PUT runs in a thread: the server answers it on this loop.
        results.add("vocalink", "rename", await timed(
            browser, "added", renamed, lambda: asyncio.to_thread(put_name, server.url, renamed)))
        results.add("vocalink", "stop", await timed(browser, "removed", renamed, server.stop))
    finally:
        await server.stop()


async def plain_round(i: int, browser: Browser, azc: AsyncZeroconf, results: Results) -> None:
    def info(name: str) -> AsyncServiceInfo:
        return AsyncServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=9000 + i,
                                properties={"name": name, "id": f"plain-{i}"},
                                server=f"plain-{i}.local.", parsed_addresses=list(LOOPBACK))

    name, renamed = f"ZC {i}", f"ZC {i} renamed"
    old, new = info(name), info(renamed)
    results.add("plain", "register", await timed(
        browser, "added", name, lambda: azc.async_register_service(old)))

    async def rename() -> None:
        await azc.async_register_service(new)
        await azc.async_unregister_service(old)

    results.add("plain", "rename", await timed(browser, "added", renamed, rename))
    results.add("plain", "stop", await timed(
        browser, "removed", renamed, lambda: azc.async_unregister_service(new)))


def report(results: Results, iterations: int) -> bool:
    rows = []
    ok = True
    for step in STEPS:
        vl, zc = results.times[("vocalink", step)], results.times[("plain", step)]
        ratio = median(vl) / median(zc)
        goal = step != "stop"
        passed = ratio <= GOAL
        ok &= passed or not goal
        rows.append([{"register": "register -> discovered", "rename": "rename -> new name "
                      "discovered", "stop": "stop -> removed (info)"}[step],
                     median(vl), percentile(vl, 90), median(zc), percentile(zc, 90), ratio,
                     (f"<= {GOAL:.2f}  " + ("PASS" if passed else "FAIL")) if goal else "-"])
    print(f"\ndiscovery on loopback, {iterations} iterations each, ms "
          "(median and p90; ratio of medians)")
    print(table(["step", "vocalink p50", "p90", "zeroconf p50", "p90", "ratio", "goal"], rows))
    return ok


async def run(iterations: int, workdir: Path) -> bool:
    results = Results()
    browsers = {side: Browser(side) for side in SIDES}
    azc = AsyncZeroconf(interfaces=list(LOOPBACK), ip_version=IPVersion.V4Only)
    try:
        for browser in browsers.values():
            await browser.start()
        for i in range(iterations):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            for side in order:
                if side == "vocalink":
                    await vocalink_round(i, browsers[side], workdir, results)
                else:
                    await plain_round(i, browsers[side], azc, results)
            line = "  ".join(f"{side} " + "/".join(f"{results.times[(side, s)][-1]:.0f}"
                                                   for s in STEPS) for side in SIDES)
            print(f"  {i + 1:2d}/{iterations}  register/rename/stop ms: {line}", flush=True)
    finally:
        await azc.async_close()
        for browser in browsers.values():
            await browser.stop()
    return report(results, iterations)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 iterations")
    args = parser.parse_args()
    if not netns.in_private_netns():
        netns.reexec_in_private_netns()  # never returns
    workdir = Path(tempfile.mkdtemp(prefix="vocalink-discovery-"))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return 0 if asyncio.run(run(3 if args.quick else args.iterations, workdir)) else 1
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
