"""Command tracking: every command, per target device, pending → SUCCESS / FAILED / TIMEOUT."""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import NotFound
from ..protocol import Ack, AckStatus, Action, json_number

__all__ = ["CommandRecord", "CommandResult", "CommandTracker", "Outcome", "TargetOutcome"]

#: Finished commands kept for ``GET /api/commands/{id}`` (each holds one outcome per target).
FINISHED_KEPT = 100


class Outcome(enum.StrEnum):
    """Where one target of a command stands."""

    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"


class TargetOutcome(msgspec.Struct, frozen=True, gc=False):
    """The outcome of one command on one device.

    A msgspec struct outside the garbage collector's bookkeeping: a broadcast to a
    thousand devices makes a thousand of them, and they hold only plain values.

    ``note`` says how the device was asked to act when that differs from the command
    (a scheduled command that reached it without an instant in its clock, to act on
    arrival, or one whose clock was not settled yet); ``uncertainty_s`` how far its clock
    estimate may be off at the scheduled instant. Both stay with the target whatever its
    status becomes.
    """

    device_id: str
    status: Outcome
    error: str | None = None
    recording_id: str | None = None
    started_at: float | None = None
    latency_s: float | None = None
    note: str | None = None
    uncertainty_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (a number that is not finite reads as ``None``).

        ``uncertainty_ms`` only for a scheduled target whose clock is measured.
        """
        out = {
            "device_id": self.device_id,
            "status": self.status.value,
            "error": self.error,
            "recording_id": self.recording_id,
            "started_at": json_number(self.started_at),
            "latency_s": json_number(self.latency_s),
            "note": self.note,
        }
        if self.uncertainty_s is not None:
            out["uncertainty_ms"] = json_number(round(self.uncertainty_s * 1000, 3))
        return out


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Every target's outcome of one command, once none is pending."""

    command_id: str
    action: Action
    take_id: str | None
    broadcast: bool
    issued_at: float
    completed_at: float | None
    outcomes: Mapping[str, TargetOutcome]
    start_at: float | None = None

    @property
    def ok(self) -> bool:
        """Whether every target succeeded (an empty broadcast is ok)."""
        return all(o.status is Outcome.SUCCESS for o in self.outcomes.values())

    def by_status(self, status: Outcome) -> list[str]:
        """Ids of the targets with ``status``."""
        return [d for d, o in self.outcomes.items() if o.status is status]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        counts = collections.Counter(o.status.value for o in self.outcomes.values())
        return {
            "command_id": self.command_id,
            "action": self.action.value,
            "take_id": self.take_id,
            "broadcast": self.broadcast,
            "issued_at": self.issued_at,
            "completed_at": self.completed_at,
            "start_at": self.start_at,
            "complete": self.completed_at is not None,
            "ok": self.ok,
            "counts": {s.value: counts.get(s.value, 0) for s in Outcome},
            "outcomes": {d: o.to_dict() for d, o in self.outcomes.items()},
        }


@dataclass(eq=False)
class CommandRecord:
    """A command in flight. Loop-only; await ``wait()`` for its `CommandResult`."""

    command_id: str
    action: Action
    take_id: str | None
    broadcast: bool
    issued_at: float
    timeout_s: float
    outcomes: dict[str, TargetOutcome]
    done: asyncio.Future[CommandResult] = field(repr=False)
    completed_at: float | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    pending_count: int = 0  # kept in step with ``outcomes``: completion is O(1) per ACK
    start_at: float | None = None  # a scheduled command's instant, server time

    @property
    def pending(self) -> list[str]:
        """Targets that have not answered yet."""
        return [d for d, o in self.outcomes.items() if o.status is Outcome.PENDING]

    def result(self) -> CommandResult:
        """A snapshot of the outcomes so far."""
        return CommandResult(
            command_id=self.command_id,
            action=self.action,
            take_id=self.take_id,
            broadcast=self.broadcast,
            issued_at=self.issued_at,
            completed_at=self.completed_at,
            outcomes=dict(self.outcomes),
            start_at=self.start_at,
        )

    async def wait(self) -> CommandResult:
        """Wait until no target is pending (the timeout guarantees it ends)."""
        return await asyncio.shield(self.done)


OutcomeListener = Callable[[CommandRecord, TargetOutcome], None]


