"""DevicesPanel at 1,000 devices: a bounded number of widgets, coalesced refreshes that
send only the rows that changed, and commands to exactly the selected rows.

The Lab is real (a real server); the 1,000 devices are the server's own device records
(`DeviceRecord.to_dict`, clock measured from SYNC samples) handed to the Lab as its event
stream hands them over (``Lab._apply``: the mirror is updated, then the panels are
told). Commands go to real simulated devices mixed among them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from ipywidgets.widgets import widget as widget_module

from tests.support.wait import wait_until
from tests.widgets.conftest import simulated
from vocalink_lab.agent import Simulation
from vocalink_lab.hub.clock import ClockSample
from vocalink_lab.hub.registry import DeviceRecord
from vocalink_lab.lab import Lab
from vocalink_lab.protocol import Capabilities, ClientState
from vocalink_lab.widgets import DevicesPanel
from vocalink_lab.widgets.devices import COLUMNS, REFRESH_DELAY_S, ROW_MESSAGES_MAX, device_row

N = 1000


def record(i: int, *, level: float | None = None, pairing: str = "paired",
           connected: bool = True) -> DeviceRecord:
    """Device ``i`` as the server keeps it: named, paired, its clock measured."""
    now = time.time()
    device = DeviceRecord(
        device_id=f"dev-{i:04d}", name=f"Phone {i:04d}", platform="android",
        capabilities=Capabilities(sample_rates=(48000,), channels=(1,), formats=("wav",)),
        first_seen=now, last_seen=now, pairing=pairing, connected=connected,
        remote=f"10.0.{i // 256}.{i % 256}", battery=0.2 + (i % 80) / 100)
    for k in range(3):  # three SYNC exchanges: an offset of i µs, a 4 ms round trip
        t0 = now + k
        device.clock.add(ClockSample(t0, t0 + 0.002 + i * 1e-6, t0 + 0.002 + i * 1e-6,
                                     t0 + 0.004))
    if level is not None:
        device.state = ClientState.RECORDING
        device.level_dbfs, device.peak_dbfs = level, level + 6
    return device


def emit(lab: Lab, topic: str, device: DeviceRecord) -> None:
    """One server event, through the Lab's own handling of its event stream."""
    lab._apply({"topic": topic, "data": {"device": device.to_dict()}})


def widget_count() -> int:
    """Every live widget of the process (ipywidgets' registry)."""
    return len(widget_module._instances)


class Sent:
    """The grid's messages and whole-table sends, recorded (no browser is attached)."""

    def __init__(self, panel: DevicesPanel) -> None:
        self.messages: list[dict[str, Any]] = []
        self.tables = 0
        panel.grid.send = lambda content, buffers=None: self.messages.append(content)
        panel.grid.observe(self._on_data, "_data")

    def _on_data(self, _: Any) -> None:
        self.tables += 1

    def take(self) -> tuple[list[dict[str, Any]], int]:
        out = (self.messages, self.tables)
        self.messages, self.tables = [], 0
        return out


async def settle(panel: DevicesPanel, refreshes: int) -> None:
    """Wait for the coalesced refresh that follows a burst."""
    await wait_until(lambda: panel.refresh_count > refreshes, timeout=5)


