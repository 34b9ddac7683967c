"""The service format shared by advertiser and browser: names, suffixes, TXT, URLs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocalink_lab.discovery.service import (
    SERVICE_TYPE,
    ServerInfo,
    decode_properties,
    encode_properties,
    instance_name,
    label_of,
    with_suffix,
)


def test_instance_names_round_trip() -> None:
    assert SERVICE_TYPE == "_vocalink._tcp.local."
    assert instance_name("Studio") == "Studio._vocalink._tcp.local."
    assert label_of("Studio (2)._vocalink._tcp.local.") == "Studio (2)"
    assert label_of("STUDIO._VOCALINK._TCP.LOCAL.") == "STUDIO"


@pytest.mark.parametrize(("name", "number", "expected"), [
    ("Studio Server", 1, "Studio Server"),
    ("Studio Server", 2, "Studio Server (2)"),
    ("Studio Server (2)", 1, "Studio Server (2)"),
    ("Studio Server (2)", 3, "Studio Server (3)"),
    ("(2)", 2, "(2) (2)"),
    ("x" * 63, 2, "x" * 59 + " (2)"),
    ("é" * 31, 12, "é" * 29 + " (12)"),
])
def test_conflict_suffix(name: str, number: int, expected: str) -> None:
    assert with_suffix(name, number) == expected


@given(st.text(min_size=1, max_size=63).filter(lambda s: len(s.encode()) <= 63),
       st.integers(min_value=2, max_value=99))
def test_suffixed_names_fit_a_dns_label(name: str, number: int) -> None:
    suffixed = with_suffix(name, number)
    assert len(suffixed.encode()) <= 63
    assert suffixed.endswith(f" ({number})")


def test_txt_properties_are_text_both_ways() -> None:
    encoded = encode_properties({"name": "Studio ü", "pairing": True, "proto": 1, "open": False})
    assert encoded == {"name": "Studio ü", "pairing": "1", "proto": "1", "open": "0"}
    raw = {k.encode(): v.encode() for k, v in encoded.items()} | {b"flag": None, b"bad": b"\xff"}
    decoded = decode_properties(raw)
    assert decoded["name"] == "Studio ü" and decoded["flag"] == "" and decoded["bad"] == "\ufffd"


def test_server_info_urls_and_fields() -> None:
    info = ServerInfo(name="Studio", instance=instance_name("Studio"), host="srv-1.local.",
                      port=8765, addresses=("10.0.0.5", "fe80::1"),
                      properties={"id": "srv-1", "ws": "/ws/control", "pairing": "1",
                                  "proto": "1"})
    assert info.url == "http://10.0.0.5:8765"
    assert info.ws_url == "ws://10.0.0.5:8765/ws/control"
    assert info.server_id == "srv-1" and info.pairing_required and info.protocol == 1
    v6 = ServerInfo(name="S", instance="S", host="h.local.", port=1, addresses=("::1",))
    assert v6.url == "http://[::1]:1" and v6.protocol is None and not v6.pairing_required
    assert info.to_dict()["ws_url"] == info.ws_url
