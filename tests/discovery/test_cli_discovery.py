"""``vocalink serve`` advertises, ``vocalink discover`` finds it from another process,
``vocalink rename`` renames it live; all in the suite's private namespace."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support import netns
from tests.support.http import auth_headers
from tests.support.process import ServeProcess

pytestmark = pytest.mark.serial
VOCALINK = [sys.executable, "-m", "vocalink_lab"]


def discover(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VOCALINK, "discover", "--interfaces", "127.0.0.1", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_discover_in_another_process_finds_a_served_server(tmp_path: Path) -> None:
    with ServeProcess(tmp_path / "data", "--name", "CLI Studio") as serve:
        line = serve.wait_for_line("mDNS:")
        assert line == ("mDNS: advertised as 'CLI Studio' (_vocalink._tcp.local.) "
                        "on 127.0.0.1")
        found = discover("--json", "--name", "CLI Studio", "--timeout", "15")
        assert found.returncode == 0, found.stderr
        [record] = [json.loads(x) for x in found.stdout.splitlines()]
        assert record["event"] == "found" and record["name"] == "CLI Studio"
        assert record["port"] == serve.port and record["addresses"] == ["127.0.0.1"]
        assert record["ws_url"] == f"ws://127.0.0.1:{serve.port}/ws/control"
        request = urllib.request.Request(serve.url + "/api/server", headers=auth_headers())
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert record["server_id"] == json.loads(response.read())["id"]

        renamed = subprocess.run([*VOCALINK, "rename", "CLI Studio 2", "--server", serve.url],
                                 capture_output=True, text=True, timeout=60)
        assert (renamed.returncode, renamed.stdout) == (0, "CLI Studio 2\n"), renamed.stderr
        plain = discover("--timeout", "3")
        assert plain.returncode == 0
        assert [line.split()[0] for line in plain.stdout.splitlines()] == ["found"]
        assert "'CLI Studio 2'" in plain.stdout and "'CLI Studio'" not in plain.stdout

        refused = subprocess.run([*VOCALINK, "rename", "   ", "--server", serve.url],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert refused.stderr == "error: server name must not be empty or only spaces\n"


def test_discover_says_when_nothing_is_found() -> None:
    result = discover("--timeout", "1", "--name", "Nobody")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "no vocalink server named 'Nobody' found in 1 s\n"


def test_rename_of_an_unreachable_server_is_a_clear_error() -> None:
    result = subprocess.run([*VOCALINK, "rename", "X", "--server", "http://127.0.0.1:9"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach http://127.0.0.1:9:")


def test_discover_watch_prints_arrivals_and_departures(tmp_path: Path) -> None:
    watch = subprocess.Popen([*VOCALINK, "discover", "--watch", "--json",
                              "--interfaces", "127.0.0.1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        with ServeProcess(tmp_path / "data", "--name", "Passing Studio") as serve:
            added = json.loads(watch.stdout.readline())
            assert (added["event"], added["name"], added["port"]) == (
                "added", "Passing Studio", serve.port)
            assert serve.proc is not None
            serve.proc.terminate()  # a clean stop says goodbye
            serve.proc.wait(20)
        removed = json.loads(watch.stdout.readline())
        assert (removed["event"], removed["name"]) == ("removed", "Passing Studio")
    finally:
        watch.kill()
        watch.communicate(timeout=10)


def test_serve_without_multicast_still_serves_and_says_why(tmp_path: Path) -> None:
    # The URL as printed, with its token: the token goes along in the query.
    probe = ("import json, sys, urllib.request\n"
             "base, _, query = sys.argv[1].partition('/?')\n"
             "print(json.load(urllib.request.urlopen(base + '/api/server?' + query))"
             "['discovery']['state'])\n")
    with netns.Namespace(multicast=False) as host:
        serve = host.popen([*VOCALINK, "serve", "--host", "127.0.0.1", "--port", "0",
                            "--data-dir", str(tmp_path / "data"), "--name", "Deaf Studio"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert serve.stdout is not None
            url = serve.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            line = ""
            while not line.startswith("mDNS:"):
                line = serve.stdout.readline().strip()
            assert line == ("mDNS: not advertised: no multicast-capable interface with an "
                            "IPv4 address (lo has multicast off)")
            state = subprocess.run(host.command([sys.executable, "-c", probe, url]),
                                   capture_output=True, text=True, timeout=60, check=True)
            assert state.stdout == "failed\n"
        finally:
            serve.terminate()
            serve.communicate(timeout=20)
        assert serve.returncode == 0
