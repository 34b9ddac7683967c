"""Dashboard: Voila cold render to interactive, and the Recordings table's refresh at 10,000 rows.

Everything runs on 127.0.0.1, in headless Debian Chromium (``/usr/bin/chromium``) driven by
Playwright, with the same Voila (the package's runner, ``vocalink`` template, kernelspec on
this Python) for the dashboard and for its baselines, measured in the same run:

- cold render → interactive: from launching the server process to a click answered by the
  kernel, in a fresh browser context. Dashboard: ``python -m vocalink_lab dashboard`` (the
  recording server and Voila, as shipped: one kernel pre-heated), ``Recordings`` tab →
  ``Play`` with nothing selected → the panel's "Select a recording" status. Baseline:
  Voila alone, with its defaults (a kernel started for each visit), on a notebook with one
  widget (a Button whose click writes a label). Measured with an empty catalog and with
  N recordings (default 10,000), the variants alternating round by round. The page is
  asked for as soon as the URL is printed (a pre-heated kernel has had no head start).
- table refresh at N rows: in the dashboard on the N-recording data dir, the Kind filter
  goes from ``enhanced`` (no row) to ``all``; timed from the selection until the page
  says ``N recordings`` (the kernel sends it right after the grid's data) and the grid
  holds rows (its vertical scrollbar shows). The panel rebuilds its DataFrame from the
  Lab's rows each time. Baseline: a bare Voila notebook with one ipydatagrid ``DataGrid``
  (the panel's widget), a prebuilt N-row frame of the same columns swapped in by the
  same kind of Dropdown, timed the same way.

The N recordings are written into a data dir first through the `Catalog` API (rows) and
as tiny WAV files (so the catalog and the files agree).

- Devices grid, a burst of updates at D devices (default 1,000), in this process (no
  browser: what the kernel does and sends): the `DevicesPanel` gets one ``device.updated``
  per device (a new level each) through its event handler, then its coalesced refresh
  runs (every row changed: the table, in one message); timed from the first event to the
  refresh's end, with every message the grid sends packed as the kernel's session packs
  it (``jupyter_client``'s ``json_packer``, binary buffers counted). Also a burst where 3
  devices change (3 ``row-changed`` messages). Baseline: a bare ``DataGrid`` of the same
  columns and D rows, a prebuilt frame with the new values assigned to it (the whole
  table sent), packed the same way. What the browser then does is not timed here.

Usage: ``python benchmarks/dashboard.py`` (3 rounds, 10,000 recordings), ``--quick``
(1 round, 2,000 recordings), ``--rounds``, ``--recordings``, ``--refreshes``,
``--devices``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
from _common import PYTHON, Child, children, median, table

from vocalink_lab.dashboard import (
    VoilaOptions,
    free_port,
    voila_command,
    voila_environment,
    write_kernelspec,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--no-first-run", "--disable-extensions"]
ENV = {"VOCALINK_HOST": "127.0.0.1", "VOCALINK_ADVERTISE": "0",
       "VOCALINK_INTERFACES": "127.0.0.1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
TIMEOUT_MS = 180_000

BARE_BUTTON = """\
import ipywidgets as w
label = w.HTML("not clicked")
button = w.Button(description="Click me")
button.on_click(lambda _: setattr(label, "value", "clicked"))
w.VBox([button, label])
"""

BARE_GRID = """\
import os
import numpy as np
import pandas as pd
import ipywidgets as w
from ipydatagrid import DataGrid

n = int(os.environ["BENCH_ROWS"])
rng = np.random.default_rng(0)
ids = [f"rec-{i:020x}" for i in range(n)]
frame = pd.DataFrame({
    "kind": ["original"] * n,
    "device": [f"Device {i % 8}" for i in range(n)],
    "take": [f"take-20260101-000000-{i // 4:04x}" for i in range(n)],
    "duration_s": np.round(rng.uniform(1, 600, n), 3),
    "sample_rate": np.full(n, 48000.0),
    "channels": np.ones(n),
    "format": ["wav"] * n,
    "size_kb": np.round(rng.uniform(10, 5e4, n), 1),
    "created_utc": ["2026-01-01 00:00:00"] * n,
    "parents": [""] * n,
}, index=pd.Index(ids, name="id", dtype=object))
empty = frame.iloc[:0]
grid = DataGrid(empty, selection_mode="row", editable=False, base_column_size=110,
                base_row_header_size=210, layout=w.Layout(height="360px", width="100%"))
