"""``vocalink`` command line: thin, stdlib-only, mirrors the facade."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ANDROID_PAIRING, Settings
from .dashboard import add_dashboard_command
from .datadir import DataDirLock
from .errors import VocalinkError
from .links import phone_lines
from .signals import signal_waiter
from .version import __version__

if TYPE_CHECKING:
    from .discovery import ServerInfo

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
    serve.add_argument("--interfaces", type=_csv, metavar="LIST",
                       help="addresses or interface names to advertise on, comma-separated "
                       "(default: all)")
    serve.add_argument("--no-advertise", dest="advertise", action="store_false", default=None,
                       help="do not announce the server with mDNS")
    _auth_choice(serve)

    add_dashboard_command(sub)

    discover = sub.add_parser("discover", help="list the vocalink servers on the network")
    discover.add_argument("--timeout", type=float, default=3.0,
                          help="seconds to listen (default 3)")
    discover.add_argument("--name", help="wait for the server with this name (or id) only")
    discover.add_argument("--watch", action="store_true",
                          help="keep listening and print servers as they come and go")
    discover.add_argument("--json", action="store_true", help="one JSON object per line")
    discover.add_argument("--interfaces", type=_csv, metavar="LIST",
                          help="addresses or interface names to browse on (default: all)")

    device = sub.add_parser("device", help="run a recording device (the agent) until Ctrl-C")
    _server_choice(device)
    device.add_argument("--device-id", help="stable id (default: generated once, then kept)")
    device.add_argument("--device-name", help="name shown in the dashboard (default: host name)")
    device.add_argument("--source", default="mic", help="mic, mic:INDEX, tone:HZ[:AMP], "
                        "noise:LEVEL, silence or file:PATH (default mic)")
    device.add_argument("--state-dir", type=Path, default=Path.home() / ".vocalink" / "device",
                        help="identity, spool and outbox (default ~/.vocalink/device)")
    device.add_argument("--sample-rate", type=int, default=48000)
    device.add_argument("--channels", type=int, default=1)
    device.add_argument("--format", choices=["wav", "flac"], default="wav")
    device.add_argument("--join", metavar="CODE", dest="join_code",
                        help="pair with the join code shown on the dashboard (no approval "
                        "needed); the device then keeps its key")
    device.add_argument("--ca", metavar="PIN", dest="ca_pin",
                        help="the pin of the server's CA (in the dashboard's phone link after "
                        "#ca=): speak HTTPS and trust that CA alone (default: the pin mDNS "
                        "advertises, or the one in --server's link)")

    simulate = sub.add_parser("simulate", help="run simulated devices (tones) until Ctrl-C")
    _server_choice(simulate)
    simulate.add_argument("--devices", type=int, default=3, help="how many (default 3)")
    simulate.add_argument("--state-dir", type=Path,
                          help="keep their identity and outboxes here (default: a temp dir)")
    simulate.add_argument("--prefix", default="sim", help="device ids PREFIX-1..N")
    simulate.add_argument("--offset-s", type=float, default=0.0,
                          help="clock offsets spread over -X..+X seconds")
    simulate.add_argument("--drift-ppm", type=float, default=0.0,
                          help="clock drifts spread over -X..+X ppm")

    rename = sub.add_parser("rename", help="rename a running server (live, mDNS included)")
    rename.add_argument("name", help="the new name")
    rename.add_argument("--server", required=True, metavar="URL",
                        help="the server's URL, e.g. http://127.0.0.1:8765")
    rename.add_argument("--token", help="the controller token (default: VOCALINK_TOKEN, or "
                        "the token file of a local ./data)")
    return parser


def _auth_choice(parser: argparse.ArgumentParser) -> None:
    """``--token`` and ``--open``, for the commands that start a server."""
    parser.add_argument("--token", help="the controller token (default: VOCALINK_TOKEN, else "
                        "the one kept in the data dir, made on first start)")
    parser.add_argument("--open", action="store_true", default=None,
                        help="turn authentication off, on purpose: anyone on the network may "
                        "control the server (VOCALINK_OPEN=1)")
    _android_choice(parser)


def _android_choice(parser: argparse.ArgumentParser) -> None:
    """``--android``: how the VocalLink Android app's sessions are let in."""
    parser.add_argument("--android", choices=ANDROID_PAIRING, default=None,
                        help="VocalLink Android app sessions: 'approve' each (default) or "
                        "'trust' them at once, on a private network (VOCALINK_ANDROID)")


