"""DevicesPanel with real simulated devices: grid rows, live state, commands to a selection."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.wait import wait_until
from tests.widgets.conftest import simulated
from vocalink_lab.agent import Simulation, simulate_devices
from vocalink_lab.lab import Lab
from vocalink_lab.widgets import DevicesPanel

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def sim(lab: Lab, tmp_path: Path) -> AsyncIterator[Simulation]:
    async with simulated(lab, tmp_path / "devices", 2) as simulation:
        yield simulation


def states(lab: Lab) -> dict[str, str]:
    return dict(lab.devices["state"])


def cell(panel: DevicesPanel, device_id: str, column: str) -> Any:
    """What the grid holds (and the browser draws) for one device and column."""
    return panel.grid.data.loc[device_id, column]


def known(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


async def test_one_row_per_device_with_its_name(lab: Lab, sim: Simulation) -> None:
    panel = DevicesPanel(lab)
    try:
        rows = panel.rows
        assert [r["device_id"] for r in rows] == ["sim-1", "sim-2"]
        names = {r["device_id"]: r["name"] for r in rows}
        assert names == {d: lab.devices.loc[d, "name"] for d in ("sim-1", "sim-2")}
        assert all(r["state"] == "IDLE" for r in rows)
        assert list(panel.grid.data.index) == ["sim-1", "sim-2"]  # one grid row each
        assert list(panel.grid.data["state"]) == ["IDLE", "IDLE"]
        assert "2 devices, 2 connected" in panel.summary.value
        # The clock columns fill in once the device's clock is measured.
        await wait_until(lambda: all(known(cell(panel, d, c)) for d in ("sim-1", "sim-2")
                                     for c in ("offset_ms", "rtt_ms", "uncertainty_ms")),
                         timeout=5)
        assert cell(panel, "sim-1", "rtt_ms") >= 0
    finally:
        panel.close()


async def test_start_with_one_device_selected_starts_only_that_one(
        lab: Lab, sim: Simulation) -> None:
    panel = DevicesPanel(lab)
    try:
        panel.select(["sim-2"])
        assert panel.selected == ["sim-2"]
        panel.buttons["START"].click()
        await panel.wait_idle(timeout=10)
        assert panel.last_result is not None
        assert set(panel.last_result["outcomes"]) == {"sim-2"}
        assert panel.last_result["outcomes"]["sim-2"]["status"] == "SUCCESS"
        assert "SUCCESS" in panel.message

        # The server's state, and the panel's, from the events.
        await wait_until(lambda: states(lab) == {"sim-1": "IDLE", "sim-2": "RECORDING"},
                         timeout=5)
        await wait_until(lambda: {r["device_id"]: r["state"] for r in panel.rows} ==
                         {"sim-1": "IDLE", "sim-2": "RECORDING"}, timeout=5)
        assert cell(panel, "sim-2", "state") == "RECORDING"
        assert cell(panel, "sim-2", "last_command") == "START SUCCESS"
        assert panel.rows[1]["command"] == "START SUCCESS"
        assert cell(panel, "sim-1", "last_command") == ""  # never commanded
        assert panel.rows[0]["command"] == ""
        assert server_states(lab) == {"sim-1": "IDLE", "sim-2": "RECORDING"}
        # A level (RMS and peak, dBFS) once the recording device reports it.
        await wait_until(lambda: known(cell(panel, "sim-2", "level_dbfs")), timeout=5)
        assert -120 < cell(panel, "sim-2", "level_dbfs") <= 0

        panel.buttons["PAUSE"].click()
        await panel.wait_idle(timeout=10)
        await wait_until(lambda: panel.rows[1]["state"] == "PAUSED", timeout=5)
        panel.buttons["RESUME"].click()
        await panel.wait_idle(timeout=10)
        panel.buttons["STOP"].click()
        await panel.wait_idle(timeout=10)
        assert panel.last_result["outcomes"]["sim-2"]["status"] == "SUCCESS"
        await wait_until(lambda: "RECORDING" not in {r["state"] for r in panel.rows},
                         timeout=5)
    finally:
        panel.close()


def server_states(lab: Lab) -> dict[str, str]:
    assert lab.server is not None
    hub = lab.server.hub
    assert hub is not None
    return {d["device_id"]: d["state"] for d in
            (hub.registry.get(i).to_dict() for i in ("sim-1", "sim-2"))}


async def test_no_selection_commands_every_device_and_shows_each_outcome(
        lab: Lab, sim: Simulation) -> None:
    panel = DevicesPanel(lab)
    try:
        panel.select_all.value = True
        assert panel.selected == ["sim-1", "sim-2"]
        panel.select_all.value = False
        assert panel.selected == []
        panel.command("start")
        await panel.wait_idle(timeout=10)
        assert set(panel.last_result["outcomes"]) == {"sim-1", "sim-2"}
        await wait_until(lambda: set(states(lab).values()) == {"RECORDING"}, timeout=5)
        await wait_until(lambda: {r["state"] for r in panel.rows} == {"RECORDING"}, timeout=5)
        # A second START on recording devices: the ACK outcome (and error) per device.
        panel.command("START")
        await panel.wait_idle(timeout=10)
        outcomes = panel.last_result["outcomes"]
        assert set(outcomes) == {"sim-1", "sim-2"}
        for device_id, outcome in outcomes.items():
            assert outcome["status"] in cell(panel, device_id, "last_command")
        panel.command("STOP")
        await panel.wait_idle(timeout=10)

        panel.command("explode")
        assert "Unknown action" in panel.message
    finally:
        panel.close()


async def test_a_device_going_offline_shows(lab: Lab, tmp_path: Path) -> None:
    simulation = await simulate_devices(1, server_url=lab.url, state_dir=tmp_path / "one",
                                        prefix="solo")
    panel = DevicesPanel(lab)
    try:
        await wait_until(lambda: [r["device_id"] for r in panel.rows] == ["solo-1"], timeout=10)
        await simulation.stop()
        await wait_until(lambda: panel.rows[0]["state"] == "OFFLINE", timeout=10)
        assert "0 connected" in panel.summary.value
    finally:
        panel.close()
        await simulation.stop()
