"""Voila's kernel manager for the dashboard: kernels nobody is connected to are culled.

Voila starts a kernel per page view. Closing the tab shuts it down (Voila's
``beforeunload`` beacon), but a page that just vanishes (a crashed browser, a laptop
lid closed, a phone gone to sleep) leaves its kernel running. Jupyter's idle culling
cannot see those: a dashboard's widgets follow the devices, and each update they send
counts as kernel activity, so the kernel never looks idle. This manager also culls a
kernel once no client has been connected to it for ``cull_disconnected_after``
seconds (counted from its start when nobody ever connects), whatever its activity.

It runs inside the Voila process (``vocalink dashboard`` configures it).
"""

from __future__ import annotations

import os
import time
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Float, Unicode

__all__ = ["DashboardKernelManager"]


class DashboardKernelManager(AsyncMappingKernelManager):
    """`AsyncMappingKernelManager` that also culls kernels left without a connection."""

    cull_disconnected_after = Float(
        120.0, config=True,
        help="Shut a kernel down when no client has been connected to it for this many "
             "seconds (0: never). Checked every `cull_interval` seconds; needs "
             "`cull_idle_timeout` > 0, which starts the culler.")

    ready_file = Unicode(
        "", config=True,
        help="A file written once the first kernel has started ('': none). With Voila's "
             "pre-heated kernel, `vocalink dashboard` prints the page's URL after it: the "
             "first visitor then gets that kernel, not a cold one started for them.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self._alone_since: dict[str, float] = {}

    async def _async_start_kernel(self, **kwargs: Any) -> str:
        kernel_id: str = await super()._async_start_kernel(**kwargs)
        self._alone_since.setdefault(kernel_id, time.monotonic())
        if self.ready_file and not os.path.exists(self.ready_file):
            # Voila records the pre-heated kernel as soon as this returns, in the same
            # step of its loop: no request can come between.
            with open(self.ready_file, "w") as marker:
                marker.write(kernel_id)
        return kernel_id

    start_kernel = _async_start_kernel  # type: ignore[assignment]

    def notify_connect(self, kernel_id: str) -> None:
        """A client connected: the kernel is not alone any more."""
        super().notify_connect(kernel_id)  # type: ignore[no-untyped-call]
        self._alone_since.pop(kernel_id, None)

    def notify_disconnect(self, kernel_id: str) -> None:
        """A client left: start counting when the last one has."""
        super().notify_disconnect(kernel_id)  # type: ignore[no-untyped-call]
        if kernel_id in self and self._kernel_connections.get(kernel_id, 0) <= 0:
            self._alone_since[kernel_id] = time.monotonic()

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        """Jupyter's idle rule, then the rule for kernels without a connection."""
        await super().cull_kernel_if_idle(kernel_id)  # type: ignore[no-untyped-call]
        if kernel_id not in self or self.cull_disconnected_after <= 0:
            self._alone_since.pop(kernel_id, None)
            return
        since = self._alone_since.get(kernel_id)
        if since is None or self._kernel_connections.get(kernel_id, 0) > 0:
            return
        alone = time.monotonic() - since
        if alone > self.cull_disconnected_after:
            self.log.warning("Culling kernel %s: no client connected for %d s.", kernel_id,
                             int(alone))
            self._alone_since.pop(kernel_id, None)
            await ensure_async(self.shutdown_kernel(kernel_id))  # type: ignore[no-untyped-call]
