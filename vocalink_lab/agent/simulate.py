"""Simulated devices: real agents over real sockets, with synthetic audio and own clocks."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..tokens import env_token
from .agent import Agent, AgentConfig
from .clock import DeviceClock

__all__ = ["Simulation", "simulate_devices", "tone_for"]


def tone_for(index: int) -> float:
    """A distinct, easily told apart tone per device: 440 Hz, 550 Hz, 660 Hz, ..."""
    return 440.0 + 110.0 * index


class Simulation:
    """Running simulated devices; ``await simulation.stop()`` (or ``async with``) ends them."""

    def __init__(self, agents: list[Agent], temp: tempfile.TemporaryDirectory[str] | None):
        self.agents = agents
        self._temp = temp

    async def wait_connected(self, timeout: float = 30.0) -> None:
        """Until every device is registered with the server."""
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(a.connected.wait() for a in self.agents))

    async def stop(self) -> None:
        """Stop every device (a recording in progress is kept in its outbox)."""
        await asyncio.gather(*(a.stop() for a in self.agents))
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    async def __aenter__(self) -> Simulation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def simulate_devices(
    n: int,
    *,
    server_url: str | None = None,
    server_name: str | None = None,
    state_dir: str | Path | None = None,
    sources: Sequence[str] | None = None,
    offsets_s: Sequence[float] | None = None,
    drifts_ppm: Sequence[float] | None = None,
    audio_drifts_ppm: Sequence[float] | None = None,
    interfaces: Sequence[str] | None = None,
    prefix: str = "sim",
    sample_rate: int = 48000,
    token: str | None = None,
) -> Simulation:
    """Start ``n`` simulated devices on the running loop (in a notebook: the kernel's).

    Parameters
    ----------
    n : int
        How many devices.
    server_url : str, optional
        The server; found with mDNS (optionally by ``server_name``) when omitted.
    state_dir : path, optional
        Where each device keeps its identity, spool and outbox (``<state_dir>/<id>/``);
        a temporary folder by default, removed by `Simulation.stop` (so recordings not
        yet uploaded by then are lost: give a folder to keep them).
    sources : sequence of str, optional
        One source spec per device; default a distinct tone each (`tone_for`).
    offsets_s, drifts_ppm : sequence of float, optional
        Per-device clock offset (s) and drift (ppm), for clock-sync experiments.
    audio_drifts_ppm : sequence of float, optional
        Per-device sound card rate error against the device clock (ppm): each synthetic
        source spec gets ``:audio_ppm=...`` (see `make_source`), so that its samples are
        paced by a card clock drifting apart from the CPU's.
    interfaces : sequence of str, optional
        Interfaces to browse mDNS on.
    prefix : str
        Device ids are ``<prefix>-1`` ... ``<prefix>-n``.
    sample_rate : int
        Default sample rate of the devices.
    token : str, optional
        The controller token, which makes them trusted; by default ``VOCALINK_TOKEN``.
        Without one, a server that asks for pairing lists them as pending.

    Returns
    -------
    Simulation
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    specs = []
    for i in range(n):
        source = sources[i] if sources else f"tone:{tone_for(i):g}"
        if audio_drifts_ppm and audio_drifts_ppm[i]:
            if source.partition(":")[0].lower() not in ("tone", "noise", "click", "silence"):
                raise ValueError(f"audio_drifts_ppm needs a synthetic source, not {source!r}")
            source = f"{source}:audio_ppm={audio_drifts_ppm[i]:g}"
        specs.append(source)
    temp = None
    if state_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="vocalink-sim-")
        state_dir = temp.name
    agents = []
    for i in range(n):
        device_id = f"{prefix}-{i + 1}"
        config = AgentConfig(
            state_dir=Path(state_dir) / device_id, server_url=server_url,
            server_name=server_name, device_id=device_id, name=f"Simulated {i + 1}",
            source=specs[i],
            sample_rate=sample_rate,
            clock=DeviceClock(offset_s=offsets_s[i] if offsets_s else 0.0,
                              drift_ppm=drifts_ppm[i] if drifts_ppm else 0.0),
            interfaces=interfaces, token=token if token is not None else env_token(),
        )
        agents.append(Agent(config))
    await asyncio.gather(*(a.start() for a in agents))
    return Simulation(agents, temp)