@pytest.mark.asyncio
async def test_a_thousand_devices_keep_the_widgets_bounded_and_bursts_coalesced(
        lab: Lab) -> None:
    panel = DevicesPanel(lab)
    try:
        sent = Sent(panel)
        empty = widget_count()
        devices = [record(i) for i in range(N)]
        refreshes = panel.refresh_count
        for device in devices:
            emit(lab, "device.registered", device)
        assert panel.rows == [] and panel.refresh_count == refreshes  # noted, not drawn
        await settle(panel, refreshes)
        assert panel.refresh_count == refreshes + 1  # 1,000 registrations, one refresh
        assert len(panel.rows) == N and panel.ids == [d.device_id for d in devices]
        messages, tables = sent.take()
        assert tables == 1 and messages == []  # new rows: the table, sent once
        assert widget_count() == empty  # a thousand rows, not one widget more
        assert "1000 devices, 1000 connected" in panel.summary.value
        frame = panel.grid.data
        assert list(frame.columns) == list(COLUMNS)
        assert frame.loc["dev-0007", "name"] == "Phone 0007"
        assert frame.loc["dev-0007", "battery_pct"] == 27
        assert frame.loc["dev-0007", "rtt_ms"] == pytest.approx(4.0)
        assert frame.loc["dev-0500", "offset_ms"] == pytest.approx(0.5, abs=0.01)

        # A burst of levels, one per device as they arrive, two devices selected: one
        # refresh (a second later, at 1,000 rows), every row changed: the table, once.
        panel.select(["dev-0002", "dev-0900"])
        for i, device in enumerate(devices):
            device.state = ClientState.RECORDING
            device.level_dbfs, device.peak_dbfs = -20.0 - i % 30, -14.0 - i % 30
            emit(lab, "device.updated", device)
        refreshes = panel.refresh_count
        began = time.monotonic()
        await settle(panel, refreshes)
        assert time.monotonic() - began >= N * 0.001 - 0.05  # the delay grows with the rows
        assert panel.refresh_count == refreshes + 1
        messages, tables = sent.take()
        assert tables == 1 and messages == []
        frame = panel.grid.data
        assert list(frame["level_dbfs"]) == [-20.0 - int(d[4:]) % 30 for d in panel.ids]
        assert list(frame["peak_dbfs"]) == [-14.0 - int(d[4:]) % 30 for d in panel.ids]
        assert set(frame["state"]) == {"RECORDING"}
        assert panel.selected == ["dev-0002", "dev-0900"]  # kept by id
        assert [(r["r1"], r["r2"]) for r in panel.grid.selections] == [(2, 2), (900, 900)]
        assert widget_count() == empty

        # The same values again: nothing to send. Then three devices move: three rows,
        # applied in place by the browser (a message each), the kernel's copy with them.
        for device in devices:
            emit(lab, "device.updated", device)
        refreshes = panel.refresh_count
        await settle(panel, refreshes)
        assert sent.take() == ([], 0)
        moved = [devices[0], devices[417], devices[999]]
        assert len(moved) <= ROW_MESSAGES_MAX
        for device in moved:
            device.level_dbfs = -3.0
            emit(lab, "device.updated", device)
        refreshes = panel.refresh_count
        await settle(panel, refreshes)
        messages, tables = sent.take()
        assert tables == 0
        assert {m["event_type"] for m in messages} == {"row-changed"}
        assert [m["row"] for m in messages] == [panel.ids.index(d.device_id) for d in moved]
        assert all(m["value"] == list(device_row(d.to_dict()))
                   for m, d in zip(messages, moved, strict=True))
        assert all(panel.grid.data.loc[d.device_id, "level_dbfs"] == -3.0 for d in moved)
        assert panel.rows_sent == 3

        # A device going offline keeps its place (the Lab lists it last): one row sent.
        tables = panel.full_updates
        devices[3].connected = False
        emit(lab, "device.offline", devices[3])
        refreshes = panel.refresh_count
        await settle(panel, refreshes)
        messages, _ = sent.take()
        assert panel.full_updates == tables and panel.ids[3] == "dev-0003"
        assert [(m["row"], m["value"][COLUMNS.index("state")]) for m in messages] == [
            (3, "OFFLINE")]
        assert "1000 devices, 999 connected" in panel.summary.value

        # Pending devices get buttons above the grid: bounded (the server keeps 64).
        strangers = [record(N + k, pairing="pending") for k in range(3)]
        for device in strangers:
            emit(lab, "device.registered", device)
        await wait_until(lambda: len(panel.pending) == 3, timeout=5)
        assert [b for b in panel.pending_box.children] == [
            panel._pending_rows[d.device_id].box for d in strangers]
        assert panel.grid.data.loc[strangers[0].device_id, "state"] == "WAITING FOR APPROVAL"
        grown = widget_count() - empty
        assert 0 < grown <= 3 * 12
        for device in strangers:  # approved elsewhere: paired now
            device.pairing = "paired"
            emit(lab, "device.updated", device)
        await wait_until(lambda: panel.pending == [], timeout=5)
        assert panel.pending_box.children == ()
        assert widget_count() == empty  # their buttons are gone, layouts and styles too
    finally:
        panel.close()


