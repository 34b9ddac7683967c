"""Voila's kernels for the dashboard: a kernel nobody is connected to is culled.

A dashboard's widgets keep its kernel busy with updates, so Jupyter's idle culling
never fires for a page that vanished; `DashboardKernelManager` culls by connections.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from tests.support.wait import wait_until
from vocalink_lab.dashboard import PREHEAT_REFILL_S, VoilaOptions, voila_command, write_kernelspec
from vocalink_lab.dashboard.kernels import DashboardKernelManager


@pytest.mark.asyncio
@pytest.mark.slow
@pytest.mark.serial
async def test_kernels_left_alone_are_culled_and_connected_ones_kept(tmp_path: Path) -> None:
    write_kernelspec(tmp_path)
    manager = DashboardKernelManager(
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
        cull_idle_timeout=3600, cull_interval=1, cull_disconnected_after=1.5,
        ready_file=str(tmp_path / "ready"))
    # The culler's own check, observed: set once it has looked at the watched kernel when
    # that kernel was older than the limit (alone, it would have been culled right then).
    checked_past_the_limit = asyncio.Event()
    cull_kernel_if_idle = manager.cull_kernel_if_idle
    started: dict[str, float] = {}

    async def observed(kernel_id: str) -> None:
        await cull_kernel_if_idle(kernel_id)
        if (kernel_id == watched and kernel_id in started
                and time.monotonic() - started[kernel_id] > manager.cull_disconnected_after):
            checked_past_the_limit.set()

    manager.cull_kernel_if_idle = observed  # type: ignore[method-assign]
    watched = ""
    try:
        assert not (tmp_path / "ready").exists()
        abandoned = await manager.start_kernel(kernel_name="python3")
        # Written with the first kernel, and only then (the dashboard's URL waits for it).
        assert (tmp_path / "ready").read_text() == abandoned
        watched = await manager.start_kernel(kernel_name="python3")
        assert (tmp_path / "ready").read_text() == abandoned
        started[watched] = time.monotonic()
        manager.notify_connect(watched)  # a page is open on it
        await wait_until(lambda: abandoned not in manager, timeout=15)
        await asyncio.wait_for(checked_past_the_limit.wait(), 15)
        assert watched in manager, "a kernel with a page open is kept, however long"
        manager.notify_disconnect(watched)  # the page vanished
        await wait_until(lambda: watched not in manager, timeout=15)
    finally:
        await manager.shutdown_all()


def test_voila_is_configured_with_the_template_and_the_culler() -> None:
    argv = voila_command(VoilaOptions(port=8123, host="127.0.0.1", cull_after_s=90))
    assert argv[1:3] == ["-m", "vocalink_lab.dashboard.runner"]
    assert "--template=vocalink" in argv and "--Voila.port=8123" in argv
    assert ("--VoilaConfiguration.multi_kernel_manager_class="
            "vocalink_lab.dashboard.kernels.DashboardKernelManager") in argv
    assert "--DashboardKernelManager.cull_disconnected_after=90" in argv
    assert any(a.startswith("--MappingKernelManager.cull_idle_timeout=") for a in argv)
    assert not any("preheat" in a for a in argv)  # a bare Voila's default


def test_the_dashboard_keeps_one_kernel_pre_heated_and_refills_it_later() -> None:
    argv = voila_command(VoilaOptions(port=8123, preheat=True))
    assert "--preheat_kernel=True" in argv and "--pool_size=1" in argv
    assert not any("ready_file" in a for a in argv)
    argv = voila_command(VoilaOptions(port=8123, preheat=True, ready_file=Path("/r/ready")))
    assert "--DashboardKernelManager.ready_file=/r/ready" in argv
    assert f"--VoilaKernelManager.fill_delay={PREHEAT_REFILL_S:g}" in argv
