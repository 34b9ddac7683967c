"""The device agent: one recording device, connected to a vocalink server when it can be.

Three things run side by side on one asyncio loop, and each goes on when the others
stop: the connection (REGISTER, commands, ACKs, STATUS once a second, reconnecting
with backoff and jitter), the recorder (`Recorder`: source -> crash-safe spool ->
outbox), and the uploader (`Uploader`: outbox -> tus, resumed after any interruption).
A take that starts while connected keeps recording when the server goes away; its file
waits in the outbox, on disk, until the server confirms it stored the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import shutil
import socket
import ssl
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from .. import durable
from ..errors import ProtocolError
from ..links import RecorderLink
from ..pinning import fetch_pinned_ca
from ..protocol import (
    PROTOCOL_VERSION,
    Ack,
    AckStatus,
    Action,
    Capabilities,
    ClientState,
    Command,
    Error,
    Message,
    Recording,
    Register,
    Server,
    Status,
    Sync,
    Welcome,
    decode,
    encode,
    is_safe_id,
)
from ..retry import RetryPolicy
from ..tokens import env_token
from .clock import DeviceClock
from .outbox import Outbox, OutboxItem
from .recorder import Recorder, Refused, short_reason
from .spool import FORMATS, FinishedRecording, recover
from .uploader import Uploader, UploadInterrupted, UploadRefused

__all__ = ["Agent", "AgentConfig", "AgentState"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

WS_PATH = "/ws/control"
#: Where the device keeps the key a server gave it (mode 0600).
KEY_FILE = "device.key"
#: First wait after an upload attempt that got nowhere (doubling up to
#: `AgentConfig.upload_retry_max_s`).
UPLOAD_RETRY_MIN_S = 0.5


class AgentState(enum.StrEnum):
    """What the agent reports in STATUS."""

    IDLE = "IDLE"
    RECORDING = "RECORDING"
    PAUSED = "PAUSED"
    UPLOADING = "UPLOADING"


@dataclass
class AgentConfig:
    """How one agent runs.

    Attributes
    ----------
    state_dir : Path
        Its own folder: identity (``device.json``), ``spool/`` and ``outbox/``.
    server_url : str or None
        ``http://host:port`` of the server, or the link the dashboard shows phones
        (``https://host:port/recorder?join=CODE#ca=PIN``: its code and pin are used);
        ``None`` to find one with mDNS.
    server_name : str or None
        With mDNS: only the server with this name (or id).
    device_id, name : str or None
        Identity; generated once and kept in ``device.json`` when not given.
    source : str
        Where audio comes from (`make_source` spec): ``tone:440``, ``file:take.wav``,
        ``mic``...
    sample_rate, channels : int
        Defaults when a START does not say.
    format : {"wav", "flac"}
        Default file format (lossless).
    clock : DeviceClock
        The device's clock (simulated devices get an offset and a drift).
    interfaces : sequence of str or None
        Interfaces to browse mDNS on.
    status_interval_s : float
        STATUS period while connected.
    reconnect_min_s, reconnect_max_s : float
        Backoff between connection attempts (doubling, with jitter).
    upload_retry_max_s : float
        Longest wait between upload attempts.
    token : str or None
        The controller token, by default ``VOCALINK_TOKEN``: a device that presents it is
        trusted. Used while the device has no key of its own.
    join_code : str or None
        A join code read off the dashboard: pairs the device without an operator's click
        (its key is then kept in ``device.key``).
    ca_pin : str or None
        The pin of the server's CA (the dashboard's link has it, mDNS advertises it):
        the agent then speaks HTTPS and ``wss://`` and trusts that CA alone.
    """

    state_dir: Path
    server_url: str | None = None
    server_name: str | None = None
    device_id: str | None = None
    name: str | None = None
    source: str = "tone:440"
    sample_rate: int = 48000
    channels: int = 1
    format: str = "wav"
    clock: DeviceClock = field(default_factory=DeviceClock)
    interfaces: Sequence[str] | None = None
    status_interval_s: float = 1.0
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    upload_retry_max_s: float = 10.0
    token: str | None = field(default_factory=env_token, repr=False)
    join_code: str | None = None
    ca_pin: str | None = None

    @property
    def reconnect_retry(self) -> RetryPolicy:
        """Waits between connection attempts: from ``reconnect_min_s``, doubling, jittered."""
        return RetryPolicy(initial_s=self.reconnect_min_s, maximum_s=self.reconnect_max_s)

    @property
    def upload_retry(self) -> RetryPolicy:
        """Waits between upload attempts that made no progress, up to ``upload_retry_max_s``."""
        return RetryPolicy(initial_s=UPLOAD_RETRY_MIN_S, maximum_s=self.upload_retry_max_s)


class Agent:
    """A recording device that talks to a vocalink server.

    Loop-only. ``async with Agent(config):`` starts it; `stop` finalizes a recording in
    progress (nothing recorded is ever dropped) and closes the connection.

    Parameters
    ----------
    config : AgentConfig
    """

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.clock = config.clock
        self.device_id = ""
        self.name = ""
        self.outbox: Outbox | None = None
        link = RecorderLink.parse(config.server_url) if config.server_url else None
        #: The server as configured (the link's page, code and pin taken apart).
        self._configured_url = link.base_url if link else None
        self._join_code = config.join_code or (link.join_code if link else None)
        self._ca_pin = config.ca_pin or (link.ca_pin if link else None)
        if self._configured_url and self._ca_pin:  # pinned: TLS on the same port
            self._configured_url = "https" + self._configured_url.removeprefix(
                "https").removeprefix("http")
        self.server_url: str | None = self._configured_url
        self._tls: tuple[str, ssl.SSLContext] | None = None  # (base URL, its context)
        self.server_name: str | None = None
        self.connected = asyncio.Event()
        self.welcome: Welcome | None = None
        #: This device's key on the server it paired with (``device.key``), once it has one.
        self.device_key: str | None = None
        #: False while the server waits for an operator to approve this device.
        self.paired = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._recorder: Recorder | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._upload_wanted = asyncio.Event()
        self._uploading = False
        self._uploader: Uploader | None = None
        # Built now, so that a bad configuration fails here rather than at the first retry.
        self._reconnect_retry = config.reconnect_retry
        self._upload_retry = config.upload_retry
        self._send_lock = asyncio.Lock()
        self._running = False
        #: Every ACK sent (tests and the CLI read them).
        self.acks: list[Ack] = []
        self.uploaded: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Agent:
        """Load (or create) the identity, recover interrupted recordings, connect."""
        if self._running:
            return self
        await asyncio.to_thread(self._load_identity)
        self.outbox = Outbox(self.state_dir / "outbox")
        config = self.config
        self._recorder = Recorder(
            spool_dir=self.state_dir / "spool", outbox=self.outbox, device_id=self.device_id,
            source=config.source, sample_rate=config.sample_rate, channels=config.channels,
            format=config.format, clock=self.clock, on_queued=self._announce,
            on_finished=lambda rec: self._upload_wanted.set())
        recovered = await asyncio.to_thread(self._recover)
        if recovered:
            log.warning("recovered %d interrupted recording(s): %s", len(recovered),
                        ", ".join(recovered))
        self._running = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._connection_loop()),
                       loop.create_task(self._upload_loop())]
        self._upload_wanted.set()
        return self

    async def stop(self) -> None:
        """Finish a recording in progress into the outbox, then disconnect (idempotent)."""
        if not self._running:
            return
        self._running = False
        if self._recorder is not None and self._recorder.recording:
            await self._recorder.finish()
        if self._uploader is not None:
            self._uploader.abort()  # its thread would otherwise hold up the exit
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._ws is not None:
            await self._ws.close()

    async def __aenter__(self) -> Agent:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _load_identity(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "device.json"
        stored: dict[str, Any] = {}
        if path.exists():
            stored = json.loads(path.read_text())
        device_id = self.config.device_id or stored.get("device_id")
        if device_id is None:
            device_id = f"dev-{socket.gethostname().split('.')[0][:20]}-{uuid.uuid4().hex[:8]}"
            device_id = "".join(c if c.isalnum() or c in "._-" else "-" for c in device_id)
        if not is_safe_id(device_id):
            raise ValueError(f"device id {device_id!r} is not a valid id")
        name = self.config.name or stored.get("name") or socket.gethostname().split(".")[0]
        if stored != {"device_id": device_id, "name": name}:
            durable.write_json_atomic(path, {"device_id": device_id, "name": name})
        self.device_id, self.name = device_id, name[:64]
        key_path = self.state_dir / KEY_FILE
        if key_path.exists():
            self.device_key = key_path.read_text(encoding="utf-8").strip() or None

    def _keep_key(self, key: str) -> None:
        """Keep the key the server handed out, readable by this user only."""
        durable.write_bytes_atomic(self.state_dir / KEY_FILE, (key + "\n").encode(), mode=0o600)
        self.device_key = key

    def _recover(self) -> list[str]:
        assert self.outbox is not None
        spool_dir = self.state_dir / "spool"
        spool_dir.mkdir(parents=True, exist_ok=True)
        out = []
        for rec in recover(spool_dir):
            # Whether the server was reachable while it was recorded is not known.
            self.outbox.add(rec, recorded_offline=False)
            out.append(rec.recording_id)
        return out

    # -- what it reports -------------------------------------------------------------------

    @property
    def state(self) -> AgentState:
        """IDLE, RECORDING, PAUSED or UPLOADING."""
        recorder = self._recorder
        if recorder is not None and recorder.recording:
            return AgentState.PAUSED if recorder.paused else AgentState.RECORDING
        return AgentState.UPLOADING if self._uploading else AgentState.IDLE

    @property
    def recording_id(self) -> str | None:
        """The recording in progress, if any."""
        return self._recorder.recording_id if self._recorder is not None else None

    @property
    def _last_finished(self) -> FinishedRecording | None:
        """The latest take finished (tests compare it with what the server stored)."""
        return self._recorder.last_finished if self._recorder is not None else None

    def _status(self) -> Status:
        recorder = self._recorder
        level, peak = recorder.take_levels() if recorder is not None else (None, None)
        pending = len(self.outbox) if self.outbox is not None else 0
        return Status(
            state=ClientState(self.state.value), level_dbfs=level, peak_dbfs=peak,
            battery=_battery(), free_bytes=_free_bytes(self.state_dir),
            pending_uploads=pending, recording_id=self.recording_id,
            elapsed_s=recorder.elapsed_s if recorder is not None else None,
        )

    # -- connection ------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        delays = self._reconnect_retry.delays()
        while self._running:
            failure = None
            try:
                await self._connect_and_serve()
                delays = self._reconnect_retry.delays()  # was connected: start over quickly
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = exc
            finally:
                self._disconnected()
            if not self._running:
                return
            delay = next(delays)  # jittered: devices that lost the server do not come as a herd
            if failure is not None:
                log.info("not connected (%s); retrying in %.1f s", short_reason(failure), delay)
            await asyncio.sleep(delay)

    async def _server_url(self) -> str:
        if self._configured_url is not None:
            return self._configured_url
        from ..discovery import find_servers

        found = await find_servers(3.0, name=self.config.server_name,
                                   interfaces=self.config.interfaces)
        if not found:
            wanted = f" named {self.config.server_name!r}" if self.config.server_name else ""
            raise ConnectionError(f"no vocalink server{wanted} found with mDNS")
        if found[0].ca_pin:
            self._ca_pin = found[0].ca_pin
        self.server_url = found[0].https_url or found[0].url
        return self.server_url

    async def _ssl_for(self, base: str) -> ssl.SSLContext | None:
        """The TLS context for ``base``: its pinned CA (fetched once), or the system's."""
        if not base.startswith("https:"):
            return None
        if self._tls is not None and self._tls[0] == base:
            return self._tls[1]
        if self._ca_pin is None:
            context = ssl.create_default_context()  # a server with a real certificate
        else:
            context = await asyncio.to_thread(fetch_pinned_ca, base, self._ca_pin)
        self._tls = (base, context)
        return context

    async def _connect_and_serve(self) -> None:
        base = await self._server_url()
        ws_url = "ws" + base[4:] + WS_PATH if base.startswith("http") else base
        async with connect(ws_url, open_timeout=5, close_timeout=1, max_size=1 << 20,
                           ssl=await self._ssl_for(base)) as ws:
            await ws.send(encode(Register(
                device_id=self.device_id, name=self.name, protocol=PROTOCOL_VERSION,
                platform=sys.platform[:64],
                capabilities=Capabilities(sample_rates=(self.config.sample_rate,),
                                          channels=(self.config.channels,), formats=FORMATS),
                token=self.device_key or self.config.token,
                join_code=None if self.device_key else self._join_code,
            )))
            welcome = decode(await asyncio.wait_for(ws.recv(), 10))
            if isinstance(welcome, Error):  # refused: the close that follows says why too
                raise ConnectionError(f"the server refused this device: {welcome.detail}")
            if not isinstance(welcome, Welcome):
                raise ConnectionError(f"expected WELCOME, got {welcome.type_name()}")
            self._ws, self.server_url = ws, base
            await self._welcomed(welcome)
            self.connected.set()
            log.info("connected to '%s' at %s as %s", welcome.server_name, base, self.device_id)
            await self._announce_pending()
            self._upload_wanted.set()
            status = asyncio.get_running_loop().create_task(self._status_loop())
            try:
                async for raw in ws:
                    await self._on_frame(raw)
            finally:
                status.cancel()

    async def _welcomed(self, welcome: Welcome) -> None:
        """Take in a WELCOME: the first on a connection, or the one an approval sends."""
        self.welcome, self.server_name = welcome, welcome.server_name
        if welcome.device_key:
            await asyncio.to_thread(self._keep_key, welcome.device_key)
            log.info("paired with '%s'; the device key is kept in %s", welcome.server_name,
                     self.state_dir / KEY_FILE)
        if welcome.paired:
            if not self.paired.is_set():
                self.paired.set()
                self._upload_wanted.set()
        else:
            self.paired.clear()
            log.warning("'%s' waits for an operator to approve this device (%s); or join "
                        "with a join code: vocalink device --join CODE",
                        welcome.server_name, self.device_id)

    def _disconnected(self) -> None:
        if self.connected.is_set():
            log.info("disconnected from the server")
        self.connected.clear()
        self.paired.clear()
        self._ws = None
        if self._recorder is not None:
            self._recorder.went_offline()  # part of a take in progress has no server

    async def _send(self, message: Message) -> None:
        ws = self._ws
        if ws is None:
            return  # offline: the state is reported again on reconnect
        with contextlib.suppress(WebSocketException, OSError):
            async with self._send_lock:
                await ws.send(encode(message))

    async def _status_loop(self) -> None:
        while True:
            await self._send(self._status())
            await asyncio.sleep(self.config.status_interval_s)

    async def _announce_pending(self) -> None:
        """Tell the server what waits in the outbox, saying what was recorded offline."""
        assert self.outbox is not None
        for item in await asyncio.to_thread(self.outbox.pending):
            await self._announce(item)

    async def _announce(self, item: OutboxItem) -> None:
        rec = item.recording
        await self._send(Recording(
            recording_id=rec.recording_id, take_id=rec.take_id,
            started_at=rec.started_at, sample_rate=rec.sample_rate,
            channels=rec.channels, frames=rec.frames, bytes=rec.bytes,
            sha256=rec.sha256, format=rec.format,
            offline=bool(item.extra.get("recorded_offline", False)),
            recovered=rec.recovered,
        ))

    async def _on_frame(self, raw: str | bytes) -> None:
        try:
            message = decode(raw)
        except ProtocolError as exc:
            log.warning("bad frame from the server: %s", exc)
            return
        if isinstance(message, Command):
            await self._on_command(message)
        elif isinstance(message, Sync) and message.t1 is None:
            t1 = self.clock.now()
            await self._send(Sync(id=message.id, t0=message.t0, t1=t1, t2=self.clock.now()))
        elif isinstance(message, Welcome):
            await self._welcomed(message)
        elif isinstance(message, Server):
            self.server_name = message.server_name
            log.info("server %s: %s", message.event.value, message.server_name)
        elif isinstance(message, Error):
            log.warning("server error %s: %s", message.code, message.detail)

    # -- commands --------------------------------------------------------------------------

    async def _on_command(self, command: Command) -> None:
        if command.targets is not None and self.device_id not in command.targets:
            return
        try:
            recording_id, started_at = await self._obey(command)
        except Refused as exc:
            await self._ack(command, AckStatus.FAILED, error=str(exc))
            return
        except Exception as exc:  # a bug or the disk: say so rather than stay silent
            log.exception("command %s failed", command.action.value)
            await self._ack(command, AckStatus.FAILED, error=short_reason(exc))
            return
        await self._ack(command, AckStatus.SUCCESS, recording_id=recording_id,
                        started_at=started_at)

    async def _ack(self, command: Command, status: AckStatus, *, error: str | None = None,
                   recording_id: str | None = None, started_at: float | None = None) -> None:
        ack = Ack(command_id=command.command_id, action=command.action,
                  device_id=self.device_id, status=status, error=error,
                  recording_id=recording_id, started_at=started_at)
        self.acks.append(ack)
        await self._send(ack)

    async def _obey(self, command: Command) -> tuple[str | None, float | None]:
        action = command.action
        assert self._recorder is not None
        if action is Action.START:
            return await self._recorder.start(command, offline=not self.connected.is_set())
        if action is Action.STOP:
            rec = await self._recorder.stop(command.take_id, command.start_at)
            return rec.recording_id, rec.started_at
        if action in (Action.PAUSE, Action.RESUME):
            return self._recorder.pause(action is Action.PAUSE), None
        return None, None  # PING, SYNC_NOW: an ACK is the answer

    # -- uploads ---------------------------------------------------------------------------

    async def _upload_loop(self) -> None:
        delays = self._upload_retry.delays()
        while True:
            await self._upload_wanted.wait()
            self._upload_wanted.clear()
            await self.connected.wait()
            await self.paired.wait()  # a pending device's uploads would be refused
            try:
                await self._upload_all()
                delays = self._upload_retry.delays()
            except UploadInterrupted as exc:
                if exc.progressed:  # the server is there and took bytes: go on at once
                    delays = self._upload_retry.delays()
                    log.info("upload interrupted (%s); resuming now", exc)
                else:
                    delay = next(delays)
                    log.info("upload interrupted (%s); resuming in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                self._upload_wanted.set()

    async def _upload_all(self) -> None:
        assert self.outbox is not None
        url = self.server_url
        if url is None:
            return
        uploader = self._uploader = Uploader(url, token=self.device_key or self.config.token,
                                             ssl_context=await self._ssl_for(url))
        for item in await asyncio.to_thread(self.outbox.pending):
            if item.extra.get("refused"):
                continue  # kept for a person to look at; never retried by itself
            self._uploading = True
            try:
                recording_id = await _in_own_thread(
                    f"vocalink-upload-{self.device_id}", uploader.upload, self.outbox, item)
                self.uploaded.append(recording_id)
            except UploadRefused as exc:
                log.error("the server refused %s: %s", item.recording_id, exc)
                await asyncio.to_thread(self.outbox.update, item, refused=True,
                                        last_error=str(exc))
            except UploadInterrupted as exc:
                await asyncio.to_thread(self.outbox.update, item, attempts=item.attempts + 1,
                                        last_error=str(exc))
                raise
            finally:
                self._uploading = False


async def _in_own_thread(name: str, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in a thread of its own, which ends with it.

    Not the loop's default executor: an upload blocks on the server, and a server on the
    same loop (a notebook simulating devices beside its own server) needs that executor
    to store what arrives; with more devices uploading than it has threads, the two would
    wait on each other until the uploads timed out.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():  # the caller was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _battery() -> float | None:
    """Battery charge 0-1 where the platform tells it (Linux sysfs), else ``None``."""
    for supply in Path("/sys/class/power_supply").glob("*"):
        try:
            if (supply / "type").read_text().strip() == "Battery":
                return min(1.0, int((supply / "capacity").read_text()) / 100)
        except (OSError, ValueError):
            continue
    return None
