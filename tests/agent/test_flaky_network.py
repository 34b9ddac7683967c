"""A connection that keeps dropping during uploads loses and duplicates nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support.http import Api
from tests.support.proxy import CuttingProxy
from tests.support.wait import wait_until
from vocalink_lab.agent import simulate_devices
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio




@pytest.mark.slow
async def test_twenty_dropped_connections_lose_and_duplicate_nothing(server: Server,
                                                                     tmp_path: Path) -> None:
    assert server.port is not None
    # Every connection is cut after 64 KB towards the server, 20 times in all: uploads are
    # cut mid-PATCH again and again; the devices' WebSockets carry far less than that.
    async with CuttingProxy("127.0.0.1", server.port, cut_after_bytes=64_000,
                            max_cuts=20) as proxy:
        sim = await simulate_devices(3, server_url=proxy.url, state_dir=tmp_path / "devices")
        api = Api(server.url)
        try:
            await sim.wait_connected()
            for take in range(2):
                _, body = await api.post_json("/api/commands", {
                    "action": "START", "params": {"duration_s": 2.0, "channels": 2}})
                assert body["ok"], body
                await wait_until(lambda t=take: all(len(a.uploaded) == t + 1 for a in sim.agents),
                                 60)
            assert proxy.cuts == 20
            _, listing = await api.get("/api/audio/list?limit=100")
            items = listing["items"]
            assert len(items) == 6 and len({i["id"] for i in items}) == 6
            uploaded = sorted(r for a in sim.agents for r in a.uploaded)
            assert sorted(i["id"] for i in items) == uploaded
            for item in items:
                stored = (server.data_dir / item["path"]).read_bytes()
                assert hashlib.sha256(stored).hexdigest() == item["sha256"]
                assert item["frames"] == 96000 and item["channels"] == 2
            assert all(len(a.outbox or []) == 0 for a in sim.agents)
        finally:
            await sim.stop()
            api.close()