@pytest.mark.asyncio
async def test_refreshes_come_at_most_every_refresh_delay(lab: Lab) -> None:
    panel = DevicesPanel(lab)
    try:
        devices = [record(i, level=-30.0) for i in range(50)]
        for device in devices:
            emit(lab, "device.registered", device)
        await settle(panel, panel.refresh_count)
        first = panel.refresh_count
        # A stream of level events for a second: 50 devices, every 20 ms.
        began = time.monotonic()
        step = 0
        while time.monotonic() - began < 1.0:
            step += 1
            for device in devices:
                device.level_dbfs = -30.0 - step % 20
                emit(lab, "device.updated", device)
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - began
        assert step >= 20
        refreshes = panel.refresh_count - first
        assert 1 <= refreshes <= elapsed / REFRESH_DELAY_S + 1
        # The last events are drawn too (by a refresh already due, or the one running).
        await wait_until(lambda: panel.grid.data.loc["dev-0000", "level_dbfs"] ==
                         -30.0 - step % 20, timeout=5)
    finally:
        panel.close()


@pytest_asyncio.fixture
async def sim(lab: Lab, tmp_path: Path) -> AsyncIterator[Simulation]:
    async with simulated(lab, tmp_path / "devices", 3) as simulation:
        yield simulation


@pytest.mark.asyncio
async def test_selected_rows_among_a_thousand_are_exactly_the_devices_commanded(
        lab: Lab, sim: Simulation) -> None:
    panel = DevicesPanel(lab)
    try:
        # 997 devices the server lists as offline (their phones gone), and the 3 real ones.
        for i in range(N - 3):
            emit(lab, "device.registered", record(i, connected=False))
        await wait_until(lambda: len(panel.rows) == N, timeout=5)
        ids = panel.ids
        assert ids[:3] == ["sim-1", "sim-2", "sim-3"]  # connected first

        # The browser selects rows 0 and 2 (ctrl-click): exactly those devices.
        panel.grid.selections = [{"r1": 0, "r2": 0, "c1": 0, "c2": len(COLUMNS) - 1},
                                 {"r1": 2, "r2": 2, "c1": 0, "c2": len(COLUMNS) - 1}]
        assert panel.selected == ["sim-1", "sim-3"]
        assert panel.select_all.value is False
        panel.buttons["START"].click()
        await panel.wait_idle(timeout=10)
        assert panel.last_result is not None
        assert set(panel.last_result["outcomes"]) == {"sim-1", "sim-3"}
        assert all(o["status"] == "SUCCESS" for o in panel.last_result["outcomes"].values())
        await wait_until(lambda: {d: lab.devices.loc[d, "state"] for d in ids[:3]} ==
                         {"sim-1": "RECORDING", "sim-2": "IDLE", "sim-3": "RECORDING"},
                         timeout=5)
        await wait_until(lambda: [r["state"] for r in panel.rows[:3]] ==
                         ["RECORDING", "IDLE", "RECORDING"], timeout=5)
        assert [r["command"] for r in panel.rows[:3]] == ["START SUCCESS", "", "START SUCCESS"]
        assert panel.selected == ["sim-1", "sim-3"]  # refreshes keep the selection

        # A device joins: a new table, the new row at the end, the selection kept by id,
        # through the browser's reset of its selection (an empty one, once) too.
        tables = panel.full_updates
        emit(lab, "device.registered", record(N, connected=True))
        await wait_until(lambda: panel.full_updates > tables, timeout=5)
        assert panel.ids == [*ids, f"dev-{N:04d}"]
        assert panel.selected == ["sim-1", "sim-3"]
        panel.grid.selections = []  # what a browser says after it got the new table
        assert panel.selected == ["sim-1", "sim-3"]
        assert [(r["r1"], r["r2"]) for r in panel.grid.selections] == [(0, 0), (2, 2)]
        panel.grid.selections = []  # the operator clears it
        assert panel.selected == []
        lab._apply({"topic": "device.removed", "data": {"device_id": f"dev-{N:04d}"}})
        await wait_until(lambda: panel.ids == ids, timeout=5)
        panel.select(["sim-1", "sim-3"])

        # Sorted in the browser (state, descending: RECORDING first): the rows it
        # selects are read through its order.
        panel.grid._transforms = [{"type": "sort", "column": "state", "desc": True}]
        view = sorted(range(N), key=lambda r: (panel.rows[r]["state"] != "RECORDING", r))
        panel.grid._visible_rows = view
        panel.grid.selections = [{"r1": 0, "r2": 1, "c1": 0, "c2": len(COLUMNS) - 1}]
        assert panel.selected == ["sim-1", "sim-3"]
        # Ten offline phones' batteries change: the table goes again. The browser resets
        # its selection (an empty one), then reports its new order: the same devices are
        # selected again, at their new rows.
        tables = panel.full_updates
        for i in range(10):
            emit(lab, "device.updated", record(i, connected=False, level=-50.0))
        await wait_until(lambda: panel.full_updates > tables, timeout=5)
        assert panel.selected == ["sim-1", "sim-3"]
        panel.grid.selections = []
        assert panel.selected == ["sim-1", "sim-3"]
        view = view[::-1]
        panel.grid._visible_rows = view
        at = sorted(view.index(ids.index(d)) for d in ("sim-1", "sim-3"))
        assert {r for rect in panel.grid.selections
                for r in range(rect["r1"], rect["r2"] + 1)} == set(at)
        assert panel.selected == ["sim-1", "sim-3"]
        panel.buttons["STOP"].click()
        await panel.wait_idle(timeout=10)
        assert set(panel.last_result["outcomes"]) == {"sim-1", "sim-3"}

        # Select all, then none: every connected device gets the command.
        panel.select_all.value = True
        assert panel.selected == ids
        panel.select_all.value = False
        assert panel.selected == []
        await wait_until(lambda: all(lab.devices.loc[d, "state"] == "IDLE" for d in ids[:3]),
                         timeout=10)
        panel.command("start")
        await panel.wait_idle(timeout=10)
        assert set(panel.last_result["outcomes"]) == {"sim-1", "sim-2", "sim-3"}
        panel.command("stop")
        await panel.wait_idle(timeout=10)
    finally:
        panel.close()


