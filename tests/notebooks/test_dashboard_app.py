"""What the dashboard notebook shows: the lab's panels under a demo switch (no kernel needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import fast_settings
from tests.support.wait import wait_until
from vocalink_lab.agent import simulate_devices
from vocalink_lab.dashboard import dashboard_app
from vocalink_lab.dashboard.app import demo_requested


def connected(app: object, prefix: str = "demo-") -> list[str]:
    lab = app.lab  # type: ignore[attr-defined]
    return [d["device_id"] for d in lab.device_list()
            if d.get("connected") and d["device_id"].startswith(prefix)]


@pytest.mark.asyncio
async def test_the_demo_switch_starts_and_stops_devices(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = await dashboard_app(demo=False, data_dir=data, settings=fast_settings(data))
    try:
        assert app.children[1] is app.dashboard and app.dashboard.devices is not None
        assert not app.demo.toggle.value and not app.demo.running
        app.demo.toggle.value = True  # as a click in the page does
        await wait_until(lambda: len(connected(app)) == 2, timeout=15)
        await wait_until(lambda: "2 connected" in app.demo.status.value, timeout=15)
        assert app.demo.running and not app.demo.toggle.disabled
        app.demo.toggle.value = False
        await wait_until(lambda: not connected(app), timeout=15)
        assert not app.demo.running and app.demo.status.value.count("connected") == 0
    finally:
        await app.stop()


@pytest.mark.asyncio
async def test_demo_devices_running_elsewhere_are_shown_not_doubled(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await dashboard_app(demo=False, data_dir=data, settings=fast_settings(data))
    sim = await simulate_devices(2, server_url=first.lab.url, state_dir=tmp_path / "sim",
                                 prefix="demo")
    try:
        await first.lab.wait_for_devices(2, timeout_s=15)
        await first.demo.start()
        assert not first.demo.running, "another process runs them: start none"
        assert first.demo.toggle.value and first.demo.toggle.disabled
        assert "2 connected" in first.demo.status.value
    finally:
        await sim.stop()
        await first.stop()


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("0", False),
                                                 ("", False), (None, False)])
def test_vocalink_demo_variable(value: str | None, expected: bool) -> None:
    environ = {} if value is None else {"VOCALINK_DEMO": value}
    assert demo_requested(environ) is expected
