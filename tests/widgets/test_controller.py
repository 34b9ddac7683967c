"""The panels need only `widgets.Controller`: a Lab seen through nothing else works the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fast_settings
from tests.support.wait import wait_until
from tests.widgets.conftest import tone, upload
from vocalink_lab.lab import Lab
from vocalink_lab.widgets import Controller, Dashboard

#: What the interface offers: the names a panel may use.
OFFERED = frozenset(name for name in vars(Controller) if not name.startswith("_"))


class OnlyTheInterface:
    """A real Lab, of which only the `Controller` names can be reached."""

    def __init__(self, lab: Lab) -> None:
        self._lab = lab
        self.reached: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name not in OFFERED:
            raise AttributeError(f"a panel reached for lab.{name}, which Controller lacks")
        self.reached.add(name)
        return getattr(self._lab, name)


def test_the_interface_is_small_and_the_lab_has_all_of_it() -> None:
    assert {"on", "device_list", "recording_list", "take_list", "url", "name", "info",
            "start_recording", "stop_recording", "rename", "enhance", "merge", "delete",
            "path_of"} <= OFFERED
    assert not OFFERED & {"server", "client", "refresh", "stop", "wait_job"}
    assert all(hasattr(Lab, name) for name in OFFERED)


@pytest.mark.asyncio
async def test_every_panel_works_through_the_interface_alone(tmp_path: Path) -> None:
    # mDNS on loopback inside the suite's private network namespace: registration ends
    # after the panels are drawn, and reaches them as a server.discovery event.
    data = tmp_path / "data"
    lab = await Lab.start(data_dir=data, port=0, host="127.0.0.1", name="Interface Studio",
                          settings=fast_settings(data, advertise=True))
    view = OnlyTheInterface(lab)
    board = Dashboard(view)  # type: ignore[arg-type]  # duck-typed on purpose
    try:
        await wait_until(lambda: "advertising" in board.server.discovery_label.value,
                         timeout=10)
        assert "Interface Studio._vocalink._tcp.local." in board.server.discovery_label.value

        board.server.rename("Renamed Studio")
        await board.server.wait_idle(timeout=15)
        assert "Renamed Studio._vocalink" in board.server.discovery_label.value

        await upload(lab, tone(1.0), "rec-1", device_id="phone-1")
        await wait_until(lambda: board.recordings.ids == ["rec-1"], timeout=5)
        board.recordings.select(["rec-1"])
        await board.wait_idle(timeout=10)
        assert board.enhance.recording.value == "rec-1"
        assert {"on", "info", "name", "url", "rename", "recording_list"} <= view.reached
    finally:
        board.close()
        await lab.stop()
