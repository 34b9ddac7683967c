"""`Lab`: the notebook facade. One object holds a server and everything a researcher does with it.

``lab = await Lab.start()`` runs the server on the kernel's own event loop (with
mDNS) — or, when another kernel already runs one on the same data dir (Voila
starts a kernel per visitor), attaches to it. ``vl.connect(url)`` attaches to a
server run elsewhere (``vocalink serve``). Either way the Lab talks to the
server through one `Client` (REST + ``/ws/events``), so every method behaves the
same in both cases, and keeps a live mirror of devices, recordings, takes and jobs
from the server's events: ``lab.devices`` and friends are DataFrames read from it
without a round trip, and the widgets redraw from the same events, on the loop.

Why one module of about 700 lines: the `Lab` is the one object a researcher types,
and its methods are that vocabulary, each thin over `Client` and the mirror; most of
the length is their numpydoc. Split, a reader would chase one facade through several
files. What is not the facade (errors in IPython) is small and serves only it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import durable
from .client import Client
from .config import Settings
from .datadir import DataDirLock
from .errors import (
    DeviceNotFound,
    InvalidParameter,
    TakeNotFound,
    VocalinkError,
    WaitTimeout,
    from_shape,
)
from .protocol.events import JobState, Topic
from .retry import RetryPolicy

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from .server import Server

__all__ = ["Lab", "connect", "show_errors_briefly"]

log = logging.getLogger(__name__)

#: Following the server's events again after losing them: soon, then at most every 5 s.
EVENTS_RETRY = RetryPolicy(initial_s=0.2, maximum_s=5.0, jitter=0.2)
Listener = Callable[[str, Mapping[str, Any]], object]

#: How long `Lab.start` waits for the server another process is starting on the data dir
#: (``vocalink dashboard`` starts its page's kernels while its own server starts).
STARTING_WAIT_S = 60.0

_DEVICE_COLUMNS = ["device_id", "name", "platform", "state", "connected", "level_dbfs", "peak_dbfs",
                   "battery", "pending_uploads", "clock_offset_ms", "clock_rtt_ms",
                   "clock_uncertainty_ms", "last_command", "last_seen"]
_RECORDING_COLUMNS = ["id", "kind", "take_id", "device_name", "device_id", "duration_s",
                      "sample_rate", "channels", "format", "bytes", "started_at",
                      "created_at", "parents"]
_TAKE_COLUMNS = ["id", "name", "started_at", "stopped_at", "devices", "recordings",
                 "skew_ms", "skew_bound_ms", "sync_flag", "transcript", "notes"]


#: A transcript's columns (`Lab.transcript`).
_TRANSCRIPT_COLUMNS = ("start", "end", "device", "text", "confidence", "device_id",
                       "recording_id")


def _one_subject(recording_id: str | None, take_id: str | None) -> None:
    if (recording_id is None) == (take_id is None):
        raise InvalidParameter("give either a recording id or take_id=...")


class Lab:
    """A vocalink server as a notebook sees it. Make one with `Lab.start` or `connect`.

    Attributes
    ----------
    client : Client
        The server's API.
    server : Server or None
        The server object when this kernel runs it; None when attached.
    data_dir : Path or None
        The data dir when the files are on this machine (read directly, not downloaded).
    """

    _running: dict[Path, Lab] = {}

    def __init__(self, client: Client, *, server: Server | None = None,
                 data_dir: Path | None = None, lock: DataDirLock | None = None) -> None:
        self.client = client
        self.server = server
        self.data_dir = data_dir
        self._lock = lock
        self._devices: dict[str, dict[str, Any]] = {}
        self._recordings: dict[str, dict[str, Any]] = {}
        self._takes: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, dict[str, Any]] = {}
        self._info: dict[str, Any] = {}
        self._listeners: list[tuple[frozenset[str] | None, Listener]] = []
        self._pump: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        #: Set once the recordings are read too (`start` with ``recordings_later``).
        self._complete = asyncio.Event()
        self._recordings_later = False
        #: Recording events that arrive while the list is being read, applied after it.
        self._held: list[Mapping[str, Any]] | None = None
        self._listing: asyncio.Task[None] | None = None
        self._cache_dir: Path | None = None
        self._takes_refresh: asyncio.Task[None] | None = None

    # -- making and ending a lab ---------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        name: str | None = None,
        *,
        port: int | None = None,
        data_dir: Path | str | None = None,
        host: str | None = None,
        advertise: bool | None = None,
        interfaces: Sequence[str] | None = None,
        settings: Settings | None = None,
        executor: Executor | None = None,
        token: str | None = None,
        lock: DataDirLock | None = None,
        follow: bool = True,
        recordings_later: bool = False,
    ) -> Lab:
        """Start a server on this kernel's loop, or attach to the one running on ``data_dir``.

        Idempotent: a second call for the same data dir returns the same Lab. Every
        argument left out comes from ``settings``, which default to the ``VOCALINK_*``
        environment variables (`Settings.from_env`), then the defaults.

        Parameters
        ----------
        name : str, optional
            The server name devices see (the stored one, or a default, otherwise).
        port : int, optional
            TCP port (0 picks a free one).
        data_dir : path, optional
            Where the catalog and recordings live.
        host : str, optional
            Address to listen on (all interfaces by default, so phones can reach it).
        advertise : bool, optional
            Announce the server with mDNS.
        interfaces : sequence of str, optional
            Interfaces (names or addresses) to advertise on; all by default.
        settings : Settings, optional
            Every other setting; the arguments above override it.
        executor : concurrent.futures.Executor, optional
            Where enhance and merge jobs run (a process pool by default).
        token : str, optional
            The controller token (by default ``VOCALINK_TOKEN``, else the one kept in the
            data dir, made on first start); ``lab.token`` tells it.
        lock : DataDirLock, optional
            The data dir's lock, already taken by this process: serve, do not attach
            (``vocalink dashboard`` takes it before it starts the page's kernels, which
            then wait for this server and attach to it).
        follow : bool
            Keep the live mirror of devices, recordings and takes (the lists, the
            DataFrames, the panels read it). False: read the server's info only, and
            keep those lists empty; for a process that serves and shows nothing
            (``vocalink dashboard``: its pages' kernels follow the server themselves),
            which then spares itself reading the whole catalog at start.
        recordings_later : bool
            Return once the devices, takes and the server's info are read; the
            recordings (thousands, on a big catalog) follow in the background, then
            a ``lab.refreshed`` notice (the dashboard's panels redraw on it). By
            default, and for any later call without it, `start` returns with all of them.

        Returns
        -------
        Lab
            Serving here (``lab.server`` is the `Server`), or attached to the server that
            another process runs on the same data dir.
        """
        base = settings or Settings.from_env()
        root = Path(data_dir if data_dir is not None else base.data_dir).expanduser().resolve()
        existing = cls._running.get(root)
        if existing is not None:
            if name is not None and name != existing.name:
                await existing.rename(name)
            if not recordings_later and existing._pump is not None:
                await asyncio.wait_for(existing._complete.wait(), 60)
            return existing
        if lock is None:
            lock = DataDirLock(root)
            holder = await _claim(lock, root)
        elif lock.path.parent != root:
            raise VocalinkError(f"the lock given is {lock.path}'s, not {root}'s")
        else:
            holder = None
        if holder is not None:
            lab = await cls._attach(holder["url"], data_dir=root, token=token, follow=follow,
                                    recordings_later=recordings_later)
            log.info("attached to the server of pid %s at %s", holder.get("pid"), lab.url)
            cls._running[root] = lab
            show_errors_briefly()
            return lab
        overrides: dict[str, Any] = {"data_dir": root}
        for key, value in (("port", port), ("host", host), ("advertise", advertise)):
            if value is not None:
                overrides[key] = value
        if name is not None:
            overrides["name"] = name
        if token is not None:
            overrides["token"] = token
        if interfaces is not None:
            overrides["interfaces"] = tuple(interfaces)
        try:
            from .server import Server  # not for a kernel that attaches

            server = Server(base.replace(**overrides), executor=executor)
        except BaseException:
            lock.release()  # a bad setting: the next try takes the lock again
            raise
        try:
            await server.start()
            lock.publish(url=server.url, name=server.name)
            lab = cls(Client(server.url, token=server.token), server=server, data_dir=root,
                      lock=lock)
            lab._recordings_later = recordings_later
            await (lab._follow() if follow else lab._read_info())
        except BaseException:
            await server.stop()
            lock.release()
            raise
        cls._running[root] = lab
        show_errors_briefly()
        return lab

    @classmethod
    async def _attach(cls, url: str, *, data_dir: Path | None = None,
                      token: str | None = None, follow: bool = True,
                      recordings_later: bool = False) -> Lab:
        client = Client(url, token=token, data_dir=data_dir)
        try:
            info = await client.info()
        except VocalinkError:
            client.close()
            raise
        local = Path(info["data_dir"]) if info.get("data_dir") else None
        if data_dir is None and local is not None and local.is_dir():
            data_dir = local  # the same machine: read files in place
        lab = cls(client, data_dir=data_dir)
        lab._recordings_later = recordings_later
        if follow:
            await lab._follow()
        else:
            lab._info = _local_pairing(info)
        return lab

    async def stop(self) -> None:
        """Stop following the server; stop the server too if this kernel runs it."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        if self._listing is not None:
            self._listing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listing
        if self.server is not None:
            await self.server.stop()
        if self._lock is not None:
            self._lock.release()
        self.client.close()
        for root, lab in list(self._running.items()):
            if lab is self:
                del self._running[root]

    async def __aenter__(self) -> Lab:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the live mirror ----------------------------------------------------------------------

    async def _follow(self) -> None:
        """Read the state once, then keep it current from ``/ws/events``."""
        self._pump = asyncio.get_running_loop().create_task(self._pump_events())
        await asyncio.wait_for(self._connected.wait(), 30)

    async def _read_info(self) -> None:
        """The server's info only (a Lab that does not follow the server)."""
        self._info = _local_pairing(await self.client.info())

    async def refresh(self) -> None:
        """Read devices, recordings, takes and the server's info again from the server."""
        await self._read_state(recordings=True)

    async def _read_state(self, *, recordings: bool) -> None:
        info, devices, takes, *listing = await asyncio.gather(
            self.client.info(), self.client.devices(), self.client.takes(),
            *([self.client.recordings()] if recordings else []))
        self._info = _local_pairing(info)
        self._devices = {d["device_id"]: d for d in devices}
        if listing:
            self._recordings = {r["id"]: r for r in listing[0]}
            self._complete.set()
        self._takes = {t["id"]: t for t in takes}
        self._notify(Topic.LAB_REFRESHED, {})

    async def _read_recordings(self, stream: Any) -> None:
        """The recordings, read while events flow; those about recordings wait for it."""
        try:
            rows = await self.client.recordings()
        except (OSError, VocalinkError) as exc:
            log.debug("recordings: %s; reading the state again", exc)
            stream.close()  # the pump starts over
            return
        self._recordings = {r["id"]: r for r in rows}
        held, self._held = self._held or [], None
        for event in held:
            self._apply(event)
        self._complete.set()
        self._notify(Topic.LAB_REFRESHED, {})

    async def _pump_events(self) -> None:
        delays = EVENTS_RETRY.delays()
        while True:
            stream = None
            try:
                stream = await self.client.open_events()
                if self._recordings_later:
                    await self._read_state(recordings=False)
                    self._held = []
                    self._listing = asyncio.get_running_loop().create_task(
                        self._read_recordings(stream))
                else:
                    await self.refresh()
                self._connected.set()
                delays = EVENTS_RETRY.delays()  # connected: the next loss starts over
                async for event in stream:
                    self._apply(event)
                self._notify(Topic.LAB_DISCONNECTED, {})
            except (OSError, VocalinkError) as exc:
                log.debug("events: %s; retrying", exc)
            finally:
                if stream is not None:
                    stream.close()
                if self._listing is not None and not self._listing.done():
                    self._listing.cancel()  # read again with the next stream
                    self._held = None
            await asyncio.sleep(next(delays))

    def _apply(self, event: Mapping[str, Any]) -> None:
        try:
            topic = Topic(str(event.get("topic")))
        except ValueError:  # a newer server's topic: listeners may still want it
            self._notify(str(event.get("topic")), event.get("data") or {})
            return
        if self._held is not None and topic in (Topic.RECORDING_ADDED, Topic.RECORDING_DELETED):
            self._held.append(event)  # applied over the list being read, not under it
            return
        data = event.get("data") or {}
        if topic is Topic.DEVICE_REMOVED:
            self._devices.pop(str(data.get("device_id")), None)
        elif topic.family == "device":
            device = data.get("device")
            if device:
                self._devices[device["device_id"]] = device
        elif topic is Topic.RECORDING_ADDED:
            self._recordings[data["recording"]["id"]] = data["recording"]
            if data["recording"].get("take_id"):
                self._schedule_takes_refresh()  # its take's skew report changed
        elif topic is Topic.RECORDING_DELETED:
            self._recordings.pop(data["recording"]["id"], None)
            if data["recording"].get("take_id"):
                self._schedule_takes_refresh()
        elif topic is Topic.JOB_UPDATED:
            self._jobs[data["job"]["id"]] = data["job"]
        elif topic is Topic.SERVER_RENAMED:
            self._info["name"] = data.get("name")
        elif topic is Topic.SERVER_DISCOVERY:
            self._info["discovery"] = data.get("discovery") or {}
        elif topic is Topic.SERVER_PAIRING:
            self._info["pairing"] = _local_pairing({"pairing": data.get("pairing")})["pairing"]
        elif topic.family == "take":
            self._schedule_takes_refresh()
        self._notify(topic, data)

    def _schedule_takes_refresh(self) -> None:
        """Takes come from the catalog (written just after the event): re-read them shortly."""
        if self._takes_refresh is not None and not self._takes_refresh.done():
            return

        async def refresh() -> None:
            await asyncio.sleep(0.05)
            with contextlib.suppress(VocalinkError, OSError):
                self._takes = {t["id"]: t for t in await self.client.takes()}
                self._notify(Topic.LAB_TAKES, {})

        self._takes_refresh = asyncio.get_running_loop().create_task(refresh())

    def on(self, topics: str | Iterable[str] | None, callback: Listener) -> Callable[[], None]:
        """Call ``callback(topic, data)`` on the loop for the server's events (and ``lab.*``).

        Returns a function that unsubscribes.
        """
        wanted = None if topics is None else frozenset(
            [topics] if isinstance(topics, str) else topics)
        entry = (wanted, callback)
        self._listeners.append(entry)

        def off() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)
        return off

    def _notify(self, topic: str, data: Mapping[str, Any]) -> None:
        for wanted, callback in list(self._listeners):
            if wanted is None or topic in wanted:
                try:
                    callback(topic, data)
                except Exception:
                    log.exception("listener %r failed on %s", callback, topic)

    # -- what there is ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.client.url

    @property
    def name(self) -> str:
        """The server name devices see."""
        return str(self._info.get("name", ""))

    @property
    def attached(self) -> bool:
        """True when another process runs the server."""
        return self.server is None

    @property
    def info(self) -> dict[str, Any]:
        """The server's ``/api/server`` answer, as last read."""
        return dict(self._info)

    def device_list(self) -> list[dict[str, Any]]:
        """Devices as dicts, connected first, then by name."""
        return sorted(self._devices.values(),
                      key=lambda d: (not d.get("connected"), str(d.get("name")).lower()))

    def recording_list(self) -> list[dict[str, Any]]:
        """Recordings as dicts, newest first."""
        return sorted(self._recordings.values(), key=lambda r: (-r["created_at"], r["id"]))

    def take_list(self) -> list[dict[str, Any]]:
        """Takes as dicts, newest first."""
        return sorted(self._takes.values(), key=lambda t: -(t.get("started_at") or 0))

    def job_list(self) -> list[dict[str, Any]]:
        """Jobs seen since this Lab started, newest first."""
        return sorted(self._jobs.values(), key=lambda j: -j["created_at"])

    @property
    def devices(self) -> pd.DataFrame:
        """Every device as a DataFrame (one row each; live)."""
        import pandas as pd

        rows = []
        for d in self.device_list():
            clock = d.get("clock") or {}
            last = d.get("last_command") or {}
            rows.append({**{k: d.get(k) for k in _DEVICE_COLUMNS},
                         "clock_offset_ms": _ms(clock.get("offset_s")),
                         "clock_rtt_ms": _ms(clock.get("rtt_s")),
                         "clock_uncertainty_ms": _ms(clock.get("uncertainty_s")),
                         "last_command": (f"{last.get('action')} {last.get('status')}"
                                          if last else None)})
        return pd.DataFrame(rows, columns=_DEVICE_COLUMNS).set_index("device_id")

    @property
    def recordings(self) -> pd.DataFrame:
        """Every recording as a DataFrame, newest first (live)."""
        import pandas as pd

        rows = [{k: r.get(k) for k in _RECORDING_COLUMNS} for r in self.recording_list()]
        frame = pd.DataFrame(rows, columns=_RECORDING_COLUMNS)
        for column in ("started_at", "created_at"):
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame.set_index("id")

    @property
    def takes(self) -> pd.DataFrame:
        """Every take as a DataFrame, newest first (live).

        ``skew_ms`` is how far apart its devices started, ``skew_bound_ms`` the most it
        may be given their clocks' uncertainty, and ``sync_flag`` says why a take wants
        `align` before sample-accurate use (its bound is over 0.5 ms, or a clock
        was not measured); empty for a take started in step. ``transcript`` is how many
        lines its transcript has (empty until `transcribe` made one).
        """
        import pandas as pd

        rows = []
        for take in self.take_list():
            skew = take.get("skew") or {}
            rows.append({**{k: take.get(k) for k in _TAKE_COLUMNS},
                         "skew_ms": skew.get("skew_ms"), "skew_bound_ms": skew.get("bound_ms"),
                         "sync_flag": skew.get("flag") or "",
                         "transcript": (take.get("transcript") or {}).get("segments")})
        frame = pd.DataFrame(rows, columns=_TAKE_COLUMNS)
        for column in ("started_at", "stopped_at"):
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame.set_index("id")

    # -- doing things -----------------------------------------------------------------------------

    async def start_recording(self, targets: Sequence[str] | None = None, *,
                              lead_ms: float | None = None, **params: Any) -> dict[str, Any]:
        """Start recording on every device (or ``targets``), all at the same instant.

        Parameters
        ----------
        targets : sequence of str, optional
            Device ids; every connected device by default.
        lead_ms : float, optional
            How far ahead the shared start instant is (chosen from round trips by default).
        **params
            ``sample_rate``, ``channels``, ``format``, ``duration_s``.

        Returns
        -------
        dict
            The command: ``take_id``, ``start_at`` and every target's outcome.
        """
        return await self._command("START", targets, lead_ms=lead_ms, params=params)

    async def stop_recording(self, targets: Sequence[str] | None = None) -> dict[str, Any]:
        """Stop recording (the same instant on every device); the files upload by themselves."""
        return await self._command("STOP", targets)

    async def pause(self, targets: Sequence[str] | None = None) -> dict[str, Any]:
        """Pause recording."""
        return await self._command("PAUSE", targets)

    async def resume(self, targets: Sequence[str] | None = None) -> dict[str, Any]:
        """Resume a paused recording."""
        return await self._command("RESUME", targets)

    async def _command(self, action: str, targets: Sequence[str] | None, **kw: Any
                       ) -> dict[str, Any]:
        if targets is not None:
            targets = [targets] if isinstance(targets, str) else list(targets)
            unknown = [t for t in targets if t not in self._devices]
            if unknown:
                raise DeviceNotFound(f"no device {', '.join(map(repr, unknown))}; known: "
                               f"{', '.join(self._devices) or 'none yet'}")
        return await self.client.command(action, targets, **kw)

    # -- pairing -----------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        """The controller token this Lab sends (``None``: the server is open)."""
        return self.client.token

    def browser_url(self, path: str) -> str:
        """A URL of the server for a browser: ``path`` with ``?token=`` when one is needed.

        The server answers a token in a URL with its cookie, so a download link in a
        page works on its own. The page showing it is behind the same token.

        Parameters
        ----------
        path : str
            ``/api/...``, with a query or without.

        Returns
        -------
        str
        """
        url = f"{self.url}{path}"
        token = self.token
        joiner = "&" if "?" in path else "?"
        return url if not token else f"{url}{joiner}{urllib.parse.urlencode({'token': token})}"

    @property
    def pairing(self) -> dict[str, Any]:
        """Whether devices must pair, the join code, and who waits for approval."""
        return dict(self._info.get("pairing") or {})

    @property
    def join_code(self) -> str | None:
        """The current join code: ``vocalink device --join CODE`` pairs a device with it."""
        return self.pairing.get("join_code")

    async def approve(self, device_id: str) -> dict[str, Any]:
        """Let a pending device in: it gets its device key and, from now on, commands.

        Raises
        ------
        DeviceNotFound
            No such device (a pending device that left is forgotten).
        """
        device = await self.client.approve(device_id)
        self._devices[device["device_id"]] = device
        await self._refresh_pairing()
        return device

    async def reject(self, device_id: str) -> None:
        """Refuse a pending device, or unpair a paired one.

        It is disconnected, forgotten, and refused until it joins again with a join code.
        """
        await self.client.reject(device_id)
        self._devices.pop(device_id, None)
        await self._refresh_pairing()

    async def new_join_code(self) -> str:
        """Replace the join code (the old one stops working at once); return the new one."""
        await self._refresh_pairing(new_code=True)
        return str(self.join_code)

    async def _refresh_pairing(self, *, new_code: bool = False) -> None:
        status = await self.client.pairing(new_code=new_code)
        self._info["pairing"] = _local_pairing({"pairing": status})["pairing"]
        self._notify(Topic.LAB_REFRESHED, {})

    async def rename(self, name: str) -> str:
        """Rename the server live (mDNS re-registers); returns the name in use."""
        info = await self.client.rename(name)
        self._info = _local_pairing(info)
        self._notify(Topic.SERVER_RENAMED, {"name": info["name"]})
        return str(info["name"])

    async def wait_for_devices(self, n: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` devices are connected; return them."""
        return await _wait_for(
            lambda: [d for d in self.device_list() if d.get("connected")], n, timeout_s,
            lambda got: f"only {got} of {n} devices connected after {timeout_s:g} s")

    async def wait_for_recordings(self, take_id: str, n: int,
                                  timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Wait until ``n`` original recordings of a take are stored; return them."""
        return await _wait_for(
            lambda: [r for r in self.recording_list()
                     if r.get("take_id") == take_id and r.get("kind") == "original"],
            n, timeout_s,
            lambda got: (f"{got} of {n} recordings of take {take_id} arrived within "
                         f"{timeout_s:g} s"))

    async def submit_enhance(self, recording_id: str, preset: str | None = "auto", *,
                             format: str = "flac", **params: Any) -> dict[str, Any]:
        """Start enhancing a recording into a new one, and return at once with the job.

        The job runs off the event loop; its ``job.updated`` events keep `job_list`
        current, and `wait_job` follows it to its end.

        Parameters
        ----------
        recording_id : str
        preset : str, optional
            ``auto``, ``speech``, ``gentle``, ``strong``, ``hum``...
        format : {"flac", "wav"}
        **params
            Overrides of the preset's parameters (``prop_decrease=0.8``...).

        Returns
        -------
        dict
            The job, as ``GET /api/jobs/{id}`` shows it (``id``, ``state``, ``progress``).

        Raises
        ------
        RecordingNotFound
            No such recording.
        InvalidParameter
            An unknown preset or a bad parameter, refused before any work starts.
        """
        job = await self.client.enhance(recording_id, preset=preset, params=params,
                                        format=format)
        return self._seen_job(job)

    async def enhance(self, recording_id: str, preset: str | None = "auto", *,
                      format: str = "flac", progress: bool = True,
                      **params: Any) -> dict[str, Any]:
        """Enhance a recording into a new one (a job off the event loop); return the new row.

        Parameters
        ----------
        recording_id : str
        preset : str, optional
            ``auto``, ``speech``, ``gentle``, ``strong``, ``hum``...
        format : {"flac", "wav"}
        progress : bool
            Show the job's progress (``tqdm.auto``: a bar widget in a notebook).
        **params
            Overrides of the preset's parameters (``prop_decrease=0.8``...).
        """
        job = await self.submit_enhance(recording_id, preset, format=format, **params)
        done = await self.wait_job(job["id"], progress=progress,
                                   label=f"enhance {recording_id}")
        return dict(done["result"]["recording"])

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; return it as the server has it then.

        A queued job is cancelled at once, a running one as soon as its work lets go (its
        ``job.updated`` event says ``cancelled``); a finished job is returned unchanged.

        Raises
        ------
        JobNotFound
            No such job.
        """
        job = await self.client.cancel_job(job_id)
        current = self._jobs.get(job_id)
        if current is None or not JobState(current["state"]).finished:
            self._jobs[job_id] = job
        return dict(job)

    def _seen_job(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """Put a job the server just answered with in the mirror, unless an event was first."""
        self._jobs.setdefault(str(job["id"]), dict(job))
        return dict(job)

    async def wait_job(self, job_id: str, *, progress: bool = False, label: str = "job",
                       timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for a job to end, following its events; return it or raise its error.

        Parameters
        ----------
        job_id : str
        progress : bool
            Show a ``tqdm.auto`` progress bar.
        label : str
            The bar's description.
        timeout_s : float, optional
            Give up (`WaitTimeout`) after this long.
        """
        from tqdm.auto import tqdm

        changed = asyncio.Event()
        off = self.on(Topic.JOB_UPDATED, lambda topic, data: (
            changed.set() if data.get("job", {}).get("id") == job_id else None))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bar = tqdm(total=100, desc=label, unit="%", disable=not progress, leave=False)
        try:
            job = self._jobs.get(job_id) or await self.client.job(job_id)
            while not JobState(job["state"]).finished:
                bar.update(round(100 * job["progress"]) - bar.n)
                changed.clear()
                # Events carry the progress; a slow poll covers an event lost on the way.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), 2.0)
                seen = self._jobs.get(job_id) if changed.is_set() else None
                job = seen or await self.client.job(job_id)
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"{label}: job {job_id} is still {job['state']} "
                                         f"after {timeout_s:g} s")
            bar.update(100 - bar.n)
        finally:
            bar.close()
            off()
        if job["state"] != JobState.SUCCEEDED:
            error = job.get("error") or {}
            raise from_shape(int(error.get("status", 500)), error)
        return dict(job)

    async def submit_merge(self, recording_ids: Sequence[str] | None = None, *,
                           take_id: str | None = None, mode: str = "multichannel",
                           **options: Any) -> dict[str, Any]:
        """Start merging recordings (or every original of a take), and return at once.

        Parameters
        ----------
        recording_ids : sequence of str, optional
        take_id : str, optional
            Merge this take's original recordings (by device name).
        mode : {"multichannel", "mix", "concat"}
        **options
            ``align``, ``drift``, ``crossfade_s``, ``sample_rate``, ``format``.

        Returns
        -------
        dict
            The job, as ``GET /api/jobs/{id}`` shows it; its ``params["ids"]`` are the
            recordings merged.

        Raises
        ------
        InvalidParameter
            Neither or both of ``recording_ids`` and ``take_id``, or a bad option.
        TakeNotFound
            The take has no original recordings.
        RecordingNotFound
            Some ids are not in the catalog.
        """
        if (recording_ids is None) == (take_id is None):
            raise InvalidParameter("give either recording_ids or take_id")
        if take_id is not None:
            members = sorted((r for r in self.recording_list()
                              if r.get("take_id") == take_id and r.get("kind") == "original"),
                             key=lambda r: (str(r.get("device_name")), r["id"]))
            if not members:
                raise TakeNotFound(f"take '{take_id}' has no original recordings")
            recording_ids = [r["id"] for r in members]
        assert recording_ids is not None
        job = await self.client.merge(recording_ids, mode=mode, **options)
        return self._seen_job(job)

    async def merge(self, recording_ids: Sequence[str] | None = None, *,
                    take_id: str | None = None, mode: str = "multichannel",
                    progress: bool = True, **options: Any) -> dict[str, Any]:
        """Merge recordings (or every original of a take) into a new one; return its row.

        Parameters
        ----------
        recording_ids : sequence of str, optional
        take_id : str, optional
            Merge this take's original recordings (by device name).
        mode : {"multichannel", "mix", "concat"}
        progress : bool
            Show the job's progress (``tqdm.auto``).
        **options
            ``align``, ``drift``, ``crossfade_s``, ``sample_rate``, ``format``.
        """
        job = await self.submit_merge(recording_ids, take_id=take_id, mode=mode, **options)
        count = len(job.get("params", {}).get("ids") or recording_ids or ())
        done = await self.wait_job(job["id"], progress=progress,
                                   label=f"merge {count} recordings")
        return dict(done["result"]["recording"])

    async def submit_transcribe(self, recording_id: str | None = None, *,
                                take_id: str | None = None, language: str | None = None,
                                enhance: bool | None = None) -> dict[str, Any]:
        """Start transcribing a recording, or a take by device, and return at once.

        Parameters
        ----------
        recording_id : str, optional
            Transcribe this recording (its channels mixed).
        take_id : str, optional
            Transcribe this take: its originals aligned, every channel transcribed, each
            line given once to the device that heard it loudest.
        language : str, optional
            ``en``, ``fr``...; detected when left out.
        enhance : bool, optional
            Clean the audio first (auto mode); the server's default when left out.

        Returns
        -------
        dict
            The job, as ``GET /api/jobs/{id}`` shows it.

        Raises
        ------
        TranscriptionUnavailable
            The server has no engine or model (the message says how to install one).
        RecordingNotFound, TakeNotFound
            No such recording or take.
        """
        _one_subject(recording_id, take_id)
        job = await self.client.transcribe(recording_id, take_id=take_id, language=language,
                                           enhance=enhance)
        return self._seen_job(job)

    async def transcribe(self, recording_id: str | None = None, *, take_id: str | None = None,
                         language: str | None = None, enhance: bool | None = None,
                         progress: bool = True) -> pd.DataFrame:
        """Transcribe a recording, or a take by device (a job); return the transcript.

        Parameters are those of `submit_transcribe`; ``progress`` shows the job's
        progress (``tqdm.auto``).

        Returns
        -------
        pandas.DataFrame
            One row per line: ``start``, ``end`` (seconds from the recording's or the
            take's start), ``device``, ``text``, ``confidence`` (0..1), ``device_id``,
            ``recording_id``; ``attrs`` holds ``language``, ``model`` and ``text``.
        """
        job = await self.submit_transcribe(recording_id, take_id=take_id, language=language,
                                           enhance=enhance)
        await self.wait_job(job["id"], progress=progress,
                            label=f"transcribe {take_id or recording_id}")
        frame: pd.DataFrame = await self.transcript(recording_id, take_id=take_id)
        return frame

    async def transcript(self, recording_id: str | None = None, *, take_id: str | None = None,
                         format: str = "frame") -> Any:
        """A stored transcript of a recording or a take.

        Parameters
        ----------
        recording_id, take_id : str, optional
            Whose (one of the two).
        format : {"frame", "json", "vtt", "srt", "csv"}
            A DataFrame (as `transcribe` returns), the JSON (a dict: segments with their
            words), or the text of a WebVTT, SRT or CSV file.

        Raises
        ------
        TranscriptNotFound
            Not transcribed yet.
        """
        _one_subject(recording_id, take_id)
        if format != "frame":
            return await self.client.transcript(recording_id, take_id=take_id, format=format)
        import pandas as pd

        from .audio.transcribe import Transcript

        data = await self.client.transcript(recording_id, take_id=take_id)
        transcript = Transcript.from_dict(data)
        rows = transcript.rows()
        if recording_id is not None:  # one device: the recording's
            recording = self._recordings.get(recording_id) or {}
            for row in rows:
                row["device"] = recording.get("device_name") or recording.get("device_id")
                row["device_id"] = recording.get("device_id")
                row["recording_id"] = recording_id
        frame = pd.DataFrame(rows, columns=list(_TRANSCRIPT_COLUMNS))
        frame.attrs.update(language=transcript.language, model=transcript.model,
                           enhanced=transcript.enhanced, text=transcript.text)
        return frame

    async def save_transcript(self, target: Path | str, recording_id: str | None = None, *,
                              take_id: str | None = None, format: str | None = None) -> Path:
        """Write a transcript to a file: WebVTT, SRT, CSV or JSON (by ``format`` or suffix).

        Returns
        -------
        Path
            The file written (atomically).
        """
        path = Path(target)
        fmt = format or path.suffix.lstrip(".").lower() or "vtt"
        if fmt not in ("vtt", "srt", "csv", "json"):
            raise InvalidParameter(f"format must be vtt, srt, csv or json, not '{fmt}'")
        _one_subject(recording_id, take_id)
        if fmt == "json":
            body = json.dumps(await self.client.transcript(recording_id, take_id=take_id),
                              ensure_ascii=False, indent=1)
        else:
            body = await self.client.transcript(recording_id, take_id=take_id, format=fmt)
        await asyncio.to_thread(durable.write_text_atomic, path, body)
        return path

    async def describe_take(self, take_id: str, *, name: str | None = None,
                            notes: str | None = None) -> dict[str, Any]:
        """Name a take, or write its notes; return the take as the server has it then.

        Parameters
        ----------
        take_id : str
        name, notes : str, optional
            What to set; one left out keeps its value.

        Returns
        -------
        dict
            The take, with its recordings and start skew (``GET /api/takes/{id}``).

        Raises
        ------
        TakeNotFound
            No such take.
        """
        take = await self.client.describe_take(take_id, name=name, notes=notes)
        if take_id in self._takes:
            self._takes[take_id] = {**self._takes[take_id], "name": take.get("name"),
                                    "notes": take.get("notes")}
            self._notify(Topic.LAB_TAKES, {})
        return take

    async def delete_take(self, take_id: str) -> None:
        """Delete a take and every recording of it (files and catalog rows).

        Recordings derived from its recordings that belong to no take keep their lineage.

        Raises
        ------
        Conflict
            The take is still recording: stop it first. Nothing is deleted.
        TakeNotFound
            No such take.
        """
        result = await self.client.delete_take(take_id)
        for recording_id in result.get("recordings", ()):
            self._recordings.pop(recording_id, None)
        if self._takes.pop(take_id, None) is not None:
            self._notify(Topic.LAB_TAKES, {})

    async def download_take(self, take_id: str, target: Path | str) -> Path:
        """Save a take as one ZIP: its originals, its merges and a ``manifest.json``.

        The archive streams from the server to the file; it is never held in memory.

        Parameters
        ----------
        take_id : str
        target : path
            The file to write, or a folder to put ``<take name or id>.zip`` in.

        Returns
        -------
        Path
            The file written (whole: it appears only once complete).

        Raises
        ------
        TakeNotFound
            No such take.
        """
        return await self.client.take_archive(take_id, target)

    async def delete(self, recording_id: str) -> dict[str, Any]:
        """Delete a recording (its file and catalog row; derived files keep their lineage)."""
        result = await self.client.delete(recording_id)
        self._recordings.pop(recording_id, None)
        return result

    async def path_of(self, recording_id: str) -> Path:
        """A local path to the recording's file (downloaded once when the server is remote)."""
        row = self._recordings.get(recording_id) or await self.client.recording(recording_id)
        if self.data_dir is not None:
            path = self.data_dir / str(row["path"])
            if path.is_file():
                return path
        if self._cache_dir is None:
            import tempfile

            self._cache_dir = Path(tempfile.mkdtemp(prefix="vocalink-cache-"))
        target = self._cache_dir / f"{row['id']}.{row['format']}"
        if not target.is_file():
            await self.client.download(recording_id, target)
        return target

    async def load(self, recording_id: str, *, sr: int | None = None) -> tuple[Any, int]:
        """The recording's samples: ``(float32 (channels, frames), sample_rate)``, read off-loop."""
        from .audio import load

        path = await self.path_of(recording_id)
        return await asyncio.to_thread(load, path, sr=sr)

    async def plot(self, recording_id: str, kind: str = "waveform", **kwargs: Any) -> Figure:
        """A matplotlib figure of the recording: ``waveform`` or ``spectrogram``."""
        from .audio import analysis

        if kind not in ("waveform", "spectrogram"):
            raise InvalidParameter(f"kind must be 'waveform' or 'spectrogram', not '{kind}'")
        path = await self.path_of(recording_id)
        row = self._recordings.get(recording_id, {})
        title = f"{recording_id} — {row.get('device_name') or row.get('kind', '')}"
        if kind == "waveform":
            envelope = await asyncio.to_thread(analysis.envelope_file, path, width=2000)
            return await asyncio.to_thread(analysis.plot_waveform, envelope, title=title,
                                           **kwargs)
        audio, rate = await self.load(recording_id)
        return await asyncio.to_thread(analysis.plot_spectrogram, audio, rate, title=title,
                                       **kwargs)

    async def play(self, recording_id: str) -> Any:
        """An ``IPython.display.Audio`` player for the recording."""
        from IPython.display import Audio

        audio, rate = await self.load(recording_id)
        return Audio(audio, rate=rate, normalize=True)  # type: ignore[no-untyped-call]

    def dashboard(self) -> Any:
        """Every panel in one widget: server, devices, recordings, waveform, enhance."""
        from .widgets import Dashboard

        return Dashboard(self)

    # -- display ---------------------------------------------------------------------------------

    def __repr__(self) -> str:
        mode = "attached to" if self.attached else "serving at"
        return (f"<Lab '{self.name}' {mode} {self.url}: {len(self._devices)} devices, "
                f"{len(self._recordings)} recordings>")

    def _repr_html_(self) -> str:
        connected = sum(1 for d in self._devices.values() if d.get("connected"))
        discovery = (self._info.get("discovery") or {}).get("state", "unknown")
        mode = "attached to another kernel's server" if self.attached else "running here"
        rows = "".join(
            f"<tr><td>{html.escape(str(d.get('name')))}</td><td>{html.escape(str(d.get('state')))}"
            f"</td><td>{'yes' if d.get('connected') else 'no'}</td></tr>"
            for d in self.device_list()[:20])
        return (
            f"<div><b>vocalink Lab</b> — <b>{html.escape(self.name)}</b> ({mode})<br>"
            f"<code>{html.escape(self.url)}</code> · mDNS: {html.escape(discovery)} · "
            f"{connected}/{len(self._devices)} devices connected · "
            f"{len(self._recordings)} recordings · {len(self._takes)} takes"
            + (f"<table><tr><th>device</th><th>state</th><th>connected</th></tr>{rows}</table>"
               if rows else "") + "</div>")


def show_errors_briefly() -> bool:
    """In IPython, show a user mistake (a `VocalinkError` under 500) as one readable line.

    A wrong device id or an invalid parameter then reads ``NotFound: no device 'nope';
    known: sim-1, sim-2`` instead of a traceback through the client; internal errors
    (500 and up) and every other exception keep their full traceback. Called by
    `Lab.start` and `connect`; returns False outside IPython.
    """
    ipython = sys.modules.get("IPython")  # not imported: not in IPython (and not paid for)
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    if shell is None:
        return False

    def handler(shell: Any, etype: type[BaseException], value: BaseException, tb: Any,
                tb_offset: int | None = None) -> Any:
        if isinstance(value, VocalinkError) and value.status < 500:
            problems = [e for e in value.errors if e != value.message]
            lines = [f"{type(value).__name__}: {value.message}", *(f"  - {e}" for e in problems)]
            # The shell's own display of a traceback, given our lines as the whole of it:
            # a kernel sends it as the cell's error (and records it; ipykernel's async
            # cells need that), a terminal prints it.
            shell._showtraceback(etype, value, ["\n".join(lines)])
            return None
        return shell.showtraceback((etype, value, tb), tb_offset=tb_offset)

    shell.set_custom_exc((VocalinkError,), handler)
    return True


async def connect(url: str, token: str | None = None, ca: str | None = None) -> Lab:
    """A Lab on a server that runs elsewhere (``vocalink serve``, another kernel).

    Parameters
    ----------
    url : str
        The server's base URL, e.g. ``http://192.0.2.20:8765``; a ``?token=`` in it is
        used as the token, a ``#ca=`` (the dashboard's phone link has it) as ``ca``.
    token : str, optional
        The controller token: by default ``VOCALINK_TOKEN``, else, for a server on this
        machine, the token file of its data dir (``VOCALINK_DATA_DIR`` or ``./data``).
    ca : str, optional
        The pin of the server's CA (the dashboard shows it): the Lab speaks HTTPS and
        trusts that CA alone; a server answering with another one is refused
        (`CertificateMismatch`) before the token is sent.

    Returns
    -------
    Lab
        Attached (``lab.server`` is None); every method works the same.
    """
    parts = urllib.parse.urlsplit(url)
    in_url = urllib.parse.parse_qs(parts.query).get("token")
    if token is None and in_url:
        token = in_url[-1]
    if ca is not None:
        parts = parts._replace(fragment=urllib.parse.urlencode({"ca": ca}))
    lab = await Lab._attach(urllib.parse.urlunsplit(parts._replace(query="")), token=token)
    show_errors_briefly()
    return lab


def _local_pairing(info: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` with its join code's expiry in this machine's clock, from the seconds left.

    The server's clock may differ from the kernel's.
    """
    out = dict(info)
    pairing = out.get("pairing")
    if isinstance(pairing, Mapping) and pairing.get("join_code_expires_in_s") is not None:
        out["pairing"] = {**pairing, "join_code_expires_at":
                          time.time() + float(pairing["join_code_expires_in_s"])}
    return out


async def _wait_for(found: Callable[[], list[dict[str, Any]]], n: int, timeout_s: float,
                    message: Callable[[int], str]) -> list[dict[str, Any]]:
    """Poll the mirror (it is fed by events) until ``found()`` holds ``n`` items."""
    deadline = time.monotonic() + timeout_s
    while len(items := found()) < n:
        if time.monotonic() > deadline:
            raise WaitTimeout(message(len(items)))
        await asyncio.sleep(0.05)
    return items


def _ms(seconds: Any) -> float | None:
    return None if seconds is None else round(float(seconds) * 1000, 3)


async def _claim(lock: DataDirLock, root: Path, wait_s: float = STARTING_WAIT_S
                 ) -> dict[str, Any] | None:
    """Take ``lock`` (None), or what its holder published once its server has a URL.

    A holder without a URL is still starting its server: wait for it rather than fail,
    up to ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    while not lock.acquire():
        holder = lock.holder()
        if holder.get("url"):
            return holder
        if time.monotonic() > deadline:
            raise VocalinkError(f"another process (pid {holder.get('pid', '?')}) has been "
                                f"starting a server on {root} for {wait_s:g} s; is it stuck?")
        await asyncio.sleep(0.05)
    return None
