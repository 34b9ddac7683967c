"""A server in its own process under a small open-file limit, for connection-limit tests.

``python -m tests.support.limited_server DATA_DIR --nofile SOFT[:HARD] [--leave-free N]``

Sets ``RLIMIT_NOFILE`` (as ``ulimit -n`` would) before anything else, starts a `Server` on
127.0.0.1 port 0 (other settings from ``VOCALINK_*`` variables), and with
``--leave-free`` then takes every file descriptor but N, so that ``accept()`` runs out of
them. Prints one JSON line (``url``, the open-file limit in force, the descriptors
taken), logs at INFO to stderr, and stops when its stdin closes, or after ``--max-s``
seconds whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import sys
from pathlib import Path


def set_open_files(spec: str) -> None:
    soft_text, _, hard_text = spec.partition(":")
    soft = int(soft_text)
    hard = int(hard_text) if hard_text else soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def take_descriptors(leave_free: int) -> list[int]:
    """Open /dev/null until none is left, then give back ``leave_free`` of them."""
    taken = []
    while True:
        try:
            taken.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            break
    for _ in range(min(leave_free, len(taken))):
        os.close(taken.pop())
    return taken


async def stdin_closed() -> None:
    """Return once stdin reaches its end (the test closed the pipe, or died)."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    closed = asyncio.Event()

    def readable() -> None:
        if not os.read(fd, 4096):
            closed.set()

    loop.add_reader(fd, readable)
    try:
        await closed.wait()
    finally:
        loop.remove_reader(fd)


async def main(args: argparse.Namespace) -> None:
    from vocalink_lab.config import Settings
    from vocalink_lab.server import Server

    settings = Settings.from_env().replace(
        data_dir=args.data_dir, host="127.0.0.1", port=0, advertise=False,
        interfaces=("127.0.0.1",))
    server = Server(settings)
    await server.start()
    taken = take_descriptors(args.leave_free) if args.leave_free is not None else []
    info = await server.info()
    print(json.dumps({"url": server.url, "pid": os.getpid(),
                      "open_files": resource.getrlimit(resource.RLIMIT_NOFILE),
                      "limits": info["limits"], "taken": len(taken)}), flush=True)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stdin_closed(), args.max_s)
    finally:
        for fd in taken:
            os.close(fd)
        await server.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--nofile", required=True, help="SOFT[:HARD] open-file limit")
    parser.add_argument("--leave-free", type=int, default=None,
                        help="after start, take every descriptor but this many")
    parser.add_argument("--max-s", type=float, default=120.0, help="stop after this long")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    set_open_files(arguments.nofile)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(arguments))
