"""Settings: explicit arguments > ``VOCALINK_*`` environment variables > defaults."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["ANDROID_PAIRING", "Settings", "merge_budget"]

#: How the VocalLink Android app's sessions are let in (`Settings.android`).
ANDROID_PAIRING = ("approve", "trust")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def merge_budget() -> int:
    """The default decoded size a merge may process: 4 x physical memory, >= 2 GiB.

    Returns
    -------
    int
        Bytes. A merge streams (it holds a few MiB whatever the length), so this bounds
        its work and the temporary float copies of the sources it must convert (another
        rate, or a format that cannot seek), not its memory.
    """
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume a small machine
        physical = 4 * 1024**3
    return max(2 * 1024**3, physical * 4)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a server needs to know, resolved once and never mutated.

    Parameters
    ----------
    data_dir : Path
        Where the catalog (``vocalink.db``), recordings and partial uploads live.
    host : str
        Address to listen on; ``"0.0.0.0"`` so that phones on the LAN can reach it.
    port : int
        TCP port; ``0`` picks a free one, which is then read back, shown and advertised.
    name : str or None
        Server name that devices see; ``None`` keeps the stored name (or a default).
    advertise : bool
        Announce the server with mDNS (``_vocalink._tcp.local.``).
    interfaces : tuple of str or None
        Addresses or interface names to advertise on; ``None`` means all.
    command_timeout_s : float
        How long a command waits for each target's ACK before it counts as TIMEOUT.
    heartbeat_s : float
        WebSocket ping interval; a device that misses a pong for this long is OFFLINE.
    register_timeout_s : float
        How long a new WebSocket may stay silent before it must have sent REGISTER.
    allowed_hosts : tuple of str or None
        Host names, besides the server's own (its addresses, ``localhost``, its ``.local``
        names, the machine's name), that a request's ``Host`` may name; others get 403, so
        a web page cannot reach the server through a name it rebinds (DNS rebinding).
    token : str or None
        The controller token (``VOCALINK_TOKEN``): every controller route asks for it, and
        a device that presents it is trusted. ``None``: the token kept in the data dir
        (``token``, mode 0600), made on first start.
    open : bool
        Authentication off, on purpose (``VOCALINK_OPEN=1``): any client may control the
        server and any device may record. Said in one line at start-up.
    join_code_ttl_s : float
        How long a join code (which pairs a device without a click) stays valid; a new
        one is made when it runs out.
    allowed_origins : tuple of str or None
        Origins (``https://lab.example.org``), besides the server's own, whose pages may
        open its WebSockets; a browser's socket from any other origin gets 403.
    tls : bool or None
        Serve HTTPS on the server's port as well as HTTP (``VOCALINK_TLS``): browsers give
        the microphone only to secure pages, so phones need the recorder page over HTTPS.
        Each connection's first byte tells which; the certificate comes from the data
        dir's own CA (``tls/``). ``None``: on when the server listens beyond loopback
        (``0.0.0.0``, ``::``, a LAN address), off when only on loopback.
    max_upload_bytes : int
        Largest accepted upload (413 above it).
    upload_idle_timeout_s : float
        An upload whose body stalls this long is answered 408 and dropped (a resumable
        upload keeps what it received).
    idle_timeout_s : float
        A connection with no request under way is closed after this long (keep-alive),
        or up to a quarter longer: connections opened together are not all closed at
        once.
    header_timeout_s : float
        A request's line and headers must all arrive within this long of their first
        byte (or up to a quarter longer, as for ``idle_timeout_s``); else 408, and the
        connection is closed.
    body_timeout_s : float
        A request body must arrive whole within this long, else the connection is
        closed; uploads have ``upload_idle_timeout_s`` instead.
    max_connections : int
        Connections open at once (HTTP and WebSocket); one more is answered 503
        ``too_busy``. Never more than the open-file limit leaves room for (the server
        raises its soft ``RLIMIT_NOFILE`` to the hard limit at start, then keeps an eighth
        of it, at least 64, for files and the like).
    max_connections_per_ip : int
        Connections open at once from one address, a device's WebSocket excepted once it
        is open (simulated devices share an address); one more is answered 503.
    sync_interval_s : float
        How often each device's clock is measured (a burst of ``sync_probes`` SYNC
        exchanges); a device is also measured as soon as it registers.
    sync_probes : int
        SYNC exchanges per burst.
    sync_first_gap_s : float
        The gap between a new device's first two bursts; each next gap is 1.4 times
        longer, up to ``sync_interval_s``: a device's drift is known within seconds of its
        joining, so that its first take starts in step.
    android : str
        How sessions of the VocalLink Android app are let in: ``"approve"`` (pending
        until an operator approves each, as any device without a key) or ``"trust"``
        (at once: for a private network; the app has no credential to pair with).
        ``VOCALINK_ANDROID``.
    schedule_lead_s : float
        START and STOP are scheduled at least this far ahead, so that every device acts
        at the same instant (more when round trips are long); 0 sends them to act on
        arrival.
    upload_expiry_s : float
        A resumable upload untouched this long is removed (its device still holds the
        recording until the server confirms it: nothing is lost).
    dsp_workers : int
        Processes that run enhance and merge jobs off the event loop; 0 picks the CPU
        count, at most 4. The pool starts on the first job.
    max_devices : int
        Devices the server keeps track of; a new one beyond it makes the server forget the
        device that has been offline longest, and is refused (ERROR ``too_busy``, then
        closed) when every known device is connected.
    max_announced_recordings : int
        Per device, announcements (RECORDING) of recordings that have not reached the
        catalog yet; beyond it the oldest are dropped and counted
        (``announcements_dropped`` in ``/api/clients``).
    events_queue_bytes : int
        Bytes of events that may wait for one ``/ws/events`` controller; one that falls
        further behind is closed with 1013 (try again later), and re-reads the state when
        it reconnects.
    max_resumable_uploads : int
        Resumable (tus) uploads in progress at once; one more is refused with 503
        ``too_busy`` (an upload untouched for ``upload_expiry_s`` no longer counts).
    max_pending_jobs : int
        Enhance and merge jobs queued or running at once; one more is refused with 503
        ``too_busy``.
    max_merge_decoded_bytes : int
        A merge whose inputs decode to more than this (frames x channels x 4 bytes, at
        the output rate) is refused with 413 before it starts. Merging streams, so this
        bounds the work and the temporary copies of converted sources, not memory. By
        default four times the machine's memory (96 GiB on 24 GiB: eight phones for 16
        hours at 48 kHz), at least 2 GiB; `merge_budget`.
    asr_model : Path, optional
        A folder holding a faster-whisper model (``model.bin``, ``config.json``,
        ``tokenizer.json``) to transcribe with (``VOCALINK_ASR_MODEL``); by default the
        whisper "base" model of the ``[asr]`` extra. Nothing is ever downloaded.
    transcribe_enhance : bool
        Whether transcription enhances the audio first (auto mode) when a request does
        not say (``VOCALINK_TRANSCRIBE_ENHANCE``); the default is what
        ``benchmarks/transcribe.py`` found reads better.
    """

    data_dir: Path = Path("data")
    host: str = "0.0.0.0"
    port: int = 0
    name: str | None = None
    advertise: bool = True
    interfaces: tuple[str, ...] | None = None
    command_timeout_s: float = 5.0
    heartbeat_s: float = 2.0
    register_timeout_s: float = 10.0
    allowed_hosts: tuple[str, ...] | None = None
    allowed_origins: tuple[str, ...] | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    open: bool = False
    join_code_ttl_s: float = 900.0
    tls: bool | None = None
    max_upload_bytes: int = 8 * 1024**3
    upload_idle_timeout_s: float = 60.0
    idle_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 4096
    max_connections_per_ip: int = 256
    upload_expiry_s: float = 24 * 3600.0
    sync_interval_s: float = 5.0
    sync_probes: int = 8
    sync_first_gap_s: float = 0.25
    schedule_lead_s: float = 0.2
    android: str = "approve"
    dsp_workers: int = 0
    max_devices: int = 1000
    max_announced_recordings: int = 1000
    events_queue_bytes: int = 4 * 1024**2
    max_resumable_uploads: int = 100
    max_pending_jobs: int = 32
    max_merge_decoded_bytes: int = dataclasses.field(default_factory=lambda: merge_budget())
    asr_model: Path | None = None
    transcribe_enhance: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.asr_model is not None:
            object.__setattr__(self, "asr_model", Path(self.asr_model))
        if self.token is not None and not self.token.strip():
            object.__setattr__(self, "token", None)  # VOCALINK_TOKEN= (blank) is unset
        for name in ("interfaces", "allowed_hosts", "allowed_origins"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be between 0 and 65535, got {self.port}")
        for name in ("command_timeout_s", "heartbeat_s", "register_timeout_s",
                     "upload_idle_timeout_s", "upload_expiry_s", "sync_interval_s",
                     "sync_first_gap_s", "idle_timeout_s", "header_timeout_s", "body_timeout_s",
                     "join_code_ttl_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.schedule_lead_s <= 60:
            problems.append(f"schedule_lead_s must be between 0 and 60, got "
                            f"{self.schedule_lead_s}")
        if self.android not in ANDROID_PAIRING:
            problems.append(f"android must be one of {', '.join(ANDROID_PAIRING)}, got "
                            f"'{self.android}' (VOCALINK_ANDROID)")
        if not 1 <= self.sync_probes <= 64:
            problems.append(f"sync_probes must be between 1 and 64, got {self.sync_probes}")
        if not 0 <= self.dsp_workers <= 256:
            problems.append(f"dsp_workers must be between 0 and 256, got {self.dsp_workers}")
        if self.max_upload_bytes <= 0:
            problems.append(f"max_upload_bytes must be positive, got {self.max_upload_bytes}")
        for name in ("max_connections", "max_connections_per_ip"):
            if not getattr(self, name) >= 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_devices", "max_announced_recordings", "events_queue_bytes",
                     "max_resumable_uploads", "max_pending_jobs", "max_merge_decoded_bytes"):
            if not getattr(self, name) >= 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.token is not None and not 16 <= len(self.token) <= 64:
            problems.append("token must be 16 to 64 characters (VOCALINK_TOKEN)")
        elif self.token is not None and (not self.token.isprintable() or " " in self.token):
            problems.append("token must be printable, without spaces (VOCALINK_TOKEN)")
        if problems:
            raise ConfigError("; ".join(problems), errors=problems)

    @classmethod
    def from_env(
        cls, prefix: str = "VOCALINK_", environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Build settings from ``<prefix><FIELD>`` variables, e.g. ``VOCALINK_PORT=8765``.

        Parameters
        ----------
        prefix : str
            Prefix of the variables to read.
        environ : mapping, optional
            Defaults to ``os.environ``.

        Raises
        ------
        ConfigError
            A variable cannot be cast to its setting's type; the message names it.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            var = prefix + f.name.upper()
            if var in environ:
                values[f.name] = _cast(var, environ[var], f.type)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (``None`` values are ignored)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _cast(var: str, raw: str, type_: Any) -> Any:
    kind = str(type_)
    try:
        if "Path" in kind:
            return None if "None" in kind and not raw.strip() else Path(raw)
        if "bool" in kind:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
        if "tuple" in kind:
            items = tuple(x.strip() for x in raw.split(",") if x.strip())
            return items or None
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        return raw
    except ValueError as exc:
        raise ConfigError(f"{var}={raw!r} is invalid: {exc}") from None
