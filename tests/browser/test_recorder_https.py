"""The phone link over HTTPS: what the Server panel's QR code holds, opened in Chromium.

A real Lab (server and controller) runs on 127.0.0.1 in a loop thread with HTTPS forced on
(by default it is on only beyond loopback), its Server and Devices panels built on that
loop. Debian's Chromium, driven by Playwright, trusts the server's own CA by its pin alone
(``--ignore-certificate-errors-spki-list``, the pin the link carries): no certificate is
installed anywhere. The page must be a secure context over that certificate, open its
socket over ``wss://``, pair with the link's code, show up in the Devices panel, and
record and upload over HTTPS; the same page without the code waits for approval.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_dashboard import ARTIFACTS
from tests.browser.test_recorder import TAKE_S, Watched, enable_microphone, tone_chromium, wait_for
from tests.conftest import fast_settings
from vocalink_lab.lab import Lab
from vocalink_lab.links import RecorderLink
from vocalink_lab.widgets import DevicesPanel, ServerPanel

pytestmark = [pytest.mark.slow, pytest.mark.serial]

#: A phone held upright (the README's screenshot is taken in it).
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True,
         "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
                       "(KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"}


@dataclass
class LiveLab:
    """A Lab on its own loop in a thread, with its Server and Devices panels."""

    lab: Lab
    loop: asyncio.AbstractEventLoop
    server_panel: ServerPanel
    devices_panel: DevicesPanel

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any) -> Any:
        """``fn()`` on the Lab's loop (widgets are read where they are changed)."""
        async def on_loop() -> Any:
            return fn()
        return self.run(on_loop())

    def rows(self) -> dict[str, dict[str, str]]:
        return {row["device_id"]: dict(row) for row in self.call(lambda: self.devices_panel.rows)}


@pytest.fixture
def live_lab(tmp_path: Path) -> Iterator[LiveLab]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="lab-loop", daemon=True)
    thread.start()
    data = tmp_path / "data"

    async def start() -> LiveLab:
        lab = await Lab.start(data_dir=data, port=0, host="127.0.0.1",
                              settings=fast_settings(data, tls=True, name="Secure Room"))
        return LiveLab(lab, loop, ServerPanel(lab), DevicesPanel(lab))

    live = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    try:
        yield live
    finally:
        async def stop() -> None:
            live.server_panel.close()
            live.devices_panel.close()
            await live.lab.stop()
        live.run(stop(), timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def pinned_chromium(live_lab: LiveLab, tmp_path: Path) -> Iterator[Any]:
    """Chromium that trusts the link's pin, and nothing else of this server's."""
    pin = RecorderLink.parse(live_lab.server_panel.phone_link).ca_pin
    assert pin, live_lab.server_panel.phone_link
    with tone_chromium(tmp_path, f"--ignore-certificate-errors-spki-list={pin}") as browser:
        yield browser


def test_the_qr_link_pairs_over_https_and_records(live_lab: LiveLab, pinned_chromium: Any) -> None:
    lab = live_lab.lab
    link = live_lab.server_panel.phone_link
    parsed = RecorderLink.parse(link)
    assert parsed.base_url.startswith("https://127.0.0.1:") and parsed.join_code == lab.join_code
    watched = Watched(pinned_chromium, **PHONE)
    try:
        page = watched.page
        answer = page.goto(link)
        assert answer is not None and answer.status == 200
        assert watched.evaluate("window.isSecureContext && location.protocol") == "https:"
        device_id = watched.wait("window.vocalinkRecorder && window.vocalinkRecorder.deviceId")
        enable_microphone(watched)
        rows = wait_for(lambda: (r := live_lab.rows()).get(device_id, {}).get("pairing")
                        == "paired" and r, what="the phone paired, in the Devices panel",
                        page=page)
        assert rows[device_id]["state"] in ("IDLE", "READY"), rows[device_id]
        # Its socket is TLS: the one session the server holds runs on a TLS stream.
        sessions = [s for s in lab.server.sessions if s.device_id == device_id]
        assert len(sessions) == 1
        assert sessions[0].connection.transport.get_extra_info("ssl_object") is not None
        watched.wait("document.body.dataset.state === 'ready'")

        start = live_lab.run(lab.client.command("START", targets=[device_id]))
        recording_id = start["outcomes"][device_id]["recording_id"]
        watched.wait(f"window.vocalinkRecorder.take && "
                     f"window.vocalinkRecorder.take.elapsed >= {TAKE_S}", timeout=15)
        # The person holding the phone sees the state, the time, the server, the battery.
        # (its redraw comes within a quarter of a second of the page's clock)
        watched.wait(f"document.getElementById('state').textContent === "
                     f"'RECORDING 00:0{int(TAKE_S)}'", timeout=5)
        assert page.text_content("#server") == "Secure Room"
        if watched.evaluate("'getBattery' in navigator"):
            assert re.fullmatch(r"(charging )?\d{1,3}%", page.text_content("#battery") or "")
        # In a phone's portrait viewport the page fits without scrolling sideways.
        assert watched.evaluate("document.documentElement.scrollWidth <= innerWidth")
        assert watched.evaluate("document.body.dataset.state") == "recording"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "recorder-phone.png"))
        live_lab.run(lab.client.command("STOP", targets=[device_id]))
        row = wait_for(lambda: next((r for r in live_lab.run(lab.client.recordings())
                                     if r["id"] == recording_id), None),
                       what="the recording uploaded over HTTPS", page=page)
        assert row["device_id"] == device_id and row["duration_s"] > TAKE_S - 0.1
        watched.check()
    finally:
        watched.close()

    # The same page without the code: a stranger, waiting for approval.
    stranger = Watched(pinned_chromium)
    try:
        answer = stranger.page.goto(link.replace(f"?join={parsed.join_code}", ""))
        assert answer is not None and answer.status == 200
        other = stranger.wait("window.vocalinkRecorder && window.vocalinkRecorder.deviceId")
        assert other != device_id
        wait_for(lambda: live_lab.rows().get(other, {}).get("pairing") == "pending",
                 what="the stranger pending in the Devices panel", page=stranger.page)
        stranger.wait("document.body.dataset.state === 'pending'")
        # The page links to the trust page, which shows the pin the link carries.
        stranger.page.click("text=Trust this server on this phone")
        stranger.page.wait_for_url("**/recorder/ca")
        assert stranger.page.text_content("#fingerprint") == parsed.ca_pin
        stranger.check()
    finally:
        stranger.close()
