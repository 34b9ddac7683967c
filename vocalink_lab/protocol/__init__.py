"""Protocol v1: the wire contract shared by the server, every device and every controller.

`messages` and `codec` are what devices speak on ``/ws/control``; `events` holds what
controllers follow on ``/ws/events`` (the topics) and in ``/api/jobs`` (job states).
"""

from __future__ import annotations

from .codec import JSON_V1, Codec, JsonCodec, decode, encode
from .events import JobState, Topic
from .messages import (
    ID_PATTERN,
    MAX_DURATION_S,
    MAX_FRAME_BYTES,
    MAX_INSTANT_S,
    MAX_NAME_CHARS,
    PROTOCOL_VERSION,
    V1_ACTIONS,
    Ack,
    AckStatus,
    Action,
    Capabilities,
    ClientState,
    Command,
    CommandParams,
    Error,
    Message,
    Recording,
    Register,
    Server,
    ServerEvent,
    Status,
    Sync,
    Welcome,
    is_device_name,
    is_plausible_instant,
    is_safe_id,
    json_number,
)

__all__ = [
    "ID_PATTERN",
    "JSON_V1",
    "MAX_DURATION_S",
    "MAX_FRAME_BYTES",
    "MAX_INSTANT_S",
    "MAX_NAME_CHARS",
    "PROTOCOL_VERSION",
    "V1_ACTIONS",
    "Ack",
    "AckStatus",
    "Action",
    "Capabilities",
    "ClientState",
    "Codec",
    "Command",
    "CommandParams",
    "Error",
    "JobState",
    "JsonCodec",
    "Message",
    "Recording",
    "Register",
    "Server",
    "ServerEvent",
    "Status",
    "Sync",
    "Topic",
    "Welcome",
    "decode",
    "encode",
    "is_device_name",
    "is_plausible_instant",
    "is_safe_id",
    "json_number",
]
