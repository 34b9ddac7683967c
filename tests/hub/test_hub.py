"""The hub on its own: registry, command tracking, events, clocks (in-memory links)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.wait import wait_until
from vocalink_lab.errors import Conflict, DeviceNotFound, InvalidParameter, ProtocolError
from vocalink_lab.hub import Event, Hub, LinkClosed, Outcome, Topic, validate_server_name
from vocalink_lab.protocol import (
    JSON_V1,
    Ack,
    AckStatus,
    Action,
    ClientState,
    Command,
    Message,
    Recording,
    Register,
    Server,
    Status,
    Sync,
    Welcome,
    decode,
)


class MemoryLink:
    """A DeviceLink that keeps what it is sent (the transport is not under test here)."""

    def __init__(self, remote: str = "10.0.0.9") -> None:
        self.codec = SHARED_CODEC  # links of one dialect share their codec, as in the server
        self.remote = remote
        self.frames: list[str] = []
        self.closed: tuple[int, str] | None = None

    def send_text(self, text: str) -> None:
        if self.closed:
            raise LinkClosed("closed")
        self.frames.append(text)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def messages(self) -> list[Message]:
        return [decode(f) for f in self.frames]


class CountingCodec:
    name = "v1"
    encodes = 0

    def decode(self, frame: str | bytes) -> Message:
        return JSON_V1.decode(frame)

    def encode(self, message: Message) -> str:
        CountingCodec.encodes += 1
        return JSON_V1.encode(message)


SHARED_CODEC = CountingCodec()


def register(device_id: str, name: str | None = None) -> Register:
    return Register(device_id=device_id, name=name or device_id, protocol=1, platform="test")


def ack(cmd: Command, device_id: str, status: AckStatus = AckStatus.SUCCESS) -> Ack:
    return Ack(command_id=cmd.command_id, action=cmd.action, device_id=device_id, status=status)


@pytest.fixture
def hub() -> Hub:
    return Hub(server_id="srv-1", server_name="Studio", command_timeout_s=0.2)


def last_command(link: MemoryLink) -> Command:
    commands = [m for m in link.messages() if isinstance(m, Command)]
    return commands[-1]


@pytest.mark.asyncio
async def test_register_returns_welcome_and_records_device(hub: Hub) -> None:
    events: list[Event] = []
    hub.events.subscribe(None, events.append)
    link = MemoryLink()
    welcome = hub.attach(register("mic-1", "Kitchen"), link)
    assert isinstance(welcome, Welcome)
    assert (welcome.server_id, welcome.server_name, welcome.protocol) == ("srv-1", "Studio", 1)
    device = hub.devices()[0]
    assert device["device_id"] == "mic-1" and device["name"] == "Kitchen"
    assert device["connected"] and device["state"] == "IDLE" and device["remote"] == "10.0.0.9"
    assert [e.topic for e in events] == [Topic.DEVICE_REGISTERED]


@pytest.mark.asyncio
async def test_reconnect_replaces_old_link_and_keeps_record(hub: Hub) -> None:
    old, new = MemoryLink("10.0.0.1"), MemoryLink("10.0.0.2")
    hub.attach(register("mic-1"), old)
    hub.handle("mic-1", Status(state=ClientState.RECORDING, level_dbfs=-20.0))
    hub.attach(register("mic-1", "renamed"), new)
    assert old.closed is not None and old.closed[0] == 4001
    hub.detach("mic-1", old)  # the old socket's close arrives late: no effect
    record = hub.registry.get("mic-1")
    assert record.connected and record.state is ClientState.RECORDING
    assert record.name == "renamed" and record.remote == "10.0.0.2" and record.connections == 2
    assert [h.kind for h in record.history].count("connected") == 2
    assert len(hub.devices()) == 1


@pytest.mark.asyncio
async def test_detach_goes_offline_and_state_returns_on_reconnect(hub: Hub) -> None:
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    hub.handle("mic-1", Status(state=ClientState.RECORDING))
    hub.detach("mic-1", link)
    record = hub.registry.get("mic-1")
    assert (record.state, record.connected) == (ClientState.OFFLINE, False)
    hub.attach(register("mic-1"), MemoryLink())
    assert record.state is ClientState.RECORDING  # what the device last reported


@pytest.mark.asyncio
async def test_broadcast_encodes_once_and_tracks_each_target(hub: Hub) -> None:
    links = {f"mic-{i}": MemoryLink() for i in range(50)}
    for device_id, link in links.items():
        hub.attach(register(device_id), link)
    before = CountingCodec.encodes
    record = hub.issue("start")
    assert CountingCodec.encodes - before == 1
    assert set(record.pending) == set(links)
    for device_id, link in links.items():
        hub.handle(device_id, ack(last_command(link), device_id))
    result = await record.wait()
    assert result.ok and len(result.by_status(Outcome.SUCCESS)) == 50
    assert result.take_id is not None and hub.active_take_id == result.take_id


@pytest.mark.asyncio
async def test_timeout_failure_duplicate_and_late_acks(hub: Hub) -> None:
    a, b, c = MemoryLink(), MemoryLink(), MemoryLink()
    for device_id, link in (("a", a), ("b", b), ("c", c)):
        hub.attach(register(device_id), link)
    record = hub.issue(Action.STOP, targets=["a", "b", "c"])
    cmd = last_command(a)
    hub.handle("a", ack(cmd, "a"))
    hub.handle("a", ack(cmd, "a", AckStatus.FAILED))  # a duplicate changes nothing
    hub.handle("b", ack(cmd, "b", AckStatus.FAILED))
    result = await asyncio.wait_for(record.wait(), 2)
    assert {d: o.status for d, o in result.outcomes.items()} == {
        "a": Outcome.SUCCESS, "b": Outcome.FAILED, "c": Outcome.TIMEOUT}
    assert result.outcomes["c"].error == "no ACK within 0.2 s"
    hub.handle("c", ack(cmd, "c"))  # too late: the outcome stands, the state follows
    assert hub.commands.get(cmd.command_id).outcomes["c"].status is Outcome.TIMEOUT
    assert hub.registry.get("c").last_command["late"] is True  # type: ignore[index]


@pytest.mark.asyncio
async def test_offline_and_unknown_targets(hub: Hub) -> None:
    link = MemoryLink()
    hub.attach(register("gone"), link)
    hub.detach("gone", link)
    hub.attach(register("here"), MemoryLink())
    result = await hub.command("ping", targets=["gone", "here"], timeout_s=0.1)
    assert result.outcomes["gone"].status is Outcome.FAILED
    assert result.outcomes["gone"].error == "device is offline"
    with pytest.raises(DeviceNotFound, match="unknown device.*nobody"):
        hub.issue("ping", targets=["here", "nobody"])
    assert len(hub.commands.recent()) == 1  # nothing was sent for the refused command
    with pytest.raises(InvalidParameter, match="unknown action 'jump'"):
        hub.issue("jump")
    with pytest.raises(InvalidParameter, match="at least one device"):
        hub.issue("ping", targets=[])


@pytest.mark.asyncio
async def test_broadcast_without_devices_is_a_conflict(hub: Hub) -> None:
    with pytest.raises(Conflict, match="no device is connected"):
        hub.issue("start")


@pytest.mark.asyncio
async def test_disconnect_fails_pending_outcomes(hub: Hub) -> None:
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    record = hub.issue("start")
    hub.detach("mic-1", link)
    result = await record.wait()
    assert result.outcomes["mic-1"].status is Outcome.FAILED
    assert "disconnected" in (result.outcomes["mic-1"].error or "")


@pytest.mark.asyncio
async def test_status_recording_and_error_messages_update_the_record(hub: Hub) -> None:
    events: list[str] = []
    hub.events.subscribe(None, lambda e: events.append(e.topic))
    hub.attach(register("mic-1"), MemoryLink())
    hub.handle("mic-1", Status(state=ClientState.UPLOADING, battery=0.5, pending_uploads=3,
                               level_dbfs=-30.0, peak_dbfs=-6.0, free_bytes=123))
    hub.handle("mic-1", Recording(recording_id="rec-1", sample_rate=48000, channels=1,
                                  frames=10, bytes=64, sha256="0" * 64, format="wav"))
    from vocalink_lab.protocol import Error

    hub.handle("mic-1", Error(code="disk_full", detail="no space left"))
    device = hub.registry.get("mic-1").to_dict(history=True)
    assert device["state"] == "UPLOADING" and device["battery"] == 0.5
    assert device["pending_uploads"] == 3 and device["announced_recordings"] == ["rec-1"]
    assert any(h["kind"] == "error" and "disk_full" in h["detail"] for h in device["history"])
    assert events == [Topic.DEVICE_REGISTERED, Topic.DEVICE_UPDATED, Topic.RECORDING_ANNOUNCED]


@pytest.mark.asyncio
async def test_devices_may_not_send_server_messages(hub: Hub) -> None:
    hub.attach(register("mic-1"), MemoryLink())
    with pytest.raises(ProtocolError, match="COMMAND is sent by the server"):
        hub.handle("mic-1", Command(command_id="c", action=Action.START))
    with pytest.raises(ProtocolError, match="only be sent once"):
        hub.handle("mic-1", register("mic-1"))
    with pytest.raises(ProtocolError, match="arrived on the connection of 'mic-1'"):
        hub.handle("mic-1", Ack(command_id="c", action=Action.START, device_id="other",
                                status=AckStatus.SUCCESS))


@pytest.mark.asyncio
async def test_sync_exchange_estimates_the_device_clock(hub: Hub) -> None:
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    offset = 12.5  # the device's clock runs 12.5 s ahead

    async def answer() -> None:
        await wait_until(lambda: link.frames, timeout=5, interval=0)
        probe = link.messages()[-1]
        assert isinstance(probe, Sync) and probe.t1 is None
        t = hub.clock() + offset
        hub.handle("mic-1", Sync(id=probe.id, t0=probe.t0, t1=t, t2=t))

    link.frames.clear()
    _, sample = await asyncio.gather(answer(), hub.sync("mic-1"))
    assert abs(sample.offset - offset) < 0.01 and sample.rtt >= 0
    estimate = hub.clock_estimate("mic-1")
    assert estimate is not None and abs(estimate.offset_s - offset) < 0.01
    assert hub.registry.get("mic-1").to_dict()["clock_offset_s"] == estimate.offset_s
    with pytest.raises(ProtocolError, match="matches no probe"):
        hub.handle("mic-1", Sync(id="unknown", t0=1.0, t1=2.0, t2=2.0))


class FakeClock:
    """Server time, moved by the test (time is what tests fake)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class DriftingLink(MemoryLink):
    """A device whose clock is offset and drifts; it answers the server's SYNC probes at once."""

    def __init__(self, hub: Hub, device_id: str, server_clock: FakeClock, *, offset_s: float,
                 drift_ppm: float) -> None:
        super().__init__()
        self.hub, self.device_id, self.server_clock = hub, device_id, server_clock
        self.offset_s, self.drift_ppm, self.epoch = offset_s, drift_ppm, server_clock()

    def device_time(self, server_time: float) -> float:
        """What this device's clock reads at ``server_time`` (the truth)."""
        return server_time + self.offset_s + self.drift_ppm * 1e-6 * (server_time - self.epoch)

    def send_text(self, text: str) -> None:
        super().send_text(text)
        probe = decode(text)
        if isinstance(probe, Sync) and probe.t1 is None:
            t = self.device_time(self.server_clock())
            answer = Sync(id=probe.id, t0=probe.t0, t1=t, t2=t)
            asyncio.get_running_loop().call_soon(self.hub.handle, self.device_id, answer)


