"""Two "hosts" (network namespaces joined by a veth pair): a client finds the server by
name with mDNS across the link, then connects its WebSocket through the found address."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import netns

pytestmark = pytest.mark.serial
ROOT = Path(__file__).parents[2]


def test_a_client_host_finds_the_server_host_by_name_and_connects(tmp_path: Path) -> None:
    with netns.Namespace() as server_host, netns.Namespace() as client_host:
        netns.veth(server_host, "vl-srv", "10.213.7.1/24", client_host, "vl-cli", "10.213.7.2/24")
        serve = server_host.popen(
            [sys.executable, "-m", "vocalink_lab", "serve", "--host", "0.0.0.0", "--port", "0",
             "--data-dir", str(tmp_path / "data"), "--name", "Veth Studio",
             "--interfaces", "vl-srv"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert serve.stdout is not None
            port = int(serve.stdout.readline().strip().split("/?")[0].rsplit(":", 1)[1])
            client = subprocess.run(
                client_host.command([sys.executable, "-m", "tests.support.find_and_connect",
                                     "Veth Studio", "vl-cli"]),
                capture_output=True, text=True, timeout=90, cwd=ROOT)
            assert client.returncode == 0, client.stderr
            result = json.loads(client.stdout)
            found = result["found"]
            assert found is not None, "the client host did not find the server"
            # Only the server host's veth address is advertised, and it is the one used.
            assert found["addresses"] == ["10.213.7.1"] and found["port"] == port
            assert found["ws_url"] == f"ws://10.213.7.1:{port}/ws/control"
            assert result["welcome_server_name"] == "Veth Studio"
            assert result["welcome_server_id"] == found["server_id"]
        finally:
            serve.terminate()
            out, err = serve.communicate(timeout=20)
        assert serve.returncode == 0, err
        assert "mDNS: advertised as 'Veth Studio' (_vocalink._tcp.local.) on 10.213.7.1" in out
