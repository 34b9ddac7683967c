"""A TCP proxy on 127.0.0.1 that cuts connections on purpose: a flaky network, on demand.

`CuttingProxy` forwards both directions between its clients and one target. It cuts a
connection either once that connection has carried ``cut_after_bytes`` bytes towards the
target (at most ``max_cuts`` times in all; afterwards it forwards normally), or at given
cumulative offsets of all the bytes it has carried towards the target (``cut_at``), on
whichever connection carries the byte at that offset.

A cut forwards exactly the bytes up to the cut, then closes both sides: the target gets
those bytes and then the end of the connection (a request body that stops short); the
client gets a TCP reset, whatever it was doing.

It also runs as a process of its own::

    python -m tests.support.proxy --target-port 8765 [--cut-after-bytes N] [--max-cuts K]
                                  [--cut-at A,B,C]

which prints its URL (``http://127.0.0.1:PORT``) as its first line, and, when it gets
SIGTERM or SIGINT, one JSON line with its counters (``cuts``, ``connections``,
``bytes_up``, ``bytes_down``, ``cut_offsets``) before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any, Literal

__all__ = ["CuttingProxy", "READ_SIZE", "main"]

log = logging.getLogger(__name__)

#: Bytes read from a socket at a time.
READ_SIZE = 256 * 1024
#: Bytes a writer may hold before `drain` waits (back-pressure).
WRITE_HIGH_WATER = 1024 * 1024

_Outcome = Literal["eof", "cut", "error"]


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the proxy only forwards to a loopback address, not {host!r}")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection at once with a TCP reset (SO_LINGER 0), dropping what is buffered."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One client connection and its connection to the target."""

    def __init__(self, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 target: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.client_reader, self.client_writer = client
        self.target_reader, self.target_writer = target
        self.up = 0  # bytes forwarded towards the target on this connection

    def abort(self) -> None:
        for writer in (self.client_writer, self.target_writer):
            writer.transport.abort()

    async def close(self) -> None:
        for writer in (self.client_writer, self.target_writer):
            writer.close()
        for writer in (self.client_writer, self.target_writer):
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1, port 0, in front of ``(target_host, target_port)``.

    Parameters
    ----------
    target_host, target_port
        What it forwards to: a loopback address only.
    cut_after_bytes : int, optional
        Cut each connection once it has forwarded this many bytes towards the target.
    max_cuts : int, optional
        Cut at most this many times in all (either mode); then forward normally.
    cut_at : sequence of int, optional
        Cumulative offsets, over the proxy's lifetime and across connections, of the bytes
        forwarded towards the target: at each, cut the connection carrying it. Exclusive with
        ``cut_after_bytes``.

    Attributes
    ----------
    cuts : int
        Cuts so far.
    connections : int
        Client connections accepted so far.
    bytes_up, bytes_down : int
        Bytes forwarded towards the target, and back to the clients.
    cut_offsets : list of int
        ``bytes_up`` at each cut.

    Examples
    --------
    >>> async with CuttingProxy("127.0.0.1", port, cut_after_bytes=64_000, max_cuts=3) as p:
    ...     await talk_to(p.url)                                          # doctest: +SKIP
    """

    def __init__(self, target_host: str, target_port: int, *,
                 cut_after_bytes: int | None = None, max_cuts: int | None = None,
                 cut_at: Sequence[int] | None = None) -> None:
        _check_loopback(target_host)
        if cut_after_bytes is not None and cut_at is not None:
            raise ValueError("give cut_after_bytes or cut_at, not both")
        if cut_after_bytes is not None and cut_after_bytes < 0:
            raise ValueError("cut_after_bytes must be >= 0")
        if max_cuts is not None and max_cuts < 0:
            raise ValueError("max_cuts must be >= 0")
        offsets = sorted(cut_at or ())
        if any(o < 0 for o in offsets) or len(set(offsets)) != len(offsets):
            raise ValueError("cut_at must be distinct offsets >= 0")
        self.target_host = target_host
        self.target_port = target_port
        self.cut_after_bytes = cut_after_bytes
        self.max_cuts = max_cuts
        self.cut_at: tuple[int, ...] = tuple(offsets)
        self.cuts = 0
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.cut_offsets: list[int] = []
        self._next_cut = 0  # index into cut_at
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        """The counters, JSON-ready."""
        return {"cuts": self.cuts, "connections": self.connections, "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down, "cut_offsets": list(self.cut_offsets)}

    async def start(self) -> CuttingProxy:
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=READ_SIZE)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and end every open connection (abruptly)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> CuttingProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return (f"<CuttingProxy {self._port} -> {self.target_host}:{self.target_port} "
                f"cuts={self.cuts} connections={self.connections}>")

    # -- one connection ----------------------------------------------------------------------

    async def _serve(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            try:
                target = await asyncio.open_connection(self.target_host, self.target_port,
                                                       limit=READ_SIZE)
            except OSError as exc:
                log.warning("proxy: cannot reach %s:%d: %s", self.target_host,
                            self.target_port, exc)
                _reset(client_writer)
                return
            conn = _Connection((client_reader, client_writer), target)
            for writer in (client_writer, conn.target_writer):
                writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
            await self._relay(conn)
        finally:
            self._tasks.discard(task)

    async def _relay(self, conn: _Connection) -> None:
        pumps = {asyncio.ensure_future(self._pump_up(conn)),
                 asyncio.ensure_future(self._pump_down(conn))}
        outcome: _Outcome | None = None
        try:
            while pumps and outcome is None:
                done, pumps = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                outcome = next((t.result() for t in done if t.result() != "eof"), None)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if outcome is None and not pumps:
                await conn.close()  # both sides ended it
            elif outcome != "cut":  # failed, or the proxy stops; a cut closed both already
                conn.abort()

    async def _pump_up(self, conn: _Connection) -> _Outcome:
        reader, writer = conn.client_reader, conn.target_writer
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return "eof"
                keep = self._allowance(conn.up, len(data))
                if keep is not None:
                    self._cut(conn, data[:keep])
                    return "cut"
                writer.write(data)
                conn.up += len(data)
                self.bytes_up += len(data)
                await writer.drain()
        except OSError:
            return "error"

    async def _pump_down(self, conn: _Connection) -> _Outcome:
        reader, writer = conn.target_reader, conn.client_writer
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return "eof"
                writer.write(data)
                self.bytes_down += len(data)
                await writer.drain()
        except OSError:
            return "error"

    def _allowance(self, sent: int, size: int) -> int | None:
        """Bytes of the next ``size`` to forward before cutting; None: no cut in them.

        Synchronous, and the counters move in the same step: connections never race.
        """
        if self.max_cuts is not None and self.cuts >= self.max_cuts:
            return None
        if self.cut_after_bytes is not None:
            if sent + size >= self.cut_after_bytes:
                return max(0, self.cut_after_bytes - sent)
            return None
        if self._next_cut < len(self.cut_at):
            offset = self.cut_at[self._next_cut]
            if self.bytes_up + size >= offset:
                self._next_cut += 1
                return max(0, offset - self.bytes_up)
        return None

    def _cut(self, conn: _Connection, last: bytes) -> None:
        """Forward ``last``, then close: the target after those bytes, the client with a reset."""
        if last:
            conn.target_writer.write(last)
            conn.up += len(last)
            self.bytes_up += len(last)
        self.cuts += 1
        self.cut_offsets.append(self.bytes_up)
        log.info("proxy: cut #%d at %d bytes up (%d on this connection)", self.cuts,
                 self.bytes_up, conn.up)
        _reset(conn.client_writer)
        conn.target_writer.close()  # the transport sends what it holds, then FIN


# -- as a process of its own ------------------------------------------------------------------


def _offsets(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.proxy",
        description="A TCP proxy on 127.0.0.1 that cuts connections on purpose.")
    parser.add_argument("--target-host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--cut-after-bytes", type=int, metavar="N",
                        help="cut each connection after N bytes towards the target")
    parser.add_argument("--max-cuts", type=int, metavar="K", help="cut at most K times in all")
    parser.add_argument("--cut-at", type=_offsets, metavar="A,B,C",
                        help="cut at these cumulative offsets of the bytes towards the target")
    parser.add_argument("--verbose", action="store_true", help="log every cut to stderr")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    proxy = CuttingProxy(args.target_host, args.target_port,
                         cut_after_bytes=args.cut_after_bytes, max_cuts=args.max_cuts,
                         cut_at=args.cut_at)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await proxy.start()
    print(proxy.url, flush=True)
    try:
        await stop.wait()
    finally:
        await proxy.stop()
    return proxy.stats()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        stats = asyncio.run(_run(args))
    except ValueError as exc:
        print(f"proxy: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