@pytest.mark.asyncio
async def test_a_scheduled_instant_reaches_a_drifting_device_on_its_own_clock() -> None:
    """The instant sent to a device is its clock's reading then: offset AND drift.

    A 200 ppm clock last measured 1000 s ago is 0.2 s away from what its offset alone
    says; devices that start a take on their own clocks must start together.
    """
    clock = FakeClock(1_700_000_000.0)
    hub = Hub(server_id="srv-1", server_name="Studio", command_timeout_s=0.2, clock=clock)
    link = DriftingLink(hub, "mic-1", clock, offset_s=3.0, drift_ppm=200.0)
    hub.attach(register("mic-1"), link)
    for _ in range(10):  # a burst every 100 s of server time
        await hub.sync_burst("mic-1", probes=3)
        clock.t += 100.0
    estimate = hub.clock_estimate("mic-1")
    assert estimate is not None and estimate.bursts == 10
    assert estimate.drift_ppm == pytest.approx(200.0, abs=0.01)
    clock.t = estimate.measured_at + 1000.0
    start_at = clock.t + 0.5
    record = hub.issue("start", targets=["mic-1"], start_at=start_at)
    command = last_command(link)
    truth = link.device_time(start_at)
    assert command.start_at == pytest.approx(truth, abs=1e-4), command.start_at - truth
    # The device starts at that instant and says so; the hub puts it back on its own clock.
    hub.handle("mic-1", Ack(command_id=command.command_id, action=command.action,
                            device_id="mic-1", status=AckStatus.SUCCESS, started_at=truth))
    described = hub.describe(await record.wait())
    assert described["outcomes"]["mic-1"]["late_ms"] == pytest.approx(0.0, abs=0.1)


