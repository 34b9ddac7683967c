"""Hostile clients: ``/ping`` latency and server memory, idle vs under three attacks at once.

One ``vocalink serve`` child (loopback, no mDNS, ``VOCALINK_IDLE_TIMEOUT_S`` and
``VOCALINK_HEADER_TIMEOUT_S`` set to ``--idle-timeout-s`` / ``--header-timeout-s``, 5 s and
3 s by default instead of 60 s and 10 s, so that a run sees every attacker closed; the
head's deadline is the shorter, so that the slow-loris clients meet it rather than the idle
timeout, which Tornado also counts from a connection's start). This process is the
legitimate client; the attackers run in a second child (this script with ``--attacker``),
so that their work never delays this process's measurements through its own event loop or
the GIL. (One file, past the usual 600 lines, on purpose: the attacker's `Plan` and the
shape of its report are read on both sides.)

1. Idle: a 0.5 MiB WAV is uploaded (``POST /api/audio/upload``) and one device registers
   with the token (warm-up: the upload path, the devices' socket). Then ``GET /ping``
   ``--pings`` times, one fresh connection each (``Connection: close``: every ping pays
   for an accept, as a new client does), one every ``--ping-interval-ms``; p50 and p99 of
   connect to the whole response. The server's RSS (psutil) just before the attack is
   the idle RSS.
2. Under attack, at once, for ``--attack-s`` seconds:

   - ``--idle`` TCP sockets that connect and send nothing;
   - ``--loris`` slow-loris clients: a request head sent ``--loris-bytes`` bytes every
     ``--loris-interval-s``, never finished;
   - a REGISTER flood on ``/ws/control``: ``--flood-rate`` new WebSockets a second (at
     most ``--flood-concurrency`` at once), each sending
     ``{"type":"REGISTER","device_id":"flood-<n>","name":"flood","protocol":1}`` without
     the token (the attacker has none), reading the reply, holding ``--flood-hold-s``,
     closing.

   An idle socket or slow-loris client that the server closes reconnects at once, as a
   real attacker would, so the pressure lasts the whole attack. The attackers connect
   from 127.0.0.2 onwards, 200 connections per address: the server caps connections per
   address (256 by default), and the attackers must neither be refused wholesale by that
   cap nor use up the legitimate client's share of it (127.0.0.1). Every packet goes to
   127.0.0.1. Meanwhile ``/ping`` is measured as in step 1, and halfway through the attack
   a second WAV is uploaded. The server's RSS is sampled every 50 ms until the last
   attacker has gone; growth = peak minus idle RSS.
3. When the attack ends nobody reconnects, and the attackers wait for the server to close
   what they still hold. For every idle socket and slow-loris connection the time from
   connect to the server closing it is recorded; any still open ``GIVE_UP_S`` past the
   longer timeout is counted as never closed (then the attacker closes it).
4. Nothing lost: afterwards ``GET /api/audio/list`` counts both uploads (and nothing
   else), and both download with their sha256.

Every request but ``/ping`` carries ``Authorization: Bearer $VOCALINK_TOKEN``; without
the variable a token is made for the run (``secrets.token_urlsafe(32)``) and given to
the server. The flood never carries it.

Goals: ``/ping`` p99 under attack <= 2 x idle p99, and no ping failed; server RSS growth
< 64 MiB; nothing lost; every attacker's connection closed by the server within its
timeout + ``GRACE_S`` (an idle socket: the idle timeout; a slow-loris client: the shorter
of the two). Exit status 1 when a goal is missed.

Usage: ``python benchmarks/hostile.py`` (1,000 idle sockets, 200 slow-loris clients, a
100/s flood for 30 s; about a minute), ``--quick`` (100, 20, 20/s for 6 s; about 15 s:
a smoke test, where the p99 goal is printed but not judged: a few hundred pings over a
few seconds make a p99 that one scheduling hiccup moves).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import itertools
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from _common import (
    BENCH_DIR,
    PYTHON,
    Child,
    MiB,
    RssSampler,
    WavFile,
    children,
    make_wav,
    percentile,
    raise_nofile_limit,
    read_url,
    start_vocalink,
    table,
)

GOAL_P99_RATIO = 2.0
GOAL_RSS_MIB = 64.0
#: How far past its timeout a connection may still be open and count as bounded: the
#: server's timers fire on a busy loop, and the client learns of the close one read later.
GRACE_S = 2.0
#: After the attack, how long past the longer timeout the attackers wait for the server
#: to close what they hold before they count it as never closed.
GIVE_UP_S = 10.0
#: Attacker connections per source address: under the server's cap per address (256).
PER_ADDRESS = 200
#: Connection attempts in flight at once per attacker kind: the server's listen backlog
#: is 128, and a SYN dropped from a full queue is retried only a second later.
CONNECT_SLOTS = 64
CONNECT_TIMEOUT_S = 5.0
#: An attacker refused (503) or unable to connect waits this long before trying again.
RETRY_S = 0.1
#: The attackers must all be connected within this long, or the attack starts anyway
#: (the report gives the count reached).
READY_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 10.0
HOST = "127.0.0.1"


# -- the legitimate client: /ping, the REST API, uploads ---------------------------------

def ping_once(port: int) -> float:
    """One ``GET /ping`` on a fresh connection; its seconds from connect to the last byte.

    Parameters
    ----------
    port : int
        The server's port on 127.0.0.1.

    Returns
    -------
    float
        Seconds.

    Raises
    ------
    RuntimeError
        The answer is not the 200 ``server alive`` one.
    OSError
        The connection failed or timed out.
    """
    request = (f"GET /ping HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
               "Connection: close\r\n\r\n").encode()
    began = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=PING_TIMEOUT_S) as sock:
        sock.sendall(request)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    seconds = time.perf_counter() - began
    response = b"".join(chunks)
    if not response.startswith(b"HTTP/1.1 200") or b"server alive" not in response:
        raise RuntimeError(f"/ping answered {response[:200]!r}")
    return seconds


@dataclass
class Pings:
    """Latencies of a series of pings, when each began (s into the series), the failures."""

    seconds: list[float] = field(default_factory=list)
    began_at: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def ms(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the latencies, in ms."""
        return percentile(self.seconds, q) * 1000

    def slowest(self, n: int) -> str:
        """The ``n`` slowest, as ``ms @ s into the series``, slowest first."""
        worst = sorted(zip(self.seconds, self.began_at, strict=True), reverse=True)[:n]
        return ", ".join(f"{s * 1000:.1f} ms @ {t:.2f} s" for s, t in worst)


