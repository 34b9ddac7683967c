"""Protocol v1: every message round-trips; decoding validates and explains."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocalink_lab.errors import ProtocolError
from vocalink_lab.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Ack,
    AckStatus,
    Action,
    Capabilities,
    ClientState,
    Command,
    CommandParams,
    Error,
    Recording,
    Register,
    Server,
    ServerEvent,
    Status,
    Sync,
    Welcome,
    decode,
    encode,
    is_safe_id,
)

EVERY_MESSAGE = [
    Register(device_id="pixel-7a", name="Pixel 7a (Ana)", protocol=PROTOCOL_VERSION,
             platform="android", capabilities=Capabilities(sample_rates=(48000, 44100),
                                                         channels=(1, 2), formats=("wav",)),
             token="secret"),
    Welcome(server_id="srv-1", server_name="Studio A", protocol=1, server_time=1.7e9,
            heartbeat_s=2.0, upload_url="/api/audio/upload"),
    Command(command_id="cmd-1", action=Action.START, take_id="take-1", targets=("a", "b"),
            start_at=1.7e9 + 0.5, params=CommandParams(sample_rate=48000, channels=1,
                                                       format="flac", duration_s=3.5)),
    Command(command_id="cmd-2", action=Action.STOP),
    Ack(command_id="cmd-1", action=Action.START, device_id="a", status=AckStatus.SUCCESS,
        recording_id="rec-1", started_at=1.7e9),
    Ack(command_id="cmd-1", action=Action.START, device_id="b", status=AckStatus.FAILED,
        error="no microphone"),
    Status(state=ClientState.RECORDING, level_dbfs=-23.5, peak_dbfs=-3.0, battery=0.8,
           free_bytes=10**10, pending_uploads=2, recording_id="rec-1", elapsed_s=12.5),
    Sync(id="s1", t0=1.0),
    Sync(id="s1", t0=1.0, t1=2.0, t2=2.0001),
    Recording(recording_id="rec-1", take_id="take-1", started_at=1.7e9, sample_rate=48000,
              channels=1, frames=48000, bytes=96044, sha256="a" * 64, format="wav"),
    Server(event=ServerEvent.RENAMED, server_name="Studio B", server_id="srv-1"),
    Error(code="bad_message", detail="frame is not valid JSON", ref="cmd-1"),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: object) -> None:
    frame = encode(message)  # type: ignore[arg-type]
    assert json.loads(frame)["type"] == type(message).type_name()  # type: ignore[attr-defined]
    assert decode(frame) == message
    assert decode(frame.encode()) == message


def test_defaults_are_omitted_from_frames() -> None:
    assert json.loads(encode(Command(command_id="c", action=Action.PING))) == {
        "type": "COMMAND", "command_id": "c", "action": "PING"}


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    frame = '{"type":"SYNC","id":"s","t0":1,"added_in_v2":true}'
    assert decode(frame) == Sync(id="s", t0=1.0)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1,2]", "must be a JSON object"),
        ('"REGISTER"', "must be a JSON object"),
        ("{}", "no 'type'"),
        ('{"type": 3}', "'type' must be a string"),
        ('{"type": "HELLO"}', "unknown message type 'HELLO'"),
        ('{"type":"ACK","command_id":"c","action":"START","device_id":"d","status":"OK"}',
         "ACK: field 'status': invalid enum value 'OK'"),
        ('{"type":"COMMAND","command_id":"c","action":"EXPLODE"}', "invalid enum value 'EXPLODE'"),
        ('{"type":"REGISTER","device_id":"d","name":"n"}', "missing required field `protocol`"),
        ('{"type":"REGISTER","device_id":"d","name":"n","protocol":"1"}', "field 'protocol'"),
        ('{"type":"REGISTER","device_id":"d","name":"n","protocol":2}', "protocol version 2"),
        ('{"type":"REGISTER","device_id":"../etc","name":"n","protocol":1}', "field 'device_id'"),
        ('{"type":"REGISTER","device_id":"d","name":"' + "x" * 65 + '","protocol":1}',
         "field 'name'"),
        ('{"type":"REGISTER","device_id":"d","name":"a\\u0007b","protocol":1}', "field 'name'"),
        ('{"type":"REGISTER","device_id":"d","name":"   ","protocol":1}', "blank"),
        ('{"type":"STATUS","state":"OFFLINE"}', "cannot report itself OFFLINE"),
        ('{"type":"STATUS","state":"IDLE","battery":true}', "field 'battery'"),
        ('{"type":"STATUS","state":"IDLE","battery":2}', "field 'battery'"),
        ('{"type":"SYNC","id":"s","t0":NaN}', "not valid JSON"),
        ('{"type":"SYNC","id":"s","t0":1e999}', "out of range"),
        ('{"type":"RECORDING","recording_id":"r","sample_rate":48000,"channels":1,"frames":1,'
         '"bytes":1,"sha256":"xyz","format":"wav"}', "field 'sha256'"),
    ],
)
def test_malformed_frames_raise_readable_protocol_errors(frame: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=None) as info:
        decode(frame)
    assert reason in str(info.value), str(info.value)
    assert info.value.status == 400


def test_error_carries_the_command_id_as_ref() -> None:
    with pytest.raises(ProtocolError) as info:
        decode('{"type":"ACK","command_id":"cmd-9","action":"START","device_id":"d"}')
    assert info.value.ref == "cmd-9"  # type: ignore[attr-defined]


def test_oversize_frames_are_refused_before_parsing() -> None:
    frame = json.dumps({"type": "ERROR", "code": "x", "detail": "y" * MAX_FRAME_BYTES})
    with pytest.raises(ProtocolError, match="exceeds the limit of 65536 bytes"):
        decode(frame)


@pytest.mark.parametrize(
    ("value", "safe"),
    [("mic-1", True), ("A.b_c-9", True), ("x" * 64, True), ("x" * 65, False), ("", False),
     ("..", False), (".hidden", False), ("a/b", False), ("a\\b", False), ("é", False),
     ("-flag", False), (None, False), (5, False)],
)
def test_ids_are_safe_as_file_names(value: object, safe: bool) -> None:
    assert is_safe_id(value) is safe


@given(st.text(max_size=200))
def test_decode_never_raises_anything_but_protocol_error(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode(text)


@given(st.dictionaries(st.sampled_from(["type", "id", "t0", "t1", "state", "command_id",
                                        "action", "device_id", "status", "name", "protocol"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(
                           allow_nan=False), st.text(max_size=10),
                           st.sampled_from(["SYNC", "ACK", "STATUS", "REGISTER", "START"]))))
def test_decode_of_random_objects_is_total(obj: dict[str, object]) -> None:
    try:
        message = decode(json.dumps(obj))
    except ProtocolError:
        return
    assert decode(encode(message)) == message


def test_counts_are_bounded_to_64_bits() -> None:
    """A count no 64-bit reader (SQLite, most JSON parsers) could hold is refused."""
    ok = decode('{"type":"STATUS","state":"IDLE","free_bytes":9223372036854775807}')
    assert ok.free_bytes == 2**63 - 1  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError, match="free_bytes"):
        decode('{"type":"STATUS","state":"IDLE","free_bytes":99999999999999999999999}')