def test_a_row_is_plain_numbers_and_strings_rounded_to_what_is_shown() -> None:
    device = record(5, level=-23.4).to_dict()
    row = dict(zip(COLUMNS, device_row(device), strict=True))
    assert row["name"] == "Phone 0005" and row["pairing"] == "paired"
    assert row["state"] == "RECORDING"
    assert row["level_dbfs"] == -23.0 and row["peak_dbfs"] == -17.0
    assert row["battery_pct"] == 25
    assert row["rtt_ms"] == pytest.approx(4.0) and row["last_command"] == ""
    # A change under the shown resolution leaves the row as it was: nothing is sent.
    device["level_dbfs"] = -23.2
    assert device_row(device) == tuple(row.values())
    state = COLUMNS.index("state")
    offline = dict(device, connected=False)
    assert device_row(offline)[state] == "OFFLINE"
    assert device_row(dict(device, pairing="pending"))[state] == "WAITING FOR APPROVAL"
    failed = device_row(device, {"action": "START", "status": "FAILED", "error": "busy"})
    assert failed[-1] == "START FAILED: busy"
    numbers = slice(COLUMNS.index("level_dbfs"), COLUMNS.index("drift_ppm") + 1)
    assert device_row({"device_id": "x", "clock": None})[numbers] == (None,) * 7
    platform = COLUMNS.index("platform")  # which kind of device: the Android app's say so
    assert device_row(dict(device, platform="android"))[platform] == "android"