def ping_series(port: int, *, interval_s: float, count: int | None = None,
                duration_s: float | None = None,
                halfway: Callable[[], None] | None = None) -> Pings:
    """Pings on a fixed schedule, ``count`` of them or for ``duration_s`` seconds.

    A ping that takes longer than the interval delays the next one (never two at once:
    this client is not a load of its own).

    Parameters
    ----------
    port : int
        The server's port on 127.0.0.1.
    interval_s : float
        Seconds from the start of one ping to the start of the next.
    count, duration_s : int or float, optional
        When to stop: after ``count`` pings, or once ``duration_s`` seconds have gone by.
    halfway : callable, optional
        Runs once, between two pings and not measured, when half the series has gone by.

    Returns
    -------
    Pings
        Every latency and failure.
    """
    pings = Pings()
    began = time.perf_counter()
    for i in itertools.count():
        elapsed = time.perf_counter() - began
        if (count is not None and i >= count) or (duration_s is not None
                                                  and elapsed >= duration_s):
            break
        half_gone = (elapsed >= duration_s / 2 if duration_s is not None
                     else i >= (count or 0) // 2)
        if halfway is not None and half_gone:
            halfway()
            halfway = None
        try:
            pings.seconds.append(ping_once(port))
            pings.began_at.append(elapsed)
        except (OSError, RuntimeError) as exc:
            pings.failures.append(f"{type(exc).__name__}: {exc}")
        wait = began + (i + 1) * interval_s - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    return pings


class Api:
    """The REST API of the server on 127.0.0.1, every request with the controller token."""

    def __init__(self, port: int, token: str, timeout_s: float = 60.0) -> None:
        self.port = port
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request on its own connection, with the token.

        Parameters
        ----------
        method, path : str
            ``GET``, ``/api/audio/list``...
        body : bytes, optional
            The whole body.
        headers : dict, optional
            More headers.

        Returns
        -------
        tuple of (int, bytes)
            The status and the whole body.
        """
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout_s)
        try:
            conn.request(method, path, body=body, headers={
                "Authorization": f"Bearer {self.token}", **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        """``GET path``, decoded; raise `RuntimeError` unless 200."""
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    def upload(self, wav: WavFile, recording_id: str) -> float:
        """Upload ``wav`` as ``recording_id`` to ``POST /api/audio/upload`` (multipart).

        Parameters
        ----------
        wav : WavFile
            The file and its sha256.
        recording_id : str
            The id to catalogue it under.

        Returns
        -------
        float
            Seconds from sending the request to having the answer.

        Raises
        ------
        RuntimeError
            The answer is not 201, or the catalog row has another sha256.
        """
        boundary = f"vl-hostile-{uuid.uuid4().hex}"
        body = b"".join([
            (f'--{boundary}\r\nContent-Disposition: form-data; name="recording_id"\r\n\r\n'
             f"{recording_id}\r\n"
             f'--{boundary}\r\nContent-Disposition: form-data; name="device_id"\r\n\r\n'
             "bench-device\r\n"
             f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
             'filename="take.wav"\r\nContent-Type: audio/wav\r\n\r\n').encode(),
            wav.path.read_bytes(),  # half a MiB: held in memory is fine
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        began = time.perf_counter()
        status, raw = self.request("POST", "/api/audio/upload", body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        seconds = time.perf_counter() - began
        if status != 201:
            raise RuntimeError(f"upload of {recording_id}: HTTP {status}: {raw[:300]!r}")
        if json.loads(raw)["recording"].get("sha256") != wav.sha256:
            raise RuntimeError(f"upload of {recording_id}: the catalog has another sha256")
        return seconds

    def downloads_intact(self, recording_id: str, sha256: str) -> bool:
        """Whether ``GET /api/audio/{recording_id}`` gives bytes with this ``sha256``."""
        status, body = self.request("GET", f"/api/audio/{recording_id}")
        return status == 200 and hashlib.sha256(body).hexdigest() == sha256


def register_one(port: int, device_id: str, token: str) -> str:
    """Register a device with the token on ``/ws/control``, from 127.0.0.1.

    Parameters
    ----------
    port : int
        The server's port.
    device_id : str
        The device's id.
    token : str
        The controller token: this device is trusted.

    Returns
    -------
    str
        The outcome, as `_register` words it (``WELCOME`` when all is well).
    """
    async def run() -> str:
        reply, _ = await _register(port, HOST, device_id, "bench device", token, hold_s=0.0,
                                   open_timeout=10)
        return reply
    return asyncio.run(run())


async def _register(port: int, local_ip: str, device_id: str, name: str, token: str | None,
                    *, hold_s: float, open_timeout: float) -> tuple[str, float]:
    """Open ``/ws/control`` from ``local_ip``, send REGISTER, read one reply, hold, close.

    Returns the outcome (the reply's type, ``ERROR:<code>``, ``closed:<code>`` or
    ``no reply``; and how the server closed it during the hold, if it did) and the
    seconds the connection was open after the REGISTER.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    frame: dict[str, Any] = {"type": "REGISTER", "device_id": device_id, "name": name,
                             "protocol": 1}
    if token is not None:
        frame["token"] = token
    # proxy=None: never through an HTTP proxy from the environment, only to 127.0.0.1.
    async with connect(f"ws://{HOST}:{port}/ws/control", proxy=None, compression=None,
                       open_timeout=open_timeout, close_timeout=2, ping_interval=None,
                       max_size=2**16, local_addr=(local_ip, 0)) as ws:
        opened = time.monotonic()
        await ws.send(json.dumps(frame, separators=(",", ":")))
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            outcome = str(reply.get("type"))
            if outcome == "ERROR":
                outcome = f"ERROR:{reply.get('code')}"
        except ConnectionClosed as exc:
            outcome = f"closed:{exc.rcvd.code if exc.rcvd else 'abnormal'}"
        except TimeoutError:
            outcome = "no reply"
        if hold_s > 0:  # held open, unless the server closes it first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), hold_s)
                outcome += f", then closed by the server ({ws.close_code} {ws.close_reason})"
        return outcome, time.monotonic() - opened


# -- the attackers (a child process: ``--attacker PLAN``) --------------------------------

@dataclass
class Plan:
    """What the attacker child does; it travels as JSON on its command line."""

    port: int
    idle: int
    loris: int
    loris_interval_s: float
    loris_bytes: int
    flood_rate: float
    flood_concurrency: int
    flood_hold_s: float
    max_attack_s: float  # the attack stops by itself after this, told to or not
    give_up_s: float  # after it, wait this long for the server to close what is held


@dataclass
class Tally:
    """One kind of connection-holding attacker: what became of its connections."""

    connections: int = 0
    held_s: list[float] = field(default_factory=list)  # connect -> closed by the server
    still_open_s: list[float] = field(default_factory=list)  # never closed by the server
    refused: int = 0  # answered 503 (a cap)
    answered_408: int = 0
    connect_errors: dict[str, int] = field(default_factory=dict)

    def closed(self, opened: float, first_bytes: bytes) -> None:
        """Count a connection the server closed.

        It was opened at ``opened`` (monotonic); ``first_bytes`` are what the server sent
        (a 503 or a 408 answer, or nothing).
        """
        self.held_s.append(time.monotonic() - opened)
        if first_bytes.startswith(b"HTTP/1.1 503"):
            self.refused += 1
        elif first_bytes.startswith(b"HTTP/1.1 408"):
            self.answered_408 += 1


@dataclass
class Flood:
    """The REGISTER flood: outcomes by kind."""

    attempts: int = 0
    skipped: int = 0  # the rate's slots not used: ``flood_concurrency`` still in flight
    outcomes: dict[str, int] = field(default_factory=dict)
    open_s: list[float] = field(default_factory=list)


def source_addresses(first: int, count: int) -> list[str]:
    """Loopback source addresses for ``count`` connections, ``PER_ADDRESS`` on each.

    Parameters
    ----------
    first : int
        The last byte of the first address (127.0.0.``first``).
    count : int
        Connections to place.

    Returns
    -------
    list of str
        At least one address.
    """
    n = max(1, -(-count // PER_ADDRESS))
    if first + n > 255:
        raise ValueError("too many attackers for 127.0.0.0/24")
    return [f"127.0.0.{first + i}" for i in range(n)]


class Attack:
    """Every attacker, on one event loop; `run` ends by itself.

    Loop-only.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.idle = Tally()
        self.loris = Tally()
        self.flood = Flood()
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._first_connected = 0
        self._slots = {"idle": asyncio.Semaphore(CONNECT_SLOTS),
                       "loris": asyncio.Semaphore(CONNECT_SLOTS)}
        idle_ips = source_addresses(2, plan.idle)
        loris_ips = source_addresses(2 + len(idle_ips), plan.loris)
        self.flood_ip = source_addresses(2 + len(idle_ips) + len(loris_ips), 1)[0]
        self.idle_ips = [idle_ips[i // PER_ADDRESS] for i in range(plan.idle)]
        self.loris_ips = [loris_ips[i // PER_ADDRESS] for i in range(plan.loris)]

    def _connected_once(self) -> None:
        self._first_connected += 1
        if self._first_connected == self.plan.idle + self.plan.loris:
            self.ready.set()

    async def _connect(self, kind: str, ip: str, tally: Tally
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with self._slots[kind]:
            try:
                conn = await asyncio.wait_for(asyncio.open_connection(
                    HOST, self.plan.port, local_addr=(ip, 0)), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                name = type(exc).__name__
                tally.connect_errors[name] = tally.connect_errors.get(name, 0) + 1
                return None
        tally.connections += 1
        return conn

    @staticmethod
    async def _until_closed(reader: asyncio.StreamReader) -> bytes:
        """Read until the server closes; the first bytes it sent (an error response)."""
        first = b""
        with contextlib.suppress(OSError):  # a reset is a close too
            while data := await reader.read(65536):
                if len(first) < 64:
                    first += data[:64]
        return first

    async def _idle_socket(self, ip: str) -> None:
        counted = False
        while not self.stopping.is_set():
            conn = await self._connect("idle", ip, self.idle)
            if conn is None:
                await asyncio.sleep(RETRY_S)
                continue
            reader, writer = conn
            opened = time.monotonic()
            if not counted:
                counted = True
                self._connected_once()
            try:
                first = await self._until_closed(reader)
            except asyncio.CancelledError:  # given up: the server never closed it
                self.idle.still_open_s.append(time.monotonic() - opened)
                writer.close()
                raise
            self.idle.closed(opened, first)
            writer.close()
            if first.startswith(b"HTTP/1.1 503"):
                await asyncio.sleep(RETRY_S)

    def _loris_bytes(self) -> Iterator[bytes]:
        """An endless request head, ``loris_bytes`` bytes at a time (no blank line, ever)."""
        def head() -> Iterator[int]:
            yield from (f"GET /api/audio/list HTTP/1.1\r\nHost: {HOST}:{self.plan.port}\r\n"
                        .encode())
            for i in itertools.count():
                yield from f"X-Loris-{i}: {i}\r\n".encode()
        stream = head()
        while True:
            yield bytes(itertools.islice(stream, self.plan.loris_bytes))

    async def _slow_loris(self, ip: str) -> None:
        counted = False
        while not self.stopping.is_set():
            conn = await self._connect("loris", ip, self.loris)
            if conn is None:
                await asyncio.sleep(RETRY_S)
                continue
            reader, writer = conn
            opened = time.monotonic()
            reading = asyncio.ensure_future(self._until_closed(reader))
            try:
                for chunk in self._loris_bytes():
                    try:
                        writer.write(chunk)
                        await writer.drain()
                    except OSError:  # closed by the server; the reader sees it too
                        break
                    if not counted:
                        counted = True
                        self._connected_once()
                    done, _ = await asyncio.wait({reading}, timeout=self.plan.loris_interval_s)
                    if done:
                        break
                first = await reading
            except asyncio.CancelledError:
                reading.cancel()
                self.loris.still_open_s.append(time.monotonic() - opened)
                writer.close()
                raise
            self.loris.closed(opened, first)
            writer.close()
            if first.startswith(b"HTTP/1.1 503"):
                await asyncio.sleep(RETRY_S)

    async def _register(self, n: int) -> None:
        from websockets.exceptions import InvalidStatus

        try:
            outcome, open_s = await _register(self.plan.port, self.flood_ip, f"flood-{n}",
                                              "flood", None, hold_s=self.plan.flood_hold_s,
                                              open_timeout=CONNECT_TIMEOUT_S)
            self.flood.open_s.append(open_s)
        except InvalidStatus as exc:
            outcome = f"HTTP {exc.response.status_code}"
        except (OSError, TimeoutError) as exc:
            outcome = type(exc).__name__
        except Exception as exc:  # the flood reports every outcome, it never stops on one
            outcome = type(exc).__name__
        self.flood.outcomes[outcome] = self.flood.outcomes.get(outcome, 0) + 1

    async def _flood(self) -> None:
        if self.plan.flood_rate <= 0:  # --flood-rate 0: the other attacks alone
            return
        in_flight: set[asyncio.Task[None]] = set()
        interval = 1 / self.plan.flood_rate
        next_at = time.monotonic()
        for n in itertools.count():
            if self.stopping.is_set():
                break
            if len(in_flight) < self.plan.flood_concurrency:
                self.flood.attempts += 1
                task = asyncio.ensure_future(self._register(n))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            else:
                self.flood.skipped += 1
            next_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(),
                                       max(0.0, next_at - time.monotonic()))
        if in_flight:
            await asyncio.wait(in_flight)

    async def run(self, stop_requested: asyncio.Event,
                  announce: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Attack until ``stop_requested`` (or ``max_attack_s``), then wait and report.

        Parameters
        ----------
        stop_requested : asyncio.Event
            Set when the attack is to end.
        announce : callable
            Called with ``{"event": "ready", ...}`` once every idle socket and slow-loris
            client is connected (or `READY_TIMEOUT_S` has gone by).

        Returns
        -------
        dict
            ``{"event": "done", ...}``: the `Tally` of each kind, the `Flood`, durations.
        """
        holders = [asyncio.ensure_future(self._idle_socket(ip)) for ip in self.idle_ips]
        holders += [asyncio.ensure_future(self._slow_loris(ip)) for ip in self.loris_ips]
        began = time.monotonic()
        if not holders:  # --idle 0 --loris 0: the flood alone
            self.ready.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT_S)
        announce({"event": "ready", "connected": self._first_connected,
                  "setup_s": time.monotonic() - began})
        flooding = asyncio.ensure_future(self._flood())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_requested.wait(), self.plan.max_attack_s)
        self.stopping.set()
        stopped = time.monotonic()
        await flooding
        # Nobody reconnects now; what is still held is the server's to close.
        if holders:
            _, pending = await asyncio.wait(holders, timeout=self.plan.give_up_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
        return {"event": "done", "attack_s": stopped - began,
                "drain_s": time.monotonic() - stopped, "idle": asdict(self.idle),
                "loris": asdict(self.loris), "flood": asdict(self.flood)}


def attacker_main(plan_json: str) -> int:
    """Run the attacker child: a `Plan` in, JSON lines out (``ready``, then ``done``).

    A line or EOF on stdin ends the attack (it also ends by itself after
    ``max_attack_s``).

    Parameters
    ----------
    plan_json : str
        The `Plan`, as JSON.

    Returns
    -------
    int
        The exit status, 0.
    """
    plan = Plan(**json.loads(plan_json))
    raise_nofile_limit()

    def announce(line: dict[str, Any]) -> None:
        print(json.dumps(line), flush=True)

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def watch_stdin() -> None:  # a line or EOF: either way, stop
            sys.stdin.readline()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
        return await Attack(plan).run(stop, announce)

    announce(asyncio.run(main()))
    return 0


# -- the benchmark ---------------------------------------------------------------------

@dataclass
class Outcome:
    """Every figure of a run, for `report` (RSS in bytes, times in seconds)."""

    idle_pings: Pings
    attack_pings: Pings
    idle_rss: int
    peak_rss: int
    after_rss: int
    window_s: float  # the pings under attack
    cpu_s: dict[str, float]  # CPU seconds in that window: server, attackers, client
    attack: dict[str, Any]
    ready: dict[str, Any]
    uploads_s: dict[str, float]
    listed_before: int
    listed_after: int
    intact: dict[str, bool]


def held_summary(tally: dict[str, Any]) -> tuple[float, float, float]:
    """Summarize one attacker kind's `Tally` (as a dict, from the child's JSON).

    Returns
    -------
    tuple of float
        Seconds: p50 and max of the connections the server closed (NaN if none), and
        the longest of those it never closed (0 if none).
    """
    held = tally["held_s"]
    return (percentile(held, 50), max(held, default=float("nan")),
            max(tally["still_open_s"], default=0.0))


def report(o: Outcome, args: argparse.Namespace) -> bool:
    """Print the figures beside their baselines, and the goals.

    Returns
    -------
    bool
        Whether every goal judged in this mode is met.
    """
    ratio50 = o.attack_pings.ms(50) / o.idle_pings.ms(50)
    ratio99 = o.attack_pings.ms(99) / o.idle_pings.ms(99)
    growth_mib = (o.peak_rss - o.idle_rss) / MiB
    print()
    print(f"/ping on a fresh connection each, one per {args.ping_interval_ms:g} ms: "
          f"{len(o.idle_pings.seconds)} idle, {len(o.attack_pings.seconds)} under attack "
          f"({o.window_s:.1f} s); CPU under attack, share of a core ({psutil.cpu_count()} "
          "cores): " + ", ".join(f"{k} {v / o.window_s:.0%}" for k, v in o.cpu_s.items()))
    print(table(["figure", "idle", "under attack", "attack/idle"], [
        ["/ping p50 ms", o.idle_pings.ms(50), o.attack_pings.ms(50), ratio50],
        ["/ping p99 ms", o.idle_pings.ms(99), o.attack_pings.ms(99), ratio99],
        ["/ping max ms", o.idle_pings.ms(100), o.attack_pings.ms(100),
         o.attack_pings.ms(100) / o.idle_pings.ms(100)],
        ["/ping failed", len(o.idle_pings.failures), len(o.attack_pings.failures), ""],
        ["upload 0.5 MiB s", o.uploads_s["idle"], o.uploads_s["attack"],
         o.uploads_s["attack"] / o.uploads_s["idle"]],
        ["server RSS MiB", o.idle_rss / MiB, o.peak_rss / MiB,
         f"+{growth_mib:.1f} MiB (after: {o.after_rss / MiB:.1f})"],
    ]))
    print(f"slowest pings under attack (s into the attack): {o.attack_pings.slowest(5)}")
    print()
    idle, loris, flood = o.attack["idle"], o.attack["loris"], o.attack["flood"]
    rows: list[list[object]] = []
    for name, count, tally in (("idle sockets", args.idle, idle),
                               ("slow loris", args.loris, loris)):
        p50, held_max, _ = held_summary(tally)
        errors = ", ".join(f"{k} {v}" for k, v in tally["connect_errors"].items()) or "0"
        rows.append([name, count, tally["connections"], len(tally["held_s"]),
                     len(tally["still_open_s"]), tally["refused"], tally["answered_408"],
                     errors, p50, held_max])
    print(f"attackers, each reconnecting when closed until the attack ends (connected "
          f"{o.ready['connected']}/{args.idle + args.loris} in {o.ready['setup_s']:.1f} s); "
          f"held s = connect -> closed by the server")
    print(table(["attacker", "at once", "connections", "closed by server", "never closed",
                 "503", "408", "connect errors", "held s p50", "held s max"], rows))
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(flood["outcomes"].items()))
    print(f"REGISTER flood: {flood['attempts']} REGISTERs without a token at up to "
          f"{args.flood_rate:g}/s ({flood['skipped']} slots skipped: "
          f"{args.flood_concurrency} in flight); replies: {outcomes}; open s p50 "
          f"{percentile(flood['open_s'], 50):.2f}, max {max(flood['open_s'], default=0):.2f}")
    print()

    p99_ok = ratio99 <= GOAL_P99_RATIO and not o.attack_pings.failures
    rss_ok = growth_mib < GOAL_RSS_MIB
    lost_ok = o.listed_after == o.listed_before + 1 and all(o.intact.values())
    # An idle socket meets the idle timeout; a slow-loris client whichever comes first, the
    # idle timeout (Tornado counts it from the connection's start) or the head's deadline.
    limits = {"idle": args.idle_timeout_s + GRACE_S,
              "loris": min(args.idle_timeout_s, args.header_timeout_s) + GRACE_S}
    worst = {"idle": held_summary(idle)[1] if args.idle else 0.0,
             "loris": held_summary(loris)[1] if args.loris else 0.0}
    never = len(idle["still_open_s"]) + len(loris["still_open_s"])
    bounded_ok = never == 0 and all(worst[k] <= limits[k] for k in limits)
    verdict = {True: "PASS", False: "FAIL"}
    p99_verdict = verdict[p99_ok] if not args.quick else (
        "not judged with --quick (too few pings for a steady p99)")
    print(f"goal: /ping p99 under attack <= {GOAL_P99_RATIO:g}x idle, none failed: "
          f"{ratio99:.2f}x ({o.attack_pings.ms(99):.2f} ms vs {o.idle_pings.ms(99):.2f} ms), "
          f"{len(o.attack_pings.failures)} failed -> {p99_verdict}")
    print(f"goal: server RSS growth < {GOAL_RSS_MIB:g} MiB: {growth_mib:.1f} MiB "
          f"(idle {o.idle_rss / MiB:.1f}, peak {o.peak_rss / MiB:.1f}) -> {verdict[rss_ok]}")
    print(f"goal: nothing lost: listed {o.listed_before} before the attack, "
          f"{o.listed_after} after (one uploaded during it); downloads intact: "
          + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in o.intact.items())
          + f" -> {verdict[lost_ok]}")
    print(f"goal: every attacker bounded in time (its timeout + {GRACE_S:g} s): idle sockets "
          f"held at most {worst['idle']:.2f} s <= {limits['idle']:g} s, slow loris "
          f"{worst['loris']:.2f} s <= {limits['loris']:g} s; {never} never closed "
          f"-> {verdict[bounded_ok]}")
    for failure in sorted(set(o.attack_pings.failures))[:5]:
        print(f"  a failed ping: {failure}")
    return (p99_ok or args.quick) and rss_ok and lost_ok and bounded_ok


