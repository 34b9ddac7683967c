"""vocalink_lab: the phones, laptops and Raspberry Pis in a room as one multi-track recorder."""

from __future__ import annotations

from .config import Settings
from .errors import (
    AudioFormatError,
    CommandTimeout,
    DeviceNotFound,
    InvalidParameter,
    ParameterError,
    ProtocolError,
    RecordingNotFound,
    VocalinkError,
)

__version__ = "0.1.0"

__all__ = [
    "AudioFormatError",
    "CommandTimeout",
    "DeviceNotFound",
    "InvalidParameter",
    "ParameterError",
    "ProtocolError",
    "RecordingNotFound",
    "Settings",
    "VocalinkError",
    "__version__",
]
