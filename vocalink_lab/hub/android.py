"""The VocalLink Android app behind the same hub: its sessions, and a link per connection.

The app (the VocalLink fork of Fossify Voice Recorder) speaks its own dialect
(`protocol.android`): it asks for a **session** over REST (``POST /sessions``), activates it
on ``/ws/control``, probes the server's clock itself (``tik`` / ``tok`` / ``sync_report``),
obeys actions addressed to its session id, reports events, stages each finished file
(``rec_stage`` / ``rec_staged``) and uploads it to ``POST /recordings/{rid}``. Here a
session becomes a device like any other: an `AndroidLink` is the hub's `DeviceLink` to it,
turning the hub's messages into the app's frames and the app's frames into REGISTER,
ACK, STATUS and clock samples. The hub, takes, catalog and panels stay one.

Who may record. The app holds no credential but its session id, which the server mints
(128 random bits) and only the app and the server know; the device the session becomes
gets a public id of its own (``android-…``), since device ids are shown to controllers
and named in commands other devices see. A session is pending until an operator approves
it (or at once, with ``trust=True``: ``VOCALINK_ANDROID=trust``, for a private network);
the device key the hub issues then is kept here for the session.

Timing. The app schedules an action by ``triggerTime - (localNow + theta)``, but in float32
(a Kotlin ``Long + Float``), whose resolution at today's epoch milliseconds is 131 s: the
delay it computes is 0 (act at once) or ±131072 ms (capped at 10 s). A scheduled action is
therefore *sent* at its instant minus the one-way delay and carries no ``triggerTime``: it
arrives when it is due and the app acts on arrival. ``theta`` (our estimate, refreshed
after each of its probes) still goes out in ``session_update``, for the app to show.
The app never says when its recording started: the start is bounded between the moment
the action was sent and the moment its ``started`` event came back, and that bound is the
recording's clock uncertainty (a take mixing the app with others is flagged; `align`
finds the exact offsets from the audio).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import PairingRefused, ProtocolError, TooBusy, VocalinkError
from ..protocol import (
    Ack,
    AckStatus,
    Action,
    Capabilities,
    ClientState,
    Command,
    Error,
    Message,
    Register,
    Status,
    Welcome,
)
from ..protocol.android import (
    DIALECT,
    AndroidFrame,
    AppError,
    AppFrameError,
    EventTarget,
    Kind,
    RecMetadata,
    RecStage,
    SessionMetadata,
    SessionState,
    StateReport,
    SyncReport,
    Tik,
    Tok,
    decode_frame,
    encode_frame,
    error_frame,
)
from .clock import ClockSample
from .pairing import PairingState

if TYPE_CHECKING:
    from .hub import Hub

__all__ = [
    "ANDROID_RESOLUTION_S",
    "MAX_STAGED_PER_DEVICE",
    "RECORDER_LATENCY_S",
    "first_sample_window",
    "AndroidLink",
    "AndroidSessions",
    "AppSession",
    "Staged",
]

log = logging.getLogger(__name__)

#: The app's clock reads whole milliseconds.
ANDROID_RESOLUTION_S = 1e-3
#: How long after the app says ``started`` MediaRecorder may begin capturing: the app
#: reports the call, not the first sample (tens of milliseconds on phones; this bounds it
#: when nothing else does, a recording stopped on the phone itself).
RECORDER_LATENCY_S = 0.15
#: Sessions never activated are forgotten after this long, and at most this many are kept.
UNACTIVATED_TTL_S = 600.0
MAX_UNACTIVATED = 256
#: Sessions kept in all (an app asks for one on every connect); beyond, the oldest of an
#: offline device go.
MAX_SESSIONS = 4096
#: Staged files not uploaded are forgotten after this long (the app uploads at once).
STAGED_TTL_S = 24 * 3600.0
MAX_STAGED = 4096
#: ...and at most this many per device: one app staging in a loop drops its own oldest,
#: never another's.
MAX_STAGED_PER_DEVICE = 64
#: What the app records with by default (its Constants: 48 kHz, mono, M4A).
APP_CAPABILITIES = Capabilities(sample_rates=(48000,), channels=(1,), formats=("m4a",))
#: The event the app sends once it has acted, by the action it acted on.
_ACTION_OF_EVENT = {"started": Action.START, "stopped": Action.STOP, "paused": Action.PAUSE,
                    "resumed": Action.RESUME}
_STATE_OF = {SessionState.RUNNING: ClientState.RECORDING,
             SessionState.PAUSED: ClientState.PAUSED,
             SessionState.STOPPED: ClientState.IDLE}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _clean_name(text: str, fallback: str) -> str:
    """A name the catalog and the panels accept (1 to 64 characters, no control ones)."""
    name = _CONTROL.sub(" ", text).strip()[:64].strip()
    return name or fallback


@dataclass
class AppSession:
    """One session of the app: the secret it holds, the device it is to us."""

    secret: str
    device_id: str
    name: str
    model: str
    ip: str
    battery: int | None
    created_at: float
    #: The device key the hub issued (approved, or trusted at once): presented for the app.
    key: str | None = None
    activated: bool = False

    def metadata(self, theta_ms: float | None = None, rtt_ms: float | None = None,
                 last_sync_ms: int | None = None) -> SessionMetadata:
        """The session as the app reads it."""
        return SessionMetadata(id=self.secret, name=self.name, ip=self.ip, device=self.model,
                               battery=self.battery, theta=theta_ms, lastRTT=rtt_ms,
                               lastSync=last_sync_ms)


@dataclass(frozen=True, slots=True)
class Staged:
    """A finished file the app staged: where its upload goes in the catalog."""

    rid: str
    device_id: str
    take_id: str | None
    #: The first sample, in the device's clock (seconds), or None when unknown.
    device_started_at: float | None
    #: How far the start may be from ``device_started_at`` (seconds), beyond the clock's.
    start_bound_s: float
    rec_name: str
    size_bytes: int
    duration_s: int
    staged_at: float
    #: Server time: the START went out (nothing was captured before), and the STOP went
    #: out and its ``stopped`` came back (capture ended between): with the file's length,
    #: they bound the first sample from both ends (`first_sample_window`).
    start_sent_at: float | None = None
    stop_window: tuple[float, float] | None = None
    #: Seconds paused between them, by the app's events, and how far off that may be.
    paused_s: float = 0.0
    paused_error_s: float = 0.0


def first_sample_window(staged: Staged, file_s: float, file_error_s: float
                        ) -> tuple[float, float] | None:
    """Where the first sample of a staged file was, in server time: ``(at, bound)``.

    The app never says when its recording started, and MediaRecorder starts capturing a
    while (tens of milliseconds) after it is told. Two anchors bound it: the START went
    out before (the first sample is not earlier), and the capture ended between the STOP
    going out and its ``stopped`` coming back, ``file_s`` (plus the pauses) after the
    first sample. The estimate is the middle of what both allow.

    Parameters
    ----------
    staged : Staged
        The staging, with its anchors.
    file_s : float
        The file's decoded length, priming taken off.
    file_error_s : float
        How far ``file_s`` may be off (an AAC frame's padding, an assumed priming).

    Returns
    -------
    (float, float) or None
        The first sample in server time and the bound; None without a STOP's window
        (a recording stopped on the phone itself).
    """
    if staged.stop_window is None:
        return None
    stop_sent, stop_seen = staged.stop_window
    slack = file_error_s + staged.paused_error_s
    lo = stop_sent - file_s - staged.paused_s - slack
    hi = stop_seen - file_s - staged.paused_s + slack
    if staged.start_sent_at is not None:
        lo = max(lo, staged.start_sent_at)
    if lo > hi:  # the anchors disagree (a stop that ended the file late): trust neither
        return None
    return (lo + hi) / 2, (hi - lo) / 2


@dataclass
class _Take:
    """A recording of the app between its START and its staging."""

    recording_id: str
    take_id: str | None
    device_started_at: float | None = None
    start_bound_s: float = 0.0
    #: Seconds recorded by the app's events (server time, pauses left out): to tell which
    #: finished take a ``rec_stage`` is about (one cancelled on the phone never is).
    recorded_s: float = 0.0
    running_since: float | None = None
    start_sent_at: float | None = None
    stop_window: tuple[float, float] | None = None
    pauses: int = 0
    started_seen: float | None = None

    def run(self, now: float) -> None:
        if self.running_since is None:
            self.running_since = now

    def halt(self, now: float) -> None:
        if self.running_since is not None:
            self.recorded_s += now - self.running_since
            self.running_since = None


class AndroidSessions:
    """The app's sessions and staged files, on the loop; the hub's Android side.

    Parameters
    ----------
    hub : Hub
        The hub the sessions' devices join.
    trust : bool
        Let every new session in at once (a private network); otherwise an operator
        approves each, as any pending device.
    """

    def __init__(self, hub: Hub, *, trust: bool = False) -> None:
        self.hub = hub
        self.trust = trust
        self._sessions: dict[str, AppSession] = {}
        self._unactivated: OrderedDict[str, float] = OrderedDict()
        self._staged: OrderedDict[str, Staged] = OrderedDict()

    def stage(self, meta: SessionMetadata, remote: str) -> SessionMetadata:
        """``POST /sessions``: mint a session for the app (its id is its only credential).

        Parameters
        ----------
        meta : SessionMetadata
            What the app sent (its ``id`` is empty; the server assigns one).
        remote : str
            The app's address, kept when it names none.

        Returns
        -------
        SessionMetadata
            The session, with the id the app presents from now on.
        """
        now = self.hub.clock()
        self._expire(now)
        while len(self._unactivated) >= MAX_UNACTIVATED:
            stale, _ = self._unactivated.popitem(last=False)
            self._sessions.pop(stale, None)
        if len(self._sessions) >= MAX_SESSIONS:
            offline = [k for k, v in self._sessions.items()
                       if k not in self._unactivated and self.hub.registry.link(v.device_id)
                       is None]
            for stale in offline[:len(self._sessions) - MAX_SESSIONS + 1]:
                del self._sessions[stale]
        secret = secrets.token_hex(16)
        model = _clean_name(meta.device, "Android")
        name = _clean_name(meta.name, model)
        ip = _clean_name(meta.ip, remote)
        device_id = (self._returning(name, model, ip) if self.trust else None) \
            or f"android-{secrets.token_hex(6)}"
        session = AppSession(
            secret=secret, device_id=device_id, name=name,
            model=model, ip=ip,
            battery=meta.battery if meta.battery is not None and 0 <= meta.battery <= 100
            else None,
            created_at=now)
        if self.trust:
            session.key = self.hub.pairing.issue_key(device_id)
        self._sessions[secret] = session
        self._unactivated[secret] = now
        log.info("Android session for %s (%s) from %s: device %s", session.name,
                 session.model, remote, device_id)
        return session.metadata()

    def _returning(self, name: str, model: str, ip: str) -> str | None:
        """The device a trusted phone was before, to be again: its row and history go on.

        The app asks for a new session on every connect; on a trusted network the same
        phone (its name, model and address: two phones of one model share a default name)
        back while its device is offline is that device. With approval, a new session
        stays a new device: nothing it sends proves it is the same phone.
        """
        for session in self._sessions.values():
            if (session.name, session.model, session.ip) == (name, model, ip) \
                    and session.device_id in self.hub.registry \
                    and self.hub.registry.link(session.device_id) is None:
                return session.device_id
        return None

    def get(self, secret: str) -> AppSession | None:
        """The session with this id, if one was minted (and not forgotten)."""
        return self._sessions.get(secret) if isinstance(secret, str) else None

    def activated(self, session: AppSession) -> None:
        """The session connected: it no longer expires unactivated.

        Older sessions of its device (the same phone, connected again) are forgotten.
        """
        session.activated = True
        self._unactivated.pop(session.secret, None)
        for secret in [k for k, v in self._sessions.items()
                       if v.device_id == session.device_id and k != session.secret]:
            del self._sessions[secret]

    def closed(self, session: AppSession) -> None:
        """The session's connection ended: one never let in is forgotten (it asks anew)."""
        device_id = session.device_id
        if device_id not in self.hub.registry or \
                self.hub.registry.get(device_id).pairing == PairingState.PENDING:
            self._sessions.pop(session.secret, None)

    def add_staged(self, staged: Staged) -> None:
        """Remember a staged file until its upload (bounded: the oldest go first).

        A device has at most `MAX_STAGED_PER_DEVICE` waiting: beyond, its own oldest goes.
        """
        self._expire(self.hub.clock())
        own = [rid for rid, s in self._staged.items() if s.device_id == staged.device_id]
        for rid in own[:max(0, len(own) - MAX_STAGED_PER_DEVICE + 1)]:
            del self._staged[rid]
        while len(self._staged) >= MAX_STAGED:
            self._staged.popitem(last=False)
        self._staged[staged.rid] = staged

    def staged(self, rid: str) -> Staged | None:
        """The staged file ``rid`` names (its upload's capability), if any."""
        return self._staged.get(rid) if isinstance(rid, str) else None

    def uploaded(self, rid: str) -> None:
        """The file ``rid`` is in the catalog: its staging is done."""
        self._staged.pop(rid, None)

    def _expire(self, now: float) -> None:
        while self._unactivated:
            secret, at = next(iter(self._unactivated.items()))
            if now - at < UNACTIVATED_TTL_S:
                break
            self._unactivated.popitem(last=False)
            self._sessions.pop(secret, None)
        while self._staged:
            staged = next(iter(self._staged.values()))
            if now - staged.staged_at < STAGED_TTL_S:
                break
            self._staged.popitem(last=False)


class _AppCodec:
    """The hub's messages in the app's terms, for one connection (frames name its session).

    ``encode`` returns ``""`` for what the app has no frame for; `AndroidLink.send_text`
    sends nothing then.
    """

    name = DIALECT
    server_probes = False
    actions = frozenset(Action)

    def __init__(self, link: AndroidLink) -> None:
        self._link = link

    def decode(self, frame: str | bytes) -> Message:  # pragma: no cover - not used
        raise ProtocolError("the app's frames are read by its link, not decoded alone")

    def encode(self, message: Message) -> str:
        return self._link.encode(message)


class AndroidLink:
    """One connection of the app: the hub's `DeviceLink` to it, and its frames' reader.

    Parameters
    ----------
    sessions : AndroidSessions
        Where its session is looked up.
    send : callable
        Queue one text frame on the connection (never blocks).
    close : callable
        ``close(code, reason)``: close the connection.
    remote : str
        The peer's address.
    """

    def __init__(self, sessions: AndroidSessions, *, send: Callable[[str], None],
                 close: Callable[[int, str], None], remote: str) -> None:
        self.sessions = sessions
        self.hub = sessions.hub
        self._send = send
        self._close = close
        self._remote = remote
        self._codec = _AppCodec(self)
        self.session: AppSession | None = None
        self.device_id: str | None = None
        self.state = SessionState.STOPPED
        #: The action the app was last sent, waiting for its event: (command, sent at).
        self._waiting: dict[Action, tuple[Command, float]] = {}
        self._take: _Take | None = None
        self._finished: deque[_Take] = deque(maxlen=64)
        self._tok: tuple[int, float, float] | None = None  # (t1 ms, t2 s, t3 s)
        #: Set by `encode` for the frame `send_text` is handed next: when it is due, and
        #: the action whose sending instant to note.
        self._send_at: float | None = None
        self._sending: Action | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    # -- DeviceLink ------------------------------------------------------------------------

    @property
    def codec(self) -> _AppCodec:
        """The dialect of this connection (frames name its session: one codec per link)."""
        return self._codec

    @property
    def remote(self) -> str:
        """The peer's address."""
        return self._remote

    def send_text(self, text: str) -> None:
        """Queue one frame; a scheduled action waits here until it is due."""
        send_at, self._send_at = self._send_at, None
        action, self._sending = self._sending, None
        if not text:
            return
        delay = None if send_at is None else send_at - self.hub.clock()
        if delay is None or delay <= 0:
            self._sent(text, action)
            return
        loop = asyncio.get_running_loop()

        def due() -> None:
            self._timers.discard(handle)
            with contextlib.suppress(ConnectionError):
                self._sent(text, action)

        handle = loop.call_later(delay, due)
        self._timers.add(handle)

    def _sent(self, text: str, action: Action | None) -> None:
        """Send now; note when, for the action waiting for its event (its start's bound)."""
        self._send(text)
        if action is not None and action in self._waiting:
            self._waiting[action] = (self._waiting[action][0], self.hub.clock())

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection."""
        self._close(code, reason)

    def closed(self) -> None:
        """The connection ended: scheduled frames are dropped, the hub told."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self.device_id is not None:
            self.hub.detach(self.device_id, self)
        if self.session is not None and self.device_id is not None:
            self.sessions.closed(self.session)

    # -- the hub's messages, in the app's frames -------------------------------------------

    def encode(self, message: Message) -> str:
        """The app's frame for one of the hub's messages (``""``: none)."""
        session = self.session
        if session is None:
            return ""
        if isinstance(message, Welcome):
            if message.device_key is not None:
                session.key = message.device_key
            if not message.paired:
                return ""  # the app shows "connected" once it may record
            return encode_frame(Kind.EVENT, "session_activated", self._metadata())
        if isinstance(message, Command):
            return self._encode_command(message)
        if isinstance(message, Error):
            return error_frame(AppError.INVALID_BODY, f"{message.code}: {message.detail}")
        return ""  # SYNC (the app probes us), SERVER news: the app has no frame for them

    def _encode_command(self, command: Command) -> str:
        assert self.session is not None
        action = command.action
        if action is Action.SYNC_NOW:
            self._answer_later(command, AckStatus.SUCCESS)  # it probes every 5 s anyway
            return ""
        if action is Action.PING:
            self._waiting[action] = (command, math.inf)
            self._sending = action
            return encode_frame(Kind.ACTION, "get_state", EventTarget(self.session.secret))
        refusal = self._refusal(action)
        if refusal is not None:
            self._answer_later(command, AckStatus.FAILED, refusal)
            return ""
        self._send_at = self._send_instant(command.start_at)
        self._sending = action
        self._waiting[action] = (command, math.inf)  # the instant it goes out, once it does
        if action is Action.START:
            self._take = _Take(recording_id=f"rec-{secrets.token_hex(8)}",
                               take_id=command.take_id)
        return encode_frame(Kind.ACTION, action.value.lower(), EventTarget(self.session.secret))

    def _refusal(self, action: Action) -> str | None:
        """Why the app would ignore ``action`` now (it answers nothing then), or None."""
        if action is Action.START and self.state is not SessionState.STOPPED:
            return "already recording"
        if action in (Action.STOP, Action.PAUSE, Action.CANCEL) \
                and self.state is SessionState.STOPPED:
            return "not recording"
        if action is Action.PAUSE and self.state is SessionState.PAUSED:
            return "already paused"
        if action is Action.RESUME and self.state is not SessionState.PAUSED:
            return "not paused"
        return None

    def _send_instant(self, device_at: float | None) -> float | None:
        """When to send an action due at ``device_at`` (device clock); None: at once.

        Its server-time instant minus the one-way delay: it arrives when it is due.
        """
        if device_at is None or self.device_id is None:
            return None
        estimate = self.hub.clock_estimate(self.device_id)
        if estimate is None:
            return None
        return estimate.to_server(device_at) - estimate.rtt_s / 2

    def _answer_later(self, command: Command, status: AckStatus, error: str | None = None,
                      **fields: Any) -> None:
        """ACK ``command`` on the loop's next turn (the hub is still sending it now)."""
        assert self.device_id is not None
        ack = Ack(command_id=command.command_id, action=command.action,
                  device_id=self.device_id, status=status, error=error, **fields)
        asyncio.get_running_loop().call_soon(self._hand, ack)

    def _hand(self, message: Message) -> None:
        """Give the hub a message of this device; a refusal goes back as an error frame."""
        if self.device_id is None:
            return
        try:
            self.hub.handle(self.device_id, message)
        except VocalinkError as exc:
            self._reply(AppError.INVALID_BODY, str(exc))

    def _metadata(self) -> SessionMetadata:
        assert self.session is not None
        estimate = self.hub.clock_estimate(self.device_id) if self.device_id else None
        if estimate is None:
            return self.session.metadata()
        now = self.hub.clock()
        return self.session.metadata(theta_ms=-estimate.offset_at(now) * 1000,
                                     rtt_ms=estimate.rtt_s * 1000,
                                     last_sync_ms=int(estimate.measured_at * 1000))

    # -- the app's frames --------------------------------------------------------------------

    def on_frame(self, text: str | bytes) -> None:
        """Take in one frame from the app; a bad one is answered with an error frame."""
        try:
            frame = decode_frame(text)
            self._dispatch(frame)
        except AppFrameError as exc:
            self._reply(exc.app_code, str(exc))
        except (PairingRefused, TooBusy) as exc:
            self._reply(AppError.ACTION_NOT_ALLOWED, str(exc))
        except VocalinkError as exc:
            self._reply(AppError.INVALID_BODY, str(exc))
        except Exception:
            # A bug of ours must not cost the app its connection.
            log.exception("error handling a frame of the Android app from %s",
                          self.device_id or self._remote)
            self._reply(AppError.INVALID_BODY, "the server failed to handle this frame")

    def _dispatch(self, frame: AndroidFrame) -> None:
        body = frame.body
        if frame.msgType == "session_activate":
            self._activate(body.id)
            return
        session = self.session
        if session is None or self.device_id is None:
            raise AppFrameError(f"{frame.msgType} before session_activate",
                                app_code=AppError.SESSION_NOT_FOUND)
        own = getattr(body, "id", None) if not isinstance(body, RecStage) else body.sessionId
        if own is not None and own != session.secret:
            raise AppFrameError(f"{frame.msgType} names another session; this connection is "
                                "its own session's only", app_code=AppError.ACTION_NOT_ALLOWED)
        if isinstance(body, Tik):
            self._tik(body)
        elif isinstance(body, SyncReport):
            self._sync_report(body)
        elif isinstance(body, StateReport):
            self._state_report(body)
        elif isinstance(body, RecStage):
            self._rec_stage(body)
        elif isinstance(body, SessionMetadata):  # the app renamed itself
            session.name = _clean_name(body.name, session.name)
            self.hub.rename_device(self.device_id, session.name)
        elif frame.msgType in _ACTION_OF_EVENT:
            self._event(_ACTION_OF_EVENT[frame.msgType])

    def _activate(self, secret: str) -> None:
        if self.session is not None:
            raise AppFrameError("this connection has activated its session already",
                                app_code=AppError.ACTION_NOT_ALLOWED)
        session = self.sessions.get(secret)
        if session is None:
            raise AppFrameError("no such session: create one with POST /sessions",
                                app_code=AppError.SESSION_NOT_FOUND)
        register = Register(device_id=session.device_id, name=session.name, protocol=1,
                            platform="android", capabilities=APP_CAPABILITIES,
                            token=session.key)
        self.session = session
        try:
            welcome = self.hub.attach(register, self)
        except BaseException:
            self.session = None
            raise
        self.device_id = session.device_id
        self.sessions.activated(session)
        self.send_text(self.encode(welcome))

    def _tik(self, tik: Tik) -> None:
        received = self.hub.clock()
        t2 = math.floor(received * 1000)
        sent = self.hub.clock()
        t3 = max(t2, math.floor(sent * 1000))
        self._tok = (tik.t1, t2 / 1000, t3 / 1000)
        self._send(encode_frame(Kind.SYNC, "tok", Tok(t1=tik.t1, t2=t2, t3=t3)))

    def _sync_report(self, report: SyncReport) -> None:
        if self._tok is None:
            raise AppFrameError("sync_report without a tok before it")
        t1_ms, t2, t3 = self._tok
        self._tok = None
        # The app's receive instant follows from its round trip: rtt = (t4-t1) - (t3-t2).
        t4_ms = t1_ms + report.rtt + (t3 - t2) * 1000
        theta = ((t2 * 1000 - t1_ms) + (t3 * 1000 - t4_ms)) / 2
        if abs(theta - report.theta) > 1.0:  # its theta is the same numbers, in float32
            raise AppFrameError(
                f"sync_report: theta {report.theta} does not follow from rtt {report.rtt} and "
                f"the last tok ({theta:.1f} would); refused, nothing measured")
        assert self.device_id is not None
        # As if we had probed: we sent at t3 (the tok), it received at t4 and "answered"
        # with the tik it sent at t1, which we received at t2.
        sample = ClockSample(t0=t3, t1=t4_ms / 1000, t2=t1_ms / 1000, t3=t2)
        if self.hub.add_clock_sample(self.device_id, sample,
                                     resolution_s=ANDROID_RESOLUTION_S) is not None:
            self._send(encode_frame(Kind.EVENT, "session_update", self._metadata()))

    def _event(self, action: Action) -> None:
        now = self.hub.clock()
        self.state = {Action.START: SessionState.RUNNING, Action.RESUME: SessionState.RUNNING,
                      Action.PAUSE: SessionState.PAUSED,
                      Action.STOP: SessionState.STOPPED}[action]
        if action is Action.STOP and Action.CANCEL in self._waiting:
            # Cancelled: the app threw the recording away (no rec_stage will come).
            command, _ = self._waiting.pop(Action.CANCEL)
            self._waiting.pop(Action.STOP, None)
            discarded, self._take = self._take, None
            self._hand(Ack(command_id=command.command_id, action=Action.CANCEL,
                           device_id=self.device_id or "", status=AckStatus.SUCCESS,
                           recording_id=discarded.recording_id if discarded else None))
            self._report(self.state, 0)
            return
        waiting = self._waiting.pop(action, None)
        fields: dict[str, Any] = {}
        if self._take is not None:
            if action in (Action.START, Action.RESUME):
                self._take.run(now)
            else:
                self._take.halt(now)
        if action is Action.START:
            take = self._take or _Take(recording_id=f"rec-{secrets.token_hex(8)}",
                                       take_id=None)
            take.run(now)
            self._take = take
            take.started_seen = now
            if waiting is not None and waiting[1] <= now:
                take.start_sent_at = waiting[1]
                take.device_started_at, take.start_bound_s = self._start_between(
                    waiting[1], now)
            fields = {"recording_id": take.recording_id, "started_at": take.device_started_at}
        elif action is Action.PAUSE and self._take is not None:
            self._take.pauses += 1
        elif action is Action.STOP and self._take is not None:
            if waiting is not None and waiting[1] <= now:
                self._take.stop_window = (waiting[1], now)
            fields = {"recording_id": self._take.recording_id}
            self._finished.append(self._take)
            self._take = None
        if waiting is not None:
            command, _ = waiting
            self._hand(Ack(command_id=command.command_id, action=action,
                           device_id=self.device_id or "", status=AckStatus.SUCCESS,
                           **fields))
        self._report(self.state, 0)

    def _start_between(self, sent_at: float, event_at: float) -> tuple[float | None, float]:
        """The start, in the device's clock, and how far off it may be (seconds).

        The first sample came after the action reached it (sent at ``sent_at``) and at
        most `RECORDER_LATENCY_S` after its ``started`` came back (``event_at``: the app
        reports the call to MediaRecorder, not the capture). The estimate is the action's
        arrival (half a round trip after sending), the bound the larger side. A STOP
        bounds it better, once the file's length is known (`first_sample_window`).
        """
        assert self.device_id is not None
        estimate = self.hub.clock_estimate(self.device_id)
        one_way = estimate.rtt_s / 2 if estimate is not None else 0.0
        at = min(sent_at + one_way, event_at)
        bound = max(at - sent_at, event_at + RECORDER_LATENCY_S - at)
        if estimate is None:
            return None, bound
        return estimate.to_device(at), bound

    def _state_report(self, report: StateReport) -> None:
        self.state = report.state
        waiting = self._waiting.pop(Action.PING, None)
        if waiting is not None:
            command, _ = waiting
            self._hand(Ack(command_id=command.command_id, action=Action.PING,
                           device_id=self.device_id or "", status=AckStatus.SUCCESS))
        self._report(report.state, report.duration)

    def _report(self, state: SessionState, duration_s: int) -> None:
        take = self._take
        self._hand(Status(state=_STATE_OF[state],
                          recording_id=take.recording_id if take is not None else None,
                          elapsed_s=float(duration_s) if take is not None else None,
                          battery=(self.session.battery / 100
                                   if self.session and self.session.battery is not None
                                   else None)))

    def _rec_stage(self, stage: RecStage) -> None:
        assert self.session is not None and self.device_id is not None
        take = self._staged_take(stage.duration)
        now = self.hub.clock()
        paused = 0.0
        if take.started_seen is not None and take.stop_window is not None:
            paused = max(0.0, take.stop_window[1] - take.started_seen - take.recorded_s)
        estimate = self.hub.clock_estimate(self.device_id)
        rtt = estimate.rtt_s if estimate is not None else 0.0
        staged = Staged(rid=take.recording_id, device_id=self.device_id, take_id=take.take_id,
                        device_started_at=take.device_started_at,
                        start_bound_s=take.start_bound_s, rec_name=stage.recName,
                        size_bytes=stage.sizeBytes, duration_s=stage.duration, staged_at=now,
                        start_sent_at=take.start_sent_at, stop_window=take.stop_window,
                        # Each pause's two ends are known to within a round trip each.
                        paused_s=paused, paused_error_s=2 * rtt * take.pauses)
        self.sessions.add_staged(staged)
        self._send(encode_frame(Kind.EVENT, "rec_staged", RecMetadata(
            rid=staged.rid, recName=stage.recName, sessionId=self.session.secret,
            speaker=self.session.name, device=self.session.model,
            duration=float(stage.duration), sizeBytes=stage.sizeBytes,
            createdAt=int(now * 1000))))

    def _staged_take(self, duration_s: int) -> _Take:
        """The finished take a ``rec_stage`` of ``duration_s`` whole seconds is about.

        The oldest whose recorded time matches (within 2 s: the file's whole seconds, the
        events' travel); older ones never staged were thrown away on the phone. None
        matches (the app started on its own, before we knew): a new recording id.
        """
        for i, take in enumerate(self._finished):
            if abs(take.recorded_s - duration_s) <= 2.0:
                for _ in range(i + 1):
                    self._finished.popleft()
                return take
        return _Take(recording_id=f"rec-{secrets.token_hex(8)}", take_id=None)

    def _reply(self, code: AppError, detail: str) -> None:
        with contextlib.suppress(ConnectionError):
            self._send(error_frame(code, detail))

