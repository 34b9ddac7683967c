"""Helpers shared by the browser recorder's tests beyond ``test_recorder.py``.

The fixtures (``live``: a real `Server` on 127.0.0.1 port 0 in a loop thread; ``chromium``:
Debian's Chromium with a fake microphone playing a 1 kHz tone) and the page helpers stay
in `tests.browser.test_recorder`; they are re-exported here, so a test module imports
everything from one place (pytest finds the fixtures by name in the importing module).
"""

from __future__ import annotations

import hashlib
import io
import json
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
           "open_paired", "open_recorder", "wait_for"]


def join_code(live: LiveServer) -> str:
    """The server's current join code (what the dashboard shows a phone)."""
    code = live.json("GET", "/api/server")["pairing"]["join_code"]
    assert code
    return str(code)


def open_paired(browser: Any, live: LiveServer, *,
                sent: list[dict[str, Any]] | None = None) -> tuple[Watched, str]:
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
        answer = watched.page.goto(f"{live.url}/recorder?join={join_code(live)}")
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
