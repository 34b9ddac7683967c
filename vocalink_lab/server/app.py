"""The Tornado application and the `Server` that owns every server-side resource."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import uuid
from collections.abc import Coroutine
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web

from ..config import Settings
from ..discovery import Advertiser
from ..errors import BadRequest, InvalidParameter, PayloadTooLarge, VocalinkError
from ..hub import (
    AndroidSessions,
    DspPool,
    Event,
    Hub,
    Jobs,
    Pairing,
    Topic,
    validate_server_name,
)
from ..protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION
from ..storage import (
    UPLOAD_ID_PATTERN,
    Catalog,
    IntegrityReport,
    RecordingStore,
    ResumableStore,
    TranscriptStore,
    check_integrity,
)
from ..tokens import server_token
from ..version import __version__
from .android import RID_PATTERN, AppRecordingHandler, AppSessionsHandler
from .api import (
    ApproveHandler,
    ClientHandler,
    ClientsHandler,
    CommandHandler,
    CommandsHandler,
    PairingHandler,
    PingHandler,
    RejectHandler,
    ServerHandler,
)
from .audio import AudioFileHandler, AudioListHandler, AudioMetaHandler
from .auth import Access, Auth
from .base import MAX_JSON_BODY, NotFoundHandler, Refused, required_header_int
from .connections import Listener, connection_budget, idle_backstop, raise_open_file_limit
from .events import EventsSocket
from .gate import Gate
from .ingest import Ingestor
from .jobs import AudioJobs, EnhanceHandler, JobHandler, JobsHandler, MergeHandler
from .openapi import OpenApiHandler
from .recorder import RECORDER_DIR, CaCertificate, RecorderFiles, RecorderPage, TrustPage
from .takes import TakeArchiveHandler, TakeFiles, TakeHandler, TakesHandler
from .tls import TlsMaterial, ensure_tls
from .transcripts import (
    TakeTranscribeHandler,
    TakeTranscriptHandler,
    TranscribeHandler,
    TranscriptHandler,
    Transcription,
)
from .tus import Resumable, TusUploadHandler, TusUploadsHandler
from .upload import FORM_OVERHEAD, UploadHandler
from .ws import ControlSocket, DeviceSession

__all__ = ["Server", "make_app"]

log = logging.getLogger(__name__)

WS_PATH = "/ws/control"
EVENTS_PATH = "/ws/events"
UPLOAD_PATH = "/api/audio/upload"
RESUMABLE_PATH = "/api/audio/uploads"
#: Frames above the protocol's 64 KiB get an ERROR reply; above this the connection is
#: closed with 1009 (message too big) before the frame is read.
WS_HARD_LIMIT = 16 * MAX_FRAME_BYTES
_ID = r"([^/]+)"
#: How often the machine's addresses are compared with the certificate's.
TLS_ADDRESS_CHECK_S = 30.0


def make_app(
    *,
    server: Server,
    hub: Hub,
    catalog: Catalog,
    store: RecordingStore,
    ingestor: Ingestor,
    resumable: Resumable,
    audio_jobs: AudioJobs,
    transcription: Transcription,
    settings: Settings,
    gate: Gate,
    auth: Auth,
) -> tornado.web.Application:
    """Every route in one list, and every Tornado setting in one place."""
    # The certificate is made when the server starts, after the routes: read when asked.
    tls_of = {"tls": lambda: server.tls, "server_name": lambda: server.name}
    take_files = TakeFiles(catalog=catalog, store=store, hub=hub,
                           transcripts=transcription.transcripts)
    routes: list[Any] = [
        (r"/ping", PingHandler),
        (r"/api/openapi.json", OpenApiHandler),
        (r"/api/server", ServerHandler, {"server": server}),
        (r"/api/clients", ClientsHandler, {"hub": hub}),
        (rf"/api/clients/{_ID}", ClientHandler, {"hub": hub}),
        (rf"/api/clients/{_ID}/approve", ApproveHandler, {"hub": hub}),
        (rf"/api/clients/{_ID}/reject", RejectHandler, {"hub": hub}),
        (r"/api/pairing", PairingHandler, {"server": server}),
        (r"/api/commands", CommandsHandler, {
            "hub": hub, "schedule_lead_s": settings.schedule_lead_s}),
        (rf"/api/commands/{_ID}", CommandHandler, {"hub": hub}),
        (r"/api/takes", TakesHandler, {"catalog": catalog}),
        (rf"/api/takes/{_ID}", TakeHandler, {"catalog": catalog, "take_files": take_files}),
        (rf"/api/takes/{_ID}/archive", TakeArchiveHandler, {"take_files": take_files}),
        (rf"/api/takes/{_ID}/transcribe", TakeTranscribeHandler,
         {"transcription": transcription}),
        (rf"/api/takes/{_ID}/transcript", TakeTranscriptHandler,
         {"transcription": transcription}),
        (UPLOAD_PATH, UploadHandler, {
            "ingestor": ingestor, "store": store, "max_bytes": settings.max_upload_bytes,
            "idle_timeout_s": settings.upload_idle_timeout_s,
        }),
        # Before /api/audio/{id}: "uploads" is a route, not a recording id.
        (RESUMABLE_PATH + "/?", TusUploadsHandler, {
            "resumable": resumable, "idle_timeout_s": settings.upload_idle_timeout_s}),
        (rf"{RESUMABLE_PATH}/({UPLOAD_ID_PATTERN})", TusUploadHandler, {
            "resumable": resumable, "idle_timeout_s": settings.upload_idle_timeout_s}),
        (r"/api/audio/list", AudioListHandler, {"catalog": catalog}),
        (r"/api/audio/merge", MergeHandler, {"audio_jobs": audio_jobs}),
        (rf"/api/audio/{_ID}/meta", AudioMetaHandler, {"catalog": catalog}),
        (rf"/api/audio/{_ID}/enhance", EnhanceHandler, {"audio_jobs": audio_jobs}),
        (rf"/api/audio/{_ID}/transcribe", TranscribeHandler, {"transcription": transcription}),
        (rf"/api/audio/{_ID}/transcript", TranscriptHandler, {"transcription": transcription}),
        (r"/api/jobs", JobsHandler, {"jobs": audio_jobs.jobs}),
        (rf"/api/jobs/{_ID}", JobHandler, {"jobs": audio_jobs.jobs}),
        (rf"/api/audio/{_ID}", AudioFileHandler, {"catalog": catalog, "store": store, "hub": hub,
                                                  "transcripts": transcription.transcripts}),
        (EVENTS_PATH, EventsSocket, {"hub": hub, "sockets": server.event_sockets,
                                     "max_queue_bytes": settings.events_queue_bytes,
                                     "gate": gate}),
        (WS_PATH, ControlSocket, {
            "hub": hub, "register_timeout_s": settings.register_timeout_s,
            "heartbeat_s": settings.heartbeat_s, "max_message_bytes": WS_HARD_LIMIT,
            "sessions": server.sessions, "gate": gate, "android": server.android,
        }),
        # The VocalLink Android app's REST side (its own paths, as the app has them).
        (r"/sessions", AppSessionsHandler, {"android": server.android}),
        (rf"/recordings/{RID_PATTERN}", AppRecordingHandler, {
            "android": server.android, "ingestor": ingestor, "store": store,
            "max_bytes": settings.max_upload_bytes,
            "idle_timeout_s": settings.upload_idle_timeout_s,
        }),
        (r"/recorder/?", RecorderPage, {"path": str(RECORDER_DIR)}),
        (r"/recorder/ca/?", TrustPage, tls_of),
        (r"/recorder/ca\.crt", CaCertificate, tls_of),
        (r"/recorder/static/(.*)", RecorderFiles, {"path": str(RECORDER_DIR)}),
    ]
    return _GatedApplication(
        gate,
        routes,
        auth=auth,
        default_handler_class=NotFoundHandler,
        compress_response=False,
        # Only /ws/events is a Tornado WebSocket (devices have their own keepalive).
        websocket_ping_interval=settings.heartbeat_s,
        websocket_ping_timeout=settings.heartbeat_s,  # Tornado caps it at the interval
    )


class _GatedApplication(tornado.web.Application):
    """Routes a request only when its ``Host`` and its credential are right.

    Its ``Host`` must name this server (`Gate`, else 403), and it must carry what its route
    asks for (`Auth`, else 401 or 403): no handler of a route runs, nor reads a body,
    before both are checked.
    """

    def __init__(self, gate: Gate, *args: Any, **kwargs: Any) -> None:
        self.gate = gate
        super().__init__(*args, **kwargs)

    def find_handler(self, request: tornado.httputil.HTTPServerRequest,
                     **kwargs: Any) -> tornado.web._HandlerDelegate:
        try:
            self.gate.check_host(request)
            delegate = super().find_handler(request, **kwargs)
            _check_framing(request, streamed=tornado.web._has_stream_request_body(
                delegate.handler_class))
            access = getattr(delegate.handler_class, "access", Access.CONTROLLER)
            request.vocalink_grant = self.settings["auth"].check(  # type: ignore[attr-defined]
                request, access)
        except VocalinkError as refused:
            return self.get_handler_delegate(request, Refused, {"error": refused})
        return delegate


def _check_framing(request: tornado.httputil.HTTPServerRequest, *, streamed: bool) -> None:
    """Refuse a body Tornado could not read, in the one error shape.

    Tornado answers a Content-Length that is not one integer, a Transfer-Encoding other
    than ``chunked``, or a body over the server's limit with a bare 400 (no JSON) once
    the handler is chosen. Caught here first, the request's framing headers are dropped
    (no body is read: its length is unknown) and `Refused` closes the connection after
    the answer. A streamed route (uploads) checks its own limit, which is larger.
    """
    headers = request.headers
    try:
        _framing(headers.get("Content-Length"), headers.get("Transfer-Encoding"),
                 streamed=streamed)
    except VocalinkError:
        # No body is read, so none is parsed (Tornado would parse a form's before the
        # handler runs, and answer about that instead).
        for name in ("Content-Length", "Transfer-Encoding", "Content-Type"):
            headers.pop(name, None)
        request.vocalink_close = True  # type: ignore[attr-defined]  # see `Refused`
        raise


def _framing(length: str | None, coding: str | None, *, streamed: bool) -> None:
    if length is not None:
        values = {v.strip() for v in length.split(",")}  # a proxy may repeat it
        if len(values) > 1:
            raise BadRequest(f"Content-Length values differ: '{length[:40]}'")
        size = required_header_int("Content-Length", values.pop())
        if coding is not None:
            raise BadRequest("a request has a Content-Length or a Transfer-Encoding, "
                             "not both")
        if not streamed and size > MAX_JSON_BODY + FORM_OVERHEAD:
            raise PayloadTooLarge(f"the body is {size} bytes; this route takes at most "
                                  f"{MAX_JSON_BODY} (uploads go to /api/audio/upload)")
    elif coding is not None and coding.strip().lower() != "chunked":
        raise BadRequest(f"Transfer-Encoding '{coding[:40]}' is not supported (only chunked)")


class Server:
    """A vocalink server: hub, catalog, files and the HTTP/WebSocket listener.

    Parameters
    ----------
    settings : Settings, optional
        Defaults to ``Settings.from_env()``.
    executor : concurrent.futures.Executor, optional
        Where enhance and merge jobs run; by default a process pool of
        ``settings.dsp_workers`` processes, started on the first job. An executor
        passed in is not shut down by `stop`.
    **overrides
        Settings fields to override (``port=0``, ``data_dir=...``).

    Examples
    --------
    >>> async with Server(data_dir="data", host="127.0.0.1", port=0) as server:  # doctest: +SKIP
    ...     print(server.url)
    """

    def __init__(self, settings: Settings | None = None, *, executor: Executor | None = None,
                 **overrides: Any) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(**overrides) if overrides else base
        if self.settings.name is not None:  # refuse a bad name before touching storage
            validate_server_name(self.settings.name)
        self.store = RecordingStore(self.settings.data_dir)
        self.catalog = Catalog(self.store.root / "vocalink.db")
        self.hub: Hub | None = None
        self.android: AndroidSessions | None = None
        self.port: int | None = None
        #: The controller token (``None`` when authentication is off: ``open``).
        self.token: str | None = None
        self.integrity = IntegrityReport()
        self._http: tornado.httpserver.HTTPServer | None = None
        self._sockets: list[socket.socket] = []
        self._listener: Listener | None = None
        #: The certificate served over HTTPS on the same port (``None``: TLS is off).
        self.tls: TlsMaterial | None = None
        self._running = False
        self._lock = asyncio.Lock()
        self._rename_lock = asyncio.Lock()
        #: mDNS advertisement (``None`` when ``advertise`` is off or before `start`).
        self.advertiser: Advertiser | None = None
        self._advertising: asyncio.Task[object] | None = None
        self.resumable: Resumable | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._syncing: asyncio.Task[None] | None = None
        self._following: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.dsp = DspPool(executor, max_workers=self.settings.dsp_workers or None)
        self.jobs: Jobs | None = None
        #: Controllers following ``/ws/events``, closed by `stop`.
        self.event_sockets: set[EventsSocket] = set()
        #: Open device connections (registered or not), closed by `stop`.
        self.sessions: set[DeviceSession] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Server:
        """Open storage and start listening (idempotent). Returns ``self``."""
        async with self._lock:
            if self._running:
                return self
            await asyncio.to_thread(self.store.ensure_dirs)
            await self.catalog.start()
            try:
                await self._start_listening()
            except BaseException:
                await self.catalog.stop()
                raise
            self._running = True
            loop = asyncio.get_running_loop()
            self._sweeping = loop.create_task(self._sweep_uploads())
            assert self.hub is not None
            self._syncing = loop.create_task(self.hub.run_clock_sync(
                self.hub.sync_interval_s, self.settings.sync_probes,
                first_gap_s=self.settings.sync_first_gap_s))
            if self.tls is not None:
                self._following = loop.create_task(self._follow_addresses())
            if self.settings.advertise:
                self._start_advertising()
        log.info("vocalink server '%s' listening on %s", self.name, self.url)
        if self.token is None:
            log.warning("authentication is OFF (open): anyone who can reach %s may control "
                        "it, and any device may record", self.url)
        return self

    def _record_takes(self, hub: Hub) -> None:
        """Write takes into the catalog as the hub starts and stops them.

        The hub knows no SQLite; the writes queue, in order, on the catalog's writer.
        """
        def started(event: Event) -> None:
            self._in_background(self.catalog.take_started(
                event.data["take_id"], event.data["at"], event.data["devices"]))

        def stopped(event: Event) -> None:
            self._in_background(self.catalog.take_stopped(event.data["take_id"],
                                                          event.data["at"]))

        hub.events.subscribe(Topic.TAKE_STARTED, started)
        hub.events.subscribe(Topic.TAKE_STOPPED, stopped)

    def _bound_registry(self, hub: Hub) -> None:
        """The registry's limits, and announcements dropped once their recording arrives."""
        registry = hub.registry
        registry.set_limits(max_devices=self.settings.max_devices,
                            max_announced=self.settings.max_announced_recordings)

        def arrived(event: Event) -> None:
            recording = event.data["recording"]
            registry.recording_arrived(recording.get("device_id"), recording["id"])

        hub.events.subscribe(Topic.RECORDING_ADDED, arrived)

    def _store_device_key(self, device_id: str, key_sha256: str | None) -> None:
        """Persist a device key's digest (or its removal), in order, on the catalog's writer."""
        self._in_background(self.catalog.set_device_key(device_id, key_sha256))

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sweep_uploads(self) -> None:
        """Remove abandoned resumable uploads now and then, never at start-up."""
        interval = min(3600.0, self.settings.upload_expiry_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                assert self.resumable is not None
                await self.resumable.sweep()
            except Exception:
                log.exception("sweeping expired uploads failed")

    def _start_advertising(self) -> None:
        """Register with mDNS in the background.

        Probing takes about 1.2 s; start-up must not wait for it, nor fail with it.
        """
        hub = self._hub
        self.advertiser = Advertiser(
            name=hub.server_name, port=self.port or 0, server_id=hub.server_id,
            ws_path=WS_PATH, pairing=self.token is not None, interfaces=self.settings.interfaces,
            # The CA's pin: an agent that finds the server pins it, and speaks TLS.
            properties={"version": __version__,
                        **({"ca": self.tls.ca_fingerprint} if self.tls is not None else {})},
            on_name_change=self._renamed_by_conflict,
        )
        self._advertising = asyncio.get_running_loop().create_task(self._advertise())

    async def _advertise(self) -> None:
        assert self.advertiser is not None
        await self.advertiser.start()
        self._publish_discovery()

    def _renamed_by_conflict(self, name: str) -> None:
        self._hub.rename(name)
        self._publish_discovery()

    def _publish_discovery(self) -> None:
        """Tell controllers how the server is advertised (registration ends about 1.2 s in)."""
        if self.hub is not None:
            self.hub.events.publish(Topic.SERVER_DISCOVERY, discovery=self._discovery_status())

    async def advertised(self) -> dict[str, Any]:
        """Wait until mDNS registration has finished (or failed); return its status."""
        if self._advertising is not None:
            await asyncio.shield(self._advertising)
        return self._discovery_status()

    def _discovery_status(self) -> dict[str, Any]:
        if self.advertiser is None:
            return {"state": "disabled", "name": self.name if self.hub else None,
                    "error": None if self.settings.advertise else "advertising is turned off"}
        return self.advertiser.status()

    async def _start_listening(self) -> None:
        server_id = await self.catalog.get_meta("server_id")
        if server_id is None:
            server_id = f"srv-{uuid.uuid4().hex[:12]}"
            await self.catalog.set_meta("server_id", server_id)
        if self.settings.name is not None:
            name = validate_server_name(self.settings.name)
            await self.catalog.set_meta("server_name", name)
        else:
            name = _valid_name(await self.catalog.get_meta("server_name")) or _default_name()
        self.integrity = await check_integrity(self.catalog, self.store)
        self.token = None if self.settings.open else await asyncio.to_thread(
            server_token, self.store.root, self.settings.token)
        pairing = Pairing(required=self.token is not None, controller_token=self.token,
                          join_code_ttl_s=self.settings.join_code_ttl_s)
        pairing.load(await self.catalog.device_keys())
        pairing.on_change = self._store_device_key
        self.hub = Hub(
            server_id=server_id,
            server_name=name,
            command_timeout_s=self.settings.command_timeout_s,
            heartbeat_s=self.settings.heartbeat_s,
            sync_interval_s=self.settings.sync_interval_s,
            upload_url=UPLOAD_PATH,
            pairing=pairing,
        )
        self.android = AndroidSessions(self.hub, trust=self.settings.android == "trust")
        self._record_takes(self.hub)
        self._bound_registry(self.hub)
        ingestor = Ingestor(catalog=self.catalog, store=self.store, hub=self.hub)
        partials = ResumableStore(self.store.uploads_dir,
                                  max_receiving=self.settings.max_resumable_uploads,
                                  expiry_s=self.settings.upload_expiry_s)
        self.resumable = Resumable(store=partials, ingestor=ingestor,
                                   max_bytes=self.settings.max_upload_bytes,
                                   expiry_s=self.settings.upload_expiry_s)
        self.jobs = Jobs(self.hub.events, max_pending=self.settings.max_pending_jobs)
        audio_jobs = AudioJobs(jobs=self.jobs, pool=self.dsp, catalog=self.catalog,
                               store=self.store, ingestor=ingestor,
                               max_merge_decoded_bytes=self.settings.max_merge_decoded_bytes)
        transcription = Transcription(
            jobs=self.jobs, pool=self.dsp, catalog=self.catalog, store=self.store,
            transcripts=TranscriptStore(self.catalog, self.store.root), audio_jobs=audio_jobs,
            hub=self.hub, model=self.settings.asr_model,
            enhance=self.settings.transcribe_enhance)
        gate = Gate(server_id=lambda: self.hub.server_id if self.hub else None,
                    allowed_hosts=self.settings.allowed_hosts,
                    allowed_origins=self.settings.allowed_origins)
        auth = Auth(token=self.token, pairing=lambda: self.hub.pairing if self.hub else None,
                    port=lambda: self.port, gate=gate)
        app = make_app(server=self, hub=self.hub, catalog=self.catalog, store=self.store,
                       ingestor=ingestor, resumable=self.resumable, audio_jobs=audio_jobs,
                       transcription=transcription,
                       settings=self.settings, gate=gate, auth=auth)
        self._http = tornado.httpserver.HTTPServer(
            app,
            # Small for every route; the upload handler raises it for its own requests, so
            # no other route ever buffers a big body.
            max_body_size=MAX_JSON_BODY + FORM_OVERHEAD,
            # Tornado's header timeout, from the end of one request (or the connection's
            # start) to the next request's headers: a backstop. The Listener's streams close
            # an idle connection first (idle_timeout_s, jittered), and give a head that has
            # begun header_timeout_s from its first byte.
            idle_connection_timeout=idle_backstop(self.settings.idle_timeout_s),
            # A whole body; uploads lift it for their own requests (their idle timers).
            body_timeout=self.settings.body_timeout_s,
            # Bodies arrive in 256 KiB pieces (Tornado's default is 64 KiB): a quarter of the
            # parser and event-loop work per uploaded byte.
            chunk_size=256 * 1024,
            xheaders=False,
        )
        open_files = raise_open_file_limit()
        self.tls = None
        if self.tls_wanted:
            try:
                # Files, and key generation the first time: off the loop.
                self.tls = await asyncio.to_thread(
                    ensure_tls, self.store.root, addresses=self._tls_addresses(),
                    names=["localhost", f"{server_id}.local"])
            except (OSError, ValueError) as exc:
                if self.settings.tls:  # asked for: a server without it is not what was asked
                    raise
                # On by default only: plain HTTP still serves every notebook and agent.
                log.warning("HTTPS is off: the certificate could not be made (%s)", exc)
        self._sockets = tornado.netutil.bind_sockets(self.settings.port, self.settings.host)
        # Instead of HTTPServer.add_sockets: caps, and no spin when descriptors run out.
        self._listener = Listener(
            self._http,
            max_connections=connection_budget(self.settings.max_connections, open_files),
            max_per_ip=self.settings.max_connections_per_ip,
            header_timeout_s=self.settings.header_timeout_s,
            idle_timeout_s=self.settings.idle_timeout_s,
            handed_over=lambda: len(self.sessions), open_files=open_files,
            ssl_context=self.tls.ssl_context() if self.tls is not None else None)
        self._listener.start(self._sockets)
        self.port = self._sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Tell devices, close connections, stop listening, close storage (idempotent)."""
        async with self._lock:
            if not self._running:
                return
            self._running = False
            for task in (self._sweeping, self._syncing, self._following):
                if task is not None:
                    task.cancel()
            # Leave the network first, so no one discovers a server that is going away.
            if self._advertising is not None and not self._advertising.done():
                self._advertising.cancel()
            if self.advertiser is not None:
                await self.advertiser.stop()
            if self.hub is not None:
                self.hub.announce_shutdown()
            for socket_ in list(self.event_sockets):
                socket_.close(1001, "server shutting down")
            sessions = list(self.sessions)
            for session in sessions:
                session.close(1001, "server shutting down")
            if sessions:
                await asyncio.wait([asyncio.ensure_future(s.wait_closed()) for s in sessions],
                                   timeout=5)
            if self._listener is not None:
                self._listener.stop()
            if self._http is not None:
                self._http.stop()
                try:
                    await asyncio.wait_for(self._http.close_all_connections(), 5)
                except TimeoutError:
                    log.warning("some connections did not close within 5 s")
            self._sockets = []
            if self.jobs is not None:
                await self.jobs.close()
            await asyncio.to_thread(self.dsp.shutdown)
            await self.catalog.stop()
            log.info("vocalink server stopped")

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- identity --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The server name devices see."""
        return self._hub.server_name

    @property
    def _hub(self) -> Hub:
        if self.hub is None:
            raise RuntimeError("the server is not started")
        return self.hub

    async def rename(self, name: str) -> str:
        """Rename the server live and return the name in use.

        mDNS re-registers first (about 1.2 s of probing); a name taken on the network
        gets a suffix ("Studio (2)"). Then connected devices get a SERVER message with
        the name in use, and the requested name is persisted.

        Raises
        ------
        InvalidParameter
            An invalid name (422); nothing changes.
        DiscoveryError
            mDNS could not register the new name (503); the old name stays everywhere.
        """
        name = validate_server_name(name)
        async with self._rename_lock:
            hub = self._hub
            in_use = name
            if self.advertiser is not None:
                in_use = await self.advertiser.rename(name)
            await self.catalog.set_meta("server_name", name)
            in_use = hub.rename(in_use)
            if self.advertiser is not None:
                self._publish_discovery()
            return in_use

    @property
    def tls_wanted(self) -> bool:
        """Whether HTTPS is served: ``settings.tls``, or by default when beyond loopback.

        Phones on the LAN need HTTPS for the microphone; a server only on loopback has
        no phones, and its notebooks and agents speak plain HTTP.
        """
        if self.settings.tls is not None:
            return self.settings.tls
        return not _is_loopback(self.settings.host)

    async def refresh_tls(self) -> bool:
        """Re-issue the certificate if the machine's addresses changed; True if it did.

        A laptop that moves to another Wi-Fi gets another address, which its certificate
        must name for phones to reach it. The CA stays, so the pin is unchanged: phones
        and agents that trust it go on trusting. Connections open keep the certificate
        they were served with; new ones get the new one.
        """
        if self.tls is None or self._listener is None:
            return False
        addresses = self._tls_addresses()
        wanted = {str(ipaddress.ip_address(a.split("%")[0])) for a in addresses}
        if wanted <= set(self.tls.sans):
            return False
        material = await asyncio.to_thread(
            ensure_tls, self.store.root, addresses=addresses,
            names=["localhost", f"{self._hub.server_id}.local"])
        self.tls = material
        self._listener.ssl_context = material.ssl_context()
        log.info("the HTTPS certificate now names %s", ", ".join(material.sans))
        return True

    async def _follow_addresses(self) -> None:
        """Check the addresses now and then (`refresh_tls`); never fatal."""
        while True:
            await asyncio.sleep(TLS_ADDRESS_CHECK_S)
            try:
                await self.refresh_tls()
            except Exception:
                log.exception("could not re-issue the HTTPS certificate")

    def _tls_addresses(self) -> list[str]:
        """The addresses the certificate names: the listening ones, and 127.0.0.1."""
        addresses = [a for a in local_addresses(self.settings.host) if _is_ip(a)]
        return list(dict.fromkeys([*addresses, "127.0.0.1"]))

    def _tls_info(self) -> dict[str, Any]:
        """``tls`` in ``GET /api/server``: whether it is on, the CA pin, the HTTPS URL."""
        if self.tls is None:
            return {"enabled": False, "ca_fingerprint": None, "https_url": None}
        addresses = [a for a in local_addresses(self.settings.host) if _is_ip(a)]
        lan = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
        host = lan[0] if lan else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return {"enabled": True, "ca_fingerprint": self.tls.ca_fingerprint,
                "https_url": f"https://{host}:{self.port}"}

    @property
    def host_for_urls(self) -> str:
        """The host part of URLs shown to people (loopback when listening everywhere)."""
        host = self.settings.host
        if host in ("", "0.0.0.0", "::"):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    @property
    def url(self) -> str:
        """Base HTTP URL, e.g. ``http://127.0.0.1:8765``."""
        return f"http://{self.host_for_urls}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The devices' WebSocket URL."""
        return f"ws://{self.host_for_urls}:{self.port}{WS_PATH}"

    @property
    def data_dir(self) -> Path:
        """The data dir, absolute."""
        return self.store.root

    def pairing_info(self, *, new_code: bool = False) -> dict[str, Any]:
        """What ``GET /api/pairing`` returns (and ``pairing`` in ``GET /api/server``).

        Parameters
        ----------
        new_code : bool
            Replace the join code first (the old one stops working).
        """
        return self._hub.pairing_status(new_code=new_code)

    async def info(self) -> dict[str, Any]:
        """What ``GET /api/server`` returns."""
        hub = self._hub
        return {
            "id": hub.server_id,
            "name": hub.server_name,
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "host": self.settings.host,
            "port": self.port,
            "url": self.url,
            "ws_url": self.ws_url,
            "ws_path": WS_PATH,
            "events_path": EVENTS_PATH,
            "upload_path": UPLOAD_PATH,
            "resumable_upload_path": RESUMABLE_PATH,
            "addresses": local_addresses(self.settings.host),
            "discovery": self._discovery_status(),
            "auth": {"required": self.token is not None},
            "tls": self._tls_info(),
            "pairing": self.pairing_info(),
            "devices": {
                "known": len(hub.registry),
                "connected": len(hub.registry.connected_ids()),
                "pending": len(hub.registry.pending_ids()),
            },
            "recordings": await self.catalog.count(),
            "data_dir": str(self.store.root),
            "storage": self.integrity.to_dict(),
            "limits": {
                "max_upload_bytes": self.settings.max_upload_bytes,
                "max_frame_bytes": MAX_FRAME_BYTES,
                "max_connections": self._listener.max_connections if self._listener else None,
                "max_connections_per_ip": (self._listener.max_per_ip if self._listener
                                           else None),
            },
        }


def _valid_name(name: str | None) -> str | None:
    """A stored name, or ``None`` if today's rules refuse it (the default is used then)."""
    if name is None:
        return None
    try:
        return validate_server_name(name)
    except InvalidParameter:
        log.warning("stored server name %r is no longer valid; using the default", name)
        return None


def _default_name() -> str:
    host = socket.gethostname().split(".")[0] or "vocalink"
    return validate_server_name(f"Vocalink on {host}"[:63])


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])  # an IPv6 zone (%eth0) is no part of it
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches only this machine (``localhost``, 127/8, ::1)."""
    if host == "localhost":
        return True
    if not _is_ip(host):
        return False  # "" or a name: assume it reaches the LAN
    return ipaddress.ip_address(host.split("%")[0]).is_loopback


def local_addresses(host: str) -> list[str]:
    """IPv4 addresses this server can be reached at (interfaces enumerated, no traffic)."""
    if host not in ("", "0.0.0.0", "::"):
        return [host]
    import ifaddr  # comes with zeroconf

    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.append(ip.ip)
    return sorted(set(out), key=lambda a: (a.startswith("127."), a))
