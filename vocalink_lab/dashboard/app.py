"""The dashboard page's content: the lab's panels plus a demo switch.

The Voila notebook is one cell, ``app = await dashboard_app(); app``: everything it
shows is built here, where it can be typed and tested.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..lab import Lab

if TYPE_CHECKING:
    from ..agent import Simulation

__all__ = ["DashboardApp", "DemoDevices", "dashboard_app"]

log = logging.getLogger(__name__)

DEMO_PREFIX = "demo"


def demo_requested(environ: Any = None) -> bool:
    """Whether ``VOCALINK_DEMO`` asks for demo devices (``1``, ``true``, ``yes``, ``on``)."""
    value = (os.environ if environ is None else environ).get("VOCALINK_DEMO", "")
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


class DemoDevices(widgets.HBox):  # type: ignore[misc]
    """A switch that runs simulated devices in this kernel, to try the lab without hardware.

    Parameters
    ----------
    lab : Lab
        The lab the devices connect to.
    n : int
        How many devices.
    prefix : str
        Their ids are ``<prefix>-1`` ... ``<prefix>-n``. When devices with these ids
        are already connected (``vocalink dashboard --demo``, another visitor), the
        switch shows them and starts no others.
    """

    def __init__(self, lab: Lab, *, n: int = 2, prefix: str = DEMO_PREFIX,
                 **kwargs: Any) -> None:
        self._lab = lab
        self._n = n
        self._prefix = prefix
        self._sim: Simulation | None = None
        self._task: asyncio.Task[None] | None = None
        self.toggle = widgets.Checkbox(value=False, description="Demo devices (simulated)",
                                       indent=False,
                                       layout=widgets.Layout(width="auto"))
        self.status = widgets.HTML()
        self.toggle.observe(self._on_toggle, "value")
        super().__init__([self.toggle, self.status], **kwargs)
        self.add_class("vocalink-demo")

    @property
    def running(self) -> bool:
        """Whether this kernel runs demo devices."""
        return self._sim is not None

    def elsewhere(self) -> list[str]:
        """Connected demo devices this kernel did not start."""
        if self._sim is not None:
            return []
        return [d["device_id"] for d in self._lab.device_list()
                if d.get("connected") and str(d["device_id"]).startswith(self._prefix + "-")]

    async def start(self, wait_s: float = 10.0) -> None:
        """Start the devices (unless they run elsewhere) and wait until they are connected."""
        if self._sim is not None:
            return
        others = self.elsewhere()
        if others:
            self._show(f"{len(others)} connected", on=True, locked=True)
            return
        self._show("starting…", on=True)
        state_dir = (self._lab.data_dir / "demo-devices") if self._lab.data_dir else None
        from ..agent import simulate_devices  # only when asked for: a page opens sooner

        self._sim = await simulate_devices(self._n, server_url=self._lab.url,
                                           state_dir=state_dir, prefix=self._prefix)
        try:
            await self._sim.wait_connected(wait_s)
        except TimeoutError:
            self._show(f"{self._n} started, not all connected yet", on=True)
            return
        self._show(f"{self._n} connected", on=True)

    async def stop(self) -> None:
        """Stop the devices this kernel started (a recording in progress is kept)."""
        sim, self._sim = self._sim, None
        if sim is not None:
            await sim.stop()
        self._show("", on=False)

    def _show(self, text: str, *, on: bool, locked: bool = False) -> None:
        self.status.value = f"<span class='vocalink-demo-status'>{html.escape(text)}</span>"
        if self.toggle.value != on:
            self.toggle.unobserve(self._on_toggle, "value")
            self.toggle.value = on
            self.toggle.observe(self._on_toggle, "value")
        self.toggle.disabled = locked

    def _on_toggle(self, change: dict[str, Any]) -> None:
        action = self.start if change["new"] else self.stop
        self._task = asyncio.get_running_loop().create_task(self._run(action))

    async def _run(self, action: Any) -> None:
        self.toggle.disabled = True
        try:
            await action()
        except Exception as exc:  # shown in the page: nobody reads a kernel's log
            log.exception("demo devices")
            self._show(f"failed: {exc}", on=self._sim is not None)
        finally:
            if not self.elsewhere():
                self.toggle.disabled = False


class DashboardApp(widgets.VBox):  # type: ignore[misc]
    """The page: the lab's dashboard (`Lab.dashboard`) under a bar with the demo switch.

    Attributes
    ----------
    lab : Lab
    demo : DemoDevices
    dashboard : ipywidgets.Widget
    """

    def __init__(self, lab: Lab, *, demo_devices: int = 2, **kwargs: Any) -> None:
        self.lab = lab
        self.demo = DemoDevices(lab, n=demo_devices)
        self.dashboard = lab.dashboard()
        super().__init__([self.demo, self.dashboard], **kwargs)
        self.add_class("vocalink-app")

    async def stop(self) -> None:
        """Stop the demo devices this kernel started, then the lab (or detach from it)."""
        await self.demo.stop()
        close = getattr(self.dashboard, "close", None)
        if close is not None:
            close()
        await self.lab.stop()


async def dashboard_app(*, demo: bool | None = None, demo_devices: int = 2,
                        data_dir: Path | str | None = None, **lab_options: Any) -> DashboardApp:
    """Start the lab (or attach to the one serving the data dir) and build the page.

    Parameters
    ----------
    demo : bool, optional
        Start simulated devices too; by default when ``VOCALINK_DEMO=1``.
    demo_devices : int
        How many.
    data_dir : path, optional
        The lab's data dir (``VOCALINK_DATA_DIR`` by default).
    **lab_options
        Passed to `Lab.start`.

    Returns
    -------
    DashboardApp
        A widget: display it.
    """
    # The page opens before thousands of recordings are read; its panels redraw on them.
    lab_options.setdefault("recordings_later", True)
    lab = await Lab.start(data_dir=data_dir, **lab_options)
    app = DashboardApp(lab, demo_devices=demo_devices)
    if demo is None:
        demo = demo_requested()
    if demo:
        await app.demo.start()
    elif app.demo.elsewhere():
        await app.demo.start()  # shows the ones running, starts none
    return app
