"""``vocalink dashboard --demo`` in Debian's Chromium: record a take with two devices, offline.

The dashboard runs as a real subprocess on 127.0.0.1 (the server, two simulated devices
and Voila); Playwright drives Debian's Chromium (never a browser Playwright downloads).
The page must work with no network at all (the suite's namespace has only ``lo``) and
must not even try to reach any host but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
#: As root on this closed network: no sandbox, and none of Chromium's own traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--no-first-run", "--disable-default-apps", "--disable-extensions"]
SETUP_HINT = "run `bash scripts/test.sh`, which installs it"
LOOPBACK_ENV = {"VOCALINK_HOST": "127.0.0.1", "VOCALINK_ADVERTISE": "0",
                "VOCALINK_INTERFACES": "127.0.0.1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}

pytestmark = [pytest.mark.slow, pytest.mark.serial]


class Dashboard:
    """``python -m vocalink_lab dashboard`` on 127.0.0.1, port 0; reads what it prints."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.args = [sys.executable, "-m", "vocalink_lab", "dashboard", "--no-browser",
                     "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir), *extra]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.page_url = ""
        self.server_url = ""
        self.lines: list[str] = []

    def start(self, timeout: float = 90) -> Dashboard:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **LOOPBACK_ENV}, cwd=REPO)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not any("Ctrl-C" in line for line in self.lines):
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.kill()
                _, err = self.proc.communicate(timeout=30)
                raise AssertionError(f"dashboard did not start: {self.lines}\n{err}")
            self.lines.append(line.rstrip("\n"))
        self.url = self.lines[0]  # with its token, as Jupyter prints it
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=\S+", self.url), self.lines
        self.page_url = self.url.split("?", 1)[0]
        server = next(line for line in self.lines if line.strip().startswith("server:"))
        self.server_url = server.split()[1].rstrip(";")
        return self

    def processes(self) -> list[psutil.Process]:
        """The dashboard, Voila and every kernel."""
        assert self.proc is not None
        parent = psutil.Process(self.proc.pid)
        return [parent, *parent.children(recursive=True)]

    def interrupt(self, timeout: float = 45) -> tuple[int, str, str]:
        """Ctrl-C; its exit status and what it printed after."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for proc in reversed(self.processes()):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            self.proc.wait(10)


@pytest.fixture
def chromium_path() -> str:
    if not CHROMIUM.is_file():
        pytest.fail(f"Debian's Chromium ({CHROMIUM}, apt package chromium) is missing: "
                    f"{SETUP_HINT}")
    return str(CHROMIUM)


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    running = Dashboard(tmp_path / "data", "--demo").start()
    try:
        yield running
    finally:
        running.kill()


def host_of(url: str) -> str:
    """The host a request goes to (a ``blob:`` URL's is its origin's)."""
    url = url.removeprefix("blob:")
    return urlsplit(url).hostname or url


def api_json(url: str) -> dict[str, object]:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {os.environ['VOCALINK_TOKEN']}"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_record_a_take_from_the_dashboard(dashboard: Dashboard, chromium_path: str) -> None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is missing: {SETUP_HINT} (the 'test' extra)")

    requested: list[str] = []
    page_errors: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.on("websocket", lambda ws: requested.append(ws.url))
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.set_default_timeout(30_000)
            page.goto(dashboard.url, timeout=90_000)

            # The demo switch shows the two devices `--demo` runs.
            demo = page.get_by_role("checkbox", name="Demo devices (simulated)")
            expect(demo).to_be_checked(timeout=60_000)
            expect(page.get_by_text("2 connected", exact=True)).to_be_visible()

            page.get_by_role("tab", name="Devices").click()
            # The rows are drawn on the grid's canvas; the summary line counts what they say.
            summary = page.locator(".widget-html-content", has_text="2 devices, 2 connected")
            expect(summary).to_be_visible()
            expect(page.locator(".lm-DataGrid:visible")).to_have_count(1)
            expect(summary).not_to_contain_text("recording")

            page.get_by_role("button", name="Start", exact=True).click()
            expect(summary).to_contain_text("· 2 recording", timeout=15_000)
            page.wait_for_timeout(1500)  # levels arrive once a second
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
            page.get_by_role("button", name="Stop", exact=True).click()
            expect(summary).not_to_contain_text("recording", timeout=15_000)

            # Both uploads land in the catalog, and the table shows them.
            page.get_by_role("tab", name="Recordings").click()
            expect(page.get_by_text("2 recordings")).to_be_visible(timeout=30_000)
            # The rows follow once the tab has been quiet a moment.
            expect(page.locator(".widget-html-content", has_text="2 recordings")
                   ).not_to_contain_text("loading")
            listed = api_json(dashboard.server_url + "/api/audio/list")["items"]
            assert isinstance(listed, list) and len(listed) == 2
            expected = {item["id"] for item in listed}
            assert {item["device_id"] for item in listed} == {"demo-1", "demo-2"}

            # The grid is a canvas: select its two rows and read the selection back.
            grid = page.locator(".lm-DataGrid:visible").first  # the Devices grid is hidden
            box = grid.bounding_box()
            assert box is not None
            header = row = 20  # ipydatagrid's default header and row heights
            grid.click(position={"x": box["width"] / 2, "y": header + row / 2})
            grid.click(position={"x": box["width"] / 2, "y": header + row * 1.5},
                       modifiers=["Shift"])
            label = page.locator(".widget-html-content", has_text="2 selected")
            expect(label).to_be_visible()
            shown = set(re.findall(r"rec-[0-9a-f]+", label.inner_text()))
            assert shown == expected
            page.screenshot(path=str(ARTIFACTS / "dashboard-recordings.png"))
        finally:
            browser.close()

    assert not page_errors, page_errors
    hosts = {host_of(url) for url in requested if not url.startswith("data:")}
    assert hosts == {"127.0.0.1"}, f"the page reached beyond this machine: {sorted(hosts)}"
    assert any("/fontawesome/" in url for url in requested), "icons come from the package"

    children = dashboard.processes()[1:]
    code, out, err = dashboard.interrupt()
    assert code == 0, err
    assert out.rstrip().endswith("stopped")
    assert "Traceback" not in err
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[p.pid for p in alive]}"


def test_voila_and_kernels_end_with_the_dashboard_even_if_killed(tmp_path: Path) -> None:
    """SIGKILL leaves Voila no chance to be stopped: it notices and shuts its kernels down."""
    running = Dashboard(tmp_path / "data").start()
    try:
        # A kernel is ready before anyone asks for the page (pre-heated, the notebook run).
        deadline = time.monotonic() + 60
        while not [p for p in running.processes()[1:]
                   if "ipykernel_launcher" in " ".join(p.cmdline())]:
            assert time.monotonic() < deadline, "no pre-heated kernel"
            time.sleep(0.05)
        # Without the token, the page asks for it (Voila's login page, as Jupyter's); with
        # it, the page renders.
        parts = urlsplit(running.page_url)
        plain = http.client.HTTPConnection(parts.hostname, parts.port, timeout=90)
        plain.request("GET", "/")
        refused = plain.getresponse()
        assert refused.status == 302, refused.status
        assert refused.getheader("Location", "").startswith("/login"), refused.getheaders()
        plain.close()
        with urllib.request.urlopen(running.url, timeout=90) as response:  # noqa: S310
            assert response.status == 200
            page = response.read().decode()
        assert "cdn.jsdelivr.net" not in page and "/fontawesome/css/all.min.css" in page
        children = running.processes()[1:]
        # The page's kernel is the pre-heated one; the next is started only later.
        kernels = [p for p in children if "ipykernel_launcher" in " ".join(p.cmdline())]
        assert len(kernels) == 1, [p.cmdline() for p in children]
        assert running.proc is not None
        running.proc.kill()
        running.proc.wait(10)
        gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        running.kill()


# -- empty states, broken images, a tablet's viewport ---------------------------------------

TABS = ("Server", "Devices", "Takes", "Recordings", "Waveform", "Enhance")
#: Whether every ``img`` on the page has finished loading, and those without a picture
#: (a broken-image icon), each with the index of the tab it is in (-1: none):
#: ``[loaded, [[tab, html], ...]]``. Hidden tabs count: they are in the DOM too.
IMAGES = """() => {
  const images = [...document.images];
  const tabs = [...document.querySelectorAll('.widget-tab-contents > *')];
  return [images.every((i) => i.complete),
          images.filter((i) => i.complete && !(i.naturalWidth > 0))
                .map((i) => [tabs.findIndex((t) => t.contains(i)),
                             i.outerHTML.slice(0, 100)])];
}"""
#: How far the page is wider than the viewport (px; 0: no horizontal overflow).
OVERFLOW = """() => Math.max(document.documentElement.scrollWidth,
                            document.body.scrollWidth) - window.innerWidth"""


def upload_wav(server_url: str, recording_id: str, seconds: float = 1.5) -> None:
    """A tone, stored through the server's upload endpoint (with the suite's token)."""
    import io

    import numpy as np
    import soundfile as sf

    from tests.support.http import multipart_body

    t = np.arange(int(16000 * seconds)) / 16000
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 440 * t), 16000, format="WAV")
    body, ctype = multipart_body(buffer.getvalue(), recording_id=recording_id,
                                 device_id="phone-1")
    request = urllib.request.Request(
        server_url + "/api/audio/upload", data=body, method="POST",
        headers={"Content-Type": ctype,
                 "Authorization": f"Bearer {os.environ['VOCALINK_TOKEN']}"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        assert response.status == 201


def test_no_broken_image_and_no_overflow_at_1024x768(tmp_path: Path,
                                                     chromium_path: str) -> None:
    """Every tab, empty and with a recording selected, on a tablet's 1024 × 768 viewport."""
    from playwright.sync_api import expect, sync_playwright

    running = Dashboard(tmp_path / "data").start()
    page_errors: list[str] = []
    broken: dict[str, list[str]] = {}  # "<tab the image is in>, <state>": its img
    overflow: dict[str, int] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1024, "height": 768})
                page.on("pageerror", lambda error: page_errors.append(str(error)))
                page.set_default_timeout(30_000)
                page.goto(running.url, timeout=90_000)

                def audit(state: str) -> None:
                    for title in TABS:
                        page.get_by_role("tab", name=title).click()
                        shown = page.locator(".widget-tab-contents > :not(.lm-mod-hidden)")
                        expect(shown).to_have_count(1)
                        expect(shown.get_by_text("Loading…")).to_have_count(0)
                        if title == "Waveform" and state == "empty":
                            expect(shown.get_by_text(
                                "Select a recording to see its waveform")).to_be_visible()
                        if title == "Waveform" and state == "selected":
                            expect(shown.locator("img")).to_have_count(2, timeout=30_000)
                        page.wait_for_function(f"({IMAGES})()[0]")
                        for tab, image in page.evaluate(IMAGES)[1]:
                            where = TABS[tab] if tab >= 0 else "page"
                            broken.setdefault(f"{where}, {state}", []).append(image)
                        overflow[f"{title}, {state}"] = page.evaluate(OVERFLOW)

                audit("empty")

                upload_wav(running.server_url, "rec-tablet")
                page.get_by_role("tab", name="Recordings").click()
                expect(page.get_by_text("1 recording", exact=False).first).to_be_visible()
                grid = page.locator(".lm-DataGrid:visible").first
                box = grid.bounding_box()
                assert box is not None
                grid.click(position={"x": min(box["width"] / 2, 400), "y": 30})
                expect(page.locator(".widget-html-content",
                                    has_text="1 selected")).to_be_visible()
                audit("selected")
                page.get_by_role("tab", name="Waveform").click()
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard-1024x768.png"))
            finally:
                browser.close()
    finally:
        running.kill()

    assert not page_errors, page_errors
    assert not {k: v for k, v in overflow.items() if v > 0}, overflow
    assert not broken, broken
