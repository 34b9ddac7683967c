"""Shared fixtures: a real server on 127.0.0.1:0, its HTTP client, thread-leak checks.

The whole session runs in a private network namespace (see `tests.support.netns`): only
``lo`` exists there, so nothing a test does can reach, or multicast on, a real network.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support import netns
from tests.support.http import Api
from vocalink_lab.config import Settings
from vocalink_lab.server import Server

#: The controller token of every server, client, device and notebook the suite starts:
#: ``VOCALINK_TOKEN`` is the token of every side (the server uses it, our clients send it).
#: Set before the re-run in a private namespace, so that every child process inherits it.
os.environ.setdefault("VOCALINK_TOKEN", f"vl-test-{secrets.token_urlsafe(24)}")
TOKEN = os.environ["VOCALINK_TOKEN"]
#: Where the packaged whisper model is joined: once per machine for every session and
#: child process, never in the user's own cache (checked against upstream at each load).
os.environ.setdefault("VOCALINK_ASR_CACHE",
                      str(Path(tempfile.gettempdir()) / "vocalink-test-asr-cache"))


def pytest_configure(config: pytest.Config) -> None:
    """Re-run this very command inside a private network namespace, once."""
    if netns.in_private_netns():
        return
    if os.environ.get(netns.ENV_FLAG) == "1":
        raise pytest.UsageError(f"in a network namespace with interfaces "
                                f"{netns.interface_names()}, not only lo")
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()  # give the new process the real stdout/stderr
    try:
        netns.reexec_in_private_netns()
    except RuntimeError as exc:
        raise pytest.UsageError(f"{exc}; the test suite runs only in a private network "
                                "namespace, so that mDNS never reaches a real network") from exc


def fast_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for tests: loopback only, no mDNS, short timeouts (time is what we fake)."""
    base = Settings(
        data_dir=data_dir, host="127.0.0.1", port=0, advertise=False, interfaces=("127.0.0.1",),
        command_timeout_s=1.0, heartbeat_s=0.5, register_timeout_s=2.0,
        upload_idle_timeout_s=2.0,
    )
    return base.replace(**overrides)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Server]:
    """A real server with ``settings``, started, and stopped whatever happens."""
    server = Server(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(fast_settings(tmp_path / "data"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest_asyncio.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    client = Api(server.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(autouse=True)
def verify_threads_ended() -> Iterator[None]:
    """Every ``vocalink-*`` thread a test started is gone when it ends."""
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t.name for t in threading.enumerate()
                  if t.name.startswith("vocalink-") and t.ident not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left running: {leaked}"
