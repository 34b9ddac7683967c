"""Issue 12 in the hub: device instants are checked against the server's clock, and what
the hub reports stays JSON whatever a message holds.

The codec bounds every number of a v1 frame; these tests hand the hub messages built in
memory (as another dialect's codec could), with NaN and infinity in them.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from tests.hub.test_hub import FakeClock, MemoryLink, register
from tests.support.wait import wait_until
from vocalink_lab.errors import ProtocolError
from vocalink_lab.hub import ClockSample, ClockTracker, Hub, Outcome, TargetOutcome, Topic
from vocalink_lab.protocol import (
    JSON_V1,
    Ack,
    AckStatus,
    Action,
    ClientState,
    Command,
    Recording,
    Status,
    Sync,
)

DAY = 86_400.0
NON_FINITE = [math.nan, math.inf, -math.inf]


def strict(obj: object) -> str:
    return json.dumps(obj, allow_nan=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def hub(clock: FakeClock) -> Hub:
    return Hub(server_id="srv-1", server_name="Studio", command_timeout_s=0.2, clock=clock)


async def answer_probes_with(hub: Hub, link: MemoryLink, t1: float, t2: float) -> ClockSample:
    """Run one SYNC exchange whose answer says ``t1``, ``t2``; return the sample."""
    link.frames.clear()

    async def answer() -> None:
        await wait_until(lambda: link.frames, timeout=5, interval=0)
        probe = link.messages()[-1]
        assert isinstance(probe, Sync)
        hub.handle("mic-1", Sync(id=probe.id, t0=probe.t0, t1=t1, t2=t2))

    task = asyncio.ensure_future(answer())
    try:
        return await hub.sync("mic-1", timeout_s=5)
    finally:
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
@pytest.mark.parametrize(("t1", "t2", "reason"), [
    (math.nan, math.nan, "t1"), (math.inf, math.inf, "t1"), (1e308, 1e308, "t1"),
    (-math.inf, 0.0, "t1"), (0.0, 0.0, "more than a day"),
    (1_700_000_000.0 + 2 * DAY, 1_700_000_000.0 + 2 * DAY, "more than a day"),
    (1_700_000_000.0 - 2 * DAY, 1_700_000_000.0 - 2 * DAY, "more than a day"),
    (1_700_000_000.0, math.nan, "t2"),
    (1_700_000_001.0, 1_700_000_000.0, "t2 is before t1"),
])
async def test_an_absurd_sync_answer_fails_the_probe_and_measures_nothing(
    hub: Hub, clock: FakeClock, t1: float, t2: float, reason: str
) -> None:
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    await answer_probes_with(hub, link, clock(), clock())  # measured once, honestly
    before = hub.clock_estimate("mic-1")
    with pytest.raises(ProtocolError, match=reason) as info:
        await answer_probes_with(hub, link, t1, t2)
    assert info.value.ref is not None and info.value.ref.startswith("s")  # type: ignore[attr-defined]
    assert hub.clock_estimate("mic-1") == before
    strict(hub.devices())


@pytest.mark.asyncio
@pytest.mark.parametrize(("t1", "t2", "reason"), [
    (math.nan, math.nan, "t1"), (1e308, 1e308, "t1"), (-1.0, 0.0, "t1"),
    (1_700_000_000.0, math.inf, "t2"), (1_700_000_001.0, 1_700_000_000.0, "t2 is before t1"),
])
async def test_a_first_sync_answer_is_bounded_too(hub: Hub, t1: float, t2: float,
                                                  reason: str) -> None:
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    with pytest.raises(ProtocolError, match=reason):
        await answer_probes_with(hub, link, t1, t2)
    assert hub.clock_estimate("mic-1") is None


@pytest.mark.asyncio
@pytest.mark.parametrize("offset", [3 * DAY, -400 * DAY, 12.0 - 1_700_000_000.0])
async def test_a_clock_far_off_is_measured_then_held_to_its_estimate(
    hub: Hub, clock: FakeClock, offset: float
) -> None:
    """An unmeasured clock is not judged: a device days, or 54 years (booted in 1970), off
    is measured; from then on, its answers must agree with that estimate within a day."""
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    device_now = clock() + offset
    sample = await answer_probes_with(hub, link, device_now, device_now)
    assert sample.offset == pytest.approx(offset)
    later = device_now + 20 * 3600  # 20 h from the estimate: fine
    await answer_probes_with(hub, link, later, later)
    for far in (device_now + 1.5 * DAY, device_now - 1.5 * DAY, clock()):
        # (before 1970 for the device booted then: no instant at all)
        with pytest.raises(ProtocolError, match="more than a day|not an instant"):
            await answer_probes_with(hub, link, far, far)
    estimate = hub.clock_estimate("mic-1")
    assert estimate is not None and estimate.offset_s == pytest.approx(offset)


@pytest.mark.asyncio
@pytest.mark.parametrize("started_at", [*NON_FINITE, 1e308, -1.0, 0.0])
async def test_an_ack_with_an_absurd_start_is_refused_and_the_command_waits(
    hub: Hub, clock: FakeClock, started_at: float
) -> None:
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    await answer_probes_with(hub, link, clock(), clock())
    record = hub.issue("start", targets=["mic-1"], timeout_s=0.1)
    command = [m for m in link.messages() if isinstance(m, Command)][-1]
    with pytest.raises(ProtocolError, match="started_at") as info:
        hub.handle("mic-1", Ack(command_id=command.command_id, action=Action.START,
                                device_id="mic-1", status=AckStatus.SUCCESS,
                                started_at=started_at))
    assert info.value.ref == command.command_id  # type: ignore[attr-defined]
    result = await record.wait()
    assert result.outcomes["mic-1"].status is Outcome.TIMEOUT
    assert hub.registry.get("mic-1").state is ClientState.IDLE
    strict(hub.describe(result))
    strict(hub.devices())


@pytest.mark.asyncio
@pytest.mark.parametrize(("started_at", "reason"), [
    (math.nan, "started_at"), (math.inf, "started_at"), (-math.inf, "started_at"),
    (1_700_000_000.0 + 2 * DAY, "more than a day ahead"),
])
async def test_a_recording_with_an_absurd_start_is_not_announced(
    hub: Hub, clock: FakeClock, started_at: float, reason: str
) -> None:
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    await answer_probes_with(hub, link, clock(), clock())
    announced: list[object] = []
    hub.events.subscribe(Topic.RECORDING_ANNOUNCED, announced.append)
    with pytest.raises(ProtocolError, match=reason):
        hub.handle("mic-1", Recording(recording_id="rec-1", started_at=started_at,
                                      sample_rate=48000, channels=1, frames=1, bytes=1,
                                      sha256="a" * 64, format="wav"))
    assert announced == [] and hub.registry.get("mic-1").announced == {}
    old = Recording(recording_id="rec-2", started_at=1_700_000_000.0 - 30 * DAY,
                    sample_rate=48000, channels=1, frames=1, bytes=1, sha256="a" * 64,
                    format="wav", offline=True)
    hub.handle("mic-1", old)  # long ago is possible: recorded offline, told on reconnect
    assert list(hub.registry.get("mic-1").announced) == ["rec-2"]


@pytest.mark.asyncio
async def test_device_records_stay_json_whatever_a_status_held(hub: Hub) -> None:
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    hub.handle("mic-1", Status(state=ClientState.RECORDING, level_dbfs=math.nan,
                               peak_dbfs=math.inf, battery=-math.inf, elapsed_s=math.inf))
    [device] = json.loads(strict(hub.devices()))
    assert (device["level_dbfs"], device["peak_dbfs"], device["battery"],
            device["elapsed_s"]) == (None, None, None, None)
    assert device["state"] == "RECORDING"
    strict(hub.registry.get("mic-1").to_dict(history=True))


@pytest.mark.parametrize("value", NON_FINITE)
def test_a_target_outcome_is_json_whatever_it_holds(value: float) -> None:
    outcome = TargetOutcome("mic-1", Outcome.SUCCESS, started_at=value, latency_s=value)
    assert json.loads(strict(outcome.to_dict()))["started_at"] is None


@pytest.mark.parametrize("bad", [
    ClockSample(1000.0, math.inf, math.inf, 1000.1),
    ClockSample(1000.0, math.nan, 1003.0, 1000.1),
    ClockSample(1000.0, 1e308, 1e308, 1000.1),  # the offset overflows to infinity
    ClockSample(math.nan, 1003.0, 1003.0, 1000.1),
])
def test_the_clock_tracker_ignores_a_sample_that_is_not_finite(bad: ClockSample) -> None:
    tracker = ClockTracker()
    good = ClockSample(1000.0, 1003.05, 1003.05, 1000.1)
    tracker.add(good)
    before = tracker.estimate
    tracker.add(bad)
    assert tracker.estimate == before
    assert before is not None and before.offset_s == pytest.approx(3.0)
    strict(before.to_dict())


@pytest.mark.asyncio
async def test_a_start_no_device_clock_can_read_is_not_sent(hub: Hub, clock: FakeClock) -> None:
    """A wild (finite) estimate: the device gets no ``start_at`` it could not decode."""
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    tracker = hub.registry.get("mic-1").clock
    t = clock()
    for i, offset in enumerate([0.0, -0.9 * DAY, -0.9 * DAY]):  # bursts a millisecond apart
        at = t + i * 0.001
        tracker.add(ClockSample(at, at + offset, at + offset, at))
        tracker.begin_burst()
    estimate = hub.clock_estimate("mic-1")
    assert estimate is not None and estimate.drift_ppm < -1e12
    clock.t += 1000.0
    start_at = clock() + 0.5
    assert estimate.to_device(start_at) < 0
    hub.issue("start", targets=["mic-1"], start_at=start_at, timeout_s=0.1)
    [frame] = [f for f in link.frames if '"COMMAND"' in f]
    command = JSON_V1.decode(frame)  # the device's codec takes it
    assert isinstance(command, Command) and command.start_at is None
