"""The VocalLink Android app's dialect: ``{kind, msgType, body}`` frames, typed and checked.

The app (the VocalLink fork of Fossify Voice Recorder) predates protocol v1 and cannot be
changed from here, so the server speaks its dialect on the same ``/ws/control``: the
first frame tells which (v1's carry ``type``, the app's ``kind``). This module is only
the wire: the app's bodies as msgspec structs with the bounds every number needs, and
one decoder that names what is wrong. What the frames mean to the hub (a session is a
device, ``tik`` is a clock sample, ``started`` an ACK) is `hub.android`'s.

What the app expects of the encoding: kotlinx JSON that ignores unknown keys and omits
fields equal to their default (``encodeDefaults = false``), so a field may be absent and
then holds its default; a field the app requires must always be sent. Its instants are
integer milliseconds of its wall clock (``System.currentTimeMillis()``).
"""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from ..errors import ProtocolError
from .messages import MAX_FRAME_BYTES, MAX_INSTANT_S

__all__ = [
    "BROADCAST_ID",
    "DIALECT",
    "ActionTarget",
    "AndroidFrame",
    "AppError",
    "AppFrameError",
    "EventTarget",
    "Kind",
    "RecMetadata",
    "RecStage",
    "SessionMetadata",
    "SessionState",
    "StateReport",
    "SyncReport",
    "Tik",
    "Tok",
    "decode_frame",
    "encode_frame",
    "error_frame",
    "is_android_frame",
]

#: The codec name links of this dialect report.
DIALECT = "android"
#: An action's ``id`` that every app obeys.
BROADCAST_ID = "all"
#: The app's instants, in milliseconds; bounded as v1's are (`MAX_INSTANT_S`).
MAX_INSTANT_MS = int(MAX_INSTANT_S * 1000)
#: A round trip or an offset in milliseconds the app may report: about 116 days.
MAX_SPAN_MS = 10_000_000_000.0

InstantMs = Annotated[int, Meta(ge=0, lt=MAX_INSTANT_MS)]
SpanMs = Annotated[float, Meta(ge=-MAX_SPAN_MS, le=MAX_SPAN_MS)]
#: What the app sends as ids and names: free text; bounded, judged by the session.
AppText = Annotated[str, Meta(max_length=1024)]


class Kind(enum.StrEnum):
    """A frame's ``kind``."""

    ACTION = "action"
    EVENT = "event"
    ERROR = "error"
    SYNC = "sync"


class AppError(enum.StrEnum):
    """The error ``msgType``s the app knows (it shows their names)."""

    INVALID_KIND = "invalid_kind"
    INVALID_EVENT = "invalid_event"
    INVALID_ACTION = "invalid_action"
    INVALID_BODY = "invalid_body"
    ACTION_NOT_ALLOWED = "action_not_allowed"
    SESSION_NOT_FOUND = "session_not_found"
    INVALID_EXTENSION = "invalid_extension"
    ITEM_NOT_FOUND = "item_not_found"


class SessionState(enum.StrEnum):
    """The app's recorder state, as it reports it."""

    STOPPED = "stopped"
    RUNNING = "running"
    PAUSED = "paused"


class _Body(msgspec.Struct, omit_defaults=True):
    """A frame's body: unknown keys ignored, defaults omitted (as kotlinx does)."""


class SessionMetadata(_Body, kw_only=True):
    """A session, as ``POST /sessions``, ``session_activated`` and ``session_update`` carry it.

    ``theta`` is server minus app clock, in milliseconds: the app adds it to its clock to
    read a ``triggerTime``.
    """

    id: AppText
    name: AppText
    ip: AppText
    device: AppText
    battery: int | None = None
    lastRTT: float | None = None  # noqa: N815 (the app's name)
    theta: float | None = None
    lastSync: int | None = None  # noqa: N815


class EventTarget(_Body):
    """``{id}``: whose event (``session_activate``, ``started``, ``stopped``...)."""

    id: AppText


class ActionTarget(_Body):
    """``{id, triggerTime?}``: an action for ``id`` (or `BROADCAST_ID`), in server ms."""

    id: str
    triggerTime: int | None = None  # noqa: N815


class StateReport(_Body):
    """``session_state_report``: the app's state and whole seconds recorded."""

    id: AppText
    state: SessionState
    duration: Annotated[int, Meta(ge=0, le=10**10)] = 0


class RecStage(_Body):
    """``rec_stage``: a finished file the app wants to upload (whole seconds, bytes)."""

    sessionId: AppText  # noqa: N815
    recName: AppText  # noqa: N815
    duration: Annotated[int, Meta(ge=0, le=10**10)]
    sizeBytes: Annotated[int, Meta(ge=0, le=2**63 - 1)]  # noqa: N815


class RecMetadata(_Body, kw_only=True):
    """``rec_staged``: where the staged file goes (``POST /recordings/{rid}``)."""

    rid: str
    recName: str  # noqa: N815
    sessionId: str  # noqa: N815
    speaker: str
    device: str
    duration: float
    sizeBytes: int  # noqa: N815
    createdAt: int  # noqa: N815


class Tik(_Body):
    """``tik``: the app's clock when it sent the probe."""

    t1: InstantMs


class Tok(_Body):
    """``tok``: the probe's ``t1`` back, with the server's receive and send instants."""

    t1: int
    t2: int
    t3: int


