"""The browser recorder when things go wrong: a network that drops, a reload, a hostile page.

What is real: the server (a `Server` on 127.0.0.1, port 0, in a loop thread), Debian's
Chromium driven by Playwright, the page's own JavaScript, its IndexedDB, its tus uploads,
the catalog. What is faked: the microphone (Chromium's fake capture device plays a 1 kHz
tone) and the network's failure.

How the network fails. Playwright's ``context.set_offline(True)`` (Chromium's offline
emulation) was checked here: it fails every *new* request and every *new* WebSocket
handshake from the page (``net::ERR_INTERNET_DISCONNECTED``), even to 127.0.0.1, but it
leaves an established WebSocket open, and ``navigator.onLine`` is ``false`` throughout
(this test runs in a network namespace without a default route, where Chromium on Linux
always reports offline; no ``online`` event ever comes). So a drop is emulated as
``set_offline(True)`` plus the server's side of the control connection aborted (a TCP
abort, no closing handshake: code 1006 on the page), and an upload in flight is cut by
holding one tus PATCH with ``page.route`` and aborting it (``internetdisconnected``) once
offline. The emulation sometimes holds back what the open WebSocket receives as well, so
the abort does not always reach the page: then it is the page's watchdog that notices the
silence (three SYNC intervals, 3 s here), as on a real Wi-Fi that dies, which sends no close
at all. That case on its own, every time: a `Relay` that goes silent.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.browser.recorder_support import (
    TONE_HZ,
    LiveServer,
    Watched,
    catalog_row,
    chromium,
    cut_link,
    dominant_hz,
    download,
    join_code,
    live,
    open_paired,
    relay,
    wait_for,
)

__all__ = ["chromium", "live"]  # fixtures, used by name

#: The page's tus PATCH size (upload.js ``PATCH_BYTES``).
PATCH_BYTES = 1 << 20
#: A file's length is its take's (STOP's instant minus START's) within this.
LENGTH_TOLERANCE_S = 0.020


def recorder(watched: Watched, expression: str) -> Any:
    """Evaluate ``expression`` on ``window.vocalinkRecorder`` (as ``r``) in the page."""
    return watched.evaluate(f"(r => {expression})(window.vocalinkRecorder)")


def start(live: LiveServer, device_id: str) -> tuple[dict[str, Any], str]:
    """START the device through the REST API; the command and its recording id."""
    started = live.json("POST", "/api/commands", {"action": "START", "targets": [device_id]})
    outcome = started["outcomes"][device_id]
    assert outcome["status"] == "SUCCESS", started
    return started, str(outcome["recording_id"])


def stop(live: LiveServer, device_id: str, recording_id: str) -> dict[str, Any]:
    """STOP the device through the REST API; the command (its outcome a success)."""
    stopped = live.json("POST", "/api/commands", {"action": "STOP", "targets": [device_id]})
    outcome = stopped["outcomes"][device_id]
    assert outcome["status"] == "SUCCESS", stopped
    assert outcome["recording_id"] == recording_id
    return stopped


def take_length(started: dict[str, Any], stopped: dict[str, Any]) -> float:
    """Seconds between START's and STOP's instants (scheduled ones, else when issued)."""
    if started["start_at"] is not None and stopped["start_at"] is not None:
        return float(stopped["start_at"] - started["start_at"])
    return float(stopped["issued_at"] - started["issued_at"])


def check_stored(live: LiveServer, watched: Watched, recording_id: str, *,
                 page: Any) -> tuple[dict[str, Any], np.ndarray, int]:
    """The stored file is the page's, byte for byte, and holds the tone.

    Returns
    -------
    (dict, ndarray, int)
        The catalog row, the samples and their rate.
    """
    row = catalog_row(live, recording_id, page=page)
    audio, rate, sha256 = download(live, recording_id)
    sent = watched.wait(f"window.vocalinkRecorder.sent[{json.dumps(recording_id)}]")
    # The SHA-256 the page computed of its IndexedDB chunks is the catalog's and the file's.
    assert sent["sha256"] == row["sha256"] == sha256, (sent, row["sha256"], sha256)
    assert rate == row["sample_rate"] == sent["sample_rate"]
    assert len(audio) == row["frames"] == sent["frames"]
    assert abs(dominant_hz(audio, rate) - TONE_HZ) <= 5
    assert np.sqrt(np.mean(audio**2)) > 0.05  # the tone, not silence
    return row, audio, rate


@pytest.mark.slow
@pytest.mark.serial
def test_a_take_goes_on_through_a_network_drop_and_an_upload_resumes_after_one(
        live: LiveServer, chromium: Any) -> None:
    """A drop mid-take, then a drop mid-upload: nothing is lost, nothing is sent twice.

    A STOP cannot reach a page that is offline (the server answers it at once: the device
    is offline), so the take goes on through the outage on the page's sample clock, the
    page comes back by itself, and the operator's next STOP ends it at its instant: the
    file's length is STOP's instant minus START's, with no hole where the network was.
    How the drop is emulated (offline emulation plus an aborted link): see the module's
    docstring.
    """
    watched, device_id = open_paired(chromium, live)
    page, context = watched.page, watched.context
    uploads: list[tuple[str, int, dict[str, str]]] = []  # (method, status, headers) answered
    held: list[Any] = []  # PATCH requests held back (in flight, as far as the page knows)
    patches = {"seen": 0, "hold": 0}  # PATCHes routed; which one to hold (0: none)

    def route_uploads(route: Any) -> None:
        if route.request.method == "PATCH":
            patches["seen"] += 1
            if patches["seen"] == patches["hold"]:
                held.append(route)
                return
        route.continue_()

    def answered(response: Any) -> None:
        if "/api/audio/uploads" in response.url:
            headers = {**{k: v for k, v in response.request.headers.items()
                          if k != "authorization"},  # the device key stays out of reports
                       **{f"answer-{k}": v for k, v in response.headers.items()}}
            uploads.append((response.request.method, response.status, headers))

    try:
        page.route("**/api/audio/uploads**", route_uploads)
        page.on("response", answered)
        sessions = recorder(watched, "r.sessions")

        # -- 1. The network drops in the middle of a take. --------------------------------
        started, first = start(live, device_id)
        watched.wait("window.vocalinkRecorder.take && window.vocalinkRecorder.take.elapsed >= 0.5")
        context.set_offline(True)
        assert cut_link(live, device_id) == 1
        watched.wait("!window.vocalinkRecorder.connected")
        wait_for(lambda: not live.client(device_id)["connected"], what="the server saw it go",
                 page=page)
        watched.wait("document.getElementById('detail').textContent === "
                     "'server unreachable: recording goes on'")
        # The operator's STOP cannot reach it: the server says so at once.
        status, _, raw = live.request("POST", "/api/commands",
                                      {"action": "STOP", "targets": [device_id]})
        assert status == 200, raw
        lost = json.loads(raw)["outcomes"][device_id]
        assert lost["status"] == "FAILED" and "offline" in lost["error"], lost
        # The page tries to come back and cannot (the emulated network refuses it), and
        # records on meanwhile.
        elapsed = recorder(watched, "r.take.elapsed")
        wait_for(lambda: any("ERR_INTERNET_DISCONNECTED" in line for line in watched.console),
                 what="a reconnection the offline network refused", page=page)
        watched.wait(f"window.vocalinkRecorder.take.elapsed >= {elapsed + 1.0}")
        assert recorder(watched, "r.sessions") == sessions
        assert page.evaluate("document.body.dataset.state") == "recording"

        context.set_offline(False)
        watched.wait(f"window.vocalinkRecorder.sessions === {sessions + 1}", timeout=30)
        wait_for(lambda: live.client(device_id)["connected"], what="back online", page=page)
        # Its STATUS says it records the same take, on the same recording.
        wait_for(lambda: live.client(device_id)["recording_id"] == first,
                 what="the page's STATUS about its take", page=page)
        stopped = stop(live, device_id, first)
        row, audio, rate = check_stored(live, watched, first, page=page)
        assert row["take_id"] == started["take_id"] and row["device_id"] == device_id
        expected = take_length(started, stopped)
        assert abs(len(audio) / rate - expected) < LENGTH_TOLERANCE_S, (len(audio) / rate, expected)
        # Part of it had no server: announced as made offline.
        assert first in live.client(device_id)["offline_recordings"]
        assert [m for m, _, _ in uploads] == ["POST", "PATCH"], [(m, s) for m, s, _ in uploads]

        # -- 2. The network drops in the middle of an upload. ------------------------------
        # A take longer than one PATCH: the first PATCH reaches the server, the second is
        # held (in flight) when the network goes; the page resumes from the server's offset.
        seconds = (PATCH_BYTES + 0.5 * 2 * rate) / (2 * rate)
        del uploads[:]
        patches.update(seen=0, hold=2)
        started, second = start(live, device_id)
        watched.wait(f"window.vocalinkRecorder.take && "
                     f"window.vocalinkRecorder.take.elapsed >= {seconds}", timeout=60)
        stopped = stop(live, device_id, second)
        wait_for(lambda: held, what="the second PATCH, held in flight", page=page)
        assert page.evaluate("document.body.dataset.state") == "uploading"
        context.set_offline(True)
        assert cut_link(live, device_id) == 1
        held[0].abort("internetdisconnected")
        watched.wait("!window.vocalinkRecorder.connected")
        # Still on the phone, with the upload's URL kept to resume it.
        watched.wait("window.vocalinkRecorder.pending === 1 && "
                     "!window.vocalinkRecorder.uploading")
        [kept] = recorder(watched, "r.store.recordings()")
        assert kept["recording_id"] == second and kept["state"] == "ready", kept["state"]
        assert kept["upload_url"] and kept["attempts"] >= 1, kept
        assert second not in recorder(watched, "r.uploaded")
        context.set_offline(False)
        watched.wait(f"window.vocalinkRecorder.uploaded.includes({json.dumps(second)})",
                     timeout=60)
        row, audio, rate = check_stored(live, watched, second, page=page)
        assert row["take_id"] == started["take_id"]
        expected = take_length(started, stopped)
        assert abs(len(audio) / rate - expected) < LENGTH_TOLERANCE_S, (len(audio) / rate, expected)
        assert len(audio) * 2 + 44 > PATCH_BYTES  # the upload had two PATCHes
        # tus: the cut PATCH, then HEAD (where is it?) and the rest from the server's offset.
        methods = [m for m, _, _ in uploads]
        assert methods == ["POST", "PATCH", "HEAD", "PATCH"], [(m, s) for m, s, _ in uploads]
        head = uploads[2][2]
        assert head["answer-upload-offset"] == str(PATCH_BYTES), head
        last = uploads[3][2]
        assert last["upload-offset"] == str(PATCH_BYTES), last
        assert last["answer-vocalink-recording-id"] == second
        watched.wait("window.vocalinkRecorder.pending === 0 && "
                     "document.body.dataset.state === 'ready'")
        watched.check()
    finally:
        watched.close()


@pytest.mark.slow
@pytest.mark.serial
def test_a_link_gone_silent_is_noticed_and_the_take_goes_on(
        live: LiveServer, chromium: Any) -> None:
    """A Wi-Fi that dies sends no close: the page notices the silence by itself.

    The page reaches the server through a `Relay` that goes silent mid-take (bytes vanish,
    nothing is closed, new connections are refused). The page cannot see WebSocket pings,
    so it counts the server's SYNC: nothing for three SYNC intervals (3 s here) and it takes
    the connection for dead, says so, records on, and comes back by itself when the network
    does, on the same take. Without its watchdog it would believe itself connected for as
    long as TCP takes to give up (minutes), and never reconnect meanwhile.
    """
    with relay(live) as link:
        watched, device_id = open_paired(chromium, live, base=link.url)
        page = watched.page
        try:
            sessions = recorder(watched, "r.sessions")
            assert recorder(watched, "r.silenceLimitMs") == 3000
            started, first = start(live, device_id)
            watched.wait("window.vocalinkRecorder.take && "
                         "window.vocalinkRecorder.take.elapsed >= 0.5")
            link.go_silent()
            elapsed = recorder(watched, "r.take.elapsed")
            watched.wait("!window.vocalinkRecorder.connected", timeout=20)
            # Not before the limit: what it heard last was at most a SYNC interval ago.
            assert recorder(watched, "r.take.elapsed") - elapsed >= 3.0 - 1.0 - 0.25
            assert any("no word from the server" in line for line in watched.console), \
                watched.console
            wait_for(lambda: not live.client(device_id)["connected"],
                     what="the server saw it go (its pings unanswered)", page=page)
            watched.wait("document.getElementById('detail').textContent === "
                         "'server unreachable: recording goes on'")
            elapsed = recorder(watched, "r.take.elapsed")
            watched.wait(f"window.vocalinkRecorder.take.elapsed >= {elapsed + 1.0}")
            assert recorder(watched, "r.sessions") == sessions
            assert page.evaluate("document.body.dataset.state") == "recording"

            link.restore()
            watched.wait(f"window.vocalinkRecorder.sessions === {sessions + 1}", timeout=30)
            wait_for(lambda: live.client(device_id)["recording_id"] == first,
                     what="the page's STATUS about its take", page=page)
            stopped = stop(live, device_id, first)
            row, audio, rate = check_stored(live, watched, first, page=page)
            assert row["take_id"] == started["take_id"]
            expected = take_length(started, stopped)
            assert abs(len(audio) / rate - expected) < LENGTH_TOLERANCE_S, \
                (len(audio) / rate, expected)
            assert first in live.client(device_id)["offline_recordings"]
            watched.check()
        finally:
            watched.close()


@pytest.mark.slow
@pytest.mark.serial
def test_a_reload_mid_take_recovers_the_recording_from_indexeddb_and_uploads_it(
        live: LiveServer, chromium: Any) -> None:
    """A tab reloaded mid-take (or closed, or killed) loses none of what it captured.

    The new page finds the interrupted recording in IndexedDB, finishes it with what
    reached the disk, and uploads it announced as recovered, as the Python agent does
    with its spool after a crash.
    """
    watched, device_id = open_paired(chromium, live)
    page = watched.page
    dialogs: list[str] = []

    def leave(dialog: Any) -> None:
        dialogs.append(dialog.type)
        dialog.accept()  # "leave the page?" during a take: yes

    try:
        page.on("dialog", leave)
        started, recording_id = start(live, device_id)
        watched.wait("window.vocalinkRecorder.take && "
                     "window.vocalinkRecorder.take.captured >= "
                     "window.vocalinkRecorder.take.sampleRate")
        captured, rate = recorder(watched, "[r.take.captured, r.take.sampleRate]")
        assert captured >= rate
        page.reload()
        # A new page: its recorder object is new, the recording comes from IndexedDB.
        watched.wait(f"window.vocalinkRecorder && window.vocalinkRecorder.uploaded.includes("
                     f"{json.dumps(recording_id)})", timeout=60)
        assert recorder(watched, "r.sessions") == 1
        assert recorder(watched, "r.deviceId") == device_id
        row, audio, stored_rate = check_stored(live, watched, recording_id, page=page)
        assert stored_rate == rate
        assert row["take_id"] == started["take_id"] and row["device_id"] == device_id
        # At least what it had captured when the reload came.
        assert len(audio) >= captured, (len(audio), captured)
        assert recorder(watched, f"r.sent[{json.dumps(recording_id)}].recovered") is True
        assert recording_id in live.client(device_id)["recovered_recordings"]
        watched.wait("window.vocalinkRecorder.pending === 0 && "
                     "document.body.dataset.state === 'ready'")
        watched.check()
    finally:
        watched.close()


# -- a hostile script on the server's origin --------------------------------------------------

#: Marks where a frame is padded up to its size (built in the page, not sent over CDP).
PAD = "@PAD@"


class PageSocket:
    """A WebSocket to ``/ws/control`` that a script opens in a page of the server's origin.

    Every frame the server sends is kept in the page (``window.sockets[name]``), with the
    close code once it closes.
    """

    OPEN = """([name, url]) => new Promise((resolve) => {
      const socket = {ws: new WebSocket(url), got: [], close: null};
      (window.sockets = window.sockets || {})[name] = socket;
      socket.ws.onmessage = (e) => socket.got.push(
        typeof e.data === "string" ? e.data : "(binary)");
      socket.ws.onclose = (e) => { socket.close = e.code; resolve(false); };
      socket.ws.onopen = () => resolve(true);
    })"""
    SEND = """([name, text, pad, binary]) => {
      const socket = window.sockets[name];
      const frame = pad ? text.replace("@PAD@", "x".repeat(pad)) : text;
      socket.ws.send(binary ? new TextEncoder().encode(frame) : frame);
      return socket.got.length;
    }"""

    def __init__(self, watched: Watched, url: str, name: str) -> None:
        self.watched, self.name = watched, name
        assert watched.page.evaluate(self.OPEN, [name, url]), f"{url} refused the page"

    def state(self) -> dict[str, Any]:
        return dict(self.watched.page.evaluate(f"window.sockets[{json.dumps(self.name)}]"
                                               " && {got: window.sockets"
                                               f"[{json.dumps(self.name)}].got, close: "
                                               f"window.sockets[{json.dumps(self.name)}]"
                                               ".close}"))

    def exchange(self, frame: str, *, pad: int = 0, binary: bool = False) -> dict[str, Any]:
        """Send one frame; the server's answer: ``{"error": ERROR}`` or ``{"closed": code}``.

        Frames other than ERROR (the server's SYNC probes, SERVER news) are passed over.
        """
        seen = self.watched.page.evaluate(self.SEND, [self.name, frame, pad, binary])

        def answer() -> dict[str, Any] | None:
            state = self.state()
            for text in state["got"][seen:]:
                message = json.loads(text)
                if message["type"] in ("ERROR", "WELCOME"):
                    return {message["type"].lower(): message}
            return {"closed": state["close"]} if state["close"] is not None else None

        return dict(wait_for(answer, 10, what=f"an answer to {frame[:60]!r}",
                             page=self.watched.page))

    def closed(self) -> int:
        """Wait until the server closes the socket; its close code."""
        return int(wait_for(lambda: self.state()["close"], 10, what="the socket closed",
                            page=self.watched.page))


class PythonSocket:
    """The same frames from a Python client (what a Python device gets, to compare).

    Parameters
    ----------
    ws : websockets.sync.client.ClientConnection
        An open connection to ``/ws/control``.
    """

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    @contextlib.contextmanager
    def open(cls, url: str) -> Iterator[PythonSocket]:
        """Connect to ``url``; closed on leaving."""
        from websockets.sync.client import connect

        with connect(url, max_size=None, open_timeout=10) as ws:
            yield cls(ws)

    def exchange(self, frame: str, *, pad: int = 0, binary: bool = False) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        text = frame.replace(PAD, "x" * pad) if pad else frame
        self.ws.send(text.encode() if binary else text)
        try:
            while True:
                message = json.loads(self.ws.recv(timeout=10))
                if message["type"] in ("ERROR", "WELCOME"):
                    return {message["type"].lower(): message}
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return {"closed": closed.rcvd.code}

    def closed(self) -> int:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                self.ws.recv(timeout=10)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return int(closed.rcvd.code)


def register(device_id: str, code: str, **over: Any) -> str:
    return json.dumps({"type": "REGISTER", "device_id": device_id, "name": device_id,
                       "protocol": 1, "join_code": code, **over})


#: (case, frame, pad, binary, expected ERROR code or close code) before REGISTER.
BEFORE_REGISTER = [
    ("a STATUS before REGISTER", '{"type": "STATUS", "state": "IDLE"}', 0, False,
     "not_registered"),
    ("malformed JSON", '{"type": "REGISTER", "device_id": ', 0, False, "bad_message"),
    ("a REGISTER with a wrong-typed field", "REGISTER-protocol-as-string", 0, False,
     "bad_message"),
]
#: The same, once registered.
REGISTERED = [
    ("malformed JSON", "this is not json", 0, False, "bad_message"),
    ("an unknown type", '{"type": "HELLO", "command_id": "cmd-7"}', 0, False, "bad_message"),
    ("a wrong-typed field", '{"type": "STATUS", "state": "IDLE", "battery": "full"}', 0,
     False, "bad_message"),
    ("a binary frame", '{"type": "STATUS", "state": "IDLE"}', 0, True, "bad_message"),
    ("a frame over 64 KiB", '{"type": "STATUS", "state": "IDLE", "padding": "' + PAD + '"}',
     70_000, False, "bad_message"),
    ("a second REGISTER", "REGISTER-again", 0, False, "bad_message"),
    ("a server's message", '{"type": "COMMAND", "command_id": "c9", "action": "START"}', 0,
     False, "bad_message"),
]


@pytest.mark.slow
@pytest.mark.serial
def test_a_hostile_page_gets_the_errors_a_python_device_gets_and_harms_nobody(
        live: LiveServer, chromium: Any) -> None:
    """Frames no recorder sends, from a script on the server's own origin.

    A page of the server's origin passes the socket's Origin check, so what guards the
    server is the protocol itself: each bad frame gets the ERROR a Python device gets for
    it (the same code, detail and ref; compared live, frame by frame), the connection
    stays usable, a frame over the hard limit costs only that connection (1009), one that
    never registers is closed (4002), and a recorder page on another phone goes on
    obeying commands throughout.
    """
    bystander, bystander_id = open_paired(chromium, live)
    stack = contextlib.ExitStack()
    hostile = Watched(chromium)
    try:
        python = stack.enter_context(PythonSocket.open(live.server.ws_url))
        code = join_code(live)
        answer = hostile.page.goto(f"{live.url}/ping")
        assert answer is not None and answer.status == 200
        url = f"ws://{live.url.split('//', 1)[1]}/ws/control"
        page_socket = PageSocket(hostile, url, "hostile")

        def frames(device_id: str, frame: str) -> str:
            if frame == "REGISTER-protocol-as-string":
                return register(device_id, code, protocol="1")
            if frame == "REGISTER-again":
                return register(device_id, code)
            return frame

        def both(case: str, frame: str, pad: int, binary: bool) -> dict[str, Any]:
            got = page_socket.exchange(frames("web-hostile", frame), pad=pad, binary=binary)
            expected = python.exchange(frames("py-hostile", frame), pad=pad, binary=binary)
            assert got == expected, (case, got, expected)
            return got

        for case, frame, pad, binary, error_code in BEFORE_REGISTER:
            got = both(case, frame, pad, binary)
            assert got["error"]["code"] == error_code, (case, got)
        assert "web-hostile" not in {c["device_id"] for c in
                                     live.json("GET", "/api/clients")["items"]}
        for name, socket in (("web-hostile", page_socket), ("py-hostile", python)):
            welcome = socket.exchange(register(name, code))
            assert welcome["welcome"].get("paired", True) is True, welcome
            assert welcome["welcome"]["device_key"], welcome  # paired by the join code
        for case, frame, pad, binary, error_code in REGISTERED:
            got = both(case, frame, pad, binary)
            assert got["error"]["code"] == error_code, (case, got)
        # Still open and heard: a good STATUS is applied.
        page_socket.watched.page.evaluate(PageSocket.SEND, [
            "hostile", '{"type": "STATUS", "state": "IDLE", "battery": 0.25}', 0, False])
        wait_for(lambda: (live.client("web-hostile") or {}).get("battery") == 0.25,
                 what="the hostile page's good STATUS applied", page=hostile.page)
        # Past the hard limit the frame is not even read: that connection alone ends.
        big = '{"type": "STATUS", "state": "IDLE", "padding": "' + PAD + '"}'
        got = both("a frame over 1 MiB", big, 2 << 20, False)
        assert got == {"closed": 1009}, got
        wait_for(lambda: not live.client("web-hostile")["connected"],
                 what="the hostile page's device offline", page=hostile.page)
        # A socket that never registers is closed when its time is up.
        silent = PageSocket(hostile, url, "silent")
        with PythonSocket.open(live.server.ws_url) as python_silent:
            assert silent.closed() == python_silent.closed() == 4002

        # Everyone else is served throughout.
        status, _, raw = live.request("GET", "/ping", token=False)
        assert status == 200, raw
        ping = live.json("POST", "/api/commands", {"action": "PING",
                                                    "targets": [bystander_id]})
        assert ping["outcomes"][bystander_id]["status"] == "SUCCESS", ping
        assert live.client(bystander_id)["connected"]
        assert bystander.evaluate("window.vocalinkRecorder.sessions") == 1
        bystander.check()
        hostile.check()
    finally:
        stack.close()
        hostile.close()
        bystander.close()
