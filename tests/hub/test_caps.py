"""Hostile input, in the hub: whatever devices send, what it keeps is bounded.

Registered devices, each device's recording announcements, queued jobs and what waits
for a slow event reader each have a limit; at the limit the oldest goes, or the newcomer
is refused with `TooBusy` (503, ``too_busy``).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.hub.test_hub import MemoryLink, register
from tests.support.errors import assert_error_shape
from vocalink_lab.errors import TooBusy
from vocalink_lab.hub import EventBus, Hub, Jobs, JobState, Topic
from vocalink_lab.hub.registry import ARRIVED_KEPT
from vocalink_lab.protocol import ClientState, Recording, Status


@pytest.fixture
def hub() -> Hub:
    return Hub(server_id="srv-1", server_name="Studio", command_timeout_s=0.2)


def announcement(recording_id: str, *, offline: bool = False) -> Recording:
    return Recording(recording_id=recording_id, take_id=None, started_at=1.0,
                     sample_rate=48000, channels=1, frames=48000, bytes=96044,
                     sha256="f" * 64, format="wav", offline=offline)


# -- devices ----------------------------------------------------------------------------------

def test_a_register_flood_with_fresh_ids_keeps_at_most_max_devices(hub: Hub) -> None:
    hub.registry.set_limits(max_devices=50)
    for i in range(5000):  # each connects, registers and leaves: a flood of fresh ids
        link = MemoryLink()
        hub.attach(register(f"flood-{i}"), link)
        hub.detach(f"flood-{i}", link)
    assert len(hub.registry) == 50 and hub.registry.forgotten == 4950
    # The ones kept are the most recent: the oldest offline were forgotten first.
    assert {r.device_id for r in hub.registry} == {f"flood-{i}" for i in range(4950, 5000)}


def test_the_device_offline_longest_is_forgotten_first(hub: Hub) -> None:
    hub.registry.set_limits(max_devices=3)
    links = {d: MemoryLink() for d in ("a", "b", "c")}
    for device_id, link in links.items():
        hub.attach(register(device_id), link)
    hub.detach("b", links["b"])  # b goes first, then a
    hub.detach("a", links["a"])
    hub.attach(register("d"), MemoryLink())
    assert sorted(r.device_id for r in hub.registry) == ["a", "c", "d"]
    hub.attach(register("a"), MemoryLink())  # a known device comes back: nothing forgotten
    assert sorted(r.device_id for r in hub.registry) == ["a", "c", "d"]


def test_a_new_device_is_refused_when_every_known_one_is_connected(hub: Hub) -> None:
    hub.registry.set_limits(max_devices=2)
    first, second = MemoryLink(), MemoryLink()
    hub.attach(register("mic-1"), first)
    hub.attach(register("mic-2"), second)
    registered: list[str] = []
    hub.events.subscribe(Topic.DEVICE_REGISTERED,
                         lambda e: registered.append(e.data["device"]["device_id"]))
    newcomer = MemoryLink()
    with pytest.raises(TooBusy, match="VOCALINK_MAX_DEVICES=2") as refused:
        hub.attach(register("mic-3"), newcomer)
    assert newcomer.closed == (1013, "too many devices connected")
    assert "mic-3" not in hub.registry and registered == []
    assert_error_shape(refused.value.to_dict(), 503, "too_busy")
    # A device already known always gets back in (its new connection replaces the old).
    again = MemoryLink()
    hub.attach(register("mic-1"), again)
    assert hub.registry.link("mic-1") is again and first.closed is not None
    # Room again once one has left.
    hub.detach("mic-2", second)
    hub.attach(register("mic-3"), MemoryLink())
    assert sorted(r.device_id for r in hub.registry) == ["mic-1", "mic-3"]


# -- recording announcements ------------------------------------------------------------------

def test_announcements_are_capped_per_device_the_oldest_dropped_and_counted(hub: Hub) -> None:
    hub.registry.set_limits(max_announced=100)
    hub.attach(register("mic-1"), MemoryLink())
    updates: list[int] = []
    hub.events.subscribe(Topic.DEVICE_UPDATED, lambda e: updates.append(len(e.frame)))
    for i in range(10_000):
        hub.handle("mic-1", announcement(f"rec-{i:05d}", offline=True))
        if i % 100 == 0:
            hub.handle("mic-1", Status(state=ClientState.IDLE, pending_uploads=i))
    record = hub.registry.get("mic-1")
    detail = record.to_dict(history=True)
    assert detail["announced_recordings"] == [f"rec-{i:05d}" for i in range(9900, 10_000)]
    assert detail["offline_recordings"] == detail["announced_recordings"]
    assert detail["announcements_dropped"] == 9900 and detail["announcements_waiting"] == 100
    # The summary (/api/clients, every device.updated event) names only the latest few.
    summary = record.to_dict()
    assert summary["announced_recordings"] == [f"rec-{i:05d}" for i in range(9980, 10_000)]
    assert summary["announcements_dropped"] == 9900 and summary["announcements_waiting"] == 100
    assert len(json.dumps(summary)) < 4096 and max(updates) < 4096


def test_an_arrived_recording_leaves_the_waiting_announcements(hub: Hub) -> None:
    hub.registry.set_limits(max_announced=3)
    hub.attach(register("mic-1"), MemoryLink())
    hub.handle("mic-1", announcement("rec-offline", offline=True))
    assert hub.registry.recording_arrived("mic-1", "rec-offline")
    assert not hub.registry.recording_arrived("mic-1", "rec-never-announced")
    assert not hub.registry.recording_arrived(None, "rec-offline")
    for i in range(3):  # the cap counts only what has not arrived: nothing is dropped
        hub.handle("mic-1", announcement(f"rec-{i}"))
    announced = hub.registry.get("mic-1").announced
    assert announced.waiting == ["rec-0", "rec-1", "rec-2"] and announced.dropped == 0
    device = hub.registry.get("mic-1").to_dict(history=True)
    # Still shown as recorded offline, once it has arrived.
    assert device["offline_recordings"] == ["rec-offline"]
    assert device["announced_recordings"] == ["rec-0", "rec-1", "rec-2", "rec-offline"]


def test_arrived_announcements_are_kept_only_among_the_most_recent(hub: Hub) -> None:
    hub.attach(register("mic-1"), MemoryLink())
    for i in range(ARRIVED_KEPT + 50):
        hub.handle("mic-1", announcement(f"rec-{i:04d}"))
        hub.registry.recording_arrived("mic-1", f"rec-{i:04d}")
    announced = hub.registry.get("mic-1").announced
    assert len(announced) == ARRIVED_KEPT and announced.waiting == []
    assert "rec-0049" not in announced and "rec-0050" in announced


# -- jobs -------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_jobs_beyond_max_pending_are_refused_until_one_finishes() -> None:
    jobs = Jobs(EventBus(), max_pending=2)
    gate = asyncio.Event()

    async def blocked(progress: object) -> dict[str, object]:
        await gate.wait()
        return {}

    first = jobs.submit("wait", {}, blocked)
    jobs.submit("wait", {}, blocked)
    with pytest.raises(TooBusy, match="VOCALINK_MAX_PENDING_JOBS=2") as refused:
        jobs.submit("wait", {}, blocked)
    assert len(jobs.list()) == 2  # the refused one was never made
    assert refused.value.headers == {"Retry-After": "10"}
    assert_error_shape(refused.value.to_dict(), 503, "too_busy")
    jobs.cancel(first.id)
    await jobs.wait(first.id, timeout=10)
    assert first.state is JobState.CANCELLED
    third = jobs.submit("wait", {}, blocked)
    gate.set()
    assert (await jobs.wait(third.id, timeout=10)).state is JobState.SUCCEEDED


# -- what waits for an event reader -----------------------------------------------------------

@pytest.mark.asyncio
async def test_an_event_is_encoded_once_and_every_reader_gets_the_same_bytes() -> None:
    bus = EventBus()
    readers = [bus.frames(max_bytes=10_000) for _ in range(3)]
    in_process = bus.queue()
    bus.publish(Topic.SERVER_RENAMED, old="A", name="B")
    frames = [await anext(reader) for reader in readers]
    assert frames[0] is frames[1] is frames[2]  # one encoding, shared
    assert (await anext(in_process)).frame is frames[0]  # the event's own
    in_process.close()
    assert json.loads(frames[0])["data"] == {"old": "A", "name": "B"}
    for reader in readers:
        reader.close()
    assert not bus.wants(Topic.SERVER_RENAMED)


@pytest.mark.asyncio
async def test_a_reader_that_falls_behind_is_dropped_and_nothing_is_kept_for_it() -> None:
    bus = EventBus()
    reasons: list[str] = []
    slow = bus.frames(max_bytes=2_000, on_overflow=reasons.append)
    keeping_up = bus.frames(max_bytes=2_000)
    for i in range(100):
        bus.publish(Topic.SERVER_RENAMED, old="", name=f"Studio {i}")
        if not keeping_up.closed:
            await anext(keeping_up)
    assert slow.overflowed and slow.closed and len(slow) == 0 and slow.waiting_bytes == 0
    assert reasons and "events" in reasons[0] and "bytes" in reasons[0]
    assert [frame async for frame in slow] == []  # its reader stops at once
    assert not keeping_up.closed  # a reader that keeps up is never dropped
    keeping_up.close()
    assert not bus.wants(Topic.SERVER_RENAMED)


@pytest.mark.asyncio
async def test_one_big_event_is_taken_by_a_reader_that_is_not_behind() -> None:
    bus = EventBus()
    reader = bus.frames(max_bytes=100, on_overflow=lambda reason: None)
    bus.publish(Topic.SERVER_RENAMED, old="", name="x" * 500)
    assert not reader.overflowed and len(reader) == 1
    assert json.loads(await anext(reader))["data"]["name"] == "x" * 500
    reader.close()


@pytest.mark.asyncio
async def test_without_an_overflow_handler_the_oldest_events_make_room() -> None:
    bus = EventBus()
    reader = bus.queue([Topic.SERVER_RENAMED], max_events=3)
    for i in range(10):
        bus.publish(Topic.SERVER_RENAMED, old="", name=f"Studio {i}")
        bus.publish(Topic.TAKE_STARTED, take_id=f"take-{i}")  # not asked for: never queued
    assert reader.dropped == 7
    assert [(await anext(reader)).data["name"] for _ in range(3)] == [
        "Studio 7", "Studio 8", "Studio 9"]
    reader.close()
