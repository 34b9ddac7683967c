"""Fixtures for the panels: a real Lab on the test's loop, recordings uploaded to it."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest_asyncio
import soundfile as sf

from tests.conftest import fast_settings
from tests.support.audio import tone as support_tone
from tests.support.http import Api
from tests.support.wait import wait_until
from vocalink_lab.agent import Simulation, simulate_devices
from vocalink_lab.lab import Lab

SR = 16000


@contextlib.asynccontextmanager
async def simulated(lab: Lab, folder: Path, n: int) -> AsyncIterator[Simulation]:
    """``n`` simulated devices (16 kHz) connected to ``lab``, listed by it; stopped after."""
    simulation = await simulate_devices(n, server_url=lab.url, state_dir=folder,
                                        sample_rate=16000)
    try:
        await lab.wait_for_devices(n, timeout_s=10)
        yield simulation
    finally:
        await simulation.stop()


@pytest_asyncio.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    # Enhance and merge jobs run in threads: a process pool would spend seconds starting.
    executor = ThreadPoolExecutor(2, thread_name_prefix="test-dsp")
    data = tmp_path / "data"
    lab = await Lab.start(data_dir=data, port=0, host="127.0.0.1", advertise=False,
                          settings=fast_settings(data), executor=executor)
    try:
        yield lab
    finally:
        await lab.stop()
        executor.shutdown(wait=True)


def tone(seconds: float = 1.0, freq: float = 440.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """The suite's tone (`tests.support.audio.tone`), mono, as the 1-D array `upload` takes."""
    return support_tone(seconds, sr, 1, freq, seed)[:, 0]


def wav(audio: np.ndarray, sr: int = SR) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio).T, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


async def upload(lab: Lab, audio: np.ndarray, recording_id: str, sr: int = SR,
                 **fields: Any) -> dict[str, Any]:
    """Store a recording through the server's upload endpoint; wait for the Lab to see it."""
    api = Api(lab.url)
    try:
        status, body = await api.upload(wav(audio, sr), recording_id=recording_id, **fields)
    finally:
        api.close()
    assert status == 201, body
    await wait_until(lambda: any(r["id"] == recording_id for r in lab.recording_list()),
                     timeout=5)
    return dict(body["recording"])
