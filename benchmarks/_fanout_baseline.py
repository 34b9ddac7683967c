"""Baseline of fanout.py: a minimal `websockets` server doing vocalink's broadcast job.

Devices connect to ``/ws/control``, send REGISTER and get a WELCOME (the same
handshake as vocalink). ``GET /api/round?action=START`` broadcasts one COMMAND
frame to every registered device with ``websockets.broadcast`` and answers once
every ACK is back, with ``issued_at`` (taken just before the frame is encoded and
sent) and ``completed_at`` (when the last ACK was processed), server clock, as
vocalink's ``POST /api/commands`` does. ``GET /api/devices`` counts devices.

Prints its URL (``http://127.0.0.1:PORT``) as the first stdout line.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import json
import resource
import signal
from urllib.parse import parse_qs, urlsplit

import websockets
from _fanout_round import WS_PATH, Rounds, welcome
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


class Hub:
    def __init__(self, heartbeat_s: float, timeout_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self.devices: dict[str, ServerConnection] = {}
        self.rounds = Rounds(timeout_s)

    async def handler(self, ws: ServerConnection) -> None:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if first.get("type") != "REGISTER":
            await ws.close(4002, "the first frame must be REGISTER")
            return
        device_id = first["device_id"]
        old = self.devices.get(device_id)
        if old is not None:
            await old.close(4001, "replaced")
        self.devices[device_id] = ws
        await ws.send(welcome(self.heartbeat_s, "baseline-websockets"))
        try:
            async for text in ws:
                msg = json.loads(text)
                if msg.get("type") == "ACK":
                    self.rounds.on_ack(device_id, msg)
        finally:
            if self.devices.get(device_id) is ws:
                del self.devices[device_id]

    async def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == WS_PATH:
            return None
        if url.path == "/api/devices":
            body: dict[str, object] = {"connected": len(self.devices)}
        elif url.path == "/api/round":
            action = parse_qs(url.query).get("action", ["START"])[0]
            targets = list(self.devices)
            connections = [self.devices[d] for d in targets]
            body = await self.rounds.run(
                action, targets, lambda frame: websockets.broadcast(connections, frame))
        else:
            return conn.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        response = conn.respond(http.HTTPStatus.OK, json.dumps(body))
        response.headers["Content-Type"] = "application/json"
        return response


async def main(args: argparse.Namespace) -> None:
    hub = Hub(args.heartbeat_s, args.command_timeout_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ping = args.heartbeat_s if args.heartbeat_s > 0 else None
    async with serve(hub.handler, "127.0.0.1", 0, process_request=hub.process_request,
                     compression=None, ping_interval=ping, ping_timeout=ping,
                     max_size=1 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}", flush=True)
        await stop.wait()
        server.close(close_connections=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heartbeat-s", type=float, default=2.0,
                        help="keepalive ping interval and timeout (0: none)")
    parser.add_argument("--command-timeout-s", type=float, default=30.0)
    return parser.parse_args()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(parse_args()))
