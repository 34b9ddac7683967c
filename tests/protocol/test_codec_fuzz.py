"""Property-based fuzzing of the protocol v1 codec (`vocalink_lab.protocol.codec`).

A device's frames reach ``decode`` before anything else reads them, so the codec is the
edge: whatever text arrives, it must answer with a typed `Message` or a `ProtocolError`
(which the server turns into an ERROR reply), never with any other exception. And what
the codec accepts must be what the messages' annotations promise, so that nothing past
the edge has to check again.

The messages are generated from the message classes themselves (``msgspec.inspect``), so
a field added to a message is fuzzed without touching this file. Runs are reproducible:
Hypothesis is derandomized and keeps no example database; ``VOCALINK_FUZZ_SEED=n`` explores
other examples.
"""

from __future__ import annotations

import enum
import json
import math
import re
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import example, given, reject
from hypothesis import strategies as st

from tests.support.fuzz import fuzz
from vocalink_lab.errors import ProtocolError
from vocalink_lab.protocol import (
    ID_PATTERN,
    MAX_DURATION_S,
    MAX_FRAME_BYTES,
    MAX_INSTANT_S,
    PROTOCOL_VERSION,
    Error,
    Message,
    Register,
    decode,
    encode,
    is_safe_id,
)
from vocalink_lab.protocol.codec import JSON_V1, TYPE_NAMES

#: Every message class the v1 codec decodes, in the order of its ``type`` names.
MESSAGE_TYPES: tuple[type[Message], ...] = tuple(
    sorted(Message.__subclasses__(), key=lambda cls: TYPE_NAMES.index(cls.type_name())))
#: The fields that hold an instant, and those that hold a duration, by name.
INSTANT_FIELDS = frozenset({"t0", "t1", "t2", "started_at", "start_at", "server_time"})
DURATION_FIELDS = frozenset({"heartbeat_s", "duration_s", "elapsed_s"})
#: What the type information cannot say: a REGISTER of another protocol version is refused.
FIELD_OVERRIDES: dict[tuple[type[Any], str], st.SearchStrategy[Any]] = {
    (Register, "protocol"): st.just(PROTOCOL_VERSION),
}


# -- strategies from the messages' own type information -------------------------------------


def from_type(t: mi.Type) -> st.SearchStrategy[Any]:
    """Values that satisfy ``t`` (a msgspec type, with its constraints)."""
    if isinstance(t, mi.StrType):
        if t.pattern is not None:
            text = st.from_regex(t.pattern, fullmatch=True)
        else:
            text = st.text(max_size=min(t.max_length or 200, 200))
        lo, hi = t.min_length or 0, t.max_length
        return text.filter(lambda s: lo <= len(s) and (hi is None or len(s) <= hi))
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else None)
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else None)
        return st.integers(min_value=lo, max_value=hi)
    if isinstance(t, mi.FloatType):
        return st.floats(
            min_value=t.ge if t.ge is not None else t.gt,
            max_value=t.le if t.le is not None else t.lt,
            exclude_min=t.gt is not None, exclude_max=t.lt is not None,
            allow_nan=False, allow_infinity=False)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.EnumType):
        return st.sampled_from(list(t.cls))
    if isinstance(t, mi.UnionType):
        return st.one_of([from_type(member) for member in t.types])
    if isinstance(t, mi.VarTupleType):
        return st.lists(from_type(t.item_type), min_size=t.min_length or 0,
                        max_size=min(t.max_length or 12, 12)).map(tuple)
    if isinstance(t, mi.StructType):
        return structs(t)
    raise NotImplementedError(f"no strategy for {t!r}: teach `from_type` this type")