kind = w.Dropdown(options=["all", "enhanced"], value="enhanced", description="Kind")
count = w.HTML("0 rows")

def show(change):
    grid.data = frame if change["new"] == "all" else empty
    count.value = f"{len(grid.data)} rows"

kind.observe(show, "value")
w.VBox([kind, count, grid])
"""


@dataclass
class Results:
    cold: dict[str, list[float]] = field(default_factory=dict)
    refresh: dict[str, list[float]] = field(default_factory=dict)

    def add(self, table_: dict[str, list[float]], key: str, value: float) -> None:
        table_.setdefault(key, []).append(value)


# -- data --------------------------------------------------------------------------------


def write_notebook(path: Path, source: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


async def fill_catalog(data_dir: Path, n: int) -> float:
    """``n`` original recordings: rows through the Catalog API, tiny WAV files on disk."""
    import hashlib
    import io

    import soundfile as sf

    from vocalink_lab.storage.catalog import Catalog, Recording

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(1600, np.float32), 16000, format="WAV", subtype="PCM_16")
    blob = buffer.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    began = time.perf_counter()
    now = time.time() - n
    rng = np.random.default_rng(1)
    async with Catalog(data_dir / "vocalink.db") as catalog:
        for i in range(n):
            take = f"take-20260101-000000-{i // 4:04x}"
            rid = f"rec-{i:020x}"
            path = f"recordings/{take}/{rid}.wav"
            target = data_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
            await catalog.add(Recording(
                id=rid, path=path, format="wav", sample_rate=16000, channels=1, frames=1600,
                duration_s=0.1, bytes=len(blob), sha256=digest, created_at=now + i,
                take_id=take, device_id=f"dev-{i % 8}", device_name=f"Device {i % 8}",
                started_at=now + i, params={"gain_db": float(rng.normal())}))
    return time.perf_counter() - began


# -- the Devices grid, in this process ------------------------------------------------------


class WireComm:
    """Stands in for a kernel's comm: packs each message as the session does, counts bytes."""

    kernel = True  # ipywidgets sends state only through a comm with a kernel

    def __init__(self, comm_id: str) -> None:
        from jupyter_client.session import json_packer

        self.comm_id = comm_id
        self._pack = json_packer
        self.messages = 0
        self.bytes = 0

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.messages += 1
        self.bytes += len(self._pack(data)) + sum(memoryview(b).nbytes for b in buffers or ())

    def on_msg(self, callback: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


class DeviceMirror:
    """The Controller's device side, as a Lab's mirror serves it (no server needed here)."""

    url = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, Any]] = {}
        self.listeners: list[tuple[set[str], Callable[[str, dict[str, Any]], object]]] = []

    def device_list(self) -> list[dict[str, Any]]:
        return sorted(self.devices.values(),
                      key=lambda d: (not d.get("connected"), str(d.get("name")).lower()))

    def on(self, topics: Any, callback: Callable[[str, dict[str, Any]], object]
           ) -> Callable[[], None]:
        self.listeners.append(({topics} if isinstance(topics, str) else set(topics), callback))
        return lambda: None

    def emit(self, topic: str, device: dict[str, Any]) -> None:
        self.devices[device["device_id"]] = device
        for topics, callback in list(self.listeners):
            if topic in topics:
                callback(topic, {"device": device})


def device_dicts(n: int, level: float) -> list[dict[str, Any]]:
    """``n`` devices as the server lists them (its own records), recording at ``level``."""
    from vocalink_lab.hub.clock import ClockSample
    from vocalink_lab.hub.registry import DeviceRecord
    from vocalink_lab.protocol import Capabilities, ClientState

    now = time.time()
    out = []
    for i in range(n):
        record = DeviceRecord(
            device_id=f"dev-{i:04d}", name=f"Phone {i:04d}", platform="android",
            capabilities=Capabilities(sample_rates=(48000,), channels=(1,), formats=("wav",)),
            first_seen=now, last_seen=now, pairing="paired", battery=0.5,
            state=ClientState.RECORDING, level_dbfs=level - i % 30, peak_dbfs=level + 6)
        for k in range(3):
            record.clock.add(ClockSample(now + k, now + k + 0.002 + i * 1e-6,
                                         now + k + 0.002 + i * 1e-6, now + k + 0.004))
        out.append(record.to_dict())
    return out


