"""The lab assistant's panels: the big Record button, the Takes tab and the Jobs strip.

A real Lab with simulated devices (real WebSockets, real uploads, real SQLite, real
enhance and merge jobs in threads); the panels are driven as the page drives them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.wait import wait_until
from tests.widgets.conftest import simulated, tone, upload
from vocalink_lab.lab import Lab
from vocalink_lab.widgets.jobs import JobsPanel, describe_job
from vocalink_lab.widgets.record import RecordPanel, format_elapsed, readiness
from vocalink_lab.widgets.takes import TakesPanel, take_label


def test_elapsed_and_readiness_in_words() -> None:
    assert [format_elapsed(s) for s in (0, 9.9, 75, 3600 + 62)] == \
        ["0:00", "0:09", "1:15", "1:01:02"]
    groups = readiness([{"device_id": "a", "name": "Ann", "connected": True},
                        {"device_id": "b", "connected": True, "pairing": "pending"},
                        {"device_id": "c", "name": "Cy", "connected": False}])
    assert groups == {"ready": ["Ann"], "pending": ["b"], "offline": ["Cy"]}


def test_a_take_and_a_job_read_as_one_line() -> None:
    take = {"id": "take-1", "name": "Interview", "started_at": 1_800_000_000.0,
            "stopped_at": 1_800_000_042.4, "duration_s": 42.4, "devices": ["a", "b"],
            "recordings": 2, "notes": "room 2", "skew": {"skew_ms": 0.12, "bound_ms": 0.3}}
    assert take_label(take) == ("2027-01-15 08:00:00 UTC · Interview · 0:42 · 2 devices · "
                                "2 files · skew 0.12 ms (≤ 0.30) · “room 2”")
    assert "recording…" in take_label({**take, "stopped_at": None, "duration_s": None})
    merge = {"kind": "merge", "params": {"ids": ["a", "b"], "mode": "multichannel"}}
    assert describe_job(merge) == "Merge 2 recordings (multichannel)"
    assert describe_job(merge, lambda ids: "Interview" if ids == ["a", "b"] else None) == \
        "Merge take Interview (multichannel)"
    assert describe_job({"kind": "enhance", "params": {"recording_id": "rec-1",
                                                       "preset": "auto"}}) == \
        "Clean rec-1 (auto)"


@pytest.mark.asyncio
async def test_no_device_no_take_says_what_to_do(lab: Lab) -> None:
    record, takes = RecordPanel(lab), TakesPanel(lab)
    try:
        assert "No device yet" in record.who.value
        record.button.click()
        assert record.message_kind == "error" and "No device is ready" in record.message
        assert not record.recording
        assert "No take yet" in takes.empty.value
        assert takes.takes.layout.display == "none"
        takes.merge()
        assert takes.message_kind == "error" and "Select a take" in takes.message
    finally:
        record.close()
        takes.close()


@pytest.mark.asyncio
async def test_record_name_stop_then_the_take_is_listed(lab: Lab, tmp_path: Path) -> None:
    async with simulated(lab, tmp_path / "devices", 2):
        record, takes, jobs = RecordPanel(lab), TakesPanel(lab), JobsPanel(lab)
        try:
            await wait_until(lambda: "2 ready" in record.who.value, timeout=5)
            record.take_name.value = "Interview 1"  # before the take: used at Record
            record.button.click()
            await wait_until(lambda: record.recording, timeout=10)
            assert record.button.description == "■ Stop"
            take_id = record.take_id
            assert take_id is not None
            # The clock runs while the take does.
            await wait_until(lambda: record.elapsed_s() >= 1.0, timeout=5)
            await wait_until(lambda: "0:01" in record.elapsed.value, timeout=5)
            await wait_until(lambda: any(t["id"] == take_id and t.get("name") == "Interview 1"
                                         for t in lab.take_list()), timeout=10)
            record.button.click()
            await wait_until(lambda: not record.recording, timeout=10)
            assert record.button.description == "● Record"
            await lab.wait_for_recordings(take_id, 2, timeout_s=20)
            # Renamed after the take, from the same box.
            record.take_name.value = "Interview 1 (kept)"
            await wait_until(lambda: any(t.get("name") == "Interview 1 (kept)"
                                         for t in lab.take_list()), timeout=10)

            # The Takes tab: the take, its files, name and notes.
            await wait_until(lambda: any(v == take_id for _, v in takes.takes.options),
                             timeout=10)
            takes.select(take_id)
            assert takes.detail.layout.display == "flex"
            await wait_until(lambda: takes.recordings.value.count("<tr>") == 3, timeout=10)
            assert f"/api/takes/{take_id}/archive" in takes.download.value
            takes.notes.value = "two voices, room 2"
            takes.save_button.click()
            await takes.wait_idle(timeout=10)
            await wait_until(lambda: any(t.get("notes") == "two voices, room 2"
                                         for t in lab.take_list()), timeout=10)
            await wait_until(lambda: "two voices" in takes.takes.options[0][0], timeout=10)

            # Merge: a job, its bar in the Jobs strip, then the merged file in the take.
            takes.merge_button.click()
            await takes.wait_idle(timeout=10)
            await wait_until(lambda: any(r.label.value.startswith("<b>Merge take")
                                         for r in jobs.rows.values()), timeout=10)
            row = next(r for r in jobs.rows.values() if "Merge take" in r.label.value)
            await wait_until(lambda: row.finished, timeout=30)
            assert row.bar.value == 1.0 and "done → " in row.state.value, row.state.value
            assert row.cancel.description == "Dismiss"
            await wait_until(lambda: any(r.get("take_id") == take_id and r.get("kind") == "merged"
                                         for r in lab.recording_list()), timeout=10)
            await wait_until(lambda: "merged" in takes.recordings.value, timeout=10)
            row.cancel.click()  # Dismiss
            assert row.job_id not in jobs.rows

            # Clean: one enhance job per original.
            takes.clean_button.click()
            await takes.wait_idle(timeout=10)
            await wait_until(lambda: sum("Clean " in r.label.value
                                         for r in jobs.rows.values()) == 2, timeout=10)
            await wait_until(lambda: all(r.finished for r in jobs.rows.values()), timeout=60)
            assert all("done → " in r.state.value for r in jobs.rows.values())

            # Delete asks first; keeping it changes nothing; confirming removes it all.
            takes.delete_button.click()
            assert takes.confirm_box.layout.display == "flex"
            assert "Delete take Interview 1 (kept)" in takes.confirm_label.value
            takes.keep_button.click()
            assert takes.confirm_box.layout.display == "none"
            assert any(t["id"] == take_id for t in lab.take_list())
            takes.delete_button.click()
            takes.confirm_button.click()
            await takes.wait_idle(timeout=10)
            await wait_until(lambda: all(t["id"] != take_id for t in lab.take_list()),
                             timeout=10)
            await wait_until(lambda: all(r.get("take_id") != take_id
                                         for r in lab.recording_list()), timeout=10)
            await wait_until(lambda: takes.takes.layout.display == "none", timeout=10)
        finally:
            for panel in (record, takes, jobs):
                panel.close()


@pytest.mark.asyncio
async def test_a_take_started_elsewhere_turns_the_button(lab: Lab, tmp_path: Path) -> None:
    async with simulated(lab, tmp_path / "devices", 1):
        record = RecordPanel(lab)
        try:
            started = await lab.start_recording()  # from a notebook cell
            await wait_until(lambda: record.recording, timeout=10)
            assert record.take_id == started["take_id"]
            # A page opened during the take (a reload) shows it running too.
            await wait_until(lambda: any(t["id"] == started["take_id"]
                                         for t in lab.take_list()), timeout=10)
            reloaded = RecordPanel(lab)
            try:
                assert reloaded.recording and reloaded.take_id == started["take_id"]
                assert reloaded.elapsed_s() > 0
            finally:
                reloaded.close()
            await lab.stop_recording()
            await wait_until(lambda: not record.recording, timeout=10)
        finally:
            record.close()


@pytest.mark.asyncio
async def test_a_job_can_be_cancelled_and_a_failure_says_why(lab: Lab) -> None:
    await upload(lab, tone(20.0), "rec-long", device_id="phone-1")
    jobs = JobsPanel(lab)
    try:
        assert jobs.layout.display == "none"  # nothing to show: the strip is hidden
        # The test's pool has two threads: the third job waits in the queue.
        submitted = [await lab.submit_enhance("rec-long", "auto") for _ in range(3)]
        last = str(submitted[-1]["id"])
        await wait_until(lambda: last in jobs.rows, timeout=10)
        assert jobs.layout.display == "flex"
        assert jobs.rows[last].cancel.description == "Cancel"
        jobs.rows[last].cancel.click()
        await jobs.wait_idle(timeout=10)
        await wait_until(lambda: jobs.rows[last].finished, timeout=30)
        assert "cancelled" in jobs.rows[last].state.value

        # A job that fails: its file vanished from the disk after it was catalogued.
        path = await lab.path_of("rec-long")
        await upload(lab, tone(1.0), "rec-gone", device_id="phone-2")
        gone = await lab.path_of("rec-gone")
        gone.unlink()
        failed = await lab.submit_enhance("rec-gone", "auto")
        fid = str(failed["id"])
        await wait_until(lambda: fid in jobs.rows and jobs.rows[fid].finished, timeout=30)
        state = jobs.rows[fid].state.value
        assert "failed: " in state and "Traceback" not in state, state
        assert path.exists()  # the other recording is untouched
    finally:
        jobs.close()


class ManyDevices:
    """A stand-in `Controller` of 1,000 connected devices that counts its listings."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.listings = 0

    def on(self, topics: object, callback: Any) -> Any:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback)

    def device_list(self) -> list[dict[str, Any]]:
        self.listings += 1
        return [{"device_id": f"d{i}", "connected": True} for i in range(1000)]

    def take_list(self) -> list[dict[str, Any]]:
        return []


@pytest.mark.asyncio
async def test_a_burst_of_device_events_redraws_who_takes_part_once() -> None:
    lab = ManyDevices()
    record = RecordPanel(lab)  # type: ignore[arg-type]  # duck-typed on purpose
    try:
        assert "1000 ready" in record.who.value and lab.listings == 1
        for listener in list(lab.listeners):
            for _ in range(1000):
                listener("device.updated", {})
        await wait_until(lambda: lab.listings >= 2, timeout=5)
        assert lab.listings == 2 and not record._soon  # one redraw, nothing left scheduled
    finally:
        record.close()
    assert not lab.listeners