@st.composite
def structs(draw: st.DrawFn, info: mi.StructType) -> Any:
    """One instance of ``info.cls``: every required field, and some of the others."""
    kwargs = {}
    for field in info.fields:
        if field.required or draw(st.booleans()):
            override = FIELD_OVERRIDES.get((info.cls, field.name))
            kwargs[field.name] = draw(override if override is not None
                                      else from_type(field.type))
    try:
        return info.cls(**kwargs)
    except ValueError:  # `__post_init__`: a blank name, a device reporting itself OFFLINE
        reject()


def messages_of(cls: type[Message]) -> st.SearchStrategy[Message]:
    """Valid messages of one class."""
    return structs(mi.type_info(cls))


MESSAGES: st.SearchStrategy[Message] = st.one_of([messages_of(cls) for cls in MESSAGE_TYPES])
#: Every field name any message (or nested struct) has, to build frames that look right.
FIELD_NAMES = sorted({f.name for cls in MESSAGE_TYPES for f in mi.type_info(cls).fields}
                     | {"sample_rates", "channels", "formats", "sample_rate", "duration_s"})


# -- strategies for hostile frames ----------------------------------------------------------

#: Any code point, unpaired surrogates included.
ANY_CHAR = st.characters(exclude_categories=())
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(ANY_CHAR, max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.text(ANY_CHAR, max_size=8), inner, max_size=5),
    max_leaves=25)
#: Number literals as a frame may spell them: huge, tiny, NaN-like, not numbers at all.
NUMBER_LITERALS = st.one_of(
    st.sampled_from([
        "NaN", "-NaN", "Infinity", "-Infinity", "inf", "nan", "1e400", "-1e400", "1e-400",
        "1E+999999999", "-0", "-0.0", "0e0", "1e11", "99999999999.99999", "1e7", "10000000.1",
        "9" * 5000, "-" + "9" * 5000, "0." + "0" * 5000 + "1", "1" + "0" * 400, "0x10", "01",
        "1.", ".5", "+1", "1e", "true", "null", '"1.5"', "[]", "{}",
        str(2**63), str(2**64), str(-(2**63) - 1), str(2**64 + 1),
    ]),
    st.from_regex(r"-?[0-9]{1,40}(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.floats().map(repr),
    st.integers().map(str),
)


def to_json(obj: Any, *, ascii_only: bool) -> str:
    """``obj`` as JSON text, NaN and infinities as Python's ``json`` spells them."""
    return json.dumps(obj, allow_nan=True, ensure_ascii=ascii_only)


@st.composite
def message_like_frames(draw: st.DrawFn) -> str:
    """An object with a ``type`` (known, unknown or not a string) and fields of any kind."""
    obj: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        obj["type"] = draw(st.sampled_from(TYPE_NAMES) | st.text(ANY_CHAR, max_size=12)
                           | JSON_VALUES)
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), unique=True, max_size=8)):
        obj[name] = draw(JSON_VALUES)
    return to_json(obj, ascii_only=draw(st.booleans()))


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    """A valid message with one thing wrong: a field dropped, retyped, spelled as a raw
    number literal, nested deeply, a string with something more at either end, or a field
    it does not have."""
    obj = json.loads(encode(draw(MESSAGES)))
    names = sorted(obj)
    how = draw(st.sampled_from(["drop", "retype", "literal", "nest", "edge", "extra"]))
    name = draw(st.sampled_from(names))
    literal = None
    if how == "edge":
        return draw(edged_frames(obj))
    if how == "drop":
        del obj[name]
    elif how == "retype":
        obj[name] = draw(JSON_VALUES)
    elif how == "literal":
        obj[name] = "\x00LITERAL\x00"
        literal = draw(NUMBER_LITERALS)
    elif how == "nest":
        depth = draw(st.integers(1, 3000))
        obj[name] = "\x00LITERAL\x00"
        literal = "[" * depth + draw(NUMBER_LITERALS) + "]" * depth
    else:
        obj[draw(st.text(ANY_CHAR, max_size=10))] = draw(JSON_VALUES)
    text = to_json(obj, ascii_only=draw(st.booleans()))
    if literal is not None:
        text = text.replace(json.dumps("\x00LITERAL\x00"), literal)
    return text


