"""The browser recorder (``/recorder``): a phone joins with a code, records a tone, uploads it.

A real server runs on 127.0.0.1 in a loop thread; Debian's Chromium, driven by Playwright,
opens the page with its fake microphone playing a 1 kHz tone from a WAV this test writes
(Chromium loops it). Over ``http://127.0.0.1`` the page is a secure context, so
``getUserMedia``, ``crypto.subtle`` and the AudioWorklet all work without TLS. The test
commands the page through the REST API as an operator would, and checks the file the
server stored: the page's sample rate, the tone's pitch, the length between START and
STOP, and the SHA-256. A page with neither a code nor a key waits for approval. The page's
own headers (its Content-Security-Policy, types, no way out of its folder) are checked
without a browser, in the fast lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from tests.browser.test_dashboard import CHROMIUM, CHROMIUM_ARGS, SETUP_HINT
from tests.conftest import fast_settings
from tests.support.errors import assert_error_shape
from vocalink_lab.server import Server
from vocalink_lab.server.recorder import RECORDER_DIR

TONE_HZ = 1000.0
TONE_RATE = 48_000
TONE_S = 4.0  # a whole number of cycles: the loop Chromium plays has no seam
#: How long the page records between START and STOP (waited for, on the page's clock).
TAKE_S = 2.0


def write_tone(path: Path) -> Path:
    """A WAV Chromium's fake microphone plays: 48 kHz mono 16-bit, a 1 kHz tone."""
    t = np.arange(int(TONE_RATE * TONE_S)) / TONE_RATE
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * TONE_HZ * t), TONE_RATE, subtype="PCM_16")
    return path


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "", *,
             page: Any = None) -> Any:
    """Poll ``condition`` until it returns something true; return it (or fail).

    With a ``page``, the wait between polls is the page's: Playwright's sync API handles
    the browser's events (routes, console messages) only while it is called.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what or condition}")
        if page is not None:
            page.wait_for_timeout(50)
        else:
            time.sleep(0.05)


@dataclass
class LiveServer:
    """A `Server` on its own event loop in a thread, and a blocking REST client for it."""

    server: Server
    loop: asyncio.AbstractEventLoop
    token: str = field(default_factory=lambda: os.environ["VOCALINK_TOKEN"])

    @property
    def url(self) -> str:
        return self.server.url

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(self, method: str, path: str, body: Any = None, *, token: bool = True,
                timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, _, raw = self.request(method, path, body, **kw)
        assert status in (200, 201, 202), (method, path, status, raw[:500])
        return json.loads(raw)

    def client(self, device_id: str) -> dict[str, Any] | None:
        items = self.json("GET", "/api/clients")
        items = items["items"] if isinstance(items, dict) else items
        return next((c for c in items if c["device_id"] == device_id), None)


@contextlib.contextmanager
def live_server(data_dir: Path, **overrides: Any) -> Iterator[LiveServer]:
    """A `LiveServer` on its own loop thread, with `fast_settings` and ``overrides``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="server-loop", daemon=True)
    thread.start()
    live = LiveServer(Server(fast_settings(data_dir, **overrides)), loop)
    live.run(live.server.start())
    try:
        yield live
    finally:
        live.run(live.server.stop(), timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    # SYNC each second: a page takes a silent link for dead after 3 s, not 15 (the tests
    # that cut the network wait less).
    with live_server(tmp_path / "data", name="Lab Room", sync_interval_s=1.0) as server:
        yield server


@contextlib.contextmanager
def tone_chromium(folder: Path, *extra_args: str) -> Iterator[Any]:
    """Debian's Chromium, its fake microphone playing the tone (written in ``folder``), and
    a fake permission prompt; ``extra_args`` go on its command line."""
    if not CHROMIUM.is_file():
        pytest.fail(f"Debian's Chromium ({CHROMIUM}) is missing: {SETUP_HINT}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is missing: {SETUP_HINT}")
    tone = write_tone(folder / "tone.wav")
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={tone}",
            *extra_args]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    """`tone_chromium`, for a test."""
    with tone_chromium(tmp_path) as browser:
        yield browser


