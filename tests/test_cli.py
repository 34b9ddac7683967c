"""The ``vocalink`` command: serve prints its URL first and stops cleanly on signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.http import auth_headers
from tests.support.process import ServeProcess
from vocalink_lab.cli import main
from vocalink_lab.lab import Lab


def get_json(url: str) -> dict[str, object]:
    request = urllib.request.Request(url, headers=auth_headers())
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.mark.serial
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_url_first_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    with ServeProcess(tmp_path / "data", "--name", "Studio CLI") as serve:
        assert serve.url.startswith("http://127.0.0.1:")
        assert get_json(serve.url + "/ping") == {"status": "server alive"}
        info = get_json(serve.url + "/api/server")
        assert info["name"] == "Studio CLI" and info["port"] == serve.port
        assert serve.proc is not None
        serve.proc.send_signal(sig)
        out, err = serve.proc.communicate(timeout=20)
        assert serve.proc.returncode == 0, err
        assert out.rstrip().endswith("stopped")
        assert "Traceback" not in err
    assert (tmp_path / "data" / "vocalink.db").exists()


@pytest.mark.serial
def test_serve_prints_its_url_with_the_token_and_the_join_code(tmp_path: Path) -> None:
    """As Jupyter prints its URL; the token in it is the one the server asks for."""
    import os

    with ServeProcess(tmp_path / "data") as serve:
        token = os.environ["VOCALINK_TOKEN"]
        assert serve.printed_url == f"{serve.url}/?token={token}"
        # The phone link (printed first): the recorder page with the code (no TLS on
        # loopback: no pin).
        phones = serve.wait_for_line("phones record at:")
        line = serve.wait_for_line("devices pair with join code")
        code = get_json(serve.url + "/api/server")["pairing"]["join_code"]
        assert code in line and "vocalink device --join" in line
        assert phones.endswith(f"{serve.url}/recorder?join={code}")
        with pytest.raises(urllib.error.HTTPError) as refused:  # the token is asked for
            urllib.request.urlopen(serve.url + "/api/server", timeout=10)  # noqa: S310
        assert refused.value.code == 401


@pytest.mark.serial
def test_serve_open_says_so_in_one_line(tmp_path: Path) -> None:
    with ServeProcess(tmp_path / "data", "--open") as serve:
        assert "token" not in serve.printed_url
        assert "anyone on the network may control" in serve.wait_for_line(
            "authentication is OFF")
        with urllib.request.urlopen(serve.url + "/api/server", timeout=10) as response:  # noqa: S310
            assert json.loads(response.read())["auth"] == {"required": False}


@pytest.mark.serial
def test_console_script_and_module_agree(tmp_path: Path) -> None:
    version = subprocess.run([sys.executable, "-m", "vocalink_lab", "--version"],
                             capture_output=True, text=True, timeout=60, check=True)
    assert version.stdout.startswith("vocalink_lab ")
    script = Path(sys.executable).with_name("vocalink")
    assert script.exists(), "the vocalink console script is installed beside python"
    helped = subprocess.run([str(script), "serve", "--help"], capture_output=True, text=True,
                            timeout=60, check=True)
    for flag in ("--host", "--port", "--data-dir", "--name"):
        assert flag in helped.stdout


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "70000"], "port must be between 0 and 65535"),
        (["serve", "--name", "   "], "server name must not be empty"),
        (["serve", "--name", "x" * 64], "the limit is 63"),
    ],
)
def test_bad_settings_exit_1_without_traceback(tmp_path: Path, argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--data-dir", str(tmp_path / "d"), "--host", "127.0.0.1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # refused before touching storage


def test_port_in_use_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--host", "127.0.0.1", "--port", str(port),
                     "--data-dir", str(tmp_path / "d")])
    assert code == 1
    assert "error: " in capsys.readouterr().err


@pytest.mark.asyncio
async def test_a_second_serve_on_one_data_dir_refuses_and_a_lab_attaches(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServeProcess(data, "--no-advertise") as serve:
        second = subprocess.run(
            [sys.executable, "-m", "vocalink_lab", "serve", "--host", "127.0.0.1", "--port", "0",
             "--no-advertise", "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stdout
        assert second.stdout == ""  # no URL: it never served
        assert serve.proc is not None
        assert second.stderr.strip() == (
            f"error: another process (pid {serve.proc.pid}) already serves {data} at "
            f"{serve.url}; connect to it (vl.connect) or choose another --data-dir")
        lab = await Lab.start(data_dir=data, advertise=False)
        try:
            assert lab.attached and lab.url == serve.url
        finally:
            await lab.stop()
        assert get_json(serve.url + "/ping") == {"status": "server alive"}  # undisturbed


@pytest.mark.serial
def test_serve_on_the_android_apps_port_trusts_its_sessions(tmp_path: Path) -> None:
    """``--port 6210`` (the VocalLink app's usual port) and ``--android trust``."""
    from websockets.sync.client import connect

    with ServeProcess(tmp_path / "data", "--port", "6210", "--android", "trust") as serve:
        assert serve.port == 6210
        request = urllib.request.Request(  # as the app asks: no token
            serve.url + "/sessions", method="POST",
            data=json.dumps({"id": "", "name": "User 7a1f", "ip": "127.0.0.23",
                             "battery": 80, "device": "Google Pixel 7"}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            session = json.loads(answer.read())
        with connect(serve.url.replace("http", "ws", 1) + "/ws/control") as ws:
            ws.send(json.dumps({"kind": "event", "msgType": "session_activate",
                                "body": {"id": session["id"]}}))
            activated = json.loads(ws.recv(timeout=10))
        assert activated["msgType"] == "session_activated", activated
        assert activated["body"]["id"] == session["id"]
