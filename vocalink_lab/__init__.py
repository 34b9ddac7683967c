"""vocalink_lab: the phones, laptops and Raspberry Pis in a room as one multi-track recorder."""

from __future__ import annotations

from typing import Any

from .config import Settings
from .errors import (
    AudioFormatError,
    Conflict,
    DeviceNotFound,
    DiscoveryError,
    InsufficientStorage,
    InvalidParameter,
    JobCancelled,
    JobNotFound,
    NotFound,
    ParameterError,
    ProtocolError,
    RecordingNotFound,
    StorageError,
    TakeNotFound,
    TranscriptionUnavailable,
    TranscriptNotFound,
    VocalinkError,
    WaitTimeout,
)
from .version import __version__


def __getattr__(name: str) -> Any:
    # The Lab needs the server extra (Tornado); the agent's base install must import
    # `vocalink_lab` without it, so these load on first use.
    if name in ("Lab", "connect"):
        from . import lab

        return getattr(lab, name)
    raise AttributeError(f"module 'vocalink_lab' has no attribute '{name}'")


__all__ = [
    "AudioFormatError",
    "Conflict",
    "DeviceNotFound",
    "DiscoveryError",
    "InsufficientStorage",
    "InvalidParameter",
    "JobCancelled",
    "JobNotFound",
    "Lab",
    "NotFound",
    "ParameterError",
    "ProtocolError",
    "RecordingNotFound",
    "Settings",
    "StorageError",
    "TakeNotFound",
    "TranscriptNotFound",
    "TranscriptionUnavailable",
    "VocalinkError",
    "WaitTimeout",
    "__version__",
    "connect",
]
