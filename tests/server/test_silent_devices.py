"""Devices that never answer SYNC hold up nobody else's START (issue 12, "hostile input").

Eight devices that registered and then ignore every SYNC probe once made a scheduled
START reach the one good device after eight seconds instead of a fifth of one: the
server measured the unmeasured clocks one after another, each probe waiting out its
timeout. The clocks are now measured side by side, with one bounded wait for all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.support.device import FakeDevice
from tests.support.http import Api
from vocalink_lab.hub.hub import MEASURE_WAIT_S, SYNC_TIMEOUT_S, UNMEASURED_NOTE
from vocalink_lab.protocol import Command, Message, Sync
from vocalink_lab.server import Server

pytestmark = pytest.mark.asyncio


class SilentDevice(FakeDevice):
    """Registers and obeys commands, but never answers the server's SYNC probes."""

    async def send(self, message: Message | str) -> None:
        if isinstance(message, Sync):
            return  # the probe goes unanswered: this device's clock cannot be measured
        await super().send(message)


@contextlib.asynccontextmanager
async def devices(server: Server, silent: int) -> AsyncIterator[tuple[FakeDevice,
                                                                       list[FakeDevice]]]:
    """``silent`` silent devices, then one good one (last: it waits behind them all)."""
    quiet = [SilentDevice(server.ws_url, f"silent-{i}") for i in range(silent)]
    good = FakeDevice(server.ws_url, "good")
    try:
        for device in [*quiet, good]:
            await device.connect()
        yield good, quiet
    finally:
        await asyncio.gather(*(d.close() for d in [*quiet, good]))


@pytest.mark.parametrize("silent", [1, 8])
async def test_silent_devices_do_not_delay_the_start_of_a_good_one(
        server: Server, api: Api, silent: int) -> None:
    """The answer comes within a bound that does not grow with the silent devices.

    Measured one after another, n silent devices cost n probe timeouts; the bound,
    two probe timeouts (`SYNC_TIMEOUT_S`, the setting each probe waits for), holds one
    silent device or eight alike only if they are waited for together, and at most
    `MEASURE_WAIT_S` (itself within one probe timeout).
    """
    assert MEASURE_WAIT_S <= SYNC_TIMEOUT_S
    async with devices(server, silent) as (good, quiet):
        targets = [d.device_id for d in [*quiet, good]]
        loop = asyncio.get_running_loop()
        asked = loop.time()
        status, result = await api.post_json("/api/commands",
                                              {"action": "START", "targets": targets})
        answered = loop.time() - asked
        assert status == 200, result
        assert answered < 2 * SYNC_TIMEOUT_S, (silent, answered)

        # The good device was scheduled: an instant in its own clock, and it ACKed.
        assert result["start_at"] is not None
        command = good.of_type(Command)[-1]
        assert command.command_id == result["command_id"]
        assert command.start_at is not None
        mine = result["outcomes"]["good"]
        assert mine["status"] == "SUCCESS" and mine["note"] is None, mine
        assert mine["late_ms"] is not None  # its start converts to server time

        # Each silent device was probed, started on arrival, and its outcome says why.
        for device in quiet:
            assert device.of_type(Sync), device.device_id  # it was asked, and never answered
            command = device.of_type(Command)[-1]
            assert command.command_id == result["command_id"]
            assert command.start_at is None
            outcome = result["outcomes"][device.device_id]
            assert outcome["status"] == "SUCCESS", outcome
            assert outcome["note"] == UNMEASURED_NOTE
            assert "no answer to SYNC" in outcome["note"]
            assert outcome["late_ms"] is None
