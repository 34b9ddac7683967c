"""A client "host": find a server by name with mDNS, then REGISTER over its WebSocket.

Usage: ``python -m tests.support.find_and_connect NAME INTERFACE``; prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect

from vocalink_lab.discovery import find_servers
from vocalink_lab.protocol import PROTOCOL_VERSION, Register, Welcome, decode, encode


async def main(name: str, interface: str) -> None:
    found = await find_servers(20, name=name, interfaces=[interface])
    if not found:
        print(json.dumps({"found": None}))
        return
    server = found[0]
    async with connect(server.ws_url, open_timeout=10) as ws:
        await ws.send(encode(Register(device_id="veth-mic", name="Veth mic",
                                      protocol=PROTOCOL_VERSION, platform="test",
                                      token=os.environ.get("VOCALINK_TOKEN"))))
        welcome = decode(await asyncio.wait_for(ws.recv(), 10))
    assert isinstance(welcome, Welcome)
    print(json.dumps({"found": server.to_dict(), "welcome_server_name": welcome.server_name,
                      "welcome_server_id": welcome.server_id}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
