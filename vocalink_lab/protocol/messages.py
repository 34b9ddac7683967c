"""Protocol v1 messages: small frozen, typed values (msgspec structs).

Each message is a ``Message`` subclass whose class-level ``tag`` is the frame's
``type``. Field constraints (id syntax, name length, enum values, number ranges)
live in the annotations, so decoding validates them in one place.

Every number has a range. JSON cannot carry NaN or infinity, but a float near 1e308 becomes
infinity in the first sum (a SYNC answer's offset, ``((t1 - t0) + (t2 - t3)) / 2``), and
one non-finite value in a response makes it unserialisable. Instants are bounded to
`MAX_INSTANT_S` and durations to `MAX_DURATION_S`, so that sums and differences of any of
them stay finite, far from overflow.
"""

from __future__ import annotations

import enum
import math
import re
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = [
    "ID_PATTERN",
    "MAX_DURATION_S",
    "MAX_FRAME_BYTES",
    "MAX_INSTANT_S",
    "MAX_NAME_CHARS",
    "PROTOCOL_VERSION",
    "Ack",
    "AckStatus",
    "V1_ACTIONS",
    "Action",
    "Capabilities",
    "ClientState",
    "Command",
    "CommandParams",
    "Error",
    "Message",
    "Recording",
    "Register",
    "Server",
    "ServerEvent",
    "Status",
    "Sync",
    "Welcome",
    "is_device_name",
    "is_plausible_instant",
    "is_safe_id",
    "json_number",
]

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024
MAX_NAME_CHARS = 64
#: Ids become file names: ASCII letters, digits, ``.``, ``_``, ``-``; never ``.`` or ``..``
#: (they must start with a letter or digit), at most 64 characters. Patterns end in
#: ``(?!\n)$``: msgspec checks them with ``re.search``, where ``$`` alone also matches
#: before a final newline (in JavaScript's and JSON Schema's reading it never does).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(?!\n)$"
_ID_RE = re.compile(ID_PATTERN)
_NAME_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}(?!\n)$"
SHA256_PATTERN = r"^[0-9a-f]{64}(?!\n)$"

Id = Annotated[str, Meta(pattern=ID_PATTERN)]
Name = Annotated[str, Meta(pattern=_NAME_PATTERN)]
Short = Annotated[str, Meta(max_length=MAX_NAME_CHARS)]
Text = Annotated[str, Meta(max_length=4096)]
#: Every clock of the protocol reads seconds since 1970 (a device's clock tracks its wall
#: clock): an instant is at least 0 and below 1e11 s, the year 5138. The bound keeps every
#: sum and difference of instants finite, and refuses what no clock reads.
MAX_INSTANT_S = 1e11
#: A duration (a recording's elapsed time, a command's ``duration_s``, the heartbeat) is at
#: most 1e7 s, about 116 days: longer than any take a device can hold.
MAX_DURATION_S = 1e7
Instant = Annotated[float, Meta(ge=0, lt=MAX_INSTANT_S)]
Seconds = Annotated[float, Meta(ge=0, le=MAX_DURATION_S)]
PositiveSeconds = Annotated[float, Meta(gt=0, le=MAX_DURATION_S)]
Dbfs = Annotated[float, Meta(ge=-400.0, le=100.0)]
#: What SQLite and every JSON reader with 64-bit integers can hold.
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
SampleRate = Annotated[int, Meta(ge=1000, le=768_000)]
Channels = Annotated[int, Meta(ge=1, le=64)]
Sha256 = Annotated[str, Meta(pattern=SHA256_PATTERN)]


_NAME_RE = re.compile(_NAME_PATTERN)


def is_device_name(value: object) -> bool:
    """Return whether ``value`` is a device name (1 to 64 characters, no control ones)."""
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


def is_safe_id(value: object) -> bool:
    """Return whether ``value`` is a valid id (safe as a file name)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def is_plausible_instant(value: object) -> bool:
    """Return whether ``value`` is an instant a clock can read (see `MAX_INSTANT_S`).

    A number (not a bool) of seconds since 1970, ``0 <= value < 1e11``; NaN and
    infinities are not.
    """
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 <= value < MAX_INSTANT_S)


def json_number(value: float | None) -> float | None:
    """``value`` if JSON can carry it (a finite number), else ``None``.

    For building JSON-ready dicts from values that did not all come through the codec
    (a message built in memory, another dialect): NaN and infinities become ``null``
    instead of making the whole response unserialisable.
    """
    if value is None or not math.isfinite(value):
        return None
    return value


class Action(enum.StrEnum):
    """What a COMMAND asks a device to do."""

    START = "START"
    STOP = "STOP"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    PING = "PING"
    SYNC_NOW = "SYNC_NOW"
    #: Stop and throw the recording away: the VocalLink Android app's ``cancel`` (a v1
    #: device is never sent it; its outcome says so).
    CANCEL = "CANCEL"


#: The actions a protocol v1 device is sent.
V1_ACTIONS: frozenset[Action] = frozenset(a for a in Action if a is not Action.CANCEL)


class ClientState(enum.StrEnum):
    """A device's state. Devices report all but OFFLINE, which only the server concludes."""

    IDLE = "IDLE"
    RECORDING = "RECORDING"
    PAUSED = "PAUSED"
    UPLOADING = "UPLOADING"
    ERROR = "ERROR"
    OFFLINE = "OFFLINE"