def _server_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="URL",
                        help="the server, e.g. http://10.0.0.5:8765 (default: find it with mDNS)")
    parser.add_argument("--name", dest="server_name",
                        help="with mDNS: the server with this name (or id)")
    parser.add_argument("--interfaces", type=_csv, metavar="LIST",
                        help="addresses or interface names to browse mDNS on (default: all)")
    parser.add_argument("--token", help="the controller token, which makes the device trusted "
                        "(default: VOCALINK_TOKEN); without it, a new device pairs with --join "
                        "or waits for approval")


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


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
        if args.command == "dashboard":
            return int(args.run(args))
        if args.command == "serve":
            settings = Settings.from_env().replace(
                host=args.host, port=args.port, data_dir=args.data_dir, name=args.name,
                interfaces=args.interfaces, advertise=args.advertise, token=args.token,
                open=args.open, android=args.android,
            )
            return asyncio.run(_serve(settings))
        if args.command == "discover":
            return asyncio.run(_discover(args))
        if args.command == "rename":
            return _rename(args.server, args.name, args.token)
        if args.command in ("device", "simulate"):
            return asyncio.run(_devices(args))
    except VocalinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 2


async def _serve(settings: Settings) -> int:
    try:
        from .server import Server, tune_collector
    except ImportError as exc:  # the base install is the device agent only
        raise VocalinkError(f"the server needs the 'server' extra ({exc.name} is missing): "
                            "pip install 'vocalink-lab[server]'") from None

    server = Server(settings)  # refuses a bad name before anything touches the data dir
    lock = DataDirLock(settings.data_dir.expanduser().resolve())
    if not lock.acquire():
        holder = lock.holder()
        where = f" at {holder['url']}" if holder.get("url") else ""
        raise VocalinkError(
            f"another process (pid {holder.get('pid', '?')}) already serves "
            f"{settings.data_dir}{where}; connect to it (vl.connect) or choose another "
            "--data-dir")
    try:
        await server.start()
    except BaseException:
        lock.release()
        raise
    lock.publish(url=server.url, name=server.name)
    tune_collector()  # a process of its own, serving connections
    signalled = await signal_waiter()
    # First line: the URL, for people and scripts; with its token, as Jupyter prints it.
    print(url_with_token(server.url, server.token), flush=True)
    info = await server.info()
    lan = [a for a in info["addresses"] if not a.startswith("127.")]
    for address in lan:
        print(f"  on the LAN: http://{address}:{server.port}", flush=True)
    print(f"  name: {server.name}", flush=True)
    ws_host = lan[0] if lan else server.host_for_urls
    print(f"  devices connect to: ws://{ws_host}:{server.port}{info['ws_path']}", flush=True)
    for line in phone_lines(server.url, info, info["pairing"].get("join_code")):
        print(line, flush=True)
    print(f"  data dir: {server.data_dir}", flush=True)
    print(access_line(server), flush=True)
    if not server.integrity.clean:
        print(f"  warning: catalog and files disagree: {server.integrity.to_dict()}", flush=True)
    print("  press Ctrl-C to stop", flush=True)
    reported = asyncio.get_running_loop().create_task(_report_discovery(server))
    try:
        await signalled
    finally:
        reported.cancel()
        await server.stop()
        lock.release()
    print("stopped", flush=True)
    return 0


async def _report_discovery(server: Any) -> None:
    """One line once mDNS registration is done (it takes about a second)."""
    status = await server.advertised()
    if status["state"] == "advertising":
        print(f"  mDNS: advertised as '{status['name']}' ({status['service_type']}) on "
              f"{status['interfaces']}", flush=True)
    elif status.get("error"):
        print(f"  mDNS: not advertised: {status['error']}", flush=True)


