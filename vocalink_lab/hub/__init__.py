"""The domain core: devices, commands, clocks, takes and the event bus (asyncio only)."""

from __future__ import annotations

from .android import AndroidLink, AndroidSessions, AppSession, Staged
from .clock import ClockEstimate, ClockSample, ClockTracker
from .commands import CommandRecord, CommandResult, CommandTracker, Outcome, TargetOutcome
from .events import Event, EventBus, Topic
from .hub import Hub, validate_server_name
from .jobs import DspPool, Job, JobNotFound, Jobs, JobState, Progress
from .link import DeviceLink, LinkClosed
from .pairing import CLOSE_IMPOSTOR, CLOSE_REJECTED, Admission, Pairing, PairingState
from .registry import DeviceRecord, DeviceRegistry, HistoryEntry
from .takes import SKEW_FLAG_MS, skew_report

__all__ = [
    "SKEW_FLAG_MS",
    "CLOSE_IMPOSTOR",
    "CLOSE_REJECTED",
    "Admission",
    "AndroidLink",
    "AndroidSessions",
    "AppSession",
    "ClockEstimate",
    "ClockSample",
    "ClockTracker",
    "CommandRecord",
    "CommandResult",
    "CommandTracker",
    "DeviceLink",
    "DeviceRecord",
    "DeviceRegistry",
    "DspPool",
    "Event",
    "EventBus",
    "HistoryEntry",
    "Hub",
    "Job",
    "JobNotFound",
    "JobState",
    "Jobs",
    "LinkClosed",
    "Outcome",
    "Pairing",
    "PairingState",
    "Progress",
    "Staged",
    "TargetOutcome",
    "Topic",
    "skew_report",
    "validate_server_name",
]
