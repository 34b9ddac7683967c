"""``vocalink`` command line: thin, stdlib-only, mirrors the facade."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import Settings
from .errors import VocalinkError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vocalink",
        description="Synchronized multi-device audio recording, driven from Jupyter.",
    )
    parser.add_argument("--version", action="version", version=f"vocalink_lab {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server until Ctrl-C / SIGTERM")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0: the whole LAN)")
    serve.add_argument("--port", type=int, help="TCP port (default 0: any free port)")
    serve.add_argument("--data-dir", type=Path, help="where recordings and the catalog live "
                       "(default ./data)")
    serve.add_argument("--name", help="server name that devices see")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (tests call ``main([...])`` directly)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        if args.command == "serve":
            settings = Settings.from_env().replace(
                host=args.host, port=args.port, data_dir=args.data_dir, name=args.name
            )
            return asyncio.run(_serve(settings))
    except VocalinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 2


async def _serve(settings: Settings) -> int:
    from .server import Server

    server = Server(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(server.url, flush=True)  # first line: the URL, for people and scripts
    info = await server.info()
    lan = [a for a in info["addresses"] if not a.startswith("127.")]
    for address in lan:
        print(f"  on the LAN: http://{address}:{server.port}", flush=True)
    print(f"  name: {server.name}", flush=True)
    ws_host = lan[0] if lan else server.host_for_urls
    print(f"  devices connect to: ws://{ws_host}:{server.port}{info['ws_path']}", flush=True)
    print(f"  data dir: {server.data_dir}", flush=True)
    if not server.integrity.clean:
        print(f"  warning: catalog and files disagree: {server.integrity.to_dict()}", flush=True)
    print("  press Ctrl-C to stop", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
    print("stopped", flush=True)
    return 0