#: What may cling to either end of a string: line ends, blanks, controls.
EDGES = st.sampled_from(["\n", "\n", "\r\n", "\r", " ", "\t", "\x00", "\u2028", "\x85"])


@st.composite
def edged_frames(draw: st.DrawFn, obj: dict[str, Any] | None = None) -> str:
    """A valid message with something more at either end of one of its strings."""
    if obj is None:
        obj = json.loads(encode(draw(MESSAGES)))
    texts = sorted(name for name, value in obj.items() if isinstance(value, str)
                   and name != "type")
    if texts:
        name, edge = draw(st.sampled_from(texts)), draw(EDGES)
        obj[name] = obj[name] + edge if draw(st.booleans()) else edge + obj[name]
    return to_json(obj, ascii_only=draw(st.booleans()))


@st.composite
def deep_frames(draw: st.DrawFn) -> str:
    """Arrays and objects nested up to the frame limit, balanced or not."""
    depth = draw(st.integers(1, MAX_FRAME_BYTES // 2))
    kind = draw(st.sampled_from(["array", "object", "in-message", "unbalanced"]))
    if kind == "array":
        return "[" * depth + "]" * depth
    if kind == "object":
        inner = '{"a":' * min(depth, MAX_FRAME_BYTES // 6)
        return inner + "1" + "}" * min(depth, MAX_FRAME_BYTES // 6)
    if kind == "in-message":
        depth = min(depth, MAX_FRAME_BYTES // 2 - 40)
        return '{"type":"SYNC","id":"s1","t0":1,"x":' + "[" * depth + "]" * depth + "}"
    return "[" * depth + "]" * draw(st.integers(0, depth))


@st.composite
def oversize_frames(draw: st.DrawFn) -> str:
    """A valid ERROR padded with an unknown field to around the 64 KiB limit."""
    pad = draw(st.integers(MAX_FRAME_BYTES - 200, MAX_FRAME_BYTES + 200)
               | st.integers(0, 4 * MAX_FRAME_BYTES))
    char = draw(st.sampled_from(["x", "\u00e9", "\u4e2d", "\U0001f3a4"]))
    padding = char * (pad // len(char.encode()))
    return '{"type":"ERROR","code":"c","detail":"d","pad":"' + padding + '"}'


HOSTILE_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=300),
    JSON_VALUES.flatmap(lambda v: st.booleans().map(lambda a: to_json(v, ascii_only=a))),
    message_like_frames(),
    mutated_frames(),
    edged_frames(),
    deep_frames(),
    oversize_frames(),
)


# -- checks ---------------------------------------------------------------------------------


def members(t: mi.Type) -> tuple[mi.Type, ...]:
    return t.types if isinstance(t, mi.UnionType) else (t,)


def assert_declared(value: Any, t: mi.Type, where: str) -> None:
    """``value`` is what ``t`` declares: finite floats and every bound, recursively."""
    kinds = members(t)
    if value is None:
        assert any(isinstance(k, mi.NoneType) for k in kinds), where
        return
    if isinstance(value, msgspec.Struct):
        info = next(k for k in kinds if isinstance(k, mi.StructType))
        assert type(value) is info.cls, where
        for field in info.fields:
            assert_declared(getattr(value, field.name), field.type, f"{where}.{field.name}")
        return
    if isinstance(value, tuple):
        seq = next(k for k in kinds if isinstance(k, mi.VarTupleType))
        for i, item in enumerate(value):
            assert_declared(item, seq.item_type, f"{where}[{i}]")
        return
    if isinstance(value, enum.Enum):
        assert any(isinstance(k, mi.EnumType) and isinstance(value, k.cls) for k in kinds), where
        return
    if isinstance(value, bool):
        assert any(isinstance(k, mi.BoolType) for k in kinds), where
        return
    if isinstance(value, float):
        number: mi.FloatType | mi.IntType = next(k for k in kinds if isinstance(k, mi.FloatType))
        assert math.isfinite(value), (where, value)
    elif isinstance(value, int):
        number = next(k for k in kinds if isinstance(k, mi.IntType))
    else:
        assert isinstance(value, str), (where, value)
        text = next(k for k in kinds if isinstance(k, mi.StrType))
        assert (text.min_length or 0) <= len(value), (where, value)
        assert text.max_length is None or len(value) <= text.max_length, (where, value)
        if text.pattern is not None:  # the whole value, as documented (msgspec searches)
            assert re.fullmatch(text.pattern, value), (where, value)
        return
    for bound, holds in ((number.ge, lambda b: value >= b), (number.gt, lambda b: value > b),
                         (number.le, lambda b: value <= b), (number.lt, lambda b: value < b)):
        assert bound is None or holds(bound), (where, value, number)


def decode_or_refuse(frame: str | bytes) -> Message | None:
    """Decode ``frame``; ``None`` if it was refused with a `ProtocolError`.

    Any other exception propagates, and fails the test with its traceback. A refusal must
    carry a code, a reason, a ``ref`` the ERROR reply can hold, and must itself be
    expressible as that ERROR reply (built as `server.ws.DeviceSession._reply_error`
    builds it), which a device decodes back.
    """
    try:
        message = decode(frame)
    except ProtocolError as exc:
        assert isinstance(exc.code, str) and exc.code, exc
        assert str(exc).strip(), repr(exc)
        assert exc.ref is None or (isinstance(exc.ref, str) and 0 < len(exc.ref) <= 64), exc.ref
        reply = Error(code=exc.code, detail=str(exc)[:4000], ref=exc.ref)
        assert decode(encode(reply)) == reply
        return None
    assert isinstance(message, Message), message
    assert_declared(message, mi.type_info(type(message)), type(message).type_name())
    return message


def _no_constants(name: str) -> Any:
    raise AssertionError(f"the frame holds {name}, which JSON cannot carry")


# -- (a) any text: a message or a ProtocolError ---------------------------------------------


@fuzz(max_examples=400)
@given(frame=HOSTILE_TEXT)
@example(frame='{"type":"SYNC","id":"s1","t0":1e400}')
@example(frame='{"type":"SYNC","id":"s1","t0":NaN}')
@example(frame='{"type":"ERROR","code":"c","detail":"\\ud800"}')
@example(frame='{"type":"ERROR","code":"c","detail":"\ud800"}')
@example(frame='{"type":"STATUS","state":"IDLE","free_bytes":' + "9" * 5000 + "}")
@example(frame='{"type":"RECORDING","frames":' + "9" * 5000 + "}")
@example(frame='{"type":"SYNC","id":"s1","t0":1,"x":' + "[" * 30000 + "]" * 30000 + "}")
@example(frame='{"type":"x' + "\u00e9" * 40000 + '"}')
def test_any_text_decodes_to_a_message_or_a_protocol_error(frame: str) -> None:
    """Guards the edge: no frame, however broken, raises anything but `ProtocolError`.

    Text of any code points (unpaired surrogates too), arbitrary JSON (NaN and
    infinities as Python spells them, huge integers), objects shaped like messages with
    fields of every type, valid messages with one field dropped, retyped, spelled as a raw
    number literal or nested thousands deep, and frames around and beyond 64 KiB.
    """
    decode_or_refuse(frame)
    decode_or_refuse(frame.encode("utf-8", "surrogatepass"))


@fuzz(max_examples=200)
@given(frame=st.binary(max_size=400) | HOSTILE_TEXT.map(
    lambda text: text.encode("utf-16") if text.isascii() else text.encode("latin-1", "replace")))
def test_any_bytes_decode_to_a_message_or_a_protocol_error(frame: bytes) -> None:
    """Guards the edge for binary frames: bytes that are not UTF-8 are refused cleanly."""
    decode_or_refuse(frame)


@fuzz(max_examples=100)
@given(frame=oversize_frames())
def test_the_frame_limit_is_exact(frame: str) -> None:
    """Guards the 64 KiB limit: a frame is decoded up to `MAX_FRAME_BYTES` and refused
    with a reason naming the limit above it (bytes counted in UTF-8)."""
    size = len(frame.encode("utf-8"))
    if size <= MAX_FRAME_BYTES:
        assert isinstance(decode(frame), Error)
    else:
        with pytest.raises(ProtocolError, match=f"exceeds the limit of {MAX_FRAME_BYTES}"):
            decode(frame)


# -- (b) every valid message round-trips; (c) as strict JSON --------------------------------


def test_the_generated_messages_cover_every_type() -> None:
    """Guards this file: every message type the codec knows is generated."""
    assert set(TYPE_NAMES) >= {"REGISTER", "STATUS", "ACK", "SYNC", "RECORDING", "COMMAND",
                               "WELCOME", "SERVER", "ERROR"}
    assert {cls.type_name() for cls in MESSAGE_TYPES} == set(TYPE_NAMES)


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.type_name())
@fuzz(max_examples=80)
@given(data=st.data())
def test_every_valid_message_round_trips(cls: type[Message], data: st.DataObject) -> None:
    """Guards the contract both sides rely on: any message its annotations allow is
    encoded and decoded back to an equal message (as text and as bytes), unless its frame
    exceeds 64 KiB, which is then refused (a long target list can do that)."""
    message = data.draw(messages_of(cls))
    frame = encode(message)
    if len(frame.encode("utf-8")) > MAX_FRAME_BYTES:
        with pytest.raises(ProtocolError, match="exceeds the limit"):
            decode(frame)
        return
    decoded = decode(frame)
    assert type(decoded) is cls and decoded == message
    assert JSON_V1.decode(frame.encode("utf-8")) == message
    assert encode(decoded) == frame


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.type_name())
@fuzz(max_examples=50)
@given(data=st.data())
def test_every_encoded_message_is_strict_json(cls: type[Message], data: st.DataObject) -> None:
    """Guards every peer that is not us: a frame is one JSON object, no ``NaN`` or
    ``Infinity`` (which strict parsers refuse), whose ``type`` names the message and whose
    numbers are all finite."""
    frame = encode(data.draw(messages_of(cls)))
    numbers: list[float] = []

    def keep(text: str) -> float:
        numbers.append(float(text))
        return float(text)

    obj = json.loads(frame, parse_constant=_no_constants, parse_float=keep)
    assert isinstance(obj, dict) and obj["type"] == cls.type_name()
    assert all(math.isfinite(n) for n in numbers), numbers


# -- (d) what is decoded is inside the documented bounds ------------------------------------


def test_instant_and_duration_fields_carry_the_documented_bounds() -> None:
    """Guards the annotations against the constants: every instant is declared in
    ``[0, MAX_INSTANT_S)`` and every duration at most ``MAX_DURATION_S``, so the bounds
    `assert_declared` checks below are the documented ones."""
    seen: set[str] = set()

    def visit(info: mi.StructType) -> None:
        for field in info.fields:
            for kind in members(field.type):
                if isinstance(kind, mi.StructType):
                    visit(kind)
                elif isinstance(kind, mi.FloatType) and field.name in INSTANT_FIELDS:
                    assert (kind.ge, kind.gt, kind.lt, kind.le) == (0, None, MAX_INSTANT_S, None)
                    seen.add(field.name)
                elif isinstance(kind, mi.FloatType) and field.name in DURATION_FIELDS:
                    assert kind.le == MAX_DURATION_S and (kind.ge == 0 or kind.gt == 0)
                    seen.add(field.name)

    for cls in MESSAGE_TYPES:
        visit(mi.type_info(cls))
    assert seen == INSTANT_FIELDS | DURATION_FIELDS


#: Float fields, by message type, and literals to put in them.
FLOAT_FIELDS = [(cls, field.name) for cls in MESSAGE_TYPES for field in mi.type_info(cls).fields
                if any(isinstance(k, mi.FloatType) for k in members(field.type))]


@fuzz(max_examples=300)
@given(data=st.data())
def test_decoded_floats_are_finite_and_within_bounds(data: st.DataObject) -> None:
    """Guards every sum and difference the hub computes: a float field of a valid message,
    replaced by any number literal (near and past every bound, huge, tiny, NaN-like), is
    decoded only if finite and inside its declared bounds (`assert_declared`)."""
    cls, name = data.draw(st.sampled_from(FLOAT_FIELDS))
    obj = json.loads(encode(data.draw(messages_of(cls))))
    literal = data.draw(NUMBER_LITERALS | st.floats().map(repr) | st.sampled_from(
        [repr(MAX_INSTANT_S), repr(math.nextafter(MAX_INSTANT_S, 0)), repr(MAX_DURATION_S),
         repr(math.nextafter(MAX_DURATION_S, math.inf)), "-1e-300", "5e-324", "-5e-324"]))
    obj[name] = "\x00LITERAL\x00"
    frame = json.dumps(obj).replace(json.dumps("\x00LITERAL\x00"), literal)
    message = decode_or_refuse(frame)
    if message is not None:
        value = getattr(message, name)
        assert isinstance(value, float) and math.isfinite(value)
        if name in INSTANT_FIELDS:
            assert 0 <= value < MAX_INSTANT_S
        elif name in DURATION_FIELDS:
            assert 0 <= value <= MAX_DURATION_S


def ids_in(value: Any, t: mi.Type) -> list[str]:
    """Every string ``value`` holds in a field typed as an id (`ID_PATTERN`)."""
    found: list[str] = []
    for kind in members(t):
        if isinstance(kind, mi.StrType) and kind.pattern == ID_PATTERN and isinstance(value, str):
            found.append(value)
        elif isinstance(kind, mi.VarTupleType) and isinstance(value, tuple):
            for item in value:
                found += ids_in(item, kind.item_type)
        elif isinstance(kind, mi.StructType) and isinstance(value, kind.cls):
            for field in kind.fields:
                found += ids_in(getattr(value, field.name), field.type)
    return found


@fuzz(max_examples=200)
@given(frame=edged_frames() | mutated_frames() | message_like_frames())
def test_decoded_ids_are_safe_ids(frame: str) -> None:
    """Guards file names: every id a decoded message holds is a safe id (`is_safe_id`), as
    `ID_PATTERN` documents."""
    message = decode_or_refuse(frame)
    if message is not None:
        for value in ids_in(message, mi.type_info(type(message))):
            assert is_safe_id(value), value


@pytest.mark.parametrize("frame", [
    '{"type":"SYNC","id":"s1\\n","t0":1}',
    '{"type":"REGISTER","device_id":"mic-1","name":"Mic\\n","protocol":1}',
    '{"type":"RECORDING","recording_id":"r","sample_rate":48000,"channels":1,"frames":1,'
    '"bytes":1,"sha256":"' + "a" * 64 + '\\n","format":"wav"}',
], ids=["id", "name", "sha256"])
def test_a_pattern_field_refuses_a_trailing_newline(frame: str) -> None:
    """Guards the documented id syntax (`ID_PATTERN`: ids become file names), names without
    control characters, and SHA-256 digests of exactly 64 hex digits.

    Found by this fuzzing (fixed since): msgspec checks ``Meta(pattern=...)`` with
    ``re.search``, where ``$`` also matches before a final newline, so each of these was
    accepted while the patterns ended in a bare ``$``.
    """
    with pytest.raises(ProtocolError):
        decode(frame)