class AckStatus(enum.StrEnum):
    """A device's answer to a command."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class ServerEvent(enum.StrEnum):
    """Why the server sends a SERVER message."""

    RENAMED = "renamed"
    SHUTTING_DOWN = "shutting_down"


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type",
              gc=False):
    """Base of every protocol message; the subclass tag is the frame's ``type``.

    Messages are immutable values that can never form reference cycles, so they
    stay out of the garbage collector's bookkeeping (``gc=False``): a busy server
    decodes thousands a second.
    """

    @classmethod
    def type_name(cls) -> str:
        """The ``type`` string of this message class."""
        return str(cls.__struct_config__.tag)


class Capabilities(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """What a device can record."""

    sample_rates: tuple[SampleRate, ...] = ()
    channels: tuple[Channels, ...] = ()
    formats: tuple[Short, ...] = ()


class CommandParams(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Recording parameters a command may carry; ``None`` means the device's default."""

    sample_rate: SampleRate | None = None
    channels: Channels | None = None
    format: Short | None = None
    duration_s: PositiveSeconds | None = None


class Register(Message, frozen=True, kw_only=True, tag="REGISTER"):
    """device → server: the first frame on a connection."""

    device_id: Id
    name: Name
    protocol: int
    platform: Short = ""
    capabilities: Capabilities = Capabilities()
    #: Its credential: the device key it was given when paired, or the controller token.
    token: Short | None = None
    #: A join code read off the dashboard: pairs a device that has no key yet.
    join_code: Short | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("name must not be blank")


class Welcome(Message, frozen=True, kw_only=True, tag="WELCOME"):
    """server → device: the answer to REGISTER, and again once the device is approved."""

    server_id: Id
    server_name: Name
    protocol: int
    server_time: Instant
    heartbeat_s: PositiveSeconds
    upload_url: Text
    #: The longest gap between two SYNC bursts to a paired device: a device that hears
    #: nothing for a few of these may take the connection for dead (a page cannot see
    #: WebSocket pings). Absent from servers before it was added.
    sync_interval_s: PositiveSeconds | None = None
    #: False while the device waits for an operator's approval (it gets no command); a
    #: second WELCOME, paired, follows the approval.
    paired: bool = True
    #: A new device key, when it was just paired: present it as ``token`` from now on.
    device_key: Short | None = None


class Command(Message, frozen=True, kw_only=True, tag="COMMAND"):
    """server → device: do something; the ACK echoes ``command_id``."""

    command_id: Id
    action: Action
    take_id: Id | None = None
    targets: tuple[Id, ...] | None = None  # None: broadcast
    start_at: Instant | None = None  # device clock, for a scheduled start
    params: CommandParams = CommandParams()


class Ack(Message, frozen=True, kw_only=True, tag="ACK"):
    """device → server: the outcome of one command on one device."""

    command_id: Id
    action: Action
    device_id: Id
    status: AckStatus
    error: Text | None = None
    recording_id: Id | None = None
    started_at: Instant | None = None  # device clock: the first sample


class Status(Message, frozen=True, kw_only=True, tag="STATUS"):
    """device → server: what the device is doing, about once a second."""

    state: ClientState
    level_dbfs: Dbfs | None = None
    peak_dbfs: Dbfs | None = None
    battery: Annotated[float, Meta(ge=0, le=1)] | None = None
    free_bytes: Count | None = None
    pending_uploads: Count = 0
    recording_id: Id | None = None
    elapsed_s: Seconds | None = None

    def __post_init__(self) -> None:
        if self.state is ClientState.OFFLINE:
            raise ValueError("a device cannot report itself OFFLINE")


class Sync(Message, frozen=True, kw_only=True, tag="SYNC"):
    """Both ways: server sends ``{id, t0}``; the device answers with ``t1, t2`` of its clock."""

    id: Id
    t0: Instant
    t1: Instant | None = None
    t2: Instant | None = None


class Recording(Message, frozen=True, kw_only=True, tag="RECORDING"):
    """device → server: announces a file that will be uploaded."""

    recording_id: Id
    take_id: Id | None = None
    started_at: Instant | None = None  # device clock
    sample_rate: SampleRate
    channels: Channels
    frames: Count
    bytes: Count
    sha256: Sha256
    format: Short
    #: Recorded while the device had no connection to the server (told on reconnect).
    offline: bool = False
    #: Rebuilt from the device's spool after a crash or power loss (complete up to the
    #: last second before it).
    recovered: bool = False


class Server(Message, frozen=True, kw_only=True, tag="SERVER"):
    """server → device: the server was renamed or is shutting down."""

    event: ServerEvent
    server_name: Name
    server_id: Id


class Error(Message, frozen=True, kw_only=True, tag="ERROR"):
    """Both ways: a frame was refused; ``ref`` names the message it refers to."""

    code: Short
    detail: Text
    ref: Short | None = None
