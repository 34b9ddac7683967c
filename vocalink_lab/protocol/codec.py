"""The one codec of protocol v1: JSON text frames <-> typed messages.

A ``Codec`` is what a connection speaks. v1 is the only dialect today; the older
VocalLink Android dialect (``{kind, msgType, body}``) will be a second ``Codec``
behind the same hub.
"""

from __future__ import annotations

import json
import re
from typing import Protocol

import msgspec

from ..errors import ProtocolError
from .messages import (
    _NAME_PATTERN,
    ID_PATTERN,
    MAX_FRAME_BYTES,
    MAX_INSTANT_S,
    MAX_NAME_CHARS,
    PROTOCOL_VERSION,
    SHA256_PATTERN,
    V1_ACTIONS,
    Ack,
    Action,
    Command,
    Error,
    Message,
    Recording,
    Register,
    Server,
    Status,
    Sync,
    Welcome,
)

__all__ = [
    "JSON_V1", "Codec", "JsonCodec", "decode", "encode", "explain_validation_error", "ref_of",
]

_MESSAGE_TYPES: tuple[type[Message], ...] = (
    Register, Welcome, Command, Ack, Status, Sync, Recording, Server, Error,
)
TYPE_NAMES = tuple(t.type_name() for t in _MESSAGE_TYPES)
_REF_FIELDS = ("command_id", "recording_id", "id")
_AT_TYPE = re.compile(r"Invalid value '(.*)' - at `\$\.type`")
_MATCHING = re.compile(r"Expected `str` matching regex (?P<pattern>'.*')")
#: msgspec names a failed ``pattern`` constraint by its regex; say what it means instead.
_PATTERN_WORDS = {
    repr(ID_PATTERN): (
        "is not a valid id (1 to 64 ASCII letters, digits, '.', '_' or '-', "
        "starting with a letter or digit)"
    ),
    repr(_NAME_PATTERN): (
        f"must be 1 to {MAX_NAME_CHARS} characters with no control characters"
    ),
    repr(SHA256_PATTERN): "must be 64 lowercase hexadecimal digits (a SHA-256)",
}
_TOO_DEEP = "frame nests arrays or objects too deeply"
#: The fields that hold an instant (`messages.Instant`) and msgspec's words for its bounds.
_INSTANT_FIELDS = frozenset({"t0", "t1", "t2", "started_at", "start_at", "server_time"})
_FLOAT_BOUND = re.compile(r"Expected `float` (>=|<) \S+")
_INSTANT_WORDS = (
    f"must be an instant in seconds since 1970, at least 0 and below {MAX_INSTANT_S:.0e} "
    "(the year 5138)"
)


class Codec(Protocol):
    """How one dialect turns frames into messages and back."""

    name: str
    #: Whether the server measures this dialect's clocks with SYNC probes (v1); a dialect
    #: whose devices probe the server themselves hands the hub its samples instead.
    server_probes: bool
    #: The actions its devices can be sent; a command's other targets fail at once.
    actions: frozenset[Action]

    def decode(self, frame: str | bytes) -> Message:
        """Parse one frame; raise ``ProtocolError`` if it is malformed or unknown."""
        ...

    def encode(self, message: Message) -> str:
        """Serialise one message to a text frame."""
        ...


class JsonCodec:
    """Protocol v1: one JSON object per text frame, at most 64 KiB."""

    name = "v1"
    server_probes = True
    actions = V1_ACTIONS

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(_union())
        self._encoder = msgspec.json.Encoder()

    def decode(self, frame: str | bytes) -> Message:
        """Parse and validate one frame.

        Parameters
        ----------
        frame : str or bytes
            The frame's text (bytes are read as UTF-8).

        Returns
        -------
        Message
            The typed message.

        Raises
        ------
        ProtocolError
            Oversize, not JSON, not an object, unknown ``type``, a missing or
            wrong-typed field, an invalid id or enum value, or another protocol
            version. ``ref`` holds the frame's command/recording/sync id when
            one could be read, so that the ERROR reply can point at it.
        """
        data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
        if len(data) > MAX_FRAME_BYTES:
            raise ProtocolError(
                f"frame of {len(data)} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes"
            )
        try:
            message: Message = self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise _validation_error(str(exc), data) from None
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"frame is not valid JSON: {exc}") from None
        except RecursionError:
            raise ProtocolError(_TOO_DEEP) from None
        if isinstance(message, Register) and message.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {message.protocol} is not supported "
                f"(this server speaks {PROTOCOL_VERSION})"
            )
        return message

    def encode(self, message: Message) -> str:
        """Serialise ``message`` to a JSON text frame."""
        return self._encoder.encode(message).decode("utf-8")


def _union() -> object:
    union: object = _MESSAGE_TYPES[0]
    for t in _MESSAGE_TYPES[1:]:
        union = union | t
    return union


def _validation_error(detail: str, data: bytes) -> ProtocolError:
    """Turn msgspec's message into one a device developer can act on."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        obj = None
    kind = obj.get("type") if isinstance(obj, dict) else None
    if detail.startswith("Expected `object`"):
        text = "a frame must be a JSON object with a 'type'"
    elif detail == "Object missing required field `type`":
        text = "frame has no 'type'"
    elif (match := _AT_TYPE.fullmatch(detail)) is not None:
        text = f"unknown message type '{match.group(1)}' (expected one of {', '.join(TYPE_NAMES)})"
    elif detail.endswith("at `$.type`"):
        text = "'type' must be a string naming the message"
    else:
        text = explain_validation_error(detail)
        if isinstance(kind, str):
            text = f"{kind}: {text}"
    return ProtocolError(text, ref=_ref_of(obj))


def explain_validation_error(detail: str) -> str:
    """Reword a ``msgspec.ValidationError`` message for people.

    Parameters
    ----------
    detail : str
        ``str()`` of the error, e.g. ``"Expected `str` matching regex '...' - at
        `$.targets[0]`"``.

    Returns
    -------
    str
        The same facts in words, the field first, e.g. ``"field 'targets[0]': is
        not a valid id (...)"``; regular expressions, and the bounds of an instant, are
        replaced by what they mean.
    """
    where = path = ""
    if " - at `$." in detail:
        detail, _, path = detail.partition(" - at `$.")
        path = path.rstrip("`")
        where = f"field '{path}': "
    match = _MATCHING.fullmatch(detail)
    if match is not None and match.group("pattern") in _PATTERN_WORDS:
        detail = _PATTERN_WORDS[match.group("pattern")]
    elif path.rpartition(".")[2] in _INSTANT_FIELDS and _FLOAT_BOUND.fullmatch(detail):
        detail = _INSTANT_WORDS
    return f"{where}{_lower_first(detail)}"


def ref_of(message: Message) -> str | None:
    """The id an ERROR reply about ``message`` should carry as ``ref`` (if it has one)."""
    for key in _REF_FIELDS:
        value = getattr(message, key, None)
        if isinstance(value, str):
            return value
    return None


def _ref_of(obj: object) -> str | None:
    """Best effort: the id a malformed frame was about, for the ERROR reply."""
    if not isinstance(obj, dict):
        return None
    for key in _REF_FIELDS:
        value = obj.get(key)
        if isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


JSON_V1 = JsonCodec()


def decode(frame: str | bytes) -> Message:
    """Decode one v1 frame (see `JsonCodec.decode`)."""
    return JSON_V1.decode(frame)


def encode(message: Message) -> str:
    """Encode one message as a v1 frame."""
    return JSON_V1.encode(message)
