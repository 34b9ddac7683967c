"""A page of another origin, in Chromium, can neither read the server nor command it.

The victim's browser holds the token's cookie (it opened the server's URL with
``?token=``). Then it visits a hostile page served from another port of the same host
(same site: SameSite=Strict still sends the cookie) and from another address. That page
tries every way a page has: reading the API with credentials, a "simple" no-cors POST that
needs no preflight, a form post, and both WebSockets. Nothing reads, and no device hears a
command. Debian's Chromium, driven by Playwright; a real server; a real device.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.test_dashboard import CHROMIUM, CHROMIUM_ARGS, SETUP_HINT
from tests.conftest import fast_settings
from tests.support.device import FakeDevice
from vocalink_lab.protocol import Command
from vocalink_lab.server import Server

pytestmark = [pytest.mark.slow, pytest.mark.serial]

ATTACK = """<!doctype html><meta charset="utf-8"><title>cute cats</title><script>
const target = "TARGET";
const results = {};
async function attempt(name, fn) {
  try { results[name] = await fn(); } catch (e) { results[name] = "error: " + e; }
}
function socket(path) {
  return new Promise((resolve) => {
    const ws = new WebSocket(target.replace("http", "ws") + path);
    ws.onmessage = (m) => resolve("read: " + String(m.data).slice(0, 80));
    ws.onerror = () => resolve("refused");
    ws.onclose = (e) => resolve("closed " + e.code);
    setTimeout(() => resolve("timeout"), 5000);
  });
}
(async () => {
  await attempt("read_clients", async () => {
    const r = await fetch(target + "/api/clients", {credentials: "include"});
    return "read: " + (await r.text()).slice(0, 80);
  });
  await attempt("no_cors_command", async () => {
    await fetch(target + "/api/commands", {method: "POST", mode: "no-cors",
      credentials: "include", headers: {"Content-Type": "text/plain"},
      body: JSON.stringify({action: "START"})});
    return "sent";
  });
  await attempt("no_cors_rename", async () => {
    await fetch(target + "/api/server", {method: "PUT", mode: "no-cors",
      credentials: "include", body: JSON.stringify({name: "Pwned"})});
    return "sent";
  });
  await attempt("json_command", async () => {
    const r = await fetch(target + "/api/commands", {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({action: "STOP"})});
    return "read: " + r.status;
  });
  await attempt("events_socket", () => socket("/ws/events"));
  await attempt("control_socket", () => socket("/ws/control"));
  document.title = "done";
  window.results = results;
})();
</script>"""


class _Page(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def serve_page(host: str, body: bytes) -> Iterator[str]:
    handler = type("Page", (_Page,), {"body": body})
    httpd = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="attack-page", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_a_page_of_another_origin_can_neither_read_nor_command(tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.fail(f"Debian's Chromium ({CHROMIUM}) is missing: {SETUP_HINT}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is missing: {SETUP_HINT}")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="server-loop", daemon=True)
    thread.start()

    def run(coro: object, timeout: float = 30) -> object:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)  # type: ignore[arg-type]

    server = Server(fast_settings(tmp_path / "data", name="Lab Room"))
    run(server.start())
    device = FakeDevice(server.ws_url, "mic-1")
    try:
        run(device.connect())
        target = server.url
        token = os.environ["VOCALINK_TOKEN"]
        page_body = ATTACK.replace("TARGET", target).encode()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context()
                victim = context.new_page()
                # The lab member opens the server's URL with its token: the cookie is set.
                answer = victim.goto(f"{target}/api/server?token={token}")
                assert answer is not None and answer.status == 200
                assert any(c["name"].startswith("vocalink-token-") for c in context.cookies())
                for host in ("127.0.0.1", "127.0.0.2"):  # another port; another address
                    for url in serve_page(host, page_body):
                        page = context.new_page()
                        page.goto(url)
                        page.wait_for_function("document.title === 'done'", timeout=30_000)
                        results = page.evaluate("window.results")
                        for name, outcome in results.items():
                            assert not str(outcome).startswith("read"), (host, name, outcome)
                        assert results["events_socket"] in ("refused", "closed 1006"), results
                        assert results["control_socket"] in ("refused", "closed 1006"), results
                        page.close()
            finally:
                browser.close()
        # Nothing reached the device, and nothing changed.
        assert not device.of_type(Command)
        assert server.name == "Lab Room"
        assert server.hub is not None and not server.hub.commands.recent(10)
    finally:
        run(device.close())
        run(server.stop(), timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
