"""Accepting connections: caps, a deadline on every request head, and no spin on EMFILE.

Tornado's accept loop (``tornado.netutil.add_accept_handler``) lets an ``accept()`` that
fails with EMFILE (no file descriptor left) escape into the event loop, which logs its
traceback. The connection stays in the listening socket's queue, so the socket is still
readable and the loop calls the handler again at once: with 1,100 idle connections under
``ulimit -n 1024`` the server spun at 100 % CPU and logged 46 MB in 6 s. `Listener`
accepts in its place, for the same `HTTPServer`:

- it keeps the connections it hands to Tornado under ``max_connections`` in all (the
  `connection_budget`, below the open-file limit) and ``max_connections_per_ip`` from
  one address; one more is answered 503 ``too_busy`` in the one JSON error shape, or,
  when 64 such answers are already going out, closed at once;
- when ``accept()`` fails all the same (descriptors taken by files, threads, other
  sockets), it closes a spare descriptor it keeps for the purpose, accepts what waits
  and closes it, and takes the spare again (the queue drains, the clients learn at
  once); without a spare it stops accepting for half a second. Either way one warning
  per 10 s says how often, never a traceback per attempt;
- each connection's stream (`_Stream`) gives the head of every request
  ``header_timeout_s`` from its first byte, then answers 408 and closes; and it closes a
  connection that waits for a request longer than ``idle_timeout_s``. Both deadlines
  are drawn up to a quarter longer (`IDLE_JITTER`), so that connections opened together
  (a crowd of idle sockets or slow-loris clients) are not all closed, and reopened, in
  one turn of the event loop: 1,000 at once held ``/ping`` up by 100 to 260 ms.
  Tornado's own idle timeout stays as a backstop, later (`idle_backstop`).
- with an ``ssl_context``, HTTPS and HTTP share the port: each connection waits (not
  blocking, within the idle deadline, still holding its slot) for its first byte
  (`_Sniff`, peeked, not read); a TLS handshake record (0x16) is wrapped and served as
  an ``SSLIOStream`` (`_TlsStream`, so Tornado says ``https``), anything else as plain
  HTTP (`_Stream`). The first head's deadline, handshake included, runs from that byte.

Device WebSockets are handed over to the ``websockets`` library once open (``ws.py``):
they leave this count, and come back into the total through ``handed_over``.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import tornado.httpserver
import tornado.ioloop
import tornado.iostream

from ..errors import RequestTimeout, TooBusy, VocalinkError

__all__ = ["IDLE_JITTER", "Listener", "connection_budget", "idle_backstop",
           "raise_open_file_limit", "tune_collector"]

log = logging.getLogger(__name__)

#: Connections accepted per readiness event, as Tornado does (its listen backlog).
ACCEPT_BATCH = 128
#: 503 answers going out at once; past this a refused connection is closed unanswered.
MAX_REFUSING = 64
#: How long a refused connection gets to read its 503 (and to send us what it had).
REFUSE_LINGER_S = 2.0
#: How long accepting pauses when ``accept()`` fails and nothing can be freed.
ACCEPT_PAUSE_S = 0.5
#: At most one log line per kind of refusal in this many seconds.
LOG_EVERY_S = 10.0
#: An idle connection is closed after ``idle_timeout_s``, a stalled head after
#: ``header_timeout_s``, times a factor drawn from 1 to 1 + this, evenly.
IDLE_JITTER = 0.25

_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE}
_OUT_OF_MEMORY = {errno.ENOBUFS, errno.ENOMEM}
#: Errors of one connection that Linux reports through accept(2): try the next one.
_RETRY_ACCEPT = {getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "EPERM") if hasattr(errno, name)}


def raise_open_file_limit() -> int | None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit in force.

    Every connection is a file descriptor, and the usual soft limit (1,024) is below
    what a lab of devices and controllers can open; the hard limit is what the
    administrator allows. ``None`` where there is no such limit (Windows) or it is
    unlimited.
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    # macOS reports an unlimited hard limit but refuses more than its kernel's maximum.
    targets = [hard] if hard != resource.RLIM_INFINITY else [1 << 20, 65536, 10240]
    for target in targets:
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        log.info("raised the open-file limit (RLIMIT_NOFILE) from %d to %d", soft, target)
        break
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tune_collector() -> None:
    """Tune Python's cyclic garbage collector for a process that serves connections.

    Call it once a server has started in a process of its own (`vocalink serve`,
    `vocalink dashboard`; never in a user's kernel). Everything loaded so far lives as
    long as the process and leaves the collector's sight (``gc.freeze``), and the
    youngest generation is collected every 10,000 allocations instead of 700:
    connections coming and going by the hundred a second (a hostile crowd) made
    collections of 20 to 150 ms, and every request waited as long
    (``benchmarks/hostile.py``: ``/ping`` p99 under attack went from 3.3 to about 1.6
    times idle). It costs a few MiB of garbage held a little longer.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def idle_backstop(idle_timeout_s: float) -> float:
    """Tornado's own idle timeout: after the `Listener`'s (jittered) one, as a backstop."""
    return idle_timeout_s * (1 + 2 * IDLE_JITTER)


def connection_budget(max_connections: int, open_files: int | None) -> int:
    """Connections the server may hold: ``max_connections``, and room for files besides.

    An eighth of the open-file limit (at least 64) stays for the catalog, recordings
    being written, threads and refusals.
    """
    if open_files is None:
        return max_connections
    reserve = max(64, open_files // 8)
    return max(1, min(max_connections, open_files - reserve))


class _Throttled:
    """A log line for an event that can come by the thousand: at most one per period.

    The first is logged at once; the ones in the next ``every_s`` seconds are counted
    and summed up in one line when the period ends. Loop-only.
    """

    def __init__(self, level: int, every_s: float = LOG_EVERY_S) -> None:
        self.level = level
        self.every_s = every_s
        self._quiet_until = 0.0
        self._count = 0
        self._last = ""
        self._flush: asyncio.TimerHandle | None = None

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now >= self._quiet_until and self._flush is None:
            log.log(self.level, "%s", message)
            self._quiet_until = now + self.every_s
            return
        self._count += 1
        self._last = message
        if self._flush is None:
            delay = max(0.0, self._quiet_until - now)
            self._flush = asyncio.get_running_loop().call_later(delay, self._summary)

    def _summary(self) -> None:
        self._flush = None
        if self._count:
            log.log(self.level, "%s (%d such in the last %g s)", self._last, self._count,
                    self.every_s)
            self._count = 0
            self._quiet_until = time.monotonic() + self.every_s

    def cancel(self) -> None:
        """Drop what is pending (at shutdown)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._count = 0


def _error_response(error: VocalinkError) -> bytes:
    """A whole ``Connection: close`` HTTP response carrying ``error`` in the one shape."""
    body = json.dumps(error.to_dict()).encode()
    lines = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
             "Content-Type: application/json; charset=utf-8",
             f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close",
             *(f"{name}: {value}" for name, value in error.headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Listener:
    """Accepts the connections of an `HTTPServer`, within caps, and survives EMFILE.

    Loop-only. Used instead of ``HTTPServer.add_sockets``: `start` watches the
    listening sockets, `stop` closes them (``HTTPServer.stop`` then has none).

    Parameters
    ----------
    http : tornado.httpserver.HTTPServer
        Serves the accepted connections (``handle_stream``).
    max_connections : int
        Connections held at once, these and the ``handed_over`` ones together.
    max_per_ip : int
        Connections held at once from one address.
    header_timeout_s : float
        Time a request's head gets from its first byte (then 408).
    idle_timeout_s : float or None
        Time a connection may wait for its next request (then it is closed), jittered
        (`IDLE_JITTER`); ``None`` leaves it to Tornado's.
    handed_over : callable
        How many connections left Tornado but stay open (device WebSockets).
    open_files : int or None
        The open-file limit, for the warnings.
    ssl_context : ssl.SSLContext or None
        Serves TLS on the same port: a connection whose first byte opens a TLS handshake
        record (0x16) is wrapped with it, any other is plain HTTP. ``None``: plain only.
    """

    def __init__(self, http: tornado.httpserver.HTTPServer, *, max_connections: int,
                 max_per_ip: int, header_timeout_s: float,
                 idle_timeout_s: float | None = None,
                 handed_over: Callable[[], int] = lambda: 0,
                 open_files: int | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.http = http
        self.ssl_context = ssl_context
        self.idle_timeout_s = idle_timeout_s
        self.open_files = open_files
        self.max_connections = max_connections
        self.max_per_ip = min(max_per_ip, max_connections)
        self.header_timeout_s = header_timeout_s
        self._handed_over = handed_over
        self._sockets: list[socket.socket] = []
        self._paused: dict[socket.socket, asyncio.TimerHandle] = {}
        self._refusing: set[asyncio.Task[None]] = set()
        self._sniffing: dict[socket.socket, _Sniff] = {}
        self._by_ip: dict[str, int] = {}
        self._held = 0
        self._spare: int | None = None
        self._stopped = False
        self._log_refused = _Throttled(logging.WARNING)
        self._log_accept = _Throttled(logging.WARNING)
        self._log_stalled = _Throttled(logging.INFO)
        self.head_timeout_response = _error_response(RequestTimeout(
            f"the request's line and headers did not arrive within {header_timeout_s:g} s "
            "of its first byte"))

    # -- counts ----------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Connections open through this listener (handed-over ones not included)."""
        return self._held

    def released(self, ip: str) -> None:
        """A connection counted for ``ip`` has closed (called by its stream)."""
        self._held -= 1
        left = self._by_ip.get(ip, 0) - 1
        if left > 0:
            self._by_ip[ip] = left
        else:
            self._by_ip.pop(ip, None)

    def _refusal(self, ip: str) -> str | None:
        """Why a new connection from ``ip`` cannot be held, or ``None`` if it can."""
        total = self._held + self._handed_over()
        if total >= self.max_connections:
            return (f"the server holds {total} connections, its limit "
                    "(VOCALINK_MAX_CONNECTIONS, within the open-file limit); retry later")
        if self._by_ip.get(ip, 0) >= self.max_per_ip:
            return (f"{ip} holds {self.max_per_ip} connections, the limit per address "
                    "(VOCALINK_MAX_CONNECTIONS_PER_IP); close some, or retry later")
        return None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, sockets: list[socket.socket]) -> None:
        """Accept on ``sockets`` (bound, listening and non-blocking)."""
        self._spare = _open_spare()
        for sock in sockets:
            self._sockets.append(sock)
            self._watch(sock)

    def _watch(self, sock: socket.socket) -> None:
        # Through Tornado's IOLoop, which also watches sockets on Windows' proactor loop.
        tornado.ioloop.IOLoop.current().add_handler(
            sock, lambda _fd, _events: self._accept(sock), tornado.ioloop.IOLoop.READ)

    def stop(self) -> None:
        """Stop accepting, close the listening sockets and any refusal under way."""
        if self._stopped:
            return
        self._stopped = True
        for sock in self._sockets:
            timer = self._paused.pop(sock, None)
            if timer is not None:
                timer.cancel()
            else:
                tornado.ioloop.IOLoop.current().remove_handler(sock)
            sock.close()
        self._sockets = []
        for task in list(self._refusing):
            task.cancel()
        for sniff in list(self._sniffing.values()):
            sniff.close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        for throttled in (self._log_refused, self._log_accept, self._log_stalled):
            throttled.cancel()

    # -- accepting -------------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):  # then let other work run; the socket stays readable
            if self._stopped:
                return
            try:
                connection, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RETRY_ACCEPT:
                    continue
                self._accept_failed(sock, exc)
                return
            self._admit(connection, address)

    def _accept_failed(self, sock: socket.socket, exc: OSError) -> None:
        shed = self._shed(sock) if exc.errno in _OUT_OF_DESCRIPTORS else 0
        if exc.errno in _OUT_OF_DESCRIPTORS:
            self._log_accept(f"out of file descriptors ({exc.strerror}; the open-file limit "
                             f"is {self.open_files}, {self._held} connections held): new "
                             f"connections are closed unanswered, {shed} just now")
        elif exc.errno in _OUT_OF_MEMORY:
            self._log_accept(f"cannot accept connections: {exc.strerror}")
        else:
            self._log_accept(f"accept() failed: {exc}")
        if shed == 0:
            self._pause(sock)

    def _shed(self, sock: socket.socket) -> int:
        """With the spare descriptor, accept and close what waits; return how many."""
        if self._spare is None:
            return 0
        os.close(self._spare)
        self._spare = None
        shed = 0
        try:
            while shed < ACCEPT_BATCH:
                try:
                    connection, _ = sock.accept()
                except OSError:  # none left (BlockingIOError), or still no descriptor
                    break
                connection.close()
                shed += 1
        finally:
            self._spare = _open_spare()
        return shed

    def _pause(self, sock: socket.socket) -> None:
        tornado.ioloop.IOLoop.current().remove_handler(sock)
        self._paused[sock] = asyncio.get_running_loop().call_later(
            ACCEPT_PAUSE_S, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        self._paused.pop(sock, None)
        if self._stopped:
            return
        if self._spare is None:
            self._spare = _open_spare()
        self._watch(sock)

    def _admit(self, connection: socket.socket, address: Any) -> None:
        ip = str(address[0]) if isinstance(address, tuple) and address else ""
        refusal = self._refusal(ip)
        if refusal is not None:
            self._refuse(connection, refusal)
            return
        # Counted from here: a connection still waiting for its first byte holds a slot.
        self._held += 1
        self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        try:
            connection.setblocking(False)
            self._sniffing[connection] = _Sniff(self, connection, address, ip)
        except Exception:
            log.exception("could not serve a connection from %s", ip)
            self._sniffing.pop(connection, None)
            self.released(ip)
            connection.close()

    def _serve(self, connection: socket.socket, address: Any, ip: str, tls: bool) -> None:
        """Hand a connection whose first byte has come to Tornado, wrapped if ``tls``.

        Its slot is held already; it is released here if the stream cannot be made, or
        else when the stream closes.
        """
        self._sniffing.pop(connection, None)
        stream: _Deadlines
        try:
            if tls and self.ssl_context is not None:
                # The handshake is the stream's: non-blocking, within the head's deadline.
                wrapped = self.ssl_context.wrap_socket(
                    connection, server_side=True, do_handshake_on_connect=False)
                stream = _TlsStream(wrapped, listener=self, ip=ip,
                                    max_buffer_size=self.http.max_buffer_size,
                                    read_chunk_size=self.http.read_chunk_size)
            else:
                stream = _Stream(connection, listener=self, ip=ip,
                                 max_buffer_size=self.http.max_buffer_size,
                                 read_chunk_size=self.http.read_chunk_size)
        except Exception:
            log.exception("could not serve a connection from %s", ip)
            self.released(ip)
            connection.close()
            return
        try:
            self.http.handle_stream(stream, address)
        except Exception:
            log.exception("could not serve a connection from %s", ip)
            stream.close()

    def _refuse(self, connection: socket.socket, reason: str) -> None:
        if len(self._refusing) >= MAX_REFUSING:
            connection.close()
            self._log_refused(f"refusing connections: {reason} (closed unanswered: "
                              f"{MAX_REFUSING} refusals already going out)")
            return
        self._log_refused(f"refusing connections: {reason}")
        task = asyncio.get_running_loop().create_task(self._answer_refused(connection, reason))
        self._refusing.add(task)
        task.add_done_callback(self._refusing.discard)

    async def _answer_refused(self, connection: socket.socket, reason: str) -> None:
        """Answer 503, then read what the client sends until it closes (briefly).

        Closing with its request unread would reset the connection, and the client could
        lose the answer it has not read yet.
        """
        loop = asyncio.get_running_loop()
        try:
            connection.setblocking(False)
            async with asyncio.timeout(REFUSE_LINGER_S):
                await loop.sock_sendall(connection,
                                        _error_response(TooBusy(reason, retry_after_s=1)))
                connection.shutdown(socket.SHUT_WR)
                while await loop.sock_recv(connection, 65536):
                    pass
        except (OSError, TimeoutError):
            pass
        finally:
            connection.close()

    def head_stalled(self, ip: str) -> None:
        """A request head from ``ip`` missed its deadline (logged, at most every 10 s)."""
        self._log_stalled(f"closed a connection from {ip}: its request head did not "
                          f"arrive within {self.header_timeout_s:g} s")


class _Sniff:
    """Waits, without blocking, for a connection's first byte, to tell TLS from plain HTTP.

    A TLS client speaks first with a handshake record (0x16); an HTTP request starts with
    a method's letter. The byte is peeked (``MSG_PEEK``), not read, so the stream that
    takes the connection sees it all. A connection that sends nothing within the idle
    deadline (``idle_timeout_s``, jittered, else ``header_timeout_s``) is closed without
    a word, as an idle keep-alive one is; one that closes or fails first is closed too,
    and in every such case its slot is released.
    """

    def __init__(self, listener: Listener, connection: socket.socket, address: Any,
                 ip: str) -> None:
        self._listener = listener
        self._connection = connection
        self._address = address
        self._ip = ip
        wait = listener.idle_timeout_s or listener.header_timeout_s
        # Through Tornado's IOLoop, as the listening sockets, for Windows' proactor loop.
        self._io_loop = tornado.ioloop.IOLoop.current()
        self._io_loop.add_handler(connection, self._readable, tornado.ioloop.IOLoop.READ)
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            wait * (1 + IDLE_JITTER * random.random()), self.close)

    def _stop_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._io_loop.remove_handler(self._connection)

    def _readable(self, _fd: object, _events: int) -> None:
        try:
            first = self._connection.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return  # a spurious wake-up: keep waiting
        except OSError:
            self.close()  # reset before a byte came
            return
        if not first:
            self.close()  # closed before a byte came
            return
        self._stop_waiting()
        self._listener._serve(self._connection, self._address, self._ip,
                              tls=first == b"\x16")

    def close(self) -> None:
        """Close the connection unanswered and release its slot (once)."""
        if self._timer is None and self._listener._sniffing.get(self._connection) is not self:
            return
        self._stop_waiting()
        self._listener._sniffing.pop(self._connection, None)
        self._connection.close()
        self._listener.released(self._ip)


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


class _Deadlines(tornado.iostream.IOStream):
    """Mixin of `_Stream` and `_TlsStream`: counted until closed; a head has a deadline.

    Tornado reads every request head with ``read_until_regex``; the deadline starts at
    the first byte read while such a read waits, so an idle keep-alive connection is
    left to the idle timeout. The first head's deadline starts at once: the `Listener`
    hands a connection over only once its first byte has arrived (and for TLS, the
    handshake must fit in that deadline too).

    It derives from ``IOStream`` so that its ``super()`` calls are typed; placed before
    ``SSLIOStream`` in a class's bases it wraps that class's methods all the same.
    """

    def __init__(self, sock: socket.socket, *, listener: Listener, ip: str,
                 **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._listener = listener
        self._ip = ip
        self._head: asyncio.Future[bytes] | None = None  # the head being read
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._first_head = True
        self._handed_over = False

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> Awaitable[bytes]:
        future = super().read_until_regex(regex, max_bytes=max_bytes)
        first, self._first_head = self._first_head, False
        if isinstance(future, asyncio.Future) and not future.done():
            self._head = future
            future.add_done_callback(self._head_read)
            idle = self._listener.idle_timeout_s
            if first and self._head_timer is None:
                # The sniffed first byte has come: the request (or handshake) has begun.
                self._start_head_timer()
            elif idle is not None:  # waiting for a request (its first byte cancels this)
                self._idle_timer = asyncio.get_running_loop().call_later(
                    idle * (1 + IDLE_JITTER * random.random()), self._idle_expired)
        return future

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        n = super().read_from_fd(buf)
        if n and self._head is not None and self._head_timer is None:
            self._cancel_idle_timer()  # a request has begun: the head's deadline counts
            self._start_head_timer()
        return n

    def _start_head_timer(self) -> None:
        self._head_timer = asyncio.get_running_loop().call_later(
            self._listener.header_timeout_s * (1 + IDLE_JITTER * random.random()),
            self._head_stalled)

    def _can_answer(self) -> bool:
        """Whether a 408 can be written (not in the middle of a TLS handshake)."""
        return True

    def _head_read(self, _: object) -> None:
        self._head = None
        self._cancel_head_timer()
        self._cancel_idle_timer()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self._head is not None and not self._head.done() and self._head_timer is None:
            self.close()  # no request came: closed without a word, as Tornado's own does

    def _head_stalled(self) -> None:
        self._head_timer = None
        if self.closed() or self._head is None or self._head.done():
            return
        self._listener.head_stalled(self._ip)
        if not self._can_answer():
            self.close()  # a 408 would wait behind a handshake that never ends
            return
        try:
            written = self.write(self._listener.head_timeout_response)
        except tornado.iostream.StreamClosedError:
            return
        written.add_done_callback(lambda _: self.close())

    def hand_over(self) -> None:
        """Leave the `Listener`'s count (and its deadlines): a device session runs on it now.

        The session is counted through ``handed_over`` instead, as a plain one is.
        """
        self._cancel_head_timer()
        self._cancel_idle_timer()
        if not self._handed_over:
            self._handed_over = True
            self._listener.released(self._ip)

    def close(self, exc_info: Any = False) -> None:
        if not self.closed():
            self._cancel_head_timer()
            self._cancel_idle_timer()
            if not self._handed_over:
                self._listener.released(self._ip)
        super().close(exc_info)


class _Stream(_Deadlines):
    """A plain-HTTP connection, with the `_Deadlines`."""


class _TlsStream(_Deadlines, tornado.iostream.SSLIOStream):
    """A TLS connection (``https``, Tornado sees an ``SSLIOStream``), with the `_Deadlines`."""

    def _can_answer(self) -> bool:
        return not self._ssl_accepting
