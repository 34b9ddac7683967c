"""A crowd of devices in their own process: ``python -m tests.support.crowd WS_URL N``.

Each device registers the instant its WebSocket opens and waits for WELCOME; the
process prints how many were welcomed. Being another process, it races the server
for real, as phones do.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect


async def one(url: str, i: int) -> bool:
    async with connect(url, open_timeout=20) as ws:
        await ws.send(json.dumps({"type": "REGISTER", "device_id": f"crowd-{i:04d}",
                                  "name": f"crowd {i}", "protocol": 1,
                                  # Trusted, as simulated devices are: the token of every side.
                                  "token": os.environ["VOCALINK_TOKEN"]}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 15))
        return bool(reply.get("type") == "WELCOME")


async def main(url: str, n: int) -> None:
    results = await asyncio.gather(*(one(url, i) for i in range(n)), return_exceptions=True)
    print(sum(1 for r in results if r is True), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