async def devices_burst(n: int, repeats: int) -> dict[str, list[tuple[float, int]]]:
    """(seconds, bytes sent) per burst: the panel's, and the bare grid's baseline."""
    from ipydatagrid import DataGrid

    from vocalink_lab.widgets import DevicesPanel
    from vocalink_lab.widgets.devices import device_row, devices_frame

    mirror = DeviceMirror()
    levels = [device_dicts(n, -20.0), device_dicts(n, -40.0)]
    for device in levels[0]:
        mirror.devices[device["device_id"]] = device
    panel = DevicesPanel(mirror)  # type: ignore[arg-type]  # duck-typed, as the tests do
    panel.grid.comm = wire = WireComm(panel.grid.model_id)
    ids = panel.ids
    frames = [devices_frame(ids, [device_row(d) for d in dicts]) for dicts in levels]
    bare = DataGrid(frames[0].iloc[:0], selection_mode="row", editable=False)
    bare.comm = bare_wire = WireComm(bare.model_id)
    out: dict[str, list[tuple[float, int]]] = {}

    def timed(name: str, burst: Callable[[], None], comm: WireComm) -> None:
        sent = comm.bytes
        began = time.perf_counter()
        burst()
        out.setdefault(name, []).append((time.perf_counter() - began, comm.bytes - sent))

    def every(dicts: list[dict[str, Any]]) -> None:
        for device in dicts:
            mirror.emit("device.updated", device)
        panel._flush()  # the refresh the events scheduled, now rather than in 0.25 s

    def three(level: float) -> None:
        for device in levels[0][:3]:
            mirror.emit("device.updated", dict(device, level_dbfs=level))
        panel._flush()

    try:
        for r in range(repeats):
            timed(f"Devices panel: {n} devices change", lambda r=r: every(levels[(r + 1) % 2]),
                  wire)
            timed(f"baseline: bare DataGrid, {n}-row frame assigned",
                  lambda r=r: setattr(bare, "data", frames[(r + 1) % 2]), bare_wire)
            timed("Devices panel: 3 devices change", lambda r=r: three(-10.0 - r % 2), wire)
    finally:
        panel.close()
        bare.close()
    return out


def report_devices(bursts: dict[str, list[tuple[float, int]]], n: int) -> None:
    base = median([s for s, _ in bursts[f"baseline: bare DataGrid, {n}-row frame assigned"]])
    rows = []
    for name, values in bursts.items():
        seconds = [s for s, _ in values]
        rows.append([name, median(seconds) * 1000, min(seconds) * 1000, max(seconds) * 1000,
                     len(values), median([b for _, b in values]) / 1024,
                     median(seconds) / base])
    print(f"\nDevices grid, an update burst at {n} devices (ms in this process, from the "
          "first event to the refresh's end, messages packed as a kernel's; baseline: a "
          "bare DataGrid given a prebuilt frame)")
    print(table(["figure", "median ms", "min", "max", "n", "KiB sent", "× baseline"], rows))


# -- processes ------------------------------------------------------------------------------


def wait_listening(child: Child, port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{child.name}: not listening on {port} after {timeout:g} s")


@contextlib.contextmanager
def dashboard_server(data_dir: Path, log_dir: Path, started: list[Child]) -> Iterator[str]:
    """``python -m vocalink_lab dashboard``; yields the page URL."""
    child = Child("dashboard", [PYTHON, "-m", "vocalink_lab", "dashboard", "--no-browser",
                                "--host", "127.0.0.1", "--port", "0", "--data-dir",
                                str(data_dir)],
                  log_path=log_dir / f"dashboard-{len(started)}.log", env=ENV)
    started.append(child)
    try:
        url = child.readline(120)
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"dashboard: expected its URL first, got {url!r}")
        child.drain_stdout()
        yield url
    finally:
        child.stop(30)
        started.remove(child)


