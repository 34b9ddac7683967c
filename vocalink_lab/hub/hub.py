"""The hub: the domain core that devices and controllers meet in.

It knows devices (registry), commands (tracker), clocks and the current take,
and publishes what happens on its event bus. It talks to devices only through
`DeviceLink`; it knows neither Tornado nor SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from ..errors import Conflict, DeviceNotFound, InvalidParameter, PairingRefused, ProtocolError
from ..protocol import (
    MAX_INSTANT_S,
    MAX_NAME_CHARS,
    PROTOCOL_VERSION,
    V1_ACTIONS,
    Ack,
    AckStatus,
    Action,
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
from .clock import ClockEstimate, ClockSample
from .commands import CommandRecord, CommandResult, CommandTracker, TargetOutcome
from .events import EventBus, Topic
from .link import DeviceLink, LinkClosed
from .pairing import CLOSE_IMPOSTOR, CLOSE_REJECTED, Pairing, PairingState
from .registry import CLOSE_TOO_MANY_DEVICES, DeviceRecord, DeviceRegistry
from .takes import SKEW_FLAG_MS

__all__ = ["Hub", "sync_gap", "validate_server_name"]

log = logging.getLogger(__name__)

#: How far an instant a device reports (SYNC ``t1``/``t2``, ``started_at`` of an ACK or a
#: RECORDING) may be from what its clock estimate says the device's clock reads now. A day is
#: far more than a measured clock drifts between two bursts, and keeps one answer from moving
#: an estimate, or an instant converted with it, far. Before its first measurement a clock is
#: not judged (only the protocol's absolute bounds apply): measuring it is what SYNC is for,
#: and a device with no clock source (a Raspberry Pi without a real-time clock on an offline
#: network boots at the time it last shut down, or in 1970) may be days or years off.
MAX_CLOCK_DISAGREEMENT_S = 86_400.0
#: How long one SYNC probe waits for its answer; a burst ends at the first unanswered one.
SYNC_TIMEOUT_S = 1.0
#: The gap between a new device's first two bursts; each next gap is `SYNC_GAP_GROWTH`
#: times longer, up to the sync interval. Ten bursts in the first ~12 s pin the drift down
#: to tens of ppm within 3 s (the default interval alone would give one point by then).
SYNC_FIRST_GAP_S = 0.25
SYNC_GAP_GROWTH = 1.4
#: The longest the sync loop waits for one device's burst before it goes on to the next (a
#: burst takes milliseconds; one with no answer would take `SYNC_TIMEOUT_S`).
SYNC_BURST_WAIT_S = 0.25
#: The sync loop's shortest sleep: a burst due sooner waits this long (the loop is shared).
SYNC_MIN_SLEEP_S = 0.02
#: The most a scheduled command waits, in total, for the clocks of its unmeasured targets
#: (`Hub.measure_unmeasured`): a device that does not answer SYNC holds nobody up longer.
MEASURE_WAIT_S = 1.0
#: Said in the outcome of a target that got a scheduled command with no instant in its clock.
UNMEASURED_NOTE = ("not scheduled: its clock is not measured (no answer to SYNC), so it was "
                   "told to act on arrival, not at start_at")
#: Devices waiting for approval at once, at most: beyond it the one waiting longest is let go
#: (strangers cannot fill the registry and keep real devices out).
MAX_PENDING = 64
def unsettled_note(uncertainty_s: float) -> str:
    """The outcome note of a target scheduled with a clock not settled yet."""
    return (f"clock not settled: ±{uncertainty_s * 1000:.2f} ms at start_at (over "
            f"{SKEW_FLAG_MS / 2:g} ms); it started on its estimate, and the take's skew "
            "report will say how far apart the starts may be")


WILD_ESTIMATE_NOTE = ("not scheduled: start_at is no instant in its clock by its clock "
                      "estimate, so it was told to act on arrival")

_STATE_AFTER: dict[Action, ClientState] = {
    Action.START: ClientState.RECORDING,
    Action.RESUME: ClientState.RECORDING,
    Action.PAUSE: ClientState.PAUSED,
    Action.STOP: ClientState.IDLE,
    Action.CANCEL: ClientState.IDLE,
}


def sync_gap(estimate: ClockEstimate | None, interval_s: float,
             first_gap_s: float = SYNC_FIRST_GAP_S) -> float:
    """How long after a device's last SYNC burst the next is due.

    Parameters
    ----------
    estimate : ClockEstimate or None
        The device's current estimate; ``None`` when never measured.
    interval_s : float
        The steady interval, reached once the drift is known.
    first_gap_s : float
        The gap after the first burst.

    Returns
    -------
    float
        ``first_gap_s * SYNC_GAP_GROWTH ** (bursts - 1)``, at most ``interval_s``;
        `SYNC_TIMEOUT_S` for a device never measured (its last burst got no answer).
    """
    if estimate is None:
        return min(interval_s, SYNC_TIMEOUT_S)
    return min(interval_s, first_gap_s * SYNC_GAP_GROWTH ** min(estimate.bursts - 1, 40))


def validate_server_name(name: object) -> str:
    """Return ``name`` stripped, or raise `InvalidParameter` saying what is wrong.

    A server name is what people see in device lists and mDNS browsers: 1 to 63
    UTF-8 bytes (the DNS label limit), no control characters, no ``.`` (mDNS would split
    the instance name there), not only spaces.
    """
    if not isinstance(name, str):
        raise InvalidParameter("server name must be a string")
    stripped = name.strip()
    if not stripped:
        raise InvalidParameter("server name must not be empty or only spaces")
    if any(ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise InvalidParameter("server name must not contain control characters")
    if "." in stripped:
        # python-zeroconf cannot escape a dot inside a DNS label: browsers would see
        # another name, or none.
        raise InvalidParameter("server name must not contain '.' (mDNS names cannot hold it)")
    if len(stripped.encode("utf-8")) > 63:
        raise InvalidParameter(
            f"server name is {len(stripped.encode('utf-8'))} bytes in UTF-8; the limit is 63"
        )
    return stripped


class Hub:
    """Devices, commands, clocks and takes, on one event loop.

    Loop-only: every method must be called from the loop's thread.

    Parameters
    ----------
    server_id : str
        Stable id of this server (persisted by storage).
    server_name : str
        Name devices see; change it with `rename`.
    command_timeout_s : float
        Default time a command waits for each ACK.
    heartbeat_s : float
        Told to devices in WELCOME: how often the server pings them.
    sync_interval_s : float
        Told to devices in WELCOME: the longest gap between two SYNC bursts to a paired
        device (`run_clock_sync` is to be run with it). A device that hears nothing for
        several of these may take its connection for dead (a Wi-Fi gone silent sends no
        close, and a page cannot see WebSocket pings).
    upload_url : str
        Told to devices in WELCOME: where to upload recordings.
    clock : callable
        Wall clock in seconds (server time); replaceable in tests.
    pairing : Pairing, optional
        Who may record (`Pairing`); by default every device is let in (authentication
        off).
    """

    def __init__(
        self,
        *,
        server_id: str,
        server_name: str,
        command_timeout_s: float = 5.0,
        heartbeat_s: float = 2.0,
        sync_interval_s: float = 5.0,
        upload_url: str = "/api/audio/upload",
        clock: Callable[[], float] = time.time,
        pairing: Pairing | None = None,
    ) -> None:
        self.server_id = server_id
        self._server_name = validate_server_name(server_name)
        self.command_timeout_s = command_timeout_s
        self.heartbeat_s = heartbeat_s
        self.sync_interval_s = sync_interval_s
        self.upload_url = upload_url
        self.clock = clock
        self.events = EventBus()
        self.registry = DeviceRegistry()
        self.pairing = pairing if pairing is not None else Pairing(required=False, clock=clock)
        self.commands = CommandTracker(
            clock=clock, on_outcome=self._on_outcome, on_done=self._on_done
        )
        self.active_take_id: str | None = None
        #: SYNC id → (device id, the t0 sent, the future of the sample).
        self._sync_waiters: dict[str, tuple[str, float, asyncio.Future[ClockSample]]] = {}
        self._ids = itertools.count(1)
        #: Set when a device registers, so that it is measured at once, not at the next round.
        self._sync_wanted = asyncio.Event()
        #: The SYNC burst in progress for each device being measured (never two at once).
        self._measuring: dict[str, asyncio.Task[ClockEstimate | None]] = {}

    # -- server identity -------------------------------------------------------------------

    @property
    def server_name(self) -> str:
        """The name devices see."""
        return self._server_name

    def rename(self, name: str) -> str:
        """Change the server name and tell every connected device (SERVER renamed).

        Returns the validated name. Raises `InvalidParameter` for an invalid one,
        changing nothing.
        """
        name = validate_server_name(name)
        if name == self._server_name:
            return name
        old, self._server_name = self._server_name, name
        self._broadcast(Server(event=ServerEvent.RENAMED, server_name=name,
                               server_id=self.server_id))
        self.events.publish(Topic.SERVER_RENAMED, old=old, name=name)
        return name

    def announce_shutdown(self) -> None:
        """Tell every connected device that the server is going away."""
        self._broadcast(Server(event=ServerEvent.SHUTTING_DOWN, server_name=self._server_name,
                               server_id=self.server_id))
        self.commands.cancel_all("server shutting down")
        for task in list(self._measuring.values()):
            task.cancel()

    # -- connections -----------------------------------------------------------------------

    def attach(self, register: Register, link: DeviceLink) -> Welcome:
        """A device sent REGISTER on ``link``: let it in and return the WELCOME to send.

        `Pairing` decides how: with its key or the controller token it is paired or
        trusted, with the join code it is paired now (the WELCOME carries its new key),
        with none of them it is pending (listed, no command until approved). A device
        already connected under the same id is replaced when the newcomer proves the id
        (its old link is closed, its record carries over); a newcomer that cannot is
        refused and the connected device is left alone.

        Raises
        ------
        PairingRefused
            The REGISTER is refused (an impostor, a rejected device, a wrong join code);
            ``link`` is closed with the error's ``close_code`` after the ERROR reply.
        TooBusy
            Too many devices are connected.
        """
        now = self.clock()
        try:
            admission = self.pairing.admit(register.device_id, register.token,
                                           register.join_code, link.remote)
            if admission.state is PairingState.PENDING:
                self._check_pending_claim(register.device_id)
        except PairingRefused as refused:
            # The close starts on the loop's next turn: the ERROR reply goes out first.
            link.close(refused.close_code, str(refused)[:120])
            log.info("REGISTER of '%s' from %s refused: %s", register.device_id, link.remote,
                     refused)
            raise
        if admission.state is PairingState.PENDING:
            self._make_pending_room()
        record, replaced = self.registry.attach(register, link, now,
                                                pairing=admission.state.value)
        if replaced is not None and replaced is not link:
            replaced.close(4001, "replaced by a new connection of the same device")
        if admission.state is PairingState.PENDING:
            record.note(now, "pairing", "waiting for approval")
        elif admission.device_key is not None:
            record.note(now, "pairing", "paired with the join code")
        self.events.publish(Topic.DEVICE_REGISTERED, device=record.to_dict(),
                            reconnect=record.connections > 1)
        if admission.state is not PairingState.PENDING:
            self._sync_wanted.set()
        if admission.state is PairingState.PENDING or admission.device_key is not None:
            self._pairing_changed()
        return self._welcome(now, paired=admission.state is not PairingState.PENDING,
                             device_key=admission.device_key)

    def _welcome(self, now: float, *, paired: bool = True,
                 device_key: str | None = None) -> Welcome:
        return Welcome(
            server_id=self.server_id,
            server_name=self._server_name,
            protocol=PROTOCOL_VERSION,
            server_time=now,
            heartbeat_s=self.heartbeat_s,
            sync_interval_s=self.sync_interval_s,
            upload_url=self.upload_url,
            paired=paired,
            device_key=device_key,
        )

    def _check_pending_claim(self, device_id: str) -> None:
        """Refuse a newcomer with no credential that claims a device's id.

        The id of a device that is let in, or of a pending device that is connected (the
        first one keeps it).
        """
        if device_id not in self.registry:
            return
        record = self.registry.get(device_id)
        if record.pairing != PairingState.PENDING or self.registry.link(device_id) is not None:
            raise PairingRefused(
                f"device id '{device_id}' is in use by a device that was let in; present "
                "its key or the controller token", close_code=CLOSE_IMPOSTOR)

    def _make_pending_room(self) -> None:
        pending = self.registry.pending_ids()
        for device_id in pending[:max(0, len(pending) - MAX_PENDING + 1)]:
            link = self.registry.link(device_id)
            if link is not None:
                link.close(CLOSE_TOO_MANY_DEVICES, "too many devices waiting for approval")
            self._forget(device_id, "too many devices waiting for approval")

    def _forget(self, device_id: str, reason: str) -> None:
        record = self.registry.forget(device_id)
        if record is None:
            return
        self.commands.fail_device(device_id, f"device {reason} before acknowledging")
        self.events.publish(Topic.DEVICE_REMOVED, device_id=device_id, reason=reason)
        self._pairing_changed()

    # -- pairing ---------------------------------------------------------------------------

    def pairing_status(self, *, new_code: bool = False,
                       announce: bool = False) -> dict[str, Any]:
        """Whether devices must pair, the join code, who waits (``GET /api/pairing``).

        A new join code (asked for, or made because the last one expired) is announced to
        controllers (`Topic.SERVER_PAIRING`).

        Parameters
        ----------
        new_code : bool
            Replace the join code first (the old one stops working).
        announce : bool
            Announce the status even if the code did not change.
        """
        pairing = self.pairing
        out: dict[str, Any] = {
            "required": pairing.required,
            "join_code": None,
            "join_code_expires_at": None,
            "join_code_expires_in_s": None,
            "pending": self.registry.pending_ids(),
            "paired": pairing.paired_count(),
        }
        if pairing.required:
            before = pairing.current_join_code()
            code, expires = pairing.new_join_code() if new_code else pairing.join_code()
            # Seconds left, as well as the instant: a controller's clock may differ.
            out.update(join_code=code, join_code_expires_at=expires,
                       join_code_expires_in_s=max(0.0, expires - self.clock()))
            announce = announce or code != before
        if announce:
            self.events.publish(Topic.SERVER_PAIRING, pairing=out)
        return out

    def _pairing_changed(self) -> None:
        """Who waits changed (or a key was issued): tell the controllers that listen."""
        if self.pairing.required and self.events.wants(Topic.SERVER_PAIRING):
            self.pairing_status(announce=True)

    def approve(self, device_id: str) -> dict[str, Any]:
        """Let a pending device in: it gets a device key (in a second WELCOME) and commands.

        Approving a device that is already let in changes nothing.

        Returns
        -------
        dict
            The device, as in ``/api/clients``.

        Raises
        ------
        DeviceNotFound
            No device with this id is known (a pending device that disconnected is
            forgotten: it asks again when it reconnects).
        """
        record = self.registry.get(device_id)
        if record.pairing != PairingState.PENDING:
            return record.to_dict()
        key = self.pairing.issue_key(device_id)
        now = self.clock()
        record.pairing = PairingState.PAIRED.value
        record.note(now, "pairing", "approved")
        link = self.registry.link(device_id)
        if link is not None:
            try:
                link.send_text(link.codec.encode(self._welcome(now, device_key=key)))
            except LinkClosed:
                log.info("approved %s, but its connection closed before the key went out",
                         device_id)
        self.events.publish(Topic.DEVICE_UPDATED, device=record.to_dict())
        self._sync_wanted.set()
        self._pairing_changed()
        return record.to_dict()

    def reject(self, device_id: str) -> None:
        """Refuse a device: forget it and its key, close its connection (4004).

        It is refused from then on until it joins again with a join code (or presents the
        controller token). Works on pending and paired devices alike (unpairing).

        Raises
        ------
        DeviceNotFound
            Neither known nor paired.
        """
        known = device_id in self.registry
        if not known and not self.pairing.is_paired(device_id):
            raise DeviceNotFound(f"no device with id '{device_id}' is known")
        self.pairing.revoke(device_id)
        link = self.registry.link(device_id)
        if link is not None:
            link.close(CLOSE_REJECTED, "rejected by the operator")
        if device_id in self.registry:
            self._forget(device_id, "rejected by the operator")
        else:
            self._pairing_changed()  # a paired device that was not connected: one fewer

    def detach(self, device_id: str, link: DeviceLink, reason: str = "disconnected") -> None:
        """``link`` closed. The device goes OFFLINE unless it has already reconnected."""
        record = self.registry.detach(device_id, link, self.clock())
        if record is None:
            return
        if record.pairing == PairingState.PENDING:  # never let in: not worth remembering
            self.events.publish(Topic.DEVICE_REMOVED, device_id=device_id, reason=reason)
            self._pairing_changed()
            return
        self.commands.fail_device(device_id, f"device {reason} before acknowledging")
        for sync_id, (dev, _, fut) in list(self._sync_waiters.items()):
            if dev == device_id and not fut.done():
                fut.set_exception(LinkClosed(f"device '{device_id}' disconnected"))
                self._sync_waiters.pop(sync_id, None)
        self.events.publish(Topic.DEVICE_OFFLINE, device=record.to_dict())

    def handle(self, device_id: str, message: Message) -> None:
        """Take in one message from a registered device.

        Raises
        ------
        ProtocolError
            The message is not one a device may send, or contradicts the
            connection (an ACK for another device id, a second REGISTER).
        """
        record = self.registry.get(device_id)
        now = self.clock()
        record.last_seen = now
        if record.pairing == PairingState.PENDING and not isinstance(message, (Status, Error)):
            # It may show its state (which phone is it?), and nothing else yet.
            raise ProtocolError(f"{message.type_name()} refused: this device waits for an "
                                "operator's approval")
        if isinstance(message, Ack):
            self._handle_ack(record, message, now)
        elif isinstance(message, Status):
            record.apply_status(message, now)
            self._device_updated(record)
        elif isinstance(message, Sync):
            self._handle_sync(record, message, now)
        elif isinstance(message, Recording):
            if message.started_at is not None:
                # Only the future is refused: a recording made offline may be days old.
                self._check_instant(record, f"RECORDING '{message.recording_id}': started_at",
                                    message.started_at, now, ref=message.recording_id,
                                    past=False)
            record.announced[message.recording_id] = message
            where = "".join([" (recorded offline)" if message.offline else "",
                             " (recovered after a crash)" if message.recovered else ""])
            record.note(now, "recording", f"announced {message.recording_id}{where}")
            self.events.publish(Topic.RECORDING_ANNOUNCED, device_id=device_id,
                                recording=_to_builtins(message))
        elif isinstance(message, Error):
            record.note(now, "error", f"{message.code}: {message.detail}")
            log.info("device %s reported error %s: %s", device_id, message.code, message.detail)
        elif isinstance(message, Register):
            raise ProtocolError("REGISTER may only be sent once, as the first frame")
        else:
            raise ProtocolError(f"{message.type_name()} is sent by the server, not by devices")

    def _handle_ack(self, record: DeviceRecord, ack: Ack, now: float) -> None:
        if ack.device_id != record.device_id:
            raise ProtocolError(
                f"ACK for device '{ack.device_id}' arrived on the connection of "
                f"'{record.device_id}'"
            )
        if not self.commands.knows(ack.command_id):
            # Not ours (or from before a restart): it must not move the device's state.
            raise ProtocolError(f"ACK for unknown command '{ack.command_id}'")
        if ack.started_at is not None:
            self._check_instant(record, f"ACK of '{ack.command_id}': started_at",
                                ack.started_at, now, ref=ack.command_id)
        outcome = self.commands.resolve(ack)
        if ack.status is AckStatus.SUCCESS and ack.action in _STATE_AFTER:
            record.set_state(_STATE_AFTER[ack.action], now)
        elif ack.status is AckStatus.FAILED:
            record.note(now, "command", f"{ack.action.value} failed: {ack.error or 'no reason'}")
        record.last_command = {
            "command_id": ack.command_id,
            "action": ack.action.value,
            "status": ack.status.value,
            "error": ack.error,
            "at": now,
            "late": outcome is None,
        }
        self._device_updated(record)

    def _handle_sync(self, record: DeviceRecord, sync: Sync, now: float) -> None:
        if sync.t1 is None or sync.t2 is None:
            # The device measures us: answer at once with our receive and send times.
            self._send(record.device_id, Sync(id=sync.id, t0=sync.t0, t1=now, t2=self.clock()))
            return
        waiter = self._sync_waiters.pop(sync.id, None)
        if waiter is None or waiter[0] != record.device_id:
            raise ProtocolError(f"SYNC answer '{sync.id}' matches no probe sent to this device")
        _, t0, future = waiter
        try:
            self._check_sync_answer(record, sync.id, sync.t1, sync.t2, now)
        except ProtocolError as exc:
            # The probe failed: `sync` raises at once instead of waiting for its timeout.
            if not future.done():
                future.set_exception(ProtocolError(exc.message, ref=sync.id))
            raise
        # The t0 we sent, not the one echoed: the device's copy is not ours to trust.
        sample = ClockSample(t0, sync.t1, sync.t2, now)
        record.clock.add(sample)
        if not future.done():
            future.set_result(sample)

    def _check_sync_answer(self, record: DeviceRecord, sync_id: str, t1: float, t2: float,
                           now: float) -> None:
        """Refuse a SYNC answer no clock could give (`ProtocolError`): nothing is measured."""
        label = f"SYNC answer '{sync_id}'"
        self._check_instant(record, f"{label}: t1", t1, now, ref=sync_id)
        self._check_instant(record, f"{label}: t2", t2, now, ref=sync_id)
        if not t1 <= t2:
            raise ProtocolError(
                f"{label}: t2 is before t1 ({t2!r} < {t1!r}): the answer cannot leave before "
                "the probe arrived; refused, nothing measured", ref=sync_id)

    def _check_instant(self, record: DeviceRecord, label: str, value: float, now: float, *,
                       ref: str | None, past: bool = True) -> None:
        """Refuse (`ProtocolError`) a device instant that is implausible for its clock.

        It must be an instant at all (finite, in ``[0, MAX_INSTANT_S)``); once the device's
        clock is measured, within `MAX_CLOCK_DISAGREEMENT_S` of what its clock estimate says
        it reads now. With ``past=False`` only the future is bounded (a recording made long
        ago is possible).
        """
        if not is_plausible_instant(value):
            raise ProtocolError(
                f"{label} = {value!r} is not an instant in seconds since 1970 (0 to below "
                f"{MAX_INSTANT_S:.0e}); refused, nothing stored", ref=ref)
        estimate = record.clock_estimate
        if estimate is None:
            return  # not measured yet: nothing to judge the device's clock by
        expected = estimate.to_device(now)
        ahead = value - expected
        if not math.isfinite(ahead) or ahead > MAX_CLOCK_DISAGREEMENT_S or (
                past and -ahead > MAX_CLOCK_DISAGREEMENT_S):
            side = "ahead of" if ahead > 0 else "behind"
            raise ProtocolError(
                f"{label} = {value:.3f} is more than a day {side} what this device's clock "
                f"reads now by its clock estimate ({expected:.3f}); refused, nothing stored",
                ref=ref)

    # -- commands --------------------------------------------------------------------------

    def issue(
        self,
        action: Action | str,
        *,
        targets: Iterable[str] | None = None,
        take_id: str | None = None,
        params: CommandParams | None = None,
        start_at: float | None = None,
        timeout_s: float | None = None,
    ) -> CommandRecord:
        """Send a command now and return its record (await ``record.wait()`` for outcomes).

        Parameters
        ----------
        action : Action or str
            START, STOP, PAUSE, RESUME, PING, SYNC_NOW or CANCEL (case-insensitive; CANCEL,
            stop and discard, only the Android app knows: other targets fail).
        targets : iterable of str, optional
            Device ids; ``None`` broadcasts to every connected device.
        take_id : str, optional
            The take a START opens (a new id by default) or a STOP closes (the
            active take by default).
        params : CommandParams, optional
            Recording parameters for START.
        start_at : float, optional
            When the targets act, in server time. Each target gets it in its own clock
            (from its clock estimate); a target whose clock is not measured yet acts at
            once, and its outcome's ``note`` says so. See `measure_unmeasured` and
            `schedule` for choosing it from the targets' round trips.
        timeout_s : float, optional
            Per-command ACK timeout; the hub's default otherwise.

        Raises
        ------
        InvalidParameter
            Unknown action, invalid take id or timeout, or an empty target list.
        DeviceNotFound
            A target never registered (nothing is sent then).
        Conflict
            A broadcast while no device is connected.
        """
        action = _parse_action(action)
        timeout = self.command_timeout_s if timeout_s is None else float(timeout_s)
        if not timeout > 0:
            raise InvalidParameter(f"timeout_s must be positive, got {timeout_s}")
        if take_id is not None and not is_safe_id(take_id):
            raise InvalidParameter(f"take_id '{take_id}' is not a valid id")
        broadcast = targets is None
        if targets is None:
            target_ids = self.registry.connected_ids()
            if not target_ids:
                raise Conflict(f"no device is connected: nothing to {action.value}")
        else:
            target_ids = list(dict.fromkeys(targets))
            if not target_ids:
                raise InvalidParameter("targets must name at least one device (or be null)")
            unknown = [t for t in target_ids if t not in self.registry]
            if unknown:
                raise DeviceNotFound(
                    f"unknown device(s): {', '.join(unknown)}",
                    errors=[f"no device with id '{t}' has registered" for t in unknown],
                )
            pending = [t for t in target_ids
                       if self.registry.get(t).pairing == PairingState.PENDING]
            if pending:
                raise Conflict(
                    f"device(s) waiting for approval: {', '.join(pending)}; approve them first",
                    errors=[f"device '{t}' waits for approval" for t in pending])
        take_id = self._take_for(action, take_id)
        if start_at is not None:  # devices answer once they have acted
            timeout += max(0.0, start_at - self.clock())
        if take_id is not None and action in (Action.START, Action.STOP):
            at = start_at if start_at is not None else self.clock()
            if action is Action.START:
                self.events.publish(Topic.TAKE_STARTED, take_id=take_id, at=at,
                                    devices=list(target_ids))
            else:
                self.events.publish(Topic.TAKE_STOPPED, take_id=take_id, at=at)
        command_id = f"cmd-{uuid.uuid4().hex[:12]}"
        record = self.commands.open(
            command_id=command_id,
            action=action,
            take_id=take_id,
            targets=target_ids,
            broadcast=broadcast,
            timeout_s=timeout,
        )
        record.start_at = start_at
        if self.events.wants(Topic.COMMAND_SENT):
            self.events.publish(Topic.COMMAND_SENT, command=record.result().to_dict())
        # One frame for every target; encoded once per dialect, written without awaiting.
        # A scheduled command differs per target (the instant in its own clock).
        message = Command(
            command_id=command_id,
            action=action,
            take_id=take_id,
            targets=None if broadcast else tuple(target_ids),
            params=params or CommandParams(),
        )
        cache: dict[int, str] = {}
        for device_id in target_ids:
            link = self.registry.link(device_id)
            if link is None:
                self.commands.fail_target(record, device_id, "device is offline")
                continue
            if action not in getattr(link.codec, "actions", V1_ACTIONS):
                self.commands.fail_target(
                    record, device_id, f"{action.value} is not an action this device "
                    f"knows ({link.codec.name} devices)")
                continue
            try:
                if start_at is None:
                    link.send_text(_encoded(link, message, cache))
                else:
                    estimate = self.registry.get(device_id).clock_estimate
                    device_at = estimate.to_device(start_at) if estimate is not None else None
                    if estimate is None:
                        self.commands.note(record, device_id, UNMEASURED_NOTE)
                    elif not is_plausible_instant(device_at):
                        # An estimate gone wild: the device could not even decode it.
                        log.warning("%s: start_at %r in its clock is no instant; it acts "
                                    "on arrival", device_id, device_at)
                        device_at = None
                        self.commands.note(record, device_id, WILD_ESTIMATE_NOTE)
                    else:
                        uncertainty = estimate.uncertainty_at(start_at)
                        unsettled = (action is Action.START
                                     and uncertainty * 1000 > SKEW_FLAG_MS / 2)
                        self.commands.note(
                            record, device_id, unsettled_note(uncertainty) if unsettled
                            else None, uncertainty_s=uncertainty)
                    link.send_text(link.codec.encode(msgspec.structs.replace(
                        message, start_at=device_at)))
            except LinkClosed:
                self.commands.fail_target(record, device_id, "connection closed while sending")
        return record

    async def measure_unmeasured(self, targets: Iterable[str] | None = None,
                                 probes: int = 8, *,
                                 wait_s: float = MEASURE_WAIT_S) -> list[str]:
        """Measure, all at once, the clocks of the connected targets never measured.

        A scheduled command reaches such a device without an instant in its clock, so
        it would act on arrival, out of step with the others. The SYNC bursts run side by
        side (one per device, joining one already in progress), and this waits for them
        at most ``wait_s`` in all, never more than `MEASURE_WAIT_S`: devices that do not
        answer SYNC hold up nobody else, however many they are. A burst still running
        then goes on in the background; its device stays unmeasured for this command.

        Parameters
        ----------
        targets : iterable of str, optional
            Device ids (unknown and offline ones are skipped); every connected device
            when ``None``.
        probes : int
            SYNC exchanges per burst.
        wait_s : float
            The longest wait for all the bursts together (e.g. the command's lead).

        Returns
        -------
        list of str
            The targets still unmeasured after the wait.
        """
        ids = self.registry.connected_ids() if targets is None else [
            t for t in targets if t in self.registry and self.registry.link(t) is not None]
        unmeasured = [d for d in ids if self.registry.get(d).clock_estimate is None
                      and self._probed(d)]
        if not unmeasured:
            return []
        bursts = {self._measure(device_id, probes) for device_id in unmeasured}
        await asyncio.wait(bursts, timeout=max(0.0, min(wait_s, MEASURE_WAIT_S)))
        return [d for d in unmeasured if self.registry.get(d).clock_estimate is None]

    def _measure(self, device_id: str, probes: int) -> asyncio.Task[ClockEstimate | None]:
        """The SYNC burst in progress for ``device_id``, or a new one (never two at once).

        Two interleaved bursts would each close the other's (`ClockTracker.begin_burst`).
        """
        task = self._measuring.get(device_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._burst_quietly(device_id, probes), name=f"vocalink-sync-{device_id}")
            self._measuring[device_id] = task

            def forget(done: asyncio.Task[ClockEstimate | None]) -> None:
                if self._measuring.get(device_id) is done:
                    del self._measuring[device_id]

            task.add_done_callback(forget)
        return task

    async def _burst_quietly(self, device_id: str, probes: int) -> ClockEstimate | None:
        """`sync_burst`, with any failure read as "not measured" (``None``)."""
        try:
            return await self.sync_burst(device_id, probes)
        except Exception:
            return None

    def schedule(self, targets: Iterable[str] | None = None, *,
                 min_lead_s: float = 0.2) -> float:
        """A server-time instant far enough ahead for every target to get a command first.

        The lead is ``min_lead_s`` or, if more, four times the longest measured round
        trip of the targets plus 20 ms.
        """
        ids = self.registry.connected_ids() if targets is None else list(targets)
        rtts = [e.rtt_s for d in ids if d in self.registry
                if (e := self.registry.get(d).clock_estimate) is not None]
        lead = max([min_lead_s, *(4 * r + 0.02 for r in rtts)])
        return self.clock() + lead

    def describe(self, result: CommandResult) -> dict[str, Any]:
        """A command's JSON form; a scheduled one adds each target's ``late_ms``.

        ``late_ms`` is the target's first sample, in server time (its clock estimate),
        minus the scheduled instant: about 0 when on time, more when the command
        arrived late and the device started at once.
        """
        body = result.to_dict()
        if result.start_at is None:
            return body
        for device_id, outcome in body["outcomes"].items():
            estimate = (self.registry.get(device_id).clock_estimate
                        if device_id in self.registry else None)
            started = outcome.get("started_at")
            outcome["late_ms"] = (
                None if estimate is None or started is None
                else json_number(round((estimate.to_server(started) - result.start_at) * 1000,
                                       3)))
        return body

    async def command(self, action: Action | str, **kwargs: Any) -> CommandResult:
        """Send a command and wait for every target's outcome (see `issue`)."""
        return await self.issue(action, **kwargs).wait()

    def _take_for(self, action: Action, take_id: str | None) -> str | None:
        if action is Action.START:
            take_id = take_id or f"take-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
            self.active_take_id = take_id
        elif action is Action.STOP:
            take_id = take_id or self.active_take_id
            if take_id == self.active_take_id:
                self.active_take_id = None
        return take_id

    # -- clocks ----------------------------------------------------------------------------

    async def sync(self, device_id: str, timeout_s: float = 2.0) -> ClockSample:
        """Run one SYNC exchange with a device and return the sample.

        Raises
        ------
        DeviceNotFound
            The device is unknown or offline.
        TimeoutError
            No answer within ``timeout_s``.
        ProtocolError
            The device answered with instants its clock cannot read (nothing measured).
        """
        self.registry.get(device_id)
        sync_id = f"s{next(self._ids)}"
        future: asyncio.Future[ClockSample] = asyncio.get_running_loop().create_future()
        t0 = self.clock()
        self._sync_waiters[sync_id] = (device_id, t0, future)
        try:
            self._send(device_id, Sync(id=sync_id, t0=t0))
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._sync_waiters.pop(sync_id, None)

    async def sync_burst(self, device_id: str, probes: int = 8,
                         timeout_s: float = SYNC_TIMEOUT_S) -> ClockEstimate | None:
        """Measure a device's clock with ``probes`` SYNC exchanges in a row; one point.

        The exchanges go one after another, so that none queues behind another; the
        one with the smallest round trip becomes the burst's point (`ClockTracker`).
        A device that does not answer, or answers with instants it cannot have read,
        ends the burst early.
        """
        record = self.registry.get(device_id)
        record.clock.begin_burst()
        for _ in range(probes):
            try:
                await self.sync(device_id, timeout_s)
            except (TimeoutError, DeviceNotFound, LinkClosed, ProtocolError):
                break
        record.clock.begin_burst()
        self._device_updated(record)
        return record.clock.estimate

    async def run_clock_sync(self, interval_s: float = 5.0, probes: int = 8, *,
                             first_gap_s: float = SYNC_FIRST_GAP_S) -> None:
        """Measure every connected device's clock now and then, until cancelled.

        A device is measured as soon as it registers, then often while its drift is
        still unknown, then every ``interval_s`` (`sync_gap`): its first take, seconds
        after it joined, starts as well in step as later ones. The devices are measured
        one after another (a burst takes a few milliseconds).
        """
        last: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            due = []
            probed = [d for d in self.registry.connected_ids() if self._probed(d)]
            for device_id in probed:
                estimate = self.registry.get(device_id).clock_estimate
                gap = sync_gap(estimate, interval_s, first_gap_s)
                if now - last.get(device_id, -math.inf) >= gap:
                    due.append(device_id)
            # One device at a time: answers from many devices at once would queue on this
            # loop, and the time an answer waits here counts as network delay, one way.
            for device_id in due:
                last[device_id] = loop.time()
                # Waited for, not awaited: the burst may be a command's as well
                # (`measure_unmeasured`), and one ended early ends nothing here. Not for
                # long: a device that does not answer must not hold up everyone's bursts.
                await asyncio.wait({self._measure(device_id, probes)},
                                   timeout=SYNC_BURST_WAIT_S)
            now = loop.time()
            wake = min((last.get(d, -math.inf) + sync_gap(self.registry.get(d).clock_estimate,
                                                          interval_s, first_gap_s) - now
                        for d in probed), default=interval_s)
            for gone in last.keys() - set(probed):
                del last[gone]
            self._sync_wanted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_wanted.wait(),
                                       min(max(wake, SYNC_MIN_SLEEP_S), interval_s))

    def rename_device(self, device_id: str, name: str) -> None:
        """A device renamed itself while connected (the Android app can; v1 re-registers).

        Raises
        ------
        InvalidParameter
            Not a name (1 to 64 characters, no control characters).
        """
        if not is_device_name(name):
            raise InvalidParameter(f"'{name[:80]}' is not a device name (1 to 64 characters, "
                                   "no control characters)")
        record = self.registry.get(device_id)
        record.name = name
        record.note(self.clock(), "name", f"renamed to {name}")
        self._device_updated(record)

    def _probed(self, device_id: str) -> bool:
        """Whether the server measures this device's clock with SYNC (its dialect's say)."""
        link = self.registry.link(device_id)
        return link is not None and getattr(link.codec, "server_probes", True)

    def add_clock_sample(self, device_id: str, sample: ClockSample, *,
                         resolution_s: float = 0.0) -> ClockEstimate | None:
        """Take in a clock exchange the device started (a dialect whose devices probe us).

        Parameters
        ----------
        device_id : str
            A registered device, let in (not pending).
        sample : ClockSample
            The exchange as if the server had probed: ``t0`` the server's send, ``t1`` and
            ``t2`` the device's receive and send, ``t3`` the server's receive.
        resolution_s : float
            How coarsely the device's clock reads (`ClockTracker`).

        Returns
        -------
        ClockEstimate or None
            The device's estimate with this sample, a point of the fit on its own.

        Raises
        ------
        ProtocolError
            A device waiting for approval, or device instants no clock could give.
        """
        record = self.registry.get(device_id)
        if record.pairing == PairingState.PENDING:
            raise ProtocolError("clock samples refused: this device waits for an operator's "
                                "approval")
        now = self.clock()
        self._check_instant(record, "clock sample: the device's receive", sample.t1, now,
                            ref=None)
        self._check_instant(record, "clock sample: the device's send", sample.t2, now, ref=None)
        record.last_seen = now
        record.clock.resolution_s = max(record.clock.resolution_s, resolution_s)
        # Each exchange is a point of its own: a device that probes more often than the
        # tracker's burst gap would otherwise stay in one burst (no drift, a frozen fit).
        record.clock.begin_burst()
        return record.clock.add(sample)

    def clock_estimate(self, device_id: str) -> ClockEstimate | None:
        """The device's current clock estimate (``None`` before any SYNC)."""
        return self.registry.get(device_id).clock_estimate

    # -- snapshots -------------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        """Every known device as a JSON-ready dict, connected or not."""
        return [r.to_dict() for r in self.registry]

    # -- internals -------------------------------------------------------------------------

    def _send(self, device_id: str, message: Message) -> None:
        link = self.registry.link(device_id)
        if link is None:
            raise DeviceNotFound(f"device '{device_id}' is offline")
        link.send_text(link.codec.encode(message))

    def _broadcast(self, message: Message) -> None:
        cache: dict[int, str] = {}
        for device_id in self.registry.connected_ids() + self.registry.pending_ids():
            link = self.registry.link(device_id)
            if link is None:
                continue
            try:
                link.send_text(_encoded(link, message, cache))
            except LinkClosed:
                log.debug("could not tell %s: connection closed", device_id)

    def _device_updated(self, record: DeviceRecord) -> None:
        # Payloads are built only for listeners: a thousand devices report every second.
        if self.events.wants(Topic.DEVICE_UPDATED):
            self.events.publish(Topic.DEVICE_UPDATED, device=record.to_dict())

    def _on_outcome(self, record: CommandRecord, outcome: TargetOutcome) -> None:
        if not self.events.wants(Topic.COMMAND_OUTCOME):
            return
        self.events.publish(Topic.COMMAND_OUTCOME, command_id=record.command_id,
                            action=record.action.value, outcome=outcome.to_dict())

    def _on_done(self, record: CommandRecord) -> None:
        if not self.events.wants(Topic.COMMAND_DONE):
            return
        self.events.publish(Topic.COMMAND_DONE, command=record.result().to_dict())


def _encoded(link: DeviceLink, message: Message, cache: dict[int, str]) -> str:
    key = id(link.codec)
    text = cache.get(key)
    if text is None:
        text = cache[key] = link.codec.encode(message)
    return text


def _parse_action(action: Action | str) -> Action:
    if isinstance(action, Action):
        return action
    try:
        return Action(str(action).upper())
    except ValueError:
        raise InvalidParameter(
            f"unknown action '{str(action)[:MAX_NAME_CHARS]}' "
            f"(expected one of {', '.join(a.value for a in Action)})"
        ) from None


def _to_builtins(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(message)
    return out
