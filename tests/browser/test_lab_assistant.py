"""A lab assistant's session on ``vocalink dashboard --demo``, in Debian's Chromium, no code.

Open the page; record a 3-second take with the big button; name it; merge it from the
Takes tab and watch the job's bar finish; download its ZIP (every file's sha256 equal
to the catalog's); clean it; delete one recording after confirming. A screenshot of
every step goes to ``artifacts/``; at every step no image on the page lacks a picture.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_dashboard import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    SETUP_HINT,
    Dashboard,
    api_json,
    chromium_path,  # noqa: F401 - a fixture
    dashboard,  # noqa: F401 - a fixture
)

pytestmark = [pytest.mark.slow, pytest.mark.serial]

#: Every image on the page that has no picture (a broken-image icon).
BROKEN_IMAGES = """() => [...document.images]
    .filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.outerHTML.slice(0, 120))"""


def recordings(server_url: str) -> list[dict[str, Any]]:
    items = api_json(server_url + "/api/audio/list?limit=1000")["items"]
    assert isinstance(items, list)
    return items


def test_a_non_coder_records_merges_downloads_cleans_and_deletes(
        dashboard: Dashboard, chromium_path: str, tmp_path: Path) -> None:  # noqa: F811
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is missing: {SETUP_HINT} (the 'test' extra)")

    page_errors: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    step = 0

    def shot(page: Any, name: str) -> None:
        nonlocal step
        step += 1
        assert page.evaluate(BROKEN_IMAGES) == [], f"a broken image at step {name}"
        page.screenshot(path=str(ARTIFACTS / f"lab-assistant-{step}-{name}.png"))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900},
                                          accept_downloads=True)
            page = context.new_page()
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.set_default_timeout(30_000)
            page.goto(dashboard.url, timeout=90_000)

            # 1. The page: the big button, and who will record.
            record = page.get_by_role("button", name="● Record")
            expect(record).to_be_visible(timeout=60_000)
            expect(page.get_by_text("2 ready", exact=False).first).to_be_visible(
                timeout=60_000)
            shot(page, "open")

            # 2. Record three seconds.
            record.click()
            stop = page.get_by_role("button", name="■ Stop")
            expect(stop).to_be_visible(timeout=15_000)
            expect(page.get_by_text("● 0:03")).to_be_visible(timeout=15_000)
            shot(page, "recording")
            stop.click()
            expect(record).to_be_visible(timeout=15_000)

            # 3. Name the take, after it (Enter writes it).
            name = page.get_by_placeholder("Name this take (optional)")
            name.fill("Session A")
            name.press("Enter")
            expect(page.get_by_text("is now “Session A”")).to_be_visible(timeout=15_000)

            # 4. The Takes tab: the take, once both files are in.
            page.get_by_role("tab", name="Takes").click()
            # (The widget writes its labels with no-break spaces: \s matches them.)
            option = page.locator(".vocalink-takes select option",
                                  has_text=re.compile(r"Session\sA\s.*\s2\sfiles"))
            expect(option).to_have_count(1, timeout=30_000)
            page.locator(".vocalink-takes select").select_option(
                value=option.get_attribute("value"))
            expect(page.get_by_role("button", name="Merge")).to_be_visible()
            shot(page, "takes")
            take_id = next(r["take_id"] for r in recordings(dashboard.server_url))

            # 5. Merge, and watch the job's bar finish in the page.
            page.get_by_role("button", name="Merge").click()
            job = page.locator(".vocalink-job", has_text="Merge take Session A")
            expect(job).to_be_visible(timeout=15_000)
            expect(job).to_contain_text(re.compile(r"done → mrg-\w+"), timeout=60_000)
            assert job.locator(".progress-bar").get_attribute("style") is not None
            expect(page.locator(".vocalink-takes")).to_contain_text("merged", timeout=15_000)
            shot(page, "merged")

            # 6. Download the take: its files, their sha256 as catalogued.
            with page.expect_download(timeout=60_000) as download_info:
                page.get_by_text("⤓ Download ZIP").click()
            saved = tmp_path / "take.zip"
            download_info.value.save_as(saved)
            catalog = {r["id"]: r for r in recordings(dashboard.server_url)}
            with zipfile.ZipFile(saved) as archive:
                manifest = json.loads(archive.read(archive.namelist()[0]))
                members = manifest["members"]
                assert {m["kind"] for m in members} == {"original", "merged"}
                assert len(members) == 3
                for member in members:
                    digest = hashlib.sha256(archive.read(member["file"])).hexdigest()
                    assert digest == catalog[member["recording_id"]]["sha256"], member
            assert manifest["take"]["id"] == take_id and manifest["take"]["name"] == "Session A"

            # 7. Clean the take: one job per track, each ends with a new recording.
            page.get_by_role("button", name="Clean").click()
            cleaned = page.locator(".vocalink-job", has_text="Clean rec-")
            expect(cleaned).to_have_count(2, timeout=15_000)
            for i in range(2):
                expect(cleaned.nth(i)).to_contain_text(re.compile(r"done → \w+-\w+"),
                                                       timeout=120_000)
            shot(page, "cleaned")
            before = recordings(dashboard.server_url)
            assert sorted(r["kind"] for r in before) == ["enhanced", "enhanced", "merged",
                                                         "original", "original"]

            # 8. Delete one recording, after confirming.
            page.get_by_role("tab", name="Recordings").click()
            expect(page.get_by_text("5 recordings")).to_be_visible(timeout=30_000)
            expect(page.locator(".widget-html-content", has_text="5 recordings")
                   ).not_to_contain_text("loading")  # the rows are in
            grid = page.locator(".lm-DataGrid:visible").first
            box = grid.bounding_box()
            assert box is not None
            grid.click(position={"x": box["width"] / 2, "y": 20 + 10})  # the first row
            expect(page.locator(".widget-html-content", has_text="1 selected")).to_be_visible()
            page.get_by_role("button", name="Delete").click()
            confirm = page.get_by_role("button", name="Confirm delete")
            expect(confirm).to_be_visible()
            shot(page, "confirm-delete")
            confirm.click()
            expect(page.get_by_text("4 recordings")).to_be_visible(timeout=30_000)
            after = recordings(dashboard.server_url)
            assert len(after) == 4 and {r["id"] for r in after} < {r["id"] for r in before}
            shot(page, "deleted")
        finally:
            browser.close()

    assert not page_errors, page_errors
