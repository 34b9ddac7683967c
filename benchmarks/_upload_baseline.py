"""Baseline of upload.py: a plain Tornado server that streams a PUT body to a file.

``PUT /upload/<name>`` (``@stream_request_body``): the file is opened in
``prepare``, every chunk is written with ``f.write`` in ``data_received``, and
the file is fsynced and closed at the end; the answer is 201 ``{"bytes": n}``.

Prints its URL (``http://127.0.0.1:PORT``) as the first stdout line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path
from typing import BinaryIO

import tornado.httpserver
import tornado.netutil
import tornado.web

MAX_BODY = 64 * 1024**3
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@tornado.web.stream_request_body
class PutHandler(tornado.web.RequestHandler):
    def initialize(self, root: Path) -> None:
        self.root = root
        self.file: BinaryIO | None = None
        self.path: Path | None = None
        self.size = 0

    def prepare(self) -> None:
        name = self.path_kwargs.get("name") or self.path_args[0]
        if self.request.method != "PUT" or not _NAME.fullmatch(name):
            raise tornado.web.HTTPError(400)
        self.request.connection.set_max_body_size(MAX_BODY)  # type: ignore[union-attr]
        self.path = self.root / name
        self.file = open(self.path, "xb")  # noqa: SIM115 - closed in put / on close

    def data_received(self, chunk: bytes) -> None:
        assert self.file is not None
        self.file.write(chunk)
        self.size += len(chunk)

    def put(self, name: str) -> None:
        assert self.file is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.set_status(201)
        self.finish({"bytes": self.size})

    def on_connection_close(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
            if self.path is not None:
                self.path.unlink(missing_ok=True)


async def main(args: argparse.Namespace) -> None:
    app = tornado.web.Application([(r"/upload/([^/]+)", PutHandler, {"root": args.dir})])
    # The same 256 KiB body pieces as vocalink's server, so the baseline is no weaker.
    server = tornado.httpserver.HTTPServer(app, max_body_size=MAX_BODY, chunk_size=256 * 1024)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    print(f"http://127.0.0.1:{sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.close_all_connections(), 5)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="where uploaded files go")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