class SyncReport(_Body):
    """``sync_report``: what the app made of the last ``tok`` (milliseconds)."""

    theta: SpanMs
    rtt: Annotated[float, Meta(ge=0, le=MAX_SPAN_MS)]


class AndroidFrame(msgspec.Struct, omit_defaults=True, frozen=True):
    """One frame: what it is (``kind``, ``msgType``) and its body, decoded."""

    kind: Kind
    msgType: str  # noqa: N815
    body: Any = None


class _Envelope(msgspec.Struct, frozen=True):
    kind: Kind
    msgType: Annotated[str, Meta(max_length=64)]  # noqa: N815
    body: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty: absent


#: The frames an app sends, by (kind, msgType): the body's type (None: no body needed).
_FROM_APP: dict[tuple[Kind, str], type[_Body] | None] = {
    (Kind.EVENT, "session_activate"): EventTarget,
    (Kind.EVENT, "session_update"): SessionMetadata,
    (Kind.EVENT, "started"): EventTarget,
    (Kind.EVENT, "stopped"): EventTarget,
    (Kind.EVENT, "paused"): EventTarget,
    (Kind.EVENT, "resumed"): EventTarget,
    (Kind.EVENT, "session_state_report"): StateReport,
    (Kind.EVENT, "rec_stage"): RecStage,
    (Kind.SYNC, "tik"): Tik,
    (Kind.SYNC, "sync_report"): SyncReport,
}
_ENVELOPE = msgspec.json.Decoder(_Envelope)
_DECODERS = {key: msgspec.json.Decoder(t) for key, t in _FROM_APP.items() if t is not None}
_ENCODER = msgspec.json.Encoder()


def is_android_frame(frame: str | bytes) -> bool:
    """Whether a connection's first frame is the app's (an object with ``kind``, no ``type``).

    Cheap and lenient: it only decides which decoder judges the frame.
    """
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and "kind" in obj and "type" not in obj


def decode_frame(frame: str | bytes) -> AndroidFrame:
    """Parse and check one frame from the app.

    Parameters
    ----------
    frame : str or bytes
        The frame's text.

    Returns
    -------
    AndroidFrame
        With its body decoded to the struct its ``(kind, msgType)`` calls for.

    Raises
    ------
    ProtocolError
        Oversize, not JSON, no or unknown ``kind``, a ``msgType`` the app never sends,
        a missing body, or a body field missing, mistyped or out of range: an
        `AppFrameError`, whose ``app_code`` is the `AppError` to answer with.
    """
    data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    if len(data) > MAX_FRAME_BYTES:
        raise _refused(AppError.INVALID_BODY,
                       f"frame of {len(data)} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    try:
        envelope = _ENVELOPE.decode(data)
    except msgspec.ValidationError as exc:
        code = AppError.INVALID_KIND if "$.kind" in str(exc) else AppError.INVALID_BODY
        raise _refused(code, f"not a frame of the app: {exc}") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _refused(AppError.INVALID_BODY, f"frame is not valid JSON: {exc}") from None
    key = (envelope.kind, envelope.msgType)
    if key not in _FROM_APP:
        code = {Kind.EVENT: AppError.INVALID_EVENT, Kind.ACTION: AppError.ACTION_NOT_ALLOWED,
                Kind.SYNC: AppError.INVALID_BODY}.get(envelope.kind, AppError.INVALID_KIND)
        raise _refused(code, f"the server takes no {envelope.kind.value} "
                             f"'{envelope.msgType}' from a device")
    decoder = _DECODERS[key]
    if not envelope.body or bytes(envelope.body) == b"null":
        raise _refused(AppError.INVALID_BODY, f"{envelope.msgType} needs a body")
    try:
        body = decoder.decode(envelope.body)
    except msgspec.ValidationError as exc:
        raise _refused(AppError.INVALID_BODY, f"{envelope.msgType}: {exc}") from None
    except (msgspec.DecodeError, RecursionError) as exc:  # pragma: no cover - Raw is JSON
        raise _refused(AppError.INVALID_BODY, f"{envelope.msgType}: {exc}") from None
    return AndroidFrame(envelope.kind, envelope.msgType, body)


def encode_frame(kind: Kind, msg_type: str, body: msgspec.Struct | dict[str, Any] | None = None
                 ) -> str:
    """One frame to the app, defaults omitted as the app's own encoder does."""
    frame: dict[str, Any] = {"kind": kind.value, "msgType": msg_type}
    if body is not None:
        frame["body"] = body
    return _ENCODER.encode(frame).decode("utf-8")


def error_frame(code: AppError, detail: str) -> str:
    """An ``error`` frame: the app shows ``code``'s name; ``detail`` says what was wrong."""
    return encode_frame(Kind.ERROR, code.value, {"detail": detail[:4000]})


class AppFrameError(ProtocolError):
    """A frame of the app's dialect that was refused.

    ``app_code`` is the `AppError` the app is answered with (it shows that name).
    """

    code = "bad_app_frame"

    def __init__(self, message: str, *, app_code: AppError = AppError.INVALID_BODY) -> None:
        super().__init__(message)
        self.app_code = app_code


def _refused(code: AppError, detail: str) -> AppFrameError:
    return AppFrameError(detail, app_code=code)