@pytest.mark.asyncio
async def test_device_initiated_sync_is_answered(hub: Hub) -> None:
    link = MemoryLink()
    hub.attach(register("mic-1"), link)
    link.frames.clear()
    hub.handle("mic-1", Sync(id="d1", t0=5.0))
    reply = link.messages()[0]
    assert isinstance(reply, Sync) and reply.id == "d1" and reply.t0 == 5.0
    assert reply.t1 is not None and reply.t2 is not None and reply.t2 >= reply.t1


@pytest.mark.asyncio
async def test_rename_tells_connected_devices(hub: Hub) -> None:
    online, offline = MemoryLink(), MemoryLink()
    hub.attach(register("on"), online)
    hub.attach(register("off"), offline)
    hub.detach("off", offline)
    renamed: list[Any] = []
    hub.events.subscribe(Topic.SERVER_RENAMED, lambda e: renamed.append(dict(e.data)))
    assert hub.rename("  Studio B  ") == "Studio B"
    message = online.messages()[-1]
    assert isinstance(message, Server) and message.server_name == "Studio B"
    assert not any(isinstance(m, Server) for m in offline.messages())
    assert renamed == [{"old": "Studio", "name": "Studio B"}]


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "empty"), ("   ", "empty"), ("a\nb", "control"), ("é" * 32, "63"), (5, "string")],
)
def test_invalid_server_names(name: object, problem: str) -> None:
    with pytest.raises(InvalidParameter, match=problem):
        validate_server_name(name)


