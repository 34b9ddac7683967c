"""A take's transcript in the dashboard, in Debian's Chromium: transcribe, read, download.

``vocalink dashboard`` runs as a real subprocess (its jobs in its process pool, the real
engine); a take of two devices in one room, people speaking in turn, reaches its server
as devices send takes. A lab assistant opens the Takes tab, selects the take, clicks
Transcribe, watches the job end, reads the lines by device, and downloads the WebVTT,
SRT and CSV files.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.browser.test_dashboard import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    SETUP_HINT,
    Dashboard,
    chromium_path,  # noqa: F401 - a fixture
)
from tests.support.http import Api
from tests.support.speech import SENTENCES, conversation, wav_bytes
from tests.support.takes import record_take

pytestmark = [pytest.mark.slow, pytest.mark.serial]

DEVICES = {"dev-a": "Ana's phone", "dev-b": "Ben's laptop"}


async def _record(server_url: str, tracks: list[bytes]) -> None:
    """The take, as two devices record it and upload their files."""
    api = Api(server_url)
    try:
        server = SimpleNamespace(ws_url=re.sub(r"^http", "ws", server_url) + "/ws/control")
        await record_take(server, api, "take-talk", DEVICES, files=tracks,  # type: ignore[arg-type]
                          started_at=None)  # the audio aligns it, not fake clocks
    finally:
        api.close()


def test_a_take_is_transcribed_read_and_downloaded_from_the_takes_tab(
        tmp_path: Path, chromium_path: str) -> None:  # noqa: F811
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is missing: {SETUP_HINT} (the 'test' extra)")
    tracks, _ = conversation([(0, SENTENCES[4]), (1, SENTENCES[5])], ("en-us", "en-gb+f3"))
    dashboard = Dashboard(tmp_path / "data").start()
    try:
        asyncio.run(_record(dashboard.server_url, [wav_bytes(t) for t in tracks]))
        page_errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 1000},
                                              accept_downloads=True)
                page = context.new_page()
                page.on("pageerror", lambda error: page_errors.append(str(error)))
                page.set_default_timeout(30_000)
                page.goto(dashboard.url, timeout=90_000)

                page.get_by_role("tab", name="Takes").click()
                option = page.locator(".vocalink-takes select option",
                                      has_text=re.compile(r"take-talk\s.*\s2\sfiles"))
                expect(option).to_have_count(1, timeout=30_000)
                page.locator(".vocalink-takes select").select_option(
                    value=option.get_attribute("value"))
                page.get_by_role("button", name="Transcribe").click()
                job = page.locator(".vocalink-job", has_text="Transcribe take")
                expect(job).to_be_visible(timeout=15_000)
                expect(job).to_contain_text(re.compile(r"done: \d+ lines?"), timeout=120_000)

                table = page.locator(".vocalink-transcript")
                expect(table).to_contain_text("Ana's phone", timeout=30_000)
                expect(table).to_contain_text("Ben's laptop")
                expect(table).to_contain_text(re.compile("shimmered", re.IGNORECASE))
                expect(table).to_contain_text(re.compile("lazy cow", re.IGNORECASE))
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard-transcript.png"))

                saved: dict[str, str] = {}
                for fmt in ("vtt", "srt", "csv"):
                    with page.expect_download(timeout=30_000) as download_info:
                        page.locator(f".vocalink-transcript-{fmt}").click()
                    download: Any = download_info.value
                    assert download.suggested_filename == f"take-talk-transcript.{fmt}"
                    target = tmp_path / download.suggested_filename
                    download.save_as(target)
                    saved[fmt] = target.read_text(encoding="utf-8")
            finally:
                browser.close()
        assert saved["vtt"].startswith("WEBVTT") and "<v Ana's phone>" in saved["vtt"]
        assert "<v Ben's laptop>" in saved["vtt"]
        assert re.search(r"^1\n00:00:\d\d,\d{3} --> ", saved["srt"], re.MULTILINE)
        assert "[Ben's laptop]" in saved["srt"]
        header, *rows = saved["csv"].splitlines()
        assert header.startswith("start,end,device,") and len(rows) >= 2
        assert page_errors == []
    finally:
        dashboard.kill()
