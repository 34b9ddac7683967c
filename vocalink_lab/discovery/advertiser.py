"""Advertise one vocalink server with mDNS, and rename it live."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence
from typing import Any

from zeroconf import (
    BadTypeInNameException,
    NonUniqueNameException,
    RecordUpdate,
    RecordUpdateListener,
    Zeroconf,
    current_time_millis,
)
from zeroconf._dns import DNSService
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from ..errors import DiscoveryError
from .interfaces import InterfaceSelection, select_interfaces
from .service import (
    SERVICE_TYPE,
    TXT_VERSION,
    encode_properties,
    instance_name,
    label_of,
    with_suffix,
)

__all__ = ["Advertiser", "AdvertiserState"]

log = logging.getLogger(__name__)

#: Suffixes tried for a name already taken: "Studio (2)" ... "Studio (99)".
MAX_SUFFIX = 99
#: Probing takes about 1.2 s; this bounds one attempt on a loaded loop.
REGISTER_TIMEOUT_S = 15.0
#: DNS flags of an authoritative response (zeroconf's ``_FLAGS_QR_RESPONSE | _FLAGS_AA``).
_RESPONSE_FLAGS = 0x8000 | 0x0400


class AdvertiserState(enum.StrEnum):
    """Where an `Advertiser` is in its lifecycle."""

    STOPPED = "stopped"
    STARTING = "starting"
    ADVERTISING = "advertising"
    FAILED = "failed"


class Advertiser:
    """The mDNS advertisement of one server (``<name>._vocalink._tcp.local.``).

    Loop-only: create, start, rename and stop it on the event loop the server runs on
    (python-zeroconf's async API; the sync one would block that loop).

    A name already taken on the network gets a suffix, as mDNS responders do
    ("Studio (2)"); `name` is the name in use. When two servers claim one name at the
    same instant (both probe before either answers), the conflict is noticed after the
    announcement (RFC 6762 §9) and the server with the greater host name moves to the
    next free name, so exactly one of them renames.

    Parameters
    ----------
    name : str
        Requested server name (validated by the caller).
    port : int
        The bound TCP port.
    server_id : str
        Stable server id; also the SRV host name (``<server_id>.local.``), so that two
        servers on one machine, or two machines with one host name, never collide.
    ws_path : str
        Path of the devices' WebSocket, advertised in TXT.
    pairing : bool
        Whether devices must pair first, advertised in TXT.
    interfaces : sequence of str, optional
        Addresses or interface names to advertise on; ``None`` means all.
    properties : mapping, optional
        Extra TXT properties (e.g. the package version).
    on_name_change : callable, optional
        Called on the loop with the new name when a conflict changed the name in use.
    """

    def __init__(
        self,
        *,
        name: str,
        port: int,
        server_id: str,
        ws_path: str = "/ws/control",
        pairing: bool = False,
        interfaces: Sequence[str] | None = None,
        properties: dict[str, str] | None = None,
        on_name_change: Callable[[str], object] | None = None,
    ) -> None:
        self._requested = name
        self._name = name
        self.port = port
        self.server_id = server_id
        self.host = f"{server_id}.local."
        self._ws_path = ws_path
        self._pairing = pairing
        self._interfaces = tuple(interfaces) if interfaces is not None else None
        self._extra = dict(properties or {})
        self._on_name_change = on_name_change
        self._state = AdvertiserState.STOPPED
        self._error: str | None = None
        self._selection: InterfaceSelection | None = None
        self._azc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._watch: _ConflictWatch | None = None
        self._conflict_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: Bound on one registration attempt (probing takes about 1.2 s).
        self.register_timeout_s = REGISTER_TIMEOUT_S

    # -- what it says ----------------------------------------------------------------------

    @property
    def state(self) -> AdvertiserState:
        """Current lifecycle state."""
        return self._state

    @property
    def name(self) -> str:
        """The name in use on the network (the requested one, or it with a suffix)."""
        return self._name

    @property
    def requested_name(self) -> str:
        """The name asked for."""
        return self._requested

    @property
    def error(self) -> str | None:
        """Why advertising failed, when it did."""
        return self._error

    def status(self) -> dict[str, Any]:
        """JSON-ready state, shown by ``GET /api/server`` under ``discovery``."""
        selection = self._selection
        return {
            "state": self._state.value,
            "name": self._name,
            "requested_name": self._requested,
            "instance": instance_name(self._name),
            "service_type": SERVICE_TYPE,
            "host": self.host,
            "port": self.port,
            "addresses": list(selection.addresses) if selection else [],
            "interfaces": selection.describe() if selection else (
                ", ".join(self._interfaces) if self._interfaces else "all interfaces"),
            "error": self._error,
        }

    def _service_info(self, name: str) -> AsyncServiceInfo:
        assert self._selection is not None
        properties = encode_properties({
            "txtvers": TXT_VERSION, "name": name, "id": self.server_id, "proto": "1",
            "ws": self._ws_path, "pairing": self._pairing, **self._extra,
        })
        return AsyncServiceInfo(
            SERVICE_TYPE, instance_name(name), port=self.port, properties=properties,
            server=self.host, parsed_addresses=list(self._selection.addresses),
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> AdvertiserState:
        """Probe for the name and announce the service (idempotent).

        Never raises for a network problem: the state becomes ``FAILED`` and `error`
        says why, so that a server without multicast still serves HTTP.
        """
        async with self._lock:
            if self._state is AdvertiserState.ADVERTISING:
                return self._state
            self._state, self._error = AdvertiserState.STARTING, None
            try:
                self._selection = select_interfaces(self._interfaces)
                self._azc = AsyncZeroconf(interfaces=self._selection.listen,
                                          ip_version=self._selection.ip_version)
                self._info = await self._register_free(self._requested)
            except asyncio.CancelledError:
                await self._close_zeroconf()
                self._state = AdvertiserState.STOPPED
                raise
            except Exception as exc:  # zeroconf raises OSError, RuntimeError, its own errors
                await self._close_zeroconf()
                self._state = AdvertiserState.FAILED
                self._error = _explain(exc)
                log.warning("mDNS advertising failed: %s", self._error)
                return self._state
            self._watch = _ConflictWatch(self)
            self._azc.zeroconf.async_add_listener(self._watch, None)
            self._state = AdvertiserState.ADVERTISING
            self._adopt(self._info)
            # A rival announced while we were still probing is in the cache already; the
            # watch only sees records that arrive from now on.
            rival = self._rival(self._info.name)
            if rival is not None:
                self._conflict_seen(self._info.name.lower(), rival)
            log.info("advertising '%s' (%s) on %s", self._name, SERVICE_TYPE,
                     self._selection.describe())
            return self._state

    async def stop(self) -> None:
        """Send goodbye packets and close the mDNS sockets (idempotent)."""
        if self._conflict_task is not None:
            self._conflict_task.cancel()
        async with self._lock:
            await self._close_zeroconf()
            if self._state is not AdvertiserState.FAILED:
                self._state = AdvertiserState.STOPPED

    async def __aenter__(self) -> Advertiser:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _close_zeroconf(self) -> None:
        azc, self._azc, self._info = self._azc, None, None
        if azc is None:
            return
        if self._watch is not None:
            azc.zeroconf.async_remove_listener(self._watch)
            self._watch = None
        try:
            await azc.async_close()  # unregisters every service: goodbye packets first
        except Exception as exc:
            log.warning("closing mDNS failed: %s", _explain(exc))

    # -- naming ----------------------------------------------------------------------------

    async def rename(self, name: str) -> str:
        """Advertise under ``name`` instead, and return the name in use.

        The new name is probed and announced before the old one is withdrawn, so
        browsers see the new instance appear and then the old one leave. A name taken
        on the network gets a suffix. When not advertising, only the name is stored.

        Raises
        ------
        DiscoveryError
            The new name could not be registered; the old one is still advertised.
        """
        async with self._lock:
            if self._state is not AdvertiserState.ADVERTISING or self._azc is None:
                self._requested = self._name = name
                return name
            if name == self._requested:
                return self._name
            old = self._info
            assert old is not None
            same_label = instance_name(name).lower() == old.name.lower()
            if same_label:  # only the case changes: the old record would conflict with it
                await self._azc.async_unregister_service(old)
            try:
                new = await self._register_free(name, keep=None if same_label else old)
            except Exception as exc:
                if same_label:
                    await self._restore(old)
                raise DiscoveryError(
                    f"could not advertise the name {name!r}: {_explain(exc)}; "
                    f"still advertised as {self._name!r}") from exc
            if not same_label and new is not old:
                await self._azc.async_unregister_service(old)
            self._requested = name
            self._adopt(new, notify=False)
            return self._name

    async def _restore(self, info: AsyncServiceInfo) -> None:
        assert self._azc is not None
        try:
            # The full bound: whatever made the new name fail, the old one must come back.
            self._info = await self._register_free(label_of(info.name),
                                                   timeout_s=REGISTER_TIMEOUT_S)
        except Exception as exc:
            self._state, self._error = AdvertiserState.FAILED, _explain(exc)
            log.error("mDNS: could not restore the old name: %s", self._error)

    async def _register_free(
        self, requested: str, keep: AsyncServiceInfo | None = None,
        timeout_s: float | None = None,
    ) -> AsyncServiceInfo:
        """Register ``requested``, or the first free ``requested (n)``; probing included.

        ``keep`` is our current registration: returned as is when the free name is its
        name (a rename to "Studio" while advertised as "Studio (2)" and "Studio" taken).
        """
        assert self._azc is not None
        for number in range(1, MAX_SUFFIX + 1):
            info = self._service_info(with_suffix(requested, number))
            if keep is not None and info.name.lower() == keep.name.lower():
                if info.name == keep.name:
                    return keep
                continue
            if self._taken(info.name):
                continue
            try:
                await asyncio.wait_for(self._azc.async_register_service(info),
                                       timeout_s or self.register_timeout_s)
            except NonUniqueNameException:
                log.info("mDNS name %r is taken; trying the next", label_of(info.name))
                continue
            return info
        raise DiscoveryError(f"every name from {requested!r} to suffix ({MAX_SUFFIX}) is taken")

    def _rival(self, instance: str) -> str | None:
        """The host of another server's cached SRV for ``instance`` (any letter case).

        zeroconf's own probe compares names case-sensitively; DNS names are not.
        """
        assert self._azc is not None
        now = current_time_millis()
        for record in self._azc.zeroconf.cache.async_entries_with_name(instance.lower()):
            if (isinstance(record, DNSService) and record.server.lower() != self.host.lower()
                    and not record.is_expired(now)):
                return str(record.server)
        return None

    def _taken(self, instance: str) -> bool:
        return self._rival(instance) is not None

    def _adopt(self, info: AsyncServiceInfo, *, notify: bool = True) -> None:
        self._info = info
        name = label_of(info.name)
        changed = name != self._name
        self._name = name
        if changed and notify and self._on_name_change is not None:
            self._on_name_change(name)

    # -- conflicts after announcement (RFC 6762 §9) ---------------------------------------

    def _conflict_seen(self, key: str, other_host: str) -> None:
        """Another responder announced our instance name with another SRV target."""
        if other_host.lower() > self.host.lower():
            return  # the other one yields
        if self._conflict_task is None or self._conflict_task.done():
            self._conflict_task = asyncio.get_running_loop().create_task(self._move_away(key))

    async def _move_away(self, key: str) -> None:
        async with self._lock:
            # Loops while the new name, too, was claimed by a winning rival meanwhile.
            while True:
                old = self._info
                if (self._state is not AdvertiserState.ADVERTISING or self._azc is None
                        or old is None or old.name.lower() != key):
                    return  # renamed or stopped meanwhile
                zc = self._azc.zeroconf
                zc.registry.async_remove(old)
                # Withdraw only what is ours: the PTR record is the same as the other
                # server's, and a goodbye for it would make browsers drop the other too.
                goodbye = DNSOutgoing(_RESPONSE_FLAGS)
                goodbye.add_answer_at_time(old.dns_service(override_ttl=0), 0)
                goodbye.add_answer_at_time(old.dns_text(override_ttl=0), 0)
                zc.async_send(goodbye)
                log.warning("mDNS name %r is also claimed by another server; moving",
                            label_of(old.name))
                try:
                    new = await self._register_free(self._requested)
                except Exception as exc:
                    self._state, self._error = AdvertiserState.FAILED, _explain(exc)
                    log.error("mDNS: could not resolve a name conflict: %s", self._error)
                    return
                self._adopt(new)
                rival = self._rival(new.name)
                if rival is None or rival.lower() > self.host.lower():
                    return
                key = new.name.lower()


class _ConflictWatch(RecordUpdateListener):
    """Sees every record zeroconf caches, and reports an SRV for our name that is not ours."""

    def __init__(self, advertiser: Advertiser) -> None:
        self._advertiser = advertiser

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        info = self._advertiser._info
        if info is None:
            return
        key = info.name.lower()
        ours = self._advertiser.host.lower()
        for update in records:
            record = update.new
            if (isinstance(record, DNSService) and record.key == key and record.ttl > 0
                    and record.server.lower() != ours):
                self._advertiser._conflict_seen(key, record.server)


def _explain(exc: BaseException) -> str:
    """One readable line for an mDNS failure."""
    if isinstance(exc, DiscoveryError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "mDNS registration timed out (is the event loop blocked?)"
    if isinstance(exc, BadTypeInNameException):
        return f"the name is not valid in mDNS ({exc})"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"no multicast-capable interface ({exc.strerror or exc})"
    text = str(exc) or type(exc).__name__
    return text
