"""``/ws/events?topics=``: a controller gets the topics it asked for, and only those."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.audio import encode
from tests.support.http import Api
from vocalink_lab.client import Client
from vocalink_lab.errors import InvalidParameter
from vocalink_lab.protocol import Topic
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio


async def test_only_the_topics_asked_for_arrive(server: Server, api: Api) -> None:
    client = Client(server.url)
    renames = await client.open_events([Topic.SERVER_RENAMED])
    everything = await client.open_events()
    try:
        status, _ = await api.upload(encode("wav"), recording_id="rec-1")
        assert status == 201
        await client.rename("Filtered Studio")
        async with asyncio.timeout(10):
            first = await anext(aiter(renames))
            seen = []
            async for event in everything:
                seen.append(event["topic"])
                if event["topic"] == Topic.SERVER_RENAMED:
                    break
    finally:
        renames.close()
        everything.close()
        client.close()
    assert first["topic"] == Topic.SERVER_RENAMED and first["data"]["name"] == "Filtered Studio"
    assert Topic.RECORDING_ADDED in seen  # it happened first, and only the filter hid it


async def test_an_unknown_topic_is_refused_by_name(server: Server) -> None:
    client = Client(server.url)
    try:
        with pytest.raises(InvalidParameter, match="no event topic 'device.exploded'"):
            await client.open_events(["device.exploded"])  # type: ignore[list-item]
    finally:
        client.close()