class CommandTracker:
    """Open commands and the recent finished ones.

    Loop-only. Each open command has one timer; when it fires, every target
    still pending becomes TIMEOUT. ``on_outcome`` and ``on_done`` let the hub
    publish events without the tracker knowing the bus.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        on_outcome: OutcomeListener | None = None,
        on_done: Callable[[CommandRecord], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_outcome = on_outcome
        self._on_done = on_done
        self._open: dict[str, CommandRecord] = {}
        self._finished: collections.OrderedDict[str, CommandRecord] = collections.OrderedDict()

    def open(
        self,
        *,
        command_id: str,
        action: Action,
        take_id: str | None,
        targets: Iterable[str],
        broadcast: bool,
        timeout_s: float,
    ) -> CommandRecord:
        """Start tracking a command sent to ``targets``."""
        loop = asyncio.get_running_loop()
        record = CommandRecord(
            command_id=command_id,
            action=action,
            take_id=take_id,
            broadcast=broadcast,
            issued_at=self._clock(),
            timeout_s=timeout_s,
            outcomes={d: TargetOutcome(d, Outcome.PENDING) for d in targets},
            done=loop.create_future(),
        )
        record.pending_count = len(record.outcomes)
        self._open[command_id] = record
        if record.outcomes:
            record.timer = loop.call_later(timeout_s, self._expire, command_id)
        else:
            self._finish(record)
        return record

    def resolve(self, ack: Ack) -> TargetOutcome | None:
        """Apply an ACK; return the new outcome, or ``None`` if it changed nothing.

        Duplicate and late ACKs (the command already finished for that device)
        change nothing, which makes a device's resent ACKs harmless.
        """
        record = self._open.get(ack.command_id)
        if record is None:
            return None
        current = record.outcomes.get(ack.device_id)
        if current is None or current.status is not Outcome.PENDING:
            return None
        outcome = TargetOutcome(
            device_id=ack.device_id,
            status=Outcome.SUCCESS if ack.status is AckStatus.SUCCESS else Outcome.FAILED,
            error=ack.error,
            recording_id=ack.recording_id,
            started_at=ack.started_at,
            latency_s=self._clock() - record.issued_at,
        )
        return self._set(record, outcome)

    def fail_device(self, device_id: str, reason: str) -> None:
        """Fail every pending outcome of ``device_id`` (it disconnected)."""
        for record in list(self._open.values()):
            current = record.outcomes.get(device_id)
            if current is not None and current.status is Outcome.PENDING:
                self._set(record, TargetOutcome(device_id, Outcome.FAILED, error=reason))

    def fail_target(self, record: CommandRecord, device_id: str, reason: str) -> None:
        """Fail one target at once (e.g. the frame could not be sent)."""
        current = record.outcomes.get(device_id)
        if current is not None and current.status is Outcome.PENDING:
            self._set(record, TargetOutcome(device_id, Outcome.FAILED, error=reason))

    def note(self, record: CommandRecord, device_id: str, note: str | None = None, *,
             uncertainty_s: float | None = None) -> None:
        """Say how a pending target was asked to act (kept in every later outcome of it).

        Parameters
        ----------
        record : CommandRecord
            The command.
        device_id : str
            The target.
        note : str, optional
            How it was asked to act, when that differs from the command.
        uncertainty_s : float, optional
            How far its clock estimate may be off at the scheduled instant.
        """
        current = record.outcomes.get(device_id)
        if current is not None and current.status is Outcome.PENDING:
            record.outcomes[device_id] = msgspec.structs.replace(
                current, note=note if note is not None else current.note,
                uncertainty_s=uncertainty_s if uncertainty_s is not None
                else current.uncertainty_s)

    def knows(self, command_id: str) -> bool:
        """Whether ``command_id`` is open or among the recently finished commands."""
        return command_id in self._open or command_id in self._finished

    def get(self, command_id: str) -> CommandRecord:
        """An open or recently finished command; raise `NotFound` otherwise."""
        record = self._open.get(command_id) or self._finished.get(command_id)
        if record is None:
            raise NotFound(f"no command with id '{command_id}'")
        return record

    def open_commands(self) -> list[CommandRecord]:
        """Commands still waiting for some target."""
        return list(self._open.values())

    def recent(self, limit: int = 50) -> list[CommandRecord]:
        """The most recent commands, open ones included, newest first."""
        records = [*self._finished.values(), *self._open.values()]
        records.sort(key=lambda r: r.issued_at, reverse=True)
        return records[:limit]

    def cancel_all(self, reason: str) -> None:
        """Fail every pending outcome (the server is stopping)."""
        for record in list(self._open.values()):
            for device_id in record.pending:
                self._set(record, TargetOutcome(device_id, Outcome.FAILED, error=reason))

    def _set(self, record: CommandRecord, outcome: TargetOutcome) -> TargetOutcome:
        """Replace a PENDING outcome (callers check that it is one); return the new one.

        The pending outcome's ``note`` and ``uncertainty_s`` carry over.
        """
        pending = record.outcomes[outcome.device_id]
        if pending.note is not None or pending.uncertainty_s is not None:
            outcome = msgspec.structs.replace(
                outcome, note=outcome.note if outcome.note is not None else pending.note,
                uncertainty_s=pending.uncertainty_s)
        record.outcomes[outcome.device_id] = outcome
        record.pending_count -= 1
        if self._on_outcome is not None:
            self._on_outcome(record, outcome)
        if record.pending_count == 0:
            self._finish(record)
        return outcome

    def _expire(self, command_id: str) -> None:
        record = self._open.get(command_id)
        if record is None:
            return
        record.timer = None
        for device_id in record.pending:
            self._set(
                record,
                TargetOutcome(
                    device_id,
                    Outcome.TIMEOUT,
                    error=f"no ACK within {record.timeout_s:g} s",
                ),
            )

    def _finish(self, record: CommandRecord) -> None:
        if record.timer is not None:
            record.timer.cancel()
            record.timer = None
        record.completed_at = self._clock()
        self._open.pop(record.command_id, None)
        self._finished[record.command_id] = record
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)
        if not record.done.done():
            record.done.set_result(record.result())
        if self._on_done is not None:
            self._on_done(record)
