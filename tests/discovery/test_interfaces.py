"""The ``interfaces`` setting resolved against the (private) namespace's interfaces."""

from __future__ import annotations

import subprocess
import sys

import pytest
from zeroconf import IPVersion

from tests.support import netns
from vocalink_lab.discovery import select_interfaces
from vocalink_lab.errors import DiscoveryError


def test_the_suite_runs_in_a_private_network_namespace() -> None:
    # The guarantee behind every mDNS test: there is no real interface to multicast on.
    assert netns.in_private_netns()
    assert netns.interface_names() == ["lo"]


def test_all_interfaces_fall_back_to_loopback_when_it_is_the_only_one() -> None:
    selection = select_interfaces(None)
    assert selection.all_interfaces
    assert selection.listen == ["127.0.0.1"] and selection.addresses == ("127.0.0.1",)
    assert selection.ip_version is IPVersion.V4Only
    assert selection.describe() == "all interfaces (127.0.0.1)"


@pytest.mark.parametrize("choice", [("lo",), ("127.0.0.1",), (" lo ", "127.0.0.1")])
def test_names_and_addresses_select_the_same_interface(choice: tuple[str, ...]) -> None:
    selection = select_interfaces(choice)
    assert selection.listen == ["127.0.0.1"] and not selection.all_interfaces
    assert selection.describe() == "127.0.0.1"


@pytest.mark.parametrize(("choice", "message"), [
    (("eth7",), "no interface named 'eth7' (known: lo)"),
    (("10.9.9.9",), "no interface has address 10.9.9.9"),
    ((), "no interfaces chosen"),
])
def test_unknown_interfaces_are_named_in_the_error(choice: tuple[str, ...], message: str) -> None:
    with pytest.raises(DiscoveryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_interfaces(choice)


def test_an_interface_without_multicast_is_refused_with_the_reason() -> None:
    code = ("from vocalink_lab.discovery import select_interfaces\n"
            "for choice in (None, ['lo']):\n"
            "    try: select_interfaces(choice)\n"
            "    except Exception as exc: print(type(exc).__name__, exc)\n")
    with netns.Namespace(multicast=False) as host:
        out = subprocess.run(host.command([sys.executable, "-c", code]), capture_output=True,
                             text=True, timeout=60, check=True).stdout.splitlines()
    assert out == [
        "DiscoveryError no multicast-capable interface with an IPv4 address (lo has multicast off)",
        "DiscoveryError lo has multicast off",
    ]