def run(args: argparse.Namespace, workdir: Path, procs: list[Child]) -> Outcome:
    """Start the server, measure it idle, attack it, measure again, check what it kept.

    Parameters
    ----------
    args : argparse.Namespace
        The options.
    workdir : Path
        The data dir, WAV files and logs go here.
    procs : list of Child
        Each child started is put here, for the caller to stop.

    Returns
    -------
    Outcome
        Every figure, for `report`.
    """
    token = os.environ["VOCALINK_TOKEN"]
    wavs = {tag: make_wav(workdir / f"{tag}.wav", 0.5) for tag in ("idle", "attack")}
    server = start_vocalink(workdir / "data", workdir, env={
        "VOCALINK_IDLE_TIMEOUT_S": str(args.idle_timeout_s),
        "VOCALINK_HEADER_TIMEOUT_S": str(args.header_timeout_s)})
    procs.append(server)
    url = read_url(server)
    port = urlsplit(url).port  # the URL may carry the token as a query: never print it
    assert port is not None
    url = f"http://{HOST}:{port}"
    api = Api(port, token)
    limits = api.json("/api/server").get("limits", {})
    print(f"server {url} (pid {server.pid}): idle timeout {args.idle_timeout_s:g} s, header "
          f"timeout {args.header_timeout_s:g} s, max connections "
          f"{limits.get('max_connections')}, per address "
          f"{limits.get('max_connections_per_ip')}", flush=True)

    uploads_s = {"idle": api.upload(wavs["idle"], "rec-idle")}
    warm = register_one(port, "bench-device", token)
    print(f"  warm-up: upload {uploads_s['idle']:.2f} s, a device with the token: {warm}",
          flush=True)
    listed_before = api.json("/api/audio/list")["total"]
    ping_series(port, interval_s=args.ping_interval_ms / 1000, count=50)  # warm-up
    idle_pings = ping_series(port, interval_s=args.ping_interval_ms / 1000, count=args.pings)
    print(f"  idle: /ping p50 {idle_pings.ms(50):.2f} ms, p99 {idle_pings.ms(99):.2f} ms",
          flush=True)

    process = psutil.Process(server.pid)
    plan = Plan(port=port, idle=args.idle, loris=args.loris,
                loris_interval_s=args.loris_interval_s, loris_bytes=args.loris_bytes,
                flood_rate=args.flood_rate, flood_concurrency=args.flood_concurrency,
                flood_hold_s=args.flood_hold_s, max_attack_s=args.attack_s + 30,
                give_up_s=max(args.idle_timeout_s, args.header_timeout_s) + GIVE_UP_S)
    with RssSampler(server.pid, 0.05) as sampler:
        idle_rss = sampler.start_rss
        attacker = Child("attacker", [PYTHON, str(BENCH_DIR / "hostile.py"), "--attacker",
                                      json.dumps(asdict(plan))],
                         log_path=workdir / "attacker.log", stdin_pipe=True)
        procs.append(attacker)
        ready = json.loads(attacker.readline(READY_TIMEOUT_S + 30))
        print(f"  attack: {ready['connected']} idle and slow-loris connections in "
              f"{ready['setup_s']:.1f} s; flooding; measuring for {args.attack_s:g} s",
              flush=True)
        measured = {"server": process, "attackers": psutil.Process(attacker.pid),
                    "client": psutil.Process()}
        cpu = {k: sum(p.cpu_times()[:2]) for k, p in measured.items()}
        window = time.perf_counter()
        uploads_s["attack"] = float("nan")  # until it succeeds

        def upload_during_attack() -> None:
            try:
                uploads_s["attack"] = api.upload(wavs["attack"], "rec-attack")
            except (OSError, RuntimeError) as exc:  # a lost upload is a finding, not a crash
                print(f"  the upload during the attack failed: {exc}", flush=True)
                uploads_s["attack"] = float("nan")

        attack_pings = ping_series(port, interval_s=args.ping_interval_ms / 1000,
                                   duration_s=args.attack_s, halfway=upload_during_attack)
        window_s = time.perf_counter() - window
        cpu_s = {k: sum(p.cpu_times()[:2]) - cpu[k] for k, p in measured.items()}
        assert attacker.proc.stdin is not None
        attacker.proc.stdin.write(b"stop\n")
        attacker.proc.stdin.flush()
        print(f"  under attack: /ping p50 {attack_pings.ms(50):.2f} ms, p99 "
              f"{attack_pings.ms(99):.2f} ms; waiting for the server to close the rest",
              flush=True)
        attack = json.loads(attacker.readline(plan.give_up_s + 60))
        attacker.stop()
    server.check_alive()
    time.sleep(1.0)  # let freed memory settle before the "after" figure
    after_rss = process.memory_info().rss
    listed_after = api.json("/api/audio/list")["total"]
    intact = {f"rec-{tag}": api.downloads_intact(f"rec-{tag}", wav.sha256)
              for tag, wav in wavs.items()}
    return Outcome(
        idle_pings=idle_pings, attack_pings=attack_pings, idle_rss=idle_rss,
        peak_rss=sampler.peak, after_rss=after_rss,
        window_s=window_s, cpu_s=cpu_s,
        attack=attack, ready=ready, uploads_s=uploads_s, listed_before=listed_before,
        listed_after=listed_after, intact=intact)


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` replaces the counts with small ones."""
    parser = argparse.ArgumentParser(
        description="/ping latency and server memory, idle vs under idle sockets, "
                    "slow-loris clients and a REGISTER flood at once.")
    parser.add_argument("--idle", type=int, default=1000, help="idle TCP sockets held")
    parser.add_argument("--loris", type=int, default=200, help="slow-loris clients")
    parser.add_argument("--loris-interval-s", type=float, default=1.0,
                        help="a slow-loris client sends a few bytes this often")
    parser.add_argument("--loris-bytes", type=int, default=3, help="bytes per send")
    parser.add_argument("--flood-rate", type=float, default=100.0,
                        help="new REGISTER WebSockets per second (0: no flood)")
    parser.add_argument("--flood-concurrency", type=int, default=150,
                        help="flood connections in flight at once")
    parser.add_argument("--flood-hold-s", type=float, default=1.0,
                        help="how long a flood connection stays open after the reply")
    parser.add_argument("--attack-s", type=float, default=30.0, help="attack duration")
    parser.add_argument("--pings", type=int, default=1000, help="idle pings (baseline)")
    parser.add_argument("--ping-interval-ms", type=float, default=10.0)
    parser.add_argument("--idle-timeout-s", type=float, default=5.0,
                        help="the server's VOCALINK_IDLE_TIMEOUT_S for the run")
    parser.add_argument("--header-timeout-s", type=float, default=3.0,
                        help="the server's VOCALINK_HEADER_TIMEOUT_S for the run (shorter "
                             "than the idle timeout: the slow-loris clients meet it)")
    parser.add_argument("--quick", action="store_true",
                        help="100 idle sockets, 20 slow-loris clients, a 20/s flood for 6 s, "
                             "300 idle pings: a smoke test (p99 goal not judged)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--attacker", metavar="PLAN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.idle, args.loris, args.flood_rate, args.flood_concurrency = 100, 20, 20.0, 40
        args.attack_s, args.pings = 6.0, 300
    return args


def main() -> int:
    """Run the benchmark (or, with ``--attacker``, be its attacker child); the exit status."""
    args = parse_args()
    if args.attacker is not None:
        return attacker_main(args.attacker)
    raise_nofile_limit()
    if os.environ.get("VOCALINK_TOKEN"):
        print("controller token: VOCALINK_TOKEN from the environment")
    else:
        # The server child reads it from its environment, which it inherits from ours.
        os.environ["VOCALINK_TOKEN"] = secrets.token_urlsafe(32)
        print("controller token: made for this run (VOCALINK_TOKEN was not set)")
    workdir = Path(tempfile.mkdtemp(prefix="vocalink-hostile-"))
    try:
        with children() as procs:
            outcome = run(args, workdir, procs)
        return 0 if report(outcome, args) else 1
    finally:
        if args.keep:
            print(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
