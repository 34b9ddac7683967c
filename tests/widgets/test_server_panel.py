"""ServerPanel: name, URL, QR code, discovery, and a live rename."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import fast_settings
from tests.support.wait import wait_until
from vocalink_lab.lab import Lab
from vocalink_lab.server import Server
from vocalink_lab.widgets import ServerPanel

pytestmark = pytest.mark.asyncio


async def test_shows_the_server_and_renames_it(lab: Lab) -> None:
    panel = ServerPanel(lab)
    try:
        assert lab.name in panel.name_label.value
        assert lab.url in panel.url_label.value
        assert bytes(panel.qr.value).startswith(b"\x89PNG")
        assert "disabled" in panel.discovery_label.value  # advertise=False

        panel.name_input.value = "Studio Widgets"
        panel.rename_button.click()
        await panel.wait_idle(timeout=10)
        assert lab.name == "Studio Widgets"
        assert "Studio Widgets" in panel.name_label.value
        assert "Renamed to 'Studio Widgets'" in panel.message
        info = await lab.client.info()
        assert info["name"] == "Studio Widgets"  # the server itself, not only the mirror

        # A rename from elsewhere (a notebook cell) reaches the panel through the events.
        await lab.client.rename("Studio Elsewhere")
        await wait_until(lambda: "Studio Elsewhere" in panel.name_label.value, timeout=5)
        assert panel.name_input.value == "Studio Elsewhere"
    finally:
        panel.close()


async def test_an_invalid_name_is_one_readable_line(lab: Lab) -> None:
    panel = ServerPanel(lab)
    try:
        before = lab.name
        panel.rename("   ")
        await panel.wait_idle(timeout=10)
        assert "Rename failed:" in panel.message
        assert "Traceback" not in panel.message and "\n" not in panel.message
        assert lab.name == before
    finally:
        panel.close()
    assert not lab._listeners  # close() unsubscribed


async def test_mdns_state_and_a_name_taken_on_the_network(tmp_path: Path) -> None:
    # Loopback mDNS inside the suite's private network namespace.
    other = Server(fast_settings(tmp_path / "other", advertise=True, name="Taken Studio"))
    await other.start()
    await other.advertised()
    data = tmp_path / "data"
    lab = await Lab.start(data_dir=data, port=0, host="127.0.0.1", name="Free Studio",
                          settings=fast_settings(data, advertise=True))
    panel = ServerPanel(lab)
    try:
        # Registration ends after the panel is drawn: its outcome arrives as an event.
        await wait_until(lambda: "advertising" in panel.discovery_label.value, timeout=10)
        assert "Free Studio._vocalink._tcp.local." in panel.discovery_label.value

        panel.rename("Taken Studio")
        await panel.wait_idle(timeout=15)
        assert lab.name == "Taken Studio (2)"
        assert "Taken Studio (2)" in panel.name_label.value
        assert panel.name_input.value == "Taken Studio (2)"
        assert panel.message == ("Renamed to 'Taken Studio (2)' ('Taken Studio' is taken on "
                                 "the network)")
        assert "Taken Studio (2)._vocalink" in panel.discovery_label.value
    finally:
        panel.close()
        await lab.stop()
        await other.stop()


async def test_with_https_the_qr_is_the_phone_link_with_code_and_pin(tmp_path: Path) -> None:
    """What a phone scans opens the recorder over HTTPS, pairs, and carries the CA's pin
    (an agent given the same link pins it too); the panel says where to trust the CA."""
    from vocalink_lab.links import RecorderLink
    from vocalink_lab.widgets.render import qr_png

    data = tmp_path / "data"
    lab = await Lab.start(data_dir=data, port=0, host="127.0.0.1",
                          settings=fast_settings(data, tls=True))
    panel = ServerPanel(lab)
    try:
        assert lab.server is not None and lab.server.tls is not None
        link = RecorderLink.parse(panel.phone_link)
        assert link == RecorderLink(f"https://127.0.0.1:{lab.server.port}", lab.join_code,
                                    lab.server.tls.ca_fingerprint)
        assert panel.phone_link.split("#")[0].endswith(f"/recorder?join={lab.join_code}")
        assert bytes(panel.qr.value) == qr_png(panel.phone_link)
        assert f"http://127.0.0.1:{lab.server.port}/recorder/ca" in panel.url_label.value
        assert lab.server.tls.ca_fingerprint in panel.url_label.value
    finally:
        panel.close()
        await lab.stop()
