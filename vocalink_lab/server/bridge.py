"""An asyncio transport over a Tornado stream: the devices' socket over TLS.

A plain device connection leaves Tornado for asyncio by its kernel socket (``ws.py``). A
TLS session cannot: its state lives in the ``SSLIOStream``'s ``ssl.SSLSocket``. Rather
than a second WebSocket implementation for TLS, `StreamTransport` lets the same
``websockets`` connection (an ``asyncio.Protocol``) run on the Tornado stream: reads are
fed to the protocol as they come, writes go to the stream, and both directions keep
flow control (the protocol's ``pause_reading``; ``pause_writing`` past the buffer's high
water mark), so a phone that stops reading costs the server a bounded buffer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tornado.iostream

__all__ = ["StreamTransport"]

log = logging.getLogger(__name__)

#: Bytes read from the stream per call (at most; whatever has arrived is passed on).
READ_CHUNK = 65536
#: Default write-buffer limits, as asyncio's own transports.
WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024


class StreamTransport(asyncio.Transport):
    """Drive an ``asyncio.Protocol`` with a Tornado ``IOStream`` (TLS or not).

    Parameters
    ----------
    stream : tornado.iostream.IOStream
        A stream no one else reads or writes any more (detached from its HTTP connection).
    protocol : asyncio.Protocol
        Gets ``connection_made`` at once, then the stream's bytes, ``eof_received`` when the
        peer ends, and ``connection_lost`` exactly once.
    """

    def __init__(self, stream: tornado.iostream.IOStream, protocol: asyncio.Protocol) -> None:
        super().__init__(extra=_extra_of(stream))
        self._stream = stream
        self._protocol = protocol
        self._closing = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._buffered = 0  # bytes given to the stream and not flushed yet
        self._high, self._low = WRITE_HIGH, WRITE_LOW
        self._writing_paused = False
        # A peer that leaves while reading is paused must still end the connection.
        stream.set_close_callback(self._reading.set)
        protocol.connection_made(self)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                data = await self._stream.read_bytes(READ_CHUNK, partial=True)
                # Held while paused: at most one chunk waits here, none is read after it.
                await self._reading.wait()
                if self._stream.closed() and self._closing:
                    break  # aborted meanwhile: nothing more for the protocol
                self._protocol.data_received(data)
        except tornado.iostream.StreamClosedError as exc:
            error = exc.real_error
            if error is None and not self._closing:
                self._protocol.eof_received()
        except Exception as exc:  # a protocol's bug must not leave the socket open
            log.exception("device connection failed")
            error = exc
        finally:
            self._stream.close()
            self._protocol.connection_lost(error if isinstance(error, Exception) else None)

    # -- writing -------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; ignored once the transport is closing, as asyncio's are."""
        if self._closing or self._stream.closed() or not data:
            return
        size = len(data)
        try:
            flushed = self._stream.write(bytes(data))
        except tornado.iostream.StreamClosedError:
            return
        self._buffered += size
        flushed.add_done_callback(lambda f: self._flushed(f, size))
        if not self._writing_paused and self._buffered > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _flushed(self, future: asyncio.Future[None], size: int) -> None:
        self._buffered -= size
        if not future.cancelled():
            future.exception()  # retrieved: a closed stream is reported by the reader
        if self._writing_paused and self._buffered <= self._low and not self._stream.closed():
            self._writing_paused = False
            self._protocol.resume_writing()
        if self._closing and self._buffered == 0:
            self._stream.close()

    def can_write_eof(self) -> bool:
        """False: TLS has no half-close (the WebSocket closing handshake ends the session)."""
        return False

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet flushed to the socket."""
        return self._buffered

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the high and low water marks of `pause_writing` (asyncio's defaults)."""
        self._high = WRITE_HIGH if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The ``(low, high)`` water marks."""
        return self._low, self._high

    # -- reading and closing ---------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop passing bytes on (one chunk read meanwhile waits for `resume_reading`)."""
        self._reading.clear()

    def resume_reading(self) -> None:
        """Pass bytes on again."""
        self._reading.set()

    def is_reading(self) -> bool:
        """Whether bytes are passed on."""
        return self._reading.is_set() and not self._stream.closed()

    def is_closing(self) -> bool:
        """Whether `close` or `abort` was called, or the stream is closed."""
        return self._closing or self._stream.closed()

    def close(self) -> None:
        """Close once what is buffered is flushed."""
        self._closing = True
        if self._buffered == 0:
            self._stream.close()

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""
        self._closing = True
        self._stream.close()


def _extra_of(stream: tornado.iostream.IOStream) -> dict[str, Any]:
    extra: dict[str, Any] = {"socket": stream.socket}
    try:
        extra["peername"] = stream.socket.getpeername()
        extra["sockname"] = stream.socket.getsockname()
    except OSError:  # the peer left already; the reader will tell the protocol
        pass
    if isinstance(stream, tornado.iostream.SSLIOStream):
        extra["ssl_object"] = stream.socket
    return extra
