"""Pairing in the panels, with real parts: a server that asks for credentials, a real Lab,
and devices over WebSocket (`FakeDevice`: ``token=""`` registers with no credential, so
it waits for approval; the default presents the suite's controller token: trusted).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import ipywidgets as widgets
import pytest

from tests.conftest import fast_settings
from tests.support.device import FakeDevice
from tests.support.wait import wait_until
from tests.widgets.test_controller import OFFERED, OnlyTheInterface
from vocalink_lab.lab import Lab
from vocalink_lab.protocol import Command, Welcome
from vocalink_lab.widgets import Dashboard, DevicesPanel, ServerPanel
from vocalink_lab.widgets.render import qr_png
from vocalink_lab.widgets.server import (
    OPEN_WARNING,
    device_url,
    join_command,
    phone_link,
    validity,
)

#: The WebSocket close code of a device an operator rejected (`hub.pairing.CLOSE_REJECTED`).
CLOSE_REJECTED = 4004


def ws_url(lab: Lab) -> str:
    return str(lab.info["ws_url"])


@contextlib.asynccontextmanager
async def connected(lab: Lab, *fakes: FakeDevice) -> AsyncIterator[None]:
    """Connect ``fakes`` and wait until the Lab lists them all; close them afterwards."""
    try:
        for fake in fakes:
            await fake.connect()
        await wait_until(lambda: {f.device_id for f in fakes} <=
                         {d["device_id"] for d in lab.device_list()}, timeout=5)
        yield
    finally:
        for fake in fakes:
            await fake.close()


def row_of(panel: DevicesPanel, device_id: str) -> dict[str, str]:
    return next(r for r in panel.rows if r["device_id"] == device_id)


def texts(widget: widgets.Widget) -> Iterator[str]:
    """Every string a widget tree shows or holds (values, labels, tooltips, images)."""
    for name in ("value", "description", "tooltip", "placeholder"):
        value = getattr(widget, name, None)
        if isinstance(value, str):
            yield value
        elif isinstance(value, bytes | memoryview):
            yield bytes(value).decode("latin-1")
    for child in getattr(widget, "children", ()):
        yield from texts(child)


# -- the interface ---------------------------------------------------------------------------


def test_the_interface_offers_pairing_and_the_lab_has_it() -> None:
    assert {"approve", "reject", "new_join_code", "pairing"} <= OFFERED
    assert not OFFERED & {"token", "join_code"}  # a panel shows no secret it need not know
    assert all(hasattr(Lab, name) for name in OFFERED)


# -- the Devices panel ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_pending_device_waits_with_approve_and_reject_and_approve_pairs_it(
        lab: Lab) -> None:
    stranger = FakeDevice(ws_url(lab), "stranger", "Pixel in the hall", token="")
    known = FakeDevice(ws_url(lab), "known")
    panel = DevicesPanel(lab)
    try:
        async with connected(lab, stranger, known):
            assert stranger.welcome is not None and stranger.welcome.paired is False
            await wait_until(lambda: len(panel.rows) == 2, timeout=5)
            assert row_of(panel, "stranger")["state"] == "WAITING FOR APPROVAL"
            assert row_of(panel, "stranger")["pairing"] == "pending"
            assert row_of(panel, "known")["pairing"] == "trusted"
            assert row_of(panel, "known")["state"] == "IDLE"
            assert panel.pending == ["stranger"]
            assert "1 connected" in panel.summary.value
            assert "1 waiting for approval" in panel.summary.value
            # Listed above the grid, with its buttons; in the grid too, waiting.
            row = panel._pending_rows["stranger"]
            assert "waiting for approval" in row.name.value
            assert "Pixel in the hall" in row.name.value
            assert [row.box] == list(panel.pending_box.children)
            assert row.approve in row.box.children and row.reject in row.box.children
            assert panel.pending_box.layout.display != "none"
            assert panel.grid.data.loc["stranger", "state"] == "WAITING FOR APPROVAL"
            assert panel.grid.data.loc["known", "pairing"] == "trusted"
            assert set(panel._pending_rows) == {"stranger"}  # no buttons where none belong

            row.approve.click()
            await panel.wait_idle(timeout=10)
            assert panel.message_kind == "ok", panel.message
            assert panel.message.startswith("Approved Pixel in the hall")
            # The device gets its key in a second WELCOME, and is paired from now on.
            second = await stranger.wait_for(Welcome, where=lambda m: m.device_key)
            assert isinstance(second, Welcome) and second.paired is True
            await wait_until(lambda: row_of(panel, "stranger")["pairing"] == "paired",
                             timeout=5)
            assert row_of(panel, "stranger")["state"] == "IDLE"
            assert panel.grid.data.loc["stranger", "pairing"] == "paired"
            assert panel.pending_box.children == ()  # its buttons are gone
            assert panel.pending_box.layout.display == "none"
            assert panel.pending == []
            assert "waiting for approval" not in panel.summary.value
            assert "2 connected" in panel.summary.value

            # Paired, it takes commands like any other device.
            panel.select(["stranger"])
            panel.buttons["START"].click()
            await panel.wait_idle(timeout=10)
            assert panel.last_result is not None
            assert panel.last_result["outcomes"]["stranger"]["status"] == "SUCCESS"
            panel.buttons["STOP"].click()
            await panel.wait_idle(timeout=10)
    finally:
        panel.close()


@pytest.mark.asyncio
async def test_reject_removes_the_row_and_closes_its_connection(lab: Lab) -> None:
    stranger = FakeDevice(ws_url(lab), "stranger", token="")
    panel = DevicesPanel(lab)
    try:
        async with connected(lab, stranger):
            await wait_until(lambda: panel.pending == ["stranger"], timeout=5)
            row = panel._pending_rows["stranger"]
            row.reject.click()
            assert row.reject.disabled and row.approve.disabled
            await panel.wait_idle(timeout=10)
            assert panel.message_kind == "ok", panel.message
            assert panel.message.startswith("Rejected stranger")
            await wait_until(lambda: panel.rows == [], timeout=5)
            assert len(panel.grid.data) == 0 and panel.pending_box.children == ()
            await wait_until(stranger.closed.is_set, timeout=5)
            assert stranger.conn is not None and stranger.conn.close_code == CLOSE_REJECTED
            assert "stranger" not in {d["device_id"] for d in lab.device_list()}
    finally:
        panel.close()


@pytest.mark.asyncio
async def test_a_pending_device_that_leaves_loses_its_row(lab: Lab) -> None:
    stranger = FakeDevice(ws_url(lab), "stranger", token="")
    panel = DevicesPanel(lab)
    try:
        async with connected(lab, stranger):
            await wait_until(lambda: panel.pending == ["stranger"], timeout=5)
            await stranger.close()
            # The server forgets it (device.removed): no OFFLINE row is left behind.
            await wait_until(lambda: panel.rows == [], timeout=5)
            assert "No device yet" in panel.summary.value
    finally:
        panel.close()


@pytest.mark.asyncio
async def test_a_command_to_a_selection_with_a_pending_device_says_so(lab: Lab) -> None:
    stranger = FakeDevice(ws_url(lab), "stranger", "Pixel in the hall", token="")
    known = FakeDevice(ws_url(lab), "known")
    panel = DevicesPanel(lab)
    try:
        async with connected(lab, stranger, known):
            await wait_until(lambda: len(panel.rows) == 2, timeout=5)
            panel.select_all.value = True
            assert set(panel.selected) == {"stranger", "known"}
            panel.buttons["START"].click()
            assert panel.message == ("Start: Pixel in the hall is waiting for approval; "
                                     "approve or uncheck it first")
            assert panel.message_kind == "error"
            assert not panel.busy  # nothing was sent
            assert panel.last_result is None

            # No selection: every device that was let in, and the pending one is left out.
            panel.select([])
            panel.buttons["START"].click()
            await panel.wait_idle(timeout=10)
            assert panel.last_result is not None
            assert set(panel.last_result["outcomes"]) == {"known"}
            panel.buttons["STOP"].click()
            await panel.wait_idle(timeout=10)
            assert known.of_type(Command)
            assert not stranger.of_type(Command)  # the refused START never reached it
    finally:
        panel.close()


@pytest.mark.asyncio
async def test_a_failed_approval_is_one_readable_line(lab: Lab) -> None:
    panel = DevicesPanel(lab)
    try:
        panel.approve("ghost")
        await panel.wait_idle(timeout=10)
        assert panel.message.startswith("Approve ghost failed: ")
        assert "ghost" in panel.message[len("Approve ghost failed: "):]
        assert panel.message_kind == "error"
        assert "\n" not in panel.message and "Traceback" not in panel.message
    finally:
        panel.close()


# -- the Server panel -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_join_code_shows_in_the_phone_link_and_command_and_new_code_replaces_it(
        lab: Lab) -> None:
    panel = ServerPanel(lab)
    try:
        code = lab.join_code
        assert code and panel.join_code == code
        assert code in panel.access_label.value
        assert "valid 15 min" in panel.access_label.value  # the default lifetime
        # The QR code is the phone link: the recorder page with the code, which pairs.
        assert panel.phone_link == phone_link(lab.url, lab.info, code)
        assert panel.phone_link.endswith(f"/recorder?join={code}")
        assert bytes(panel.qr.value) == qr_png(panel.phone_link)
        assert panel.qr in _visible(panel)
        phone = device_url(lab.url, lab.info.get("addresses"))
        assert join_command(code, phone) in panel.join_command_label.value
        assert f"vocalink device --join {code} --server {phone}" == join_command(code, phone)
        assert OPEN_WARNING not in panel.access_label.value
        assert lab.token and not any(lab.token in text for text in texts(panel))

        panel.new_code_button.click()
        await panel.wait_idle(timeout=10)
        assert panel.message_kind == "ok", panel.message
        new = lab.join_code
        assert new and new != code
        assert panel.join_code == new and new in panel.message
        assert new in panel.access_label.value and code not in panel.access_label.value
        assert bytes(panel.qr.value) == qr_png(phone_link(lab.url, lab.info, new))
        assert join_command(new, phone) in panel.join_command_label.value
        assert not any(lab.token in text for text in texts(panel))

        # What the panel shows is what the server accepts: the new code pairs a device,
        # the old one is refused.
        joiner = FakeDevice(ws_url(lab), "joiner", token="", join_code=new)
        late = FakeDevice(ws_url(lab), "late", token="", join_code=code)
        try:
            await joiner.connect()
            assert joiner.welcome is not None and joiner.welcome.paired
            assert joiner.welcome.device_key
            with pytest.raises(ConnectionError):
                await late.connect()
        finally:
            await joiner.close()
            await late.close()
    finally:
        panel.close()


@pytest.mark.asyncio
async def test_an_expired_code_is_shown_expired_without_its_qr(tmp_path: Path) -> None:
    data = tmp_path / "data"
    lab = await Lab.start(data_dir=data, port=0, host="127.0.0.1",
                          settings=fast_settings(data, join_code_ttl_s=1.0))
    panel = ServerPanel(lab)
    try:
        code = lab.join_code
        assert code and "valid 1 min" in panel.access_label.value
        # The panel redraws by itself when the code runs out (a local timer, no request).
        await wait_until(lambda: "expired" in panel.access_label.value, timeout=5)
        # The link loses the code (a phone would wait for approval), and says so.
        assert "join=" not in panel.phone_link
        assert bytes(panel.qr.value) == qr_png(panel.phone_link)
        assert any("waits for approval" in t for t in texts(panel))
        assert panel.join_command_label.value == ""
        assert "New code" in panel.access_label.value

        panel.new_join_code()
        await panel.wait_idle(timeout=10)
        assert panel.join_code == lab.join_code != code
    finally:
        panel.close()
        await lab.stop()


@pytest.mark.asyncio
async def test_an_open_server_says_so_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    lab = await Lab.start(data_dir=data, port=0, host="127.0.0.1",
                          settings=fast_settings(data, open=True))
    server = ServerPanel(lab)
    panel = DevicesPanel(lab)
    anyone = FakeDevice(ws_url(lab), "anyone", token="")
    try:
        assert lab.pairing["required"] is False and lab.join_code is None
        assert OPEN_WARNING in server.access_label.value
        assert server.join_code is None
        assert "join=" not in server.phone_link
        assert server.new_code_button not in _visible(server)

        async with connected(lab, anyone):
            await wait_until(lambda: [r["pairing"] for r in panel.rows] == ["open"],
                             timeout=5)
            assert row_of(panel, "anyone")["state"] == "IDLE"
            assert panel.pending == []
    finally:
        server.close()
        panel.close()
        await lab.stop()


def _visible(widget: widgets.Widget) -> list[widgets.Widget]:
    """The widgets of a tree that are not hidden (``display: none``) nor inside one."""
    layout = getattr(widget, "layout", None)
    if layout is not None and layout.display == "none":
        return []
    out = [widget]
    for child in getattr(widget, "children", ()):
        out += _visible(child)
    return out


def test_validity_reads_in_whole_minutes_rounded_up() -> None:
    assert validity(None, 0.0) == ""
    assert validity(1000.0, 1000.0) == "expired"
    assert validity(1000.0, 1001.0) == "expired"
    assert validity(900.0, 0.5) == "valid 15 min"
    assert validity(840.0, 0.0) == "valid 14 min"
    assert validity(61.0, 0.0) == "valid 2 min"
    assert validity(60.0, 0.0) == "valid 1 min"
    assert validity(0.5, 0.0) == "valid 1 min"


# -- through the interface alone --------------------------------------------------------------


@pytest.mark.asyncio
async def test_pairing_works_through_the_interface_alone(lab: Lab) -> None:
    view = OnlyTheInterface(lab)
    board = Dashboard(view)  # type: ignore[arg-type]  # duck-typed on purpose
    first = FakeDevice(ws_url(lab), "first", token="")
    second = FakeDevice(ws_url(lab), "second", token="")
    try:
        async with connected(lab, first, second):
            await wait_until(lambda: board.devices.pending == ["first", "second"], timeout=5)
            board.devices.approve("first")
            board.devices.reject("second")
            await board.wait_idle(timeout=10)
            await wait_until(lambda: [(r["device_id"], r["pairing"])
                                      for r in board.devices.rows] == [("first", "paired")],
                             timeout=5)
            code = board.server.join_code
            board.server.new_join_code()
            await board.wait_idle(timeout=10)
            assert board.server.join_code not in (None, code)
        assert {"approve", "reject", "new_join_code", "pairing"} <= view.reached
    finally:
        board.close()