class Watched:
    """A page whose console is kept, and whose uncaught errors fail the test."""

    def __init__(self, browser: Any, **context_options: Any) -> None:
        self.context = browser.new_context(**context_options)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def check(self) -> None:
        assert not self.errors, f"page errors: {self.errors}\nconsole: {self.console}"

    def evaluate(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def wait(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value.

        Playwright's ``wait_for_function`` polls with ``eval`` in the page, which the
        page's Content-Security-Policy forbids (as it should); ``evaluate`` does not.
        """
        try:
            return wait_for(lambda: self.page.evaluate(expression), timeout, what=expression,
                            page=self.page)
        except AssertionError as error:  # what the page said is what explains it
            raise AssertionError(f"{error}\npage console (last 30): {self.console[-30:]}") \
                from None

    def close(self) -> None:
        self.context.close()


def open_recorder(browser: Any, url: str) -> Watched:
    watched = Watched(browser)
    answer = watched.page.goto(url)
    assert answer is not None and answer.status == 200
    return watched


def enable_microphone(watched: Watched) -> None:
    """Tap the page as a person would when the browser wants a gesture for audio."""
    watched.wait("document.body.dataset.mic !== 'off' || window.vocalinkRecorder.needsTap",
                 timeout=15)
    if watched.page.is_visible("#enable"):
        watched.page.click("#enable")
    watched.wait("document.body.dataset.mic === 'on'", timeout=15)


@pytest.mark.slow
@pytest.mark.serial
def test_a_phone_joins_with_the_code_records_a_tone_and_uploads_it(
        live: LiveServer, chromium: Any) -> None:
    code = live.json("GET", "/api/server")["pairing"]["join_code"]
    assert code
    watched = open_recorder(chromium, f"{live.url}/recorder?join={code}")
    try:
        page = watched.page
        device_id = watched.wait("window.vocalinkRecorder && window.vocalinkRecorder.deviceId")
        assert device_id.startswith("web-")
        enable_microphone(watched)
        client = wait_for(lambda: (c := live.client(device_id)) is not None
                          and c["pairing"] == "paired" and c["connected"] and c,
                          what="the page registered and paired with the join code", page=page)
        assert client["platform"] == "browser"
        rates = client["capabilities"]["sample_rates"]
        assert len(rates) == 1 and rates[0] >= 8000, client["capabilities"]
        # The key the server handed out is kept for the next visit.
        assert page.evaluate("localStorage.getItem('vocalink.device_key')")
        watched.wait("document.body.dataset.state === 'ready'")
        assert page.text_content("#server") == "Lab Room"

        # The first PATCH is cut, as a lost Wi-Fi would: the page asks where the upload is
        # (HEAD) and goes on from there.
        uploads: list[str] = []

        def cut_first_patch(route: Any) -> None:
            uploads.append(route.request.method)
            if uploads.count("PATCH") == 1 and route.request.method == "PATCH":
                route.abort("connectionreset")
            else:
                route.continue_()

        page.route("**/api/audio/uploads**", cut_first_patch)
        start = live.json("POST", "/api/commands", {"action": "START", "targets": [device_id]})
        outcome = start["outcomes"][device_id]
        assert outcome["status"] == "SUCCESS", start
        recording_id = outcome["recording_id"]
        assert recording_id and outcome["started_at"]
        watched.wait("document.body.dataset.state === 'recording'")
        watched.wait(f"window.vocalinkRecorder.take && "
                     f"window.vocalinkRecorder.take.elapsed >= {TAKE_S}", timeout=15)
        stop = live.json("POST", "/api/commands", {"action": "STOP", "targets": [device_id]})
        assert stop["outcomes"][device_id]["status"] == "SUCCESS", stop
        assert stop["outcomes"][device_id]["recording_id"] == recording_id

        items = wait_for(lambda: [r for r in live.json("GET", "/api/audio/list")["items"]
                                  if r["id"] == recording_id],
                         what=f"{recording_id} in the catalog", page=page)
        row = items[0]
        status, _, body = live.request("GET", f"/api/audio/{recording_id}")
        assert status == 200
        audio, rate = soundfile.read(io.BytesIO(body), dtype="float64")
        assert rate == rates[0] == row["sample_rate"]
        assert row["sha256"] == hashlib.sha256(body).hexdigest()
        assert row["device_id"] == device_id and row["take_id"] == start["take_id"]
        # The length is what the two instants set, scheduled in the server's clock.
        if start["start_at"] is not None and stop["start_at"] is not None:
            expected = stop["start_at"] - start["start_at"]
        else:
            expected = stop["issued_at"] - start["issued_at"]
        assert abs(len(audio) / rate - expected) < 0.1, (len(audio) / rate, expected)
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
        peak_hz = np.fft.rfftfreq(len(audio), 1 / rate)[int(np.argmax(spectrum))]
        assert abs(peak_hz - TONE_HZ) <= 10, peak_hz
        assert np.sqrt(np.mean(audio**2)) > 0.05  # the tone, not silence
        # The phone keeps nothing once the server has the same bytes.
        watched.wait("window.vocalinkRecorder.pending === 0 && "
                     "document.body.dataset.state === 'ready'")
        assert page.evaluate("window.vocalinkRecorder.uploaded") == [recording_id]
        assert uploads == ["POST", "PATCH", "HEAD", "PATCH"], uploads
        # The next visit, without the code, presents the key the page kept: paired at once.
        connections = live.client(device_id)["connections"]
        page.goto(f"{live.url}/recorder")
        watched.wait("document.body.dataset.state === 'ready'")
        assert watched.evaluate("window.vocalinkRecorder.deviceId") == device_id
        client = wait_for(lambda: (c := live.client(device_id))["connections"] > connections
                          and c, what="the page registered again", page=page)
        assert client["pairing"] == "paired" and client["connected"]
        watched.check()
    finally:
        watched.close()


@pytest.mark.slow
@pytest.mark.serial
def test_without_a_code_or_a_key_the_page_waits_for_approval(
        live: LiveServer, chromium: Any) -> None:
    watched = open_recorder(chromium, f"{live.url}/recorder")
    try:
        page = watched.page
        device_id = watched.wait("window.vocalinkRecorder && window.vocalinkRecorder.deviceId")
        client = wait_for(lambda: live.client(device_id), what="the page registered", page=page)
        assert client["pairing"] == "pending"
        watched.wait("document.body.dataset.state === 'pending'")
        assert page.text_content("#state") == "WAITING FOR APPROVAL"
        assert not page.evaluate("localStorage.getItem('vocalink.device_key')")
        # Audio stopped by the system (as a phone does on a call): the page asks for a tap,
        # and the tap brings the microphone back.
        enable_microphone(watched)
        assert not page.is_visible("#enable")
        watched.evaluate("window.vocalinkRecorder.capture.context.suspend()")
        watched.wait("window.vocalinkRecorder.needsTap && document.body.dataset.mic === 'off'")
        assert page.is_visible("#enable")
        page.click("#enable")
        watched.wait("document.body.dataset.mic === 'on'")
        assert not page.is_visible("#enable")
        # Its level reaches the server while it waits, so the operator can tell which it is.
        wait_for(lambda: ((live.client(device_id) or {}).get("level_dbfs") or -120) > -20,
                 what="the tone's level in the device's STATUS", page=page)
        # A pending device gets no command.
        status, _, raw = live.request("POST", "/api/commands",
                                      {"action": "START", "targets": [device_id]})
        assert status == 409, raw
        # The connection drops (the server closes it): the page comes back by itself, as
        # the same device, still waiting (the server forgets a pending device that left).
        assert watched.evaluate("window.vocalinkRecorder.sessions") == 1

        async def drop() -> None:
            for session in list(live.server.sessions):
                if session.device_id == device_id:
                    session.close(1001, "dropped by the test")

        live.run(drop())
        watched.wait("window.vocalinkRecorder.sessions === 2")
        client = wait_for(lambda: live.client(device_id), what="the page registered again",
                          page=page)
        assert client["pairing"] == "pending" and client["connected"]
        watched.wait("document.body.dataset.state === 'pending'")
        watched.check()
    finally:
        watched.close()


def test_the_page_and_its_files_are_public_typed_and_guarded(live: LiveServer) -> None:
    for path in ("/recorder", "/recorder/", "/recorder?join=K7QM-2XDF"):
        status, headers, body = live.request("GET", path, token=False)
        assert status == 200, path
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert b'<script type="module" src="/recorder/static/recorder.js">' in body
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        host = live.url.split("//", 1)[1]
        assert f"connect-src 'self' ws://{host} wss://{host}" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-cache"
    status, headers, body = live.request("HEAD", "/recorder", token=False)
    assert (status, body) == (200, b"")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    # Every module the page ships, found in the package (a new one is checked too).
    names = sorted(p.name for p in RECORDER_DIR.glob("*.js"))
    assert {"recorder.js", "capture-worklet.js", "sha256.js", "upload.js"} <= set(names)
    for name in names:
        status, headers, _ = live.request("GET", f"/recorder/static/{name}", token=False)
        assert status == 200, name
        assert headers["Content-Type"] == "text/javascript; charset=utf-8", name
        assert headers["Cache-Control"] == "no-cache"
    status, headers, _ = live.request("GET", "/recorder/static/recorder.css", token=False)
    assert (status, headers["Content-Type"]) == (200, "text/css; charset=utf-8")
    # Nothing outside the page's folder, and errors in the one shape.
    for path in ("/recorder/static/../../app.py", "/recorder/static/%2e%2e/%2e%2e/app.py",
                 "/recorder/static/..%2f..%2fapp.py", "/recorder/static/nope.js",
                 "/recorder/static/"):
        status, headers, raw = live.request("GET", path, token=False)
        assert status in (403, 404), (path, status)
        assert b"import" not in raw
        assert_error_shape(json.loads(raw), status)
