"""The device registry: the devices that registered, connected or not, within a limit.

Everything it holds is bounded, whatever devices send: the devices (`DeviceRegistry`
forgets the oldest disconnected ones, and refuses a new one when all are connected), each
one's history, and each one's recording announcements (`Announcements`).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import DeviceNotFound, TooBusy
from ..protocol import Capabilities, ClientState, Recording, Register, Status, json_number
from .clock import ClockEstimate, ClockTracker
from .link import DeviceLink

__all__ = ["Announcements", "DeviceRecord", "DeviceRegistry", "HistoryEntry"]

HISTORY_LENGTH = 100
#: Devices known at most, by default (``Settings.max_devices``).
MAX_DEVICES = 1000
#: Announcements of recordings not yet in the catalog kept per device, by default
#: (``Settings.max_announced_recordings``).
MAX_ANNOUNCED = 1000
#: Announcements of recordings that have reached the catalog kept per device (the most
#: recent): they still show which recordings were made offline or recovered.
ARRIVED_KEPT = 100
#: Announcements named in a device's summary (``/api/clients``, its events); its detail
#: (``/api/clients/{id}``) names every one kept.
SUMMARY_ANNOUNCEMENTS = 20
#: WebSocket close code for a REGISTER refused because every known device is connected
#: (RFC 6455, 7.4.1: "Try Again Later").
CLOSE_TOO_MANY_DEVICES = 1013


class Announcements(MutableMapping[str, Recording]):
    """A device's RECORDING announcements, recording id → message, bounded.

    Loop-only. An announcement whose recording has reached the catalog (`arrived`) is
    kept among the last `ARRIVED_KEPT` only; the others, still on their way, at most
    ``limit``, the oldest dropped first and counted in ``dropped``. Iteration is oldest
    first.

    Parameters
    ----------
    limit : int
        Announcements of recordings not yet in the catalog kept.
    """

    def __init__(self, limit: int = MAX_ANNOUNCED) -> None:
        self.limit = limit
        #: Announcements dropped, the oldest first, because more than ``limit`` waited.
        self.dropped = 0
        self._waiting: collections.OrderedDict[str, Recording] = collections.OrderedDict()
        self._arrived: collections.OrderedDict[str, Recording] = collections.OrderedDict()

    def __setitem__(self, recording_id: str, recording: Recording) -> None:
        if recording_id in self._arrived:  # announced again after it arrived
            self._arrived[recording_id] = recording
            return
        self._waiting[recording_id] = recording
        self._waiting.move_to_end(recording_id)
        self._trim()

    def _trim(self) -> None:
        while len(self._waiting) > self.limit:
            self._waiting.popitem(last=False)
            self.dropped += 1

    def __getitem__(self, recording_id: str) -> Recording:
        if recording_id in self._waiting:
            return self._waiting[recording_id]
        return self._arrived[recording_id]

    def __delitem__(self, recording_id: str) -> None:
        if self._waiting.pop(recording_id, None) is None:
            del self._arrived[recording_id]

    def __iter__(self) -> Iterator[str]:
        return iter(list(itertools.chain(self._arrived, self._waiting)))

    def __len__(self) -> int:
        return len(self._waiting) + len(self._arrived)

    def set_limit(self, limit: int) -> None:
        """Change ``limit``, dropping the oldest waiting announcements above it."""
        self.limit = limit
        self._trim()

    def arrived(self, recording_id: str) -> bool:
        """The recording is in the catalog now; return whether it had been announced."""
        recording = self._waiting.pop(recording_id, None)
        if recording is None:
            return False
        self._arrived[recording_id] = recording
        while len(self._arrived) > ARRIVED_KEPT:
            self._arrived.popitem(last=False)
        return True

    @property
    def waiting(self) -> list[str]:
        """Ids of the announced recordings not in the catalog yet, oldest first."""
        return list(self._waiting)

    @property
    def waiting_count(self) -> int:
        """How many announced recordings are not in the catalog yet."""
        return len(self._waiting)

    def latest(self, n: int | None = None) -> list[tuple[str, Recording]]:
        """The ``n`` latest announcements (all by default), those still waiting first."""
        items = list(itertools.chain(self._arrived.items(), self._waiting.items()))
        return items if n is None else items[max(0, len(items) - n):]


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
    #: How it was let in (`PairingState`): ``open``, ``trusted``, ``paired`` or ``pending``.
    pairing: str = "open"
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
    announced: Announcements = field(default_factory=Announcements)
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
        """JSON-ready snapshot (``history`` adds the device's recent history).

        Small whatever the device sent: the summary names the `SUMMARY_ANNOUNCEMENTS`
        latest announced recordings (those still on their way first), the detail
        (``history``) every one kept; both count those on their way and those dropped.
        """
        clock = self.clock.estimate
        announced = self.announced.latest(None if history else SUMMARY_ANNOUNCEMENTS)
        out: dict[str, Any] = {
            "device_id": self.device_id,
            "name": self.name,
            "platform": self.platform,
            "state": self.state.value,
            "pairing": self.pairing,
            "connected": self.connected,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "remote": self.remote,
            "connections": self.connections,
            # What a device reported: a number JSON cannot hold (from a message no codec
            # checked) reads as null rather than making every device listing fail.
            "level_dbfs": json_number(self.level_dbfs),
            "peak_dbfs": json_number(self.peak_dbfs),
            "battery": json_number(self.battery),
            "free_bytes": self.free_bytes,
            "pending_uploads": self.pending_uploads,
            "recording_id": self.recording_id,
            "elapsed_s": json_number(self.elapsed_s),
            "clock_offset_s": json_number(clock.offset_s) if clock else None,
            "rtt_s": json_number(clock.rtt_s) if clock else None,
            "clock": clock.to_dict() if clock else None,
            "capabilities": {
                "sample_rates": list(self.capabilities.sample_rates),
                "channels": list(self.capabilities.channels),
                "formats": list(self.capabilities.formats),
            },
            "last_command": self.last_command,
            "announced_recordings": sorted(k for k, _ in announced),
            "offline_recordings": sorted(k for k, r in announced if r.offline),
            "recovered_recordings": sorted(k for k, r in announced if r.recovered),
            "announcements_waiting": self.announced.waiting_count,
            "announcements_dropped": self.announced.dropped,
        }
        if history:
            out["history"] = [h.to_dict() for h in self.history]
        return out


class DeviceRegistry:
    """device_id → record and live link, for at most ``max_devices`` devices.

    Loop-only. A device that registers again with the same id gets its old
    record back (state, history) and its new link replaces the old one. A new
    device beyond ``max_devices`` makes the registry forget the device that went
    offline longest ago; when every known device is connected, it is refused.

    Parameters
    ----------
    max_devices : int
        Devices known at most.
    max_announced : int
        Announcements of recordings not yet in the catalog kept per device.
    """

    def __init__(self, *, max_devices: int = MAX_DEVICES,
                 max_announced: int = MAX_ANNOUNCED) -> None:
        self.max_devices = max_devices
        self.max_announced = max_announced
        self._records: dict[str, DeviceRecord] = {}
        self._links: dict[str, DeviceLink] = {}
        #: Disconnected devices, the one offline longest first: the first to forget.
        self._offline: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: Devices forgotten to make room for new ones.
        self.forgotten = 0

    def set_limits(self, *, max_devices: int | None = None,
                   max_announced: int | None = None) -> None:
        """Change the limits (the server's settings); known devices above them stay."""
        if max_devices is not None:
            self.max_devices = max_devices
        if max_announced is not None:
            self.max_announced = max_announced
            for record in self._records.values():
                record.announced.set_limit(max_announced)

    def attach(
        self, register: Register, link: DeviceLink, at: float, *, pairing: str = "open",
    ) -> tuple[DeviceRecord, DeviceLink | None]:
        """Register a connection; return the record and the link it replaced, if any.

        Raises
        ------
        TooBusy
            A new device, and ``max_devices`` devices are known and connected; ``link``
            is closed (`CLOSE_TOO_MANY_DEVICES`) after the reply to the REGISTER.
        """
        record = self._records.get(register.device_id)
        replaced = self._links.get(register.device_id)
        if record is None:
            self._make_room(link)
            record = DeviceRecord(
                device_id=register.device_id,
                name=register.name,
                platform=register.platform,
                capabilities=register.capabilities,
                first_seen=at,
                last_seen=at,
                announced=Announcements(self.max_announced),
            )
            self._records[record.device_id] = record
        else:
            record.name = register.name
            record.platform = register.platform
            record.capabilities = register.capabilities
        record.pairing = pairing
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
        self._offline.pop(record.device_id, None)
        return record, replaced

    def _make_room(self, link: DeviceLink) -> None:
        """Forget disconnected devices, offline longest first, until a new one fits."""
        while len(self._records) >= self.max_devices:
            if not self._offline:
                # The link closes after the ERROR reply to this REGISTER has been sent:
                # a close only starts on the loop's next turn.
                link.close(CLOSE_TOO_MANY_DEVICES, "too many devices connected")
                raise TooBusy(
                    f"{len(self._records)} devices are connected, the most this server "
                    f"keeps (VOCALINK_MAX_DEVICES={self.max_devices}); try again when one "
                    "has disconnected")
            device_id, _ = self._offline.popitem(last=False)
            del self._records[device_id]
            self.forgotten += 1

    def recording_arrived(self, device_id: str | None, recording_id: str) -> bool:
        """A recording reached the catalog: its announcement needs no keeping.

        Returns whether ``device_id`` had announced it.
        """
        record = self._records.get(device_id) if device_id is not None else None
        return record is not None and record.announced.arrived(recording_id)

    def detach(self, device_id: str, link: DeviceLink, at: float) -> DeviceRecord | None:
        """Mark the device OFFLINE if ``link`` is still its current link.

        Returns the record when it went offline, ``None`` when the link had
        already been replaced (a reconnect) or was never attached. A pending device
        (never approved) is forgotten instead: check ``record.pairing``.
        """
        if self._links.get(device_id) is not link:
            return None
        del self._links[device_id]
        record = self._records[device_id]
        if record.pairing == "pending":
            del self._records[device_id]
            return record
        record.connected = False
        record.note(at, "disconnected", "")
        if record.state is not ClientState.OFFLINE:
            record.note(at, "state", f"{record.state.value} -> OFFLINE")
        record.state = ClientState.OFFLINE
        self._offline[device_id] = None
        return record

    def forget(self, device_id: str) -> DeviceRecord | None:
        """Forget a device (its record and link); return its record, if it was known."""
        self._links.pop(device_id, None)
        self._offline.pop(device_id, None)
        return self._records.pop(device_id, None)

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
        """Ids of the devices connected now and let in (pending ones are not), in order."""
        return [d for d, r in self._records.items() if d in self._links and r.pairing != "pending"]

    def pending_ids(self) -> list[str]:
        """Ids of the connected devices waiting for approval, in registration order."""
        return [d for d, r in self._records.items() if d in self._links and r.pairing == "pending"]

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._records

    def __iter__(self) -> Iterator[DeviceRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)