def test_valid_server_name_limits() -> None:
    assert validate_server_name("é" * 31 + "a") == "é" * 31 + "a"  # 63 bytes
    assert validate_server_name("Studio (2)") == "Studio (2)"


@pytest.mark.asyncio
async def test_event_stream_and_failing_subscriber(hub: Hub) -> None:
    def broken(_: Event) -> None:
        raise RuntimeError("subscriber bug")

    hub.events.subscribe(None, broken)
    stream = hub.events.stream([Topic.DEVICE_REGISTERED])
    next_event = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)
    hub.attach(register("mic-1"), MemoryLink())  # the broken subscriber does not stop delivery
    event = await asyncio.wait_for(next_event, 1)
    assert event.topic == Topic.DEVICE_REGISTERED and event.data["device"]["device_id"] == "mic-1"
    await stream.aclose()


@pytest.mark.asyncio
async def test_ack_for_an_unknown_command_is_refused_and_changes_nothing(hub: Hub) -> None:
    hub.attach(register("mic-1"), MemoryLink())
    with pytest.raises(ProtocolError, match="ACK for unknown command 'cmd-nope'"):
        hub.handle("mic-1", Ack(command_id="cmd-nope", action=Action.START, device_id="mic-1",
                                status=AckStatus.SUCCESS))
    record = hub.registry.get("mic-1")
    assert record.state is ClientState.IDLE and record.last_command is None
