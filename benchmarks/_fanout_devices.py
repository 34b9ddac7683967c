"""A fleet of N protocol-v1 devices in one asyncio process (used by fanout.py).

Each device opens a WebSocket to ``--url``, sends REGISTER, waits for WELCOME,
then ACKs every COMMAND at once (status SUCCESS, echoing command_id, action and
device_id; a START's ``started_at`` is its scheduled ``start_at`` if that is still ahead,
else the instant it arrived) and answers every SYNC probe from its clock (``time.time()``),
as real devices do: a server measures a device's clock before it schedules a command for
it. The same code runs against vocalink and against the baseline (which sends no SYNC).

Prints ``READY <n> <seconds>`` once every device is registered, then runs until
its stdin closes, SIGTERM, or ``--max-lifetime-s``. Exits non-zero if a device
fails or drops its connection before that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import stat
import sys
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PROTOCOL_VERSION = 1


class Fleet:
    def __init__(self, url: str, count: int, prefix: str, concurrency: int) -> None:
        self.url = url
        self.count = count
        self.prefix = prefix
        self.gate = asyncio.Semaphore(concurrency)
        self.registered = 0
        self.all_registered = asyncio.Event()
        self.failures: list[str] = []
        self.acks_sent = 0
        self.stopping = False

    async def device(self, index: int) -> None:
        device_id = f"{self.prefix}-{index:05d}"
        ws: ClientConnection | None = None
        try:
            async with self.gate:
                ws = await connect(self.url, compression=None, ping_interval=None,
                                   open_timeout=30, close_timeout=2, max_queue=None)
                await ws.send(json.dumps({
                    "type": "REGISTER", "device_id": device_id, "name": device_id,
                    "protocol": PROTOCOL_VERSION, "platform": "bench",
                    "token": os.environ["VOCALINK_TOKEN"],  # trusted, as simulated devices
                }))
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if welcome.get("type") != "WELCOME":
                    raise RuntimeError(f"expected WELCOME, got {welcome}")
            self.registered += 1
            if self.registered == self.count:
                self.all_registered.set()
            await self.obey(ws, device_id)
        except Exception as exc:  # noqa: BLE001 - reported and counted, the parent decides
            if not self.stopping:
                self.failures.append(f"{device_id}: {exc!r}")
                self.all_registered.set()  # wake main: it reports the failure
        finally:
            if ws is not None:
                await ws.close()

    async def obey(self, ws: ClientConnection, device_id: str) -> None:
        try:
            async for text in ws:
                msg = json.loads(text)
                if msg.get("type") == "SYNC" and msg.get("t1") is None:
                    t1 = time.time()
                    await ws.send(json.dumps({"type": "SYNC", "id": msg["id"], "t0": msg["t0"],
                                              "t1": t1, "t2": time.time()}))
                    continue
                if msg.get("type") != "COMMAND":
                    continue
                ack = {
                    "type": "ACK", "command_id": msg["command_id"], "action": msg["action"],
                    "device_id": device_id, "status": "SUCCESS",
                }
                if msg["action"] == "START":
                    # A real device starts at the scheduled sample when the command comes
                    # in time, else at once; its clock is this machine's (offset 0).
                    now, start_at = time.time(), msg.get("start_at")
                    ack["started_at"] = start_at if start_at is not None and start_at > now \
                        else now
                await ws.send(json.dumps(ack))
                self.acks_sent += 1
        except ConnectionClosed:
            pass
        if not self.stopping:
            raise RuntimeError("the server closed the connection")


async def main(args: argparse.Namespace) -> int:
    fleet = Fleet(args.url, args.count, args.prefix, args.connect_concurrency)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stat.S_ISFIFO(os.fstat(0).st_mode):  # the parent closes our stdin to stop us
        loop.add_reader(0, lambda: None if os.read(0, 4096) else stop.set())
    loop.call_later(args.max_lifetime_s, stop.set)

    began = time.perf_counter()
    tasks = [asyncio.create_task(fleet.device(i)) for i in range(args.count)]
    try:
        await asyncio.wait_for(fleet.all_registered.wait(), args.register_timeout_s)
    except TimeoutError:
        fleet.failures.append(f"only {fleet.registered}/{args.count} registered in time")
    if fleet.failures:
        print("FAILED " + "; ".join(fleet.failures[:5]), flush=True)
    else:
        # This process is the measuring instrument: keep its garbage collector's full passes
        # (over 1000 connections' objects) out of the measured rounds.
        gc.freeze()
        print(f"READY {fleet.registered} {time.perf_counter() - began:.3f}", flush=True)
        await stop.wait()
    fleet.stopping = True
    for task in tasks:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    if fleet.failures:
        print("\n".join(fleet.failures[:20]), file=sys.stderr)
    print(f"fleet: {fleet.acks_sent} ACKs sent, {len(fleet.failures)} failures", file=sys.stderr)
    return 1 if fleet.failures else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ws/control")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", default="dev")
    parser.add_argument("--connect-concurrency", type=int, default=64)
    parser.add_argument("--register-timeout-s", type=float, default=120)
    parser.add_argument("--max-lifetime-s", type=float, default=3600)
    args = parser.parse_args()
    if not args.url.startswith("ws://127.0.0.1:"):
        parser.error("only ws://127.0.0.1 URLs are allowed")
    return args


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.exit(asyncio.run(main(parse_args())))
