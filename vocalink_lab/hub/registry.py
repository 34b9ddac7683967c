"""The device registry: every device that ever registered, connected or not."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import DeviceNotFound
from ..protocol import Capabilities, ClientState, Recording, Register, Status
from .clock import ClockEstimate, ClockTracker
from .link import DeviceLink

__all__ = ["DeviceRecord", "DeviceRegistry", "HistoryEntry"]

HISTORY_LENGTH = 100


class HistoryEntry(msgspec.Struct, frozen=True, gc=False):
    """One line of a device's history (outside the garbage collector: plain values only)."""

    at: float
    kind: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"at": self.at, "kind": self.kind, "detail": self.detail}


@dataclass(slots=True, eq=False)
class DeviceRecord:
    """What the server knows of one device. Loop-only and mutable; read it via ``to_dict``."""

    device_id: str
    name: str
    platform: str
    capabilities: Capabilities
    first_seen: float
    last_seen: float
    state: ClientState = ClientState.IDLE
    reported_state: ClientState = ClientState.IDLE
    connected: bool = True
    remote: str = ""
    connections: int = 0
    level_dbfs: float | None = None
    peak_dbfs: float | None = None
    battery: float | None = None
    free_bytes: int | None = None
    pending_uploads: int = 0
    recording_id: str | None = None
    elapsed_s: float | None = None
    last_command: dict[str, Any] | None = None
    announced: dict[str, Recording] = field(default_factory=dict)
    clock: ClockTracker = field(default_factory=ClockTracker)
    history: collections.deque[HistoryEntry] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY_LENGTH)
    )

    def note(self, at: float, kind: str, detail: str = "") -> None:
        """Append a history entry."""
        self.history.append(HistoryEntry(at, kind, detail))

    def apply_status(self, status: Status, at: float) -> None:
        """Take in a STATUS report."""
        self.set_state(status.state, at)
        self.level_dbfs = status.level_dbfs
        self.peak_dbfs = status.peak_dbfs
        self.battery = status.battery
        self.free_bytes = status.free_bytes
        self.pending_uploads = status.pending_uploads
        self.recording_id = status.recording_id
        self.elapsed_s = status.elapsed_s

    def set_state(self, state: ClientState, at: float) -> None:
        """Change the reported state, noting transitions in the history."""
        self.reported_state = state
        if self.connected and state is not self.state:
            self.note(at, "state", f"{self.state.value} -> {state.value}")
            self.state = state

    @property
    def clock_estimate(self) -> ClockEstimate | None:
        """Best estimate of this device's clock offset, if it was measured."""
        return self.clock.estimate

    def to_dict(self, *, history: bool = False) -> dict[str, Any]:
        """JSON-ready snapshot (``history`` adds the device's recent history)."""
        clock = self.clock.estimate
        out: dict[str, Any] = {
            "device_id": self.device_id,
            "name": self.name,
            "platform": self.platform,
            "state": self.state.value,
            "connected": self.connected,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "remote": self.remote,
            "connections": self.connections,
            "level_dbfs": self.level_dbfs,
            "peak_dbfs": self.peak_dbfs,
            "battery": self.battery,
            "free_bytes": self.free_bytes,
            "pending_uploads": self.pending_uploads,
            "recording_id": self.recording_id,
            "elapsed_s": self.elapsed_s,
            "clock_offset_s": clock.offset_s if clock else None,
            "rtt_s": clock.rtt_s if clock else None,
            "clock": clock.to_dict() if clock else None,
            "capabilities": {
                "sample_rates": list(self.capabilities.sample_rates),
                "channels": list(self.capabilities.channels),
                "formats": list(self.capabilities.formats),
            },
            "last_command": self.last_command,
            "announced_recordings": sorted(self.announced),
            "offline_recordings": sorted(k for k, r in self.announced.items() if r.offline),
            "recovered_recordings": sorted(k for k, r in self.announced.items() if r.recovered),
        }
        if history:
            out["history"] = [h.to_dict() for h in self.history]
        return out


class DeviceRegistry:
    """device_id → record and live link.

    Loop-only. A device that registers again with the same id gets its old
    record back (state, history) and its new link replaces the old one.
    """

    def __init__(self) -> None:
        self._records: dict[str, DeviceRecord] = {}
        self._links: dict[str, DeviceLink] = {}

    def attach(
        self, register: Register, link: DeviceLink, at: float
    ) -> tuple[DeviceRecord, DeviceLink | None]:
        """Register a connection; return the record and the link it replaced, if any."""
        record = self._records.get(register.device_id)
        replaced = self._links.get(register.device_id)
        if record is None:
            record = DeviceRecord(
                device_id=register.device_id,
                name=register.name,
                platform=register.platform,
                capabilities=register.capabilities,
                first_seen=at,
                last_seen=at,
            )
            self._records[record.device_id] = record
        else:
            record.name = register.name
            record.platform = register.platform
            record.capabilities = register.capabilities
        record.connected = True
        record.remote = link.remote
        record.last_seen = at
        record.connections += 1
        previous = record.state
        record.state = record.reported_state
        record.note(at, "connected", f"from {link.remote}" + (" (replaced)" if replaced else ""))
        if previous is not record.state:
            record.note(at, "state", f"{previous.value} -> {record.state.value}")
        self._links[record.device_id] = link
        return record, replaced

    def detach(self, device_id: str, link: DeviceLink, at: float) -> DeviceRecord | None:
        """Mark the device OFFLINE if ``link`` is still its current link.

        Returns the record when it went offline, ``None`` when the link had
        already been replaced (a reconnect) or was never attached.
        """
        if self._links.get(device_id) is not link:
            return None
        del self._links[device_id]
        record = self._records[device_id]
        record.connected = False
        record.note(at, "disconnected", "")
        if record.state is not ClientState.OFFLINE:
            record.note(at, "state", f"{record.state.value} -> OFFLINE")
        record.state = ClientState.OFFLINE
        return record

    def get(self, device_id: str) -> DeviceRecord:
        """The record of ``device_id``; raise `DeviceNotFound` if it never registered."""
        try:
            return self._records[device_id]
        except KeyError:
            raise DeviceNotFound(f"no device with id '{device_id}' has registered") from None

    def link(self, device_id: str) -> DeviceLink | None:
        """The live link of ``device_id``, or ``None`` if it is offline."""
        return self._links.get(device_id)

    def connected_ids(self) -> list[str]:
        """Ids of the devices connected now, in registration order."""
        return [d for d in self._records if d in self._links]

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._records

    def __iter__(self) -> Iterator[DeviceRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)
