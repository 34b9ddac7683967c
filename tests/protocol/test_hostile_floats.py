"""Issue 12: every number a frame carries is bounded when it is decoded.

Instants (``t0``, ``t1``, ``t2``, ``started_at``, ``start_at``, ``server_time``) are
seconds since 1970 in ``[0, 1e11)``; durations are in ``[0, MAX_DURATION_S]``; levels,
battery, sample rates and channels in their own ranges. JSON cannot carry NaN or
infinity, but ``1e308`` overflows to infinity in the first sum, so the bound is what
keeps every later computation finite.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocalink_lab.errors import ProtocolError
from vocalink_lab.protocol import (
    MAX_DURATION_S,
    MAX_INSTANT_S,
    Message,
    decode,
    encode,
    is_plausible_instant,
)

NOW = 1.7e9


def frame(kind: str, **fields: Any) -> str:
    base: dict[str, dict[str, Any]] = {
        "WELCOME": {"server_id": "srv-1", "server_name": "Studio", "protocol": 1,
                    "server_time": NOW, "heartbeat_s": 2.0, "upload_url": "/u"},
        "COMMAND": {"command_id": "cmd-1", "action": "START"},
        "ACK": {"command_id": "cmd-1", "action": "START", "device_id": "mic-1",
                "status": "SUCCESS"},
        "STATUS": {"state": "RECORDING"},
        "SYNC": {"id": "s1", "t0": NOW},
        "RECORDING": {"recording_id": "rec-1", "sample_rate": 48000, "channels": 1,
                      "frames": 1, "bytes": 1, "sha256": "a" * 64, "format": "wav"},
    }
    return json.dumps({"type": kind, **base[kind], **fields})


#: (message type, field, path in the frame) of every instant a frame can carry.
INSTANTS = [
    ("WELCOME", "server_time", "server_time"),
    ("COMMAND", "start_at", "start_at"),
    ("ACK", "started_at", "started_at"),
    ("SYNC", "t0", "t0"),
    ("SYNC", "t1", "t1"),
    ("SYNC", "t2", "t2"),
    ("RECORDING", "started_at", "started_at"),
]


@pytest.mark.parametrize("value", [1e308, -1e308, 1e11, 1e12, -1.0, -1e-9])
@pytest.mark.parametrize(("kind", "name", "path"), INSTANTS,
                         ids=[f"{k}.{n}" for k, n, _ in INSTANTS])
def test_an_implausible_instant_is_refused(kind: str, name: str, path: str,
                                           value: float) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(frame(kind, **{name: value}))
    text = str(info.value)
    assert text.startswith(f"{kind}: field '{path}': must be an instant"), text
    assert "seconds since 1970" in text and info.value.status == 400


@pytest.mark.parametrize("value", [0.0, 1.0, NOW, MAX_INSTANT_S - 1.0])
@pytest.mark.parametrize(("kind", "name", "path"), INSTANTS,
                         ids=[f"{k}.{n}" for k, n, _ in INSTANTS])
def test_a_plausible_instant_is_taken(kind: str, name: str, path: str, value: float) -> None:
    message = decode(frame(kind, **{name: value}))
    assert getattr(message, name) == value


@pytest.mark.parametrize(("kind", "fields", "where"), [
    ("STATUS", {"elapsed_s": 1e308}, "field 'elapsed_s'"),
    ("STATUS", {"elapsed_s": MAX_DURATION_S * 2}, "field 'elapsed_s'"),
    ("STATUS", {"elapsed_s": -1.0}, "field 'elapsed_s'"),
    ("STATUS", {"level_dbfs": 1e308}, "field 'level_dbfs'"),
    ("STATUS", {"peak_dbfs": -1e308}, "field 'peak_dbfs'"),
    ("STATUS", {"battery": 1e308}, "field 'battery'"),
    ("COMMAND", {"params": {"duration_s": 1e308}}, "field 'params.duration_s'"),
    ("COMMAND", {"params": {"duration_s": 0.0}}, "field 'params.duration_s'"),
    ("WELCOME", {"heartbeat_s": 1e308}, "field 'heartbeat_s'"),
    ("WELCOME", {"heartbeat_s": 0.0}, "field 'heartbeat_s'"),
    ("WELCOME", {"heartbeat_s": -1.0}, "field 'heartbeat_s'"),
])
def test_an_absurd_duration_or_level_is_refused(kind: str, fields: dict[str, Any],
                                                where: str) -> None:
    with pytest.raises(ProtocolError, match=None) as info:
        decode(frame(kind, **fields))
    assert f"{kind}: {where}: expected `float`" in str(info.value), str(info.value)


@pytest.mark.parametrize("raw", ["1e999", "-1e999", "1E400"])
@pytest.mark.parametrize("name", ["t1", "t2"])
def test_a_number_too_large_for_a_float_is_refused(raw: str, name: str) -> None:
    text = frame("SYNC", t1=NOW, t2=NOW).replace(f'"{name}": {NOW}', f'"{name}": {raw}')
    with pytest.raises(ProtocolError, match=f"SYNC: field '{name}': number out of range"):
        decode(text)


def test_an_error_about_a_bound_keeps_the_ref() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(frame("ACK", started_at=1e308))
    assert info.value.ref == "cmd-1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("value", "plausible"), [
    (0.0, True), (NOW, True), (MAX_INSTANT_S - 1, True), (MAX_INSTANT_S, False),
    (-1e-9, False), (math.inf, False), (-math.inf, False), (math.nan, False), (1e306, False),
    (None, False), ("1.7e9", False), (True, False), (10**12, False), (1_700_000_000, True),
])
def test_is_plausible_instant(value: object, plausible: bool) -> None:
    assert is_plausible_instant(value) is plausible


def _floats(obj: object) -> list[float]:
    if isinstance(obj, float):
        return [obj]
    if isinstance(obj, dict):
        return [f for v in obj.values() for f in _floats(v)]
    if isinstance(obj, list | tuple):
        return [f for v in obj for f in _floats(v)]
    return []


NUMBER_FIELDS = ["t0", "t1", "t2", "started_at", "start_at", "server_time", "heartbeat_s",
                 "elapsed_s", "level_dbfs", "peak_dbfs", "battery"]


@given(kind=st.sampled_from(["WELCOME", "COMMAND", "ACK", "STATUS", "SYNC", "RECORDING"]),
       numbers=st.dictionaries(st.sampled_from(NUMBER_FIELDS),
                               st.floats(allow_nan=False, allow_infinity=False)
                               | st.integers(-10**400, 10**400)))
def test_whatever_decodes_holds_only_bounded_numbers(kind: str,
                                                     numbers: dict[str, float]) -> None:
    """The property the server relies on: sums and differences of any two stay finite."""
    try:
        message: Message = decode(frame(kind, **numbers))
    except ProtocolError:
        return
    values = _floats(msgspec.to_builtins(message))
    assert all(math.isfinite(v) and abs(v) < MAX_INSTANT_S for v in values), values
    json.dumps(msgspec.to_builtins(message), allow_nan=False)
    assert decode(encode(message)) == message
