"""Helpers shared by the browser recorder's tests beyond ``test_recorder.py``.

The fixtures (``live``: a real `Server` on 127.0.0.1 port 0 in a loop thread; ``chromium``:
Debian's Chromium with a fake microphone playing a 1 kHz tone) and the page helpers stay
in `tests.browser.test_recorder`; they are re-exported here, so a test module imports
everything from one place (pytest finds the fixtures by name in the importing module).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import soundfile

from tests.browser.test_recorder import (
    TONE_HZ,
    LiveServer,
    Watched,
    chromium,
    enable_microphone,
    live,
    open_recorder,
    wait_for,
)

__all__ = ["TONE_HZ", "LiveServer", "Watched", "catalog_row", "chromium", "cut_link",
           "dominant_hz", "download", "enable_microphone", "join_code", "live",
           "open_paired", "open_recorder", "relay", "wait_for"]


def join_code(live: LiveServer) -> str:
    """The server's current join code (what the dashboard shows a phone)."""
    code = live.json("GET", "/api/server")["pairing"]["join_code"]
    assert code
    return str(code)


def open_paired(browser: Any, live: LiveServer, *,
                sent: list[dict[str, Any]] | None = None,
                base: str | None = None) -> tuple[Watched, str]:
    """Open ``/recorder?join=CODE`` in a new context, enable the microphone, wait until paired.

    Parameters
    ----------
    browser : playwright Browser
        From the ``chromium`` fixture.
    live : LiveServer
        The server.
    sent : list, optional
        Filled with every JSON frame the page sends on its control connections (REGISTER,
        STATUS, ACK...), from its first connection on, in order; it grows as the page sends.
    base : str, optional
        Where the page reaches the server (a `Relay`'s URL); ``live.url`` by default.

    Returns
    -------
    (Watched, str)
        The page, and its device id, once the server lists it paired and connected and
        the page says READY.
    """
    watched = Watched(browser)

    def listen(ws: Any) -> None:
        if sent is not None and ws.url.endswith("/ws/control"):
            ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    try:
        watched.page.on("websocket", listen)
        answer = watched.page.goto(f"{base or live.url}/recorder?join={join_code(live)}")
        assert answer is not None and answer.status == 200
        device_id = watched.wait("window.vocalinkRecorder && window.vocalinkRecorder.deviceId")
        enable_microphone(watched)
        wait_for(lambda: (c := live.client(device_id)) is not None
                 and c["pairing"] == "paired" and c["connected"],
                 what=f"{device_id} paired and connected", page=watched.page)
        watched.wait("document.body.dataset.state === 'ready'")
    except BaseException:
        watched.close()
        raise
    assert sent is None or (sent and sent[0]["type"] == "REGISTER"), (sent or [])[:1]
    return watched, str(device_id)


def cut_link(live: LiveServer, device_id: str) -> int:
    """Cut the device's control connection on the server's side, as a dead network would.

    The TCP connection is aborted (no closing handshake): the page sees code 1006, as it
    would when its Wi-Fi goes, and the server takes the device offline.

    Returns
    -------
    int
        How many connections were cut.
    """
    async def cut() -> int:
        cut = 0
        for session in list(live.server.sessions):
            if session.device_id == device_id:
                session.connection.transport.abort()
                cut += 1
        return cut

    return int(live.run(cut()))


def catalog_row(live: LiveServer, recording_id: str, *, page: Any = None,
                timeout: float = 60.0) -> dict[str, Any]:
    """Wait until ``recording_id`` is in the catalog (``GET /api/audio/list``); its row."""
    rows = wait_for(lambda: [r for r in live.json("GET", "/api/audio/list?limit=100")["items"]
                             if r["id"] == recording_id],
                    timeout, what=f"{recording_id} in the catalog", page=page)
    return dict(rows[0])


def download(live: LiveServer, recording_id: str) -> tuple[np.ndarray, int, str]:
    """The stored file: its samples (float64, mono), its rate and its SHA-256."""
    status, _, body = live.request("GET", f"/api/audio/{recording_id}")
    assert status == 200, (recording_id, status, body[:300])
    audio, rate = soundfile.read(io.BytesIO(body), dtype="float64", always_2d=True)
    return audio[:, 0], int(rate), hashlib.sha256(body).hexdigest()


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    """The strongest frequency of ``audio`` (a Hann-windowed FFT), in Hz."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[int(np.argmax(spectrum))])


class Relay:
    """The page's network: a TCP relay on 127.0.0.1 between the page and the server.

    `go_silent` is a Wi-Fi that goes away: nothing crosses any more, and nothing is closed
    (no FIN, no RST: the page hears nothing, which is what its watchdog is for); a new
    connection is refused at once (the phone has no network). `restore` brings it back:
    what was held up crosses then, in order, ends of connections included, as TCP
    retransmits once the link returns.
    """

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.port = 0
        self._listener: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._listener = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._listener is not None
        self._listener.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._listener.wait_closed()

    def go_silent(self) -> None:
        self.live.loop.call_soon_threadsafe(self._switch, False)

    def restore(self) -> None:
        self.live.loop.call_soon_threadsafe(self._switch, True)

    def _switch(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        if not self._flowing.is_set():
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.live.server.port)
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 16):
                await self._flowing.wait()  # held up (the reader's buffer fills, TCP-like)
                writer.write(data)
                await writer.drain()
            await self._flowing.wait()  # the end crosses too, once the link is back
        writer.close()


@contextlib.contextmanager
def relay(live: LiveServer) -> Iterator[Relay]:
    """A `Relay` to ``live``, started on its loop, stopped at the end."""
    link = Relay(live)
    live.run(link.start())
    try:
        yield link
    finally:
        live.run(link.stop())
