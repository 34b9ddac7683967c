"""Fixtures shared by the server's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest_asyncio

from tests.conftest import fast_settings
from tests.support.http import Api
from vocalink_lab.server import Server


@pytest_asyncio.fixture
async def threaded(tmp_path: Path) -> AsyncIterator[tuple[Server, Api]]:
    """A server whose jobs run in a thread pool of this process (merges in a second)."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="dsp-test")
    server = Server(fast_settings(tmp_path / "data"), executor=executor)
    await server.start()
    api = Api(server.url)
    try:
        yield server, api
    finally:
        api.close()
        await server.stop()
        executor.shutdown(wait=True)