async def _discover(args: argparse.Namespace) -> int:
    from .discovery import find_servers, watch_servers

    def show(kind: str, server: ServerInfo) -> None:
        if args.json:
            print(json.dumps({"event": kind, **server.to_dict()}), flush=True)
        else:
            print(f"{kind:8} {server.name!r:32} {server.url:28} {server.ws_url}", flush=True)

    if args.watch:
        async for event in watch_servers(interfaces=args.interfaces):
            show(event.kind, event.server)
        return 0
    servers = await find_servers(args.timeout, name=args.name, interfaces=args.interfaces)
    for server in servers:
        show("found", server)
    if not servers:
        wanted = f" named {args.name!r}" if args.name else ""
        print(f"no vocalink server{wanted} found in {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


def url_with_token(url: str, token: str | None) -> str:
    """``url`` with ``/?token=...`` when the server asks for a token (as Jupyter prints it)."""
    return f"{url}/?token={token}" if token else url


def access_line(server: Any) -> str:
    """One line on who may use ``server``: off on purpose, or how devices pair."""
    if server.token is None:
        return ("  authentication is OFF (--open / VOCALINK_OPEN): anyone on the network may "
                "control this server, and any device may record")
    pairing = server.pairing_info()
    return (f"  devices pair with join code {pairing['join_code']} (vocalink device --join "
            "CODE), or wait for approval; controllers send the token above")


def _rename(url: str, name: str, token: str | None = None) -> int:
    from .tokens import client_token

    parts = urllib.parse.urlsplit(url)
    token = client_token(url, token or _token_in(url))
    request = urllib.request.Request(
        f"{parts.scheme}://{parts.netloc}/api/server", method="PUT",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - user URL
            info = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]
        except (ValueError, KeyError):
            message = f"HTTP {exc.code}"
        print(f"error: {message}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"error: cannot reach {url}: {exc.reason}", file=sys.stderr)
        return 1
    print(info["name"])
    return 0


def _token_in(url: str | None) -> str | None:
    """A ``?token=`` in a URL copied from `vocalink serve`'s first line."""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url or "").query).get("token")
    return values[-1] if values else None


async def _devices(args: argparse.Namespace) -> int:
    from .agent import Agent, AgentConfig, simulate_devices
    from .tokens import env_token

    token = args.token or _token_in(args.server) or env_token()
    server = args.server
    if server is not None:
        parts = urllib.parse.urlsplit(server)
        server = f"{parts.scheme}://{parts.netloc}" if parts.netloc else server
    if args.command == "device":
        agent = Agent(AgentConfig(
            # The whole URL: the phone link's join code and CA pin count too.
            state_dir=args.state_dir, server_url=args.server, server_name=args.server_name,
            device_id=args.device_id, name=args.device_name, source=args.source,
            sample_rate=args.sample_rate, channels=args.channels, format=args.format,
            interfaces=args.interfaces, token=token, join_code=args.join_code,
            ca_pin=args.ca_pin,
        ))
        await agent.start()
        agents = [agent]
        stop = agent.stop
    else:
        n = args.devices
        spread = [(2 * i / (n - 1) - 1) if n > 1 else 0.0 for i in range(n)]
        simulation = await simulate_devices(
            n, server_url=server, server_name=args.server_name, state_dir=args.state_dir,
            token=token,
            offsets_s=[x * args.offset_s for x in spread],
            drifts_ppm=[x * args.drift_ppm for x in spread],
            interfaces=args.interfaces, prefix=args.prefix,
        )
        agents = simulation.agents
        stop = simulation.stop
    signalled = await signal_waiter()
    for agent in agents:
        where = server or "the server found with mDNS"
        print(f"device {agent.device_id} ('{agent.name}') -> {where}; "
              f"state in {agent.state_dir}", flush=True)
    print("  press Ctrl-C to stop (a recording in progress is kept and uploaded later)",
          flush=True)
    try:
        await signalled
    finally:
        await stop()
    print("stopped", flush=True)
    return 0
