"""The device agent: one recording device, connected to a vocalink server when it can be.

Three things run side by side on one asyncio loop, and each goes on when the others
stop: the connection (REGISTER, commands, ACKs, STATUS once a second, reconnecting
with backoff and jitter), the recorder (source -> crash-safe spool -> outbox), and the
uploader (outbox -> tus, resumed after any interruption). A take that starts while
connected keeps recording when the server goes away; its file waits in the outbox,
on disk, until the server confirms it stored the same bytes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
import logging
import math
import random
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from ..errors import ProtocolError
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
from .clock import DeviceClock
from .outbox import Outbox, OutboxItem
from .sources import NoMicrophone, Source, make_source
from .spool import FinishedRecording, SpoolWriter, recover
from .uploader import Uploader, UploadInterrupted, UploadRefused

__all__ = ["Agent", "AgentConfig", "AgentState"]

log = logging.getLogger(__name__)

WS_PATH = "/ws/control"
FORMATS = ("wav", "flac")
_FLOOR_DBFS = -120.0


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
        ``http://host:port`` of the server; ``None`` to find one with mDNS.
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


class _Take:
    """One recording in progress."""

    def __init__(self, *, source: Source, spool: SpoolWriter, command: Command,
                 max_frames: int | None, offline: bool) -> None:
        self.source = source
        self.spool = spool
        self.command = command
        self.max_frames = max_frames
        self.offline = offline
        self.paused = False
        self.stop = asyncio.Event()
        self.task: asyncio.Task[FinishedRecording] | None = None
        self.started_mono = time.monotonic()


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
        self.server_url: str | None = config.server_url
        self.server_name: str | None = None
        self.connected = asyncio.Event()
        self.welcome: Welcome | None = None
        self._ws: ClientConnection | None = None
        self._take: _Take | None = None
        self._last_finished: FinishedRecording | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._upload_wanted = asyncio.Event()
        self._uploading = False
        self._uploader: Uploader | None = None
        #: (sum of squares, samples, peak) of the latest blocks, for STATUS.
        self._levels: collections.deque[tuple[float, int, float]] = collections.deque(maxlen=64)
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
        if self._take is not None:
            await self._finish_take()
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
            temp = path.with_suffix(".tmp")
            temp.write_text(json.dumps({"device_id": device_id, "name": name}))
            temp.replace(path)
        self.device_id, self.name = device_id, name[:64]

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
        if self._take is not None:
            return AgentState.PAUSED if self._take.paused else AgentState.RECORDING
        return AgentState.UPLOADING if self._uploading else AgentState.IDLE

    @property
    def recording_id(self) -> str | None:
        """The recording in progress, if any."""
        return self._take.spool.recording_id if self._take is not None else None

    def _status(self) -> Status:
        level = peak = None
        if self._levels:
            sumsq = sum(x[0] for x in self._levels)
            count = sum(x[1] for x in self._levels)
            level = _dbfs(math.sqrt(sumsq / max(count, 1)))
            peak = _dbfs(max(x[2] for x in self._levels))
            self._levels.clear()
        take = self._take
        pending = len(self.outbox) if self.outbox is not None else 0
        return Status(
            state=ClientState(self.state.value), level_dbfs=level, peak_dbfs=peak,
            battery=_battery(), free_bytes=_free_bytes(self.state_dir),
            pending_uploads=pending, recording_id=self.recording_id,
            elapsed_s=(take.spool.duration_s if take is not None else None),
        )

    # -- connection ------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        delay = self.config.reconnect_min_s
        while self._running:
            try:
                await self._connect_and_serve()
                delay = self.config.reconnect_min_s  # was connected: start over quickly
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("not connected (%s); retrying in about %.1f s", _short(exc), delay)
            finally:
                self._disconnected()
            if not self._running:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # jitter: no herd
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _server_url(self) -> str:
        if self.config.server_url is not None:
            return self.config.server_url.rstrip("/")
        from ..discovery import find_servers

        found = await find_servers(3.0, name=self.config.server_name,
                                   interfaces=self.config.interfaces)
        if not found:
            wanted = f" named {self.config.server_name!r}" if self.config.server_name else ""
            raise ConnectionError(f"no vocalink server{wanted} found with mDNS")
        self.server_url = found[0].url
        return found[0].url

    async def _connect_and_serve(self) -> None:
        base = await self._server_url()
        ws_url = "ws" + base[4:] + WS_PATH if base.startswith("http") else base
        async with connect(ws_url, open_timeout=5, close_timeout=1,
                           max_size=1 << 20) as ws:
            await ws.send(encode(Register(
                device_id=self.device_id, name=self.name, protocol=PROTOCOL_VERSION,
                platform=sys.platform[:64],
                capabilities=Capabilities(sample_rates=(self.config.sample_rate,),
                                          channels=(self.config.channels,), formats=FORMATS),
            )))
            welcome = decode(await asyncio.wait_for(ws.recv(), 10))
            if not isinstance(welcome, Welcome):
                raise ConnectionError(f"expected WELCOME, got {welcome.type_name()}")
            self._ws, self.welcome, self.server_name = ws, welcome, welcome.server_name
            self.server_url = base
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

    def _disconnected(self) -> None:
        if self.connected.is_set():
            log.info("disconnected from the server")
        self.connected.clear()
        self._ws = None
        if self._take is not None:
            self._take.offline = True  # part of this take is recorded with no server

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
        await self._send(Recording(
            recording_id=item.recording_id, take_id=item.take_id,
            started_at=item.started_at, sample_rate=item.sample_rate,
            channels=item.channels, frames=item.frames, bytes=item.bytes,
            sha256=item.sha256, format=item.format,
            offline=bool(item.extra.get("recorded_offline", False)),
            recovered=item.recovered,
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
        except _Refused as exc:
            await self._ack(command, AckStatus.FAILED, error=str(exc))
            return
        except Exception as exc:  # a bug or the disk: say so rather than stay silent
            log.exception("command %s failed", command.action.value)
            await self._ack(command, AckStatus.FAILED, error=_short(exc))
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
        if action is Action.START:
            return await self._start_take(command)
        if action is Action.STOP:
            if self._take is None:
                last = self._last_finished
                if last is not None and command.take_id in (None, last.take_id):
                    return last.recording_id, last.started_at  # it stopped by itself
                raise _Refused("not recording")
            current = self._take
            began = current.spool.started_at
            if command.start_at is not None and began is not None:
                # Stop at that instant, to the sample: the take's length is set.
                rate = current.source.sample_rate
                frames = max(0, round((command.start_at - began) * rate))
                current.max_frames = min(current.max_frames or frames, frames)
                assert current.task is not None
                rec = await asyncio.shield(current.task)
            else:
                rec = await self._finish_take()
            return rec.recording_id, rec.started_at
        if action in (Action.PAUSE, Action.RESUME):
            take = self._take
            if take is None:
                raise _Refused("not recording")
            pause = action is Action.PAUSE
            if take.paused == pause:
                raise _Refused("already paused" if pause else "not paused")
            take.paused = pause
            return take.spool.recording_id, None
        return None, None  # PING, SYNC_NOW: an ACK is the answer

    async def _start_take(self, command: Command) -> tuple[str, float]:
        if self._take is not None:
            raise _Refused(f"already recording {self._take.spool.recording_id}")
        params = command.params
        fmt = (params.format or self.config.format).lower()
        if fmt not in FORMATS:
            raise _Refused(f"format {fmt!r} is not supported (use {' or '.join(FORMATS)})")
        rate = params.sample_rate or self.config.sample_rate
        channels = params.channels or self.config.channels
        try:
            source = make_source(self.config.source, sample_rate=rate, channels=channels,
                                 clock=self.clock)
            await source.open()
        except NoMicrophone as exc:
            raise _Refused(f"no microphone: {exc}") from None
        except (ValueError, OSError) as exc:
            raise _Refused(f"cannot open the source: {_short(exc)}") from None
        recording_id = f"rec-{uuid.uuid4().hex[:20]}"
        try:
            samples, started_at = await _first_samples(source, command.start_at)
            spool = SpoolWriter(self.state_dir / "spool" / f"{recording_id}.wav",
                                source.sample_rate, source.channels, recording_id=recording_id,
                                take_id=command.take_id, device_id=self.device_id,
                                started_at=started_at, format=fmt)
            await spool.open()
        except (OSError, EOFError) as exc:
            await source.close()
            raise _Refused(f"cannot record: {_short(exc)}") from None
        max_frames = (round(params.duration_s * source.sample_rate)
                      if params.duration_s is not None else None)
        take = _Take(source=source, spool=spool, command=command, max_frames=max_frames,
                     offline=not self.connected.is_set())
        self._take = take
        await self._write(take, samples)
        take.task = asyncio.get_running_loop().create_task(self._record(take))
        take.task.add_done_callback(self._take_ended)
        late = "" if command.start_at is None else (
            f", {max(0.0, started_at - command.start_at) * 1000:.1f} ms after the set instant")
        log.info("recording %s (take %s)%s", recording_id, command.take_id, late)
        return recording_id, started_at

    async def _write(self, take: _Take, samples: np.ndarray) -> bool:
        """Write a block (cut at the take's length); False once the take is long enough."""
        if take.max_frames is not None:
            samples = samples[: max(take.max_frames - take.spool.frames, 0)]
        if len(samples):
            await take.spool.write(samples)
            block = np.asarray(samples, dtype=np.float64)
            self._levels.append((float(np.sum(block * block)), block.size,
                                 float(np.max(np.abs(block)))))
        return take.max_frames is None or take.spool.frames < take.max_frames

    async def _record(self, take: _Take) -> FinishedRecording:
        try:
            while not take.stop.is_set():
                if take.max_frames is not None and take.spool.frames >= take.max_frames:
                    break  # long enough (also while paused: a scheduled STOP still ends it)
                reader = asyncio.ensure_future(take.source.read())
                stopper = asyncio.ensure_future(take.stop.wait())
                done, _ = await asyncio.wait({reader, stopper},
                                             return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if reader not in done:
                    reader.cancel()
                    break
                block = reader.result()
                if not take.paused and not await self._write(take, block.samples):
                    break  # the START's duration is reached: the local rule stops it
        finally:
            await take.source.close()
        rec = await take.spool.finalize()
        assert self.outbox is not None
        item = await asyncio.to_thread(self.outbox.add, rec, recorded_offline=take.offline)
        await self._announce(item)
        return rec

    def _take_ended(self, task: asyncio.Task[FinishedRecording]) -> None:
        take = self._take
        if take is None or take.task is not task:
            return
        self._take = None
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("recording failed: %s", task.exception())
            return
        self._last_finished = task.result()
        self._upload_wanted.set()

    async def _finish_take(self) -> FinishedRecording:
        take = self._take
        assert take is not None and take.task is not None
        take.stop.set()
        return await asyncio.shield(take.task)

    # -- uploads ---------------------------------------------------------------------------

    async def _upload_loop(self) -> None:
        delay = 0.5
        while True:
            await self._upload_wanted.wait()
            self._upload_wanted.clear()
            await self.connected.wait()
            try:
                await self._upload_all()
                delay = 0.5
            except UploadInterrupted as exc:
                if exc.progressed:  # the server is there and took bytes: go on at once
                    delay = 0.5
                    log.info("upload interrupted (%s); resuming now", exc)
                else:
                    log.info("upload interrupted (%s); resuming in about %.1f s", exc, delay)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, self.config.upload_retry_max_s)
                self._upload_wanted.set()

    async def _upload_all(self) -> None:
        assert self.outbox is not None
        url = self.server_url
        if url is None:
            return
        uploader = self._uploader = Uploader(url)
        for item in await asyncio.to_thread(self.outbox.pending):
            if item.extra.get("refused"):
                continue  # kept for a person to look at; never retried by itself
            self._uploading = True
            try:
                recording_id = await asyncio.to_thread(uploader.upload, self.outbox, item)
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


async def _first_samples(source: Source, start_at: float | None) -> tuple[np.ndarray, float]:
    """The first samples of a take and the device-clock instant of the first one.

    With ``start_at`` (device clock) the take begins at the sample nearest to it: blocks
    before it are dropped and the block that spans it is cut. A START that arrives late
    starts at once (its ACK's ``started_at`` shows by how much).
    """
    block = await source.read()
    if start_at is None:
        return block.samples, block.t0
    rate = source.sample_rate
    while block.t0 + block.frames / rate <= start_at:
        block = await source.read()
    skip = min(max(0, round((start_at - block.t0) * rate)), block.frames - 1)
    return block.samples[skip:], block.t0 + skip / rate


class _Refused(Exception):
    """A command the agent cannot obey now; the reason goes into the FAILED ACK."""


def _dbfs(amplitude: float) -> float:
    return max(_FLOOR_DBFS, 20 * math.log10(amplitude)) if amplitude > 0 else _FLOOR_DBFS


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


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