@contextlib.contextmanager
def bare_voila(notebook: Path, runtime: Path, log_dir: Path, started: list[Child],
               rows: int = 0) -> Iterator[str]:
    """The same Voila (runner, template, kernelspec) on a bare notebook; yields the URL."""
    port = free_port("127.0.0.1", 0)
    env = voila_environment({**os.environ, **ENV}, kernels_dir=runtime,
                            data_dir=runtime / "unused", demo=False)
    env["BENCH_ROWS"] = str(rows)
    child = Child("voila", voila_command(VoilaOptions(port=port), notebook=notebook),
                  log_path=log_dir / f"voila-{len(started)}.log", env=env)
    started.append(child)
    try:
        wait_listening(child, port)
        child.drain_stdout()
        yield f"http://127.0.0.1:{port}/"
    finally:
        child.stop(30)
        started.remove(child)


# -- measurements ---------------------------------------------------------------------------


def cold_render(browser: Any, launch: Callable[[], contextlib.AbstractContextManager[str]],
                interact: Callable[[Any], None]) -> float:
    """Seconds from launching the server to a click answered by the kernel."""
    began = time.perf_counter()
    with launch() as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url, timeout=TIMEOUT_MS)
            interact(page)
            return time.perf_counter() - began
        finally:
            context.close()


def click_bare(page: Any) -> None:
    page.get_by_role("button", name="Click me").click()
    page.get_by_text("clicked", exact=True).wait_for()


def click_dashboard(page: Any) -> None:
    page.get_by_role("tab", name="Recordings").click()
    page.get_by_role("button", name="Play", exact=True).click()
    page.get_by_text("Select a recording to play").wait_for()


#: True when the page says ``text`` and the grid's vertical scrollbar is shown (rows beyond
#: the viewport) or hidden (no rows), as ``rows`` asks: the grid itself has the new data.
SETTLED = """([text, rows]) => {
  if (!document.body.innerText.includes(text)) return false;
  // The grid on show: the dashboard has others (the Devices panel's) in hidden tabs.
  const grid = [...document.querySelectorAll('.lm-DataGrid')]
    .find((g) => g.getClientRects().length > 0);
  const bar = grid && grid.querySelector('.lm-DataGrid-scrollBar[data-orientation="vertical"]');
  return !!bar && bar.classList.contains('lm-mod-hidden') === !rows;
}"""


def time_until(page: Any, action: Callable[[], None], text: str, rows: bool) -> float:
    began = time.perf_counter()
    action()
    page.wait_for_function(SETTLED, arg=[text, rows], timeout=TIMEOUT_MS, polling="raf")
    return time.perf_counter() - began


def refreshes(page: Any, repeats: int, *, empty_text: str, full_text: str) -> list[float]:
    """Kind ``enhanced`` (no row), then ``all`` (every row): seconds until the grid has them."""
    kind = page.get_by_role("combobox", name="Kind")
    times = []
    for _ in range(repeats):
        time_until(page, lambda: kind.select_option("enhanced"), empty_text, rows=False)
        page.wait_for_timeout(300)
        times.append(time_until(page, lambda: kind.select_option("all"), full_text, rows=True))
        page.wait_for_timeout(300)
    return times


def measure_refresh(browser: Any, url: str, *, dashboard: bool, n: int, repeats: int
                    ) -> list[float]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url, timeout=TIMEOUT_MS)
        if dashboard:
            page.get_by_role("tab", name="Recordings").click()
            page.get_by_text(f"{n} recordings", exact=False).first.wait_for()
            return refreshes(page, repeats, empty_text=f"0 of {n} recordings",
                             full_text=f"\u00a0{n} recordings")
        page.get_by_text("0 rows").wait_for()
        return refreshes(page, repeats, empty_text="0 rows", full_text=f"{n} rows")
    finally:
        context.close()


def run(args: argparse.Namespace, workdir: Path) -> Results:
    from playwright.sync_api import sync_playwright

    runtime = workdir / "runtime"
    write_kernelspec(runtime)
    button_nb = write_notebook(workdir / "bare_button.ipynb", BARE_BUTTON)
    grid_nb = write_notebook(workdir / "bare_grid.ipynb", BARE_GRID)
    full = workdir / "data-full"
    full.mkdir()
    seconds = asyncio.run(fill_catalog(full, args.recordings))
    print(f"catalog: {args.recordings} recordings written in {seconds:.1f} s", flush=True)
    results = Results()
    n = args.recordings
    with children() as started, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for r in range(args.rounds):
                empty = workdir / f"data-empty-{r}"
                variants: list[tuple[str, Callable[[], Any], Callable[[Any], None]]] = [
                    ("bare Voila, one widget",
                     lambda: bare_voila(button_nb, runtime, workdir, started), click_bare),
                    ("dashboard, empty catalog",
                     lambda e=empty: dashboard_server(e, workdir, started), click_dashboard),
                    (f"dashboard, {n} recordings",
                     lambda: dashboard_server(full, workdir, started), click_dashboard),
                ]
                if r % 2:
                    variants.reverse()
                for name, launch, interact in variants:
                    value = cold_render(browser, launch, interact)
                    results.add(results.cold, name, value)
                    print(f"  round {r + 1}/{args.rounds}  cold render  {name:28s} "
                          f"{value:6.2f} s", flush=True)
            for r in range(args.rounds):
                order = [True, False] if r % 2 == 0 else [False, True]
                for is_dashboard in order:
                    if is_dashboard:
                        with dashboard_server(full, workdir, started) as url:
                            times = measure_refresh(browser, url, dashboard=True, n=n,
                                                    repeats=args.refreshes)
                        name = "Recordings panel"
                    else:
                        with bare_voila(grid_nb, runtime, workdir, started, rows=n) as url:
                            times = measure_refresh(browser, url, dashboard=False, n=n,
                                                    repeats=args.refreshes)
                        name = "bare DataGrid"
                    for value in times:
                        results.add(results.refresh, name, value)
                    print(f"  round {r + 1}/{args.rounds}  refresh {n} rows  {name:18s} "
                          f"median {median(times) * 1000:7.1f} ms", flush=True)
        finally:
            browser.close()
    return results


def report(results: Results, n: int) -> None:
    base = "bare Voila, one widget"
    rows = []
    for name, values in results.cold.items():
        ratio = median(values) / median(results.cold[base])
        rows.append([f"cold render → interactive: {name}", median(values), min(values),
                     max(values), len(values), ratio])
    print(f"\nVoila cold render to interactive (s; launch → a click answered by the kernel; "
          f"baseline: {base}, same Voila)")
    print(table(["figure", "median s", "min", "max", "n", "× baseline"], rows))
    rows = []
    bare = results.refresh.get("bare DataGrid", [])
    for name in ("Recordings panel", "bare DataGrid"):
        values = results.refresh.get(name, [])
        if not values:
            continue
        rows.append([f"refresh {n} rows: {name}", median(values) * 1000,
                     min(values) * 1000, max(values) * 1000, len(values),
                     median(values) / median(bare)])
    print(f"\ntable refresh, Kind enhanced → all ({n} rows; ms from the selection until the "
          "page shows the count and the grid holds the rows; baseline: a bare DataGrid "
          "notebook)")
    print(table(["figure", "median ms", "min", "max", "n", "× baseline"], rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="cold renders per variant")
    parser.add_argument("--recordings", type=int, default=10_000)
    parser.add_argument("--refreshes", type=int, default=5, help="refreshes per round")
    parser.add_argument("--devices", type=int, default=1000, help="devices in the grid")
    parser.add_argument("--quick", action="store_true", help="1 round, 2,000 recordings")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.recordings, args.refreshes = 1, 2000, 3
    if not Path(CHROMIUM).is_file():
        print(f"error: {CHROMIUM} is missing (Debian package chromium; scripts/test.sh "
              "installs it)", file=sys.stderr)
        return 2
    bursts = asyncio.run(devices_burst(args.devices, 5 if args.quick else 20))
    report_devices(bursts, args.devices)
    workdir = Path(tempfile.mkdtemp(prefix="vocalink-dashboard-bench-"))
    try:
        results = run(args, workdir)
        report(results, args.recordings)
        print(json.dumps({"cold_s": {k: median(v) for k, v in results.cold.items()},
                          "refresh_ms": {k: median(v) * 1000
                                         for k, v in results.refresh.items()},
                          "devices_burst_ms": {k: median([s for s, _ in v]) * 1000
                                               for k, v in bursts.items()}}))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
