"""Pure formatting for the panels: HTML snippets, PNG and WAV bytes, one-line errors.

Nothing here touches a widget or the event loop, so each function is tested on its own
and the byte encoders (`figure_png`, `wav_bytes`, `qr_png`) can run in a worker thread.
"""

from __future__ import annotations

import html
import io
import math
import wave
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import VocalinkError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "STATE_COLORS",
    "STATUS_COLORS",
    "error_message",
    "figure_png",
    "qr_png",
    "render_battery",
    "render_clock",
    "render_discovery",
    "render_level",
    "render_outcome",
    "render_state",
    "wav_bytes",
]

#: Level meter range: -60 dBFS (empty bar) to 0 dBFS (full bar).
METER_FLOOR_DBFS = -60.0
_STATE_COLORS = {
    "IDLE": "#607d8b", "RECORDING": "#c62828", "PAUSED": "#ef6c00",
    "UPLOADING": "#1565c0", "ERROR": "#6a1b9a", "OFFLINE": "#9e9e9e",
}
_STATUS_COLORS = {"SUCCESS": "#2e7d32", "FAILED": "#c62828", "TIMEOUT": "#ef6c00",
                  "PENDING": "#607d8b"}
#: A device state's colour (``OFFLINE`` too), read-only: the Devices grid colours by it.
STATE_COLORS: Mapping[str, str] = MappingProxyType(_STATE_COLORS)
#: A command outcome's colour by status, read-only.
STATUS_COLORS: Mapping[str, str] = MappingProxyType(_STATUS_COLORS)


def error_message(exc: BaseException) -> str:
    """One readable line for an exception (never a traceback).

    Our own errors already say what went wrong; others get their type name in front.
    """
    text = " ".join(str(exc).split())
    if isinstance(exc, VocalinkError) and text:
        return text
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def figure_png(figure: Figure, *, dpi: int = 96) -> bytes:
    """Render a matplotlib Figure (not pyplot) to PNG bytes; safe in a worker thread."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def wav_bytes(audio: Any, sr: int) -> bytes:
    """16-bit PCM WAV bytes of float samples ``(frames,)`` or ``(channels, frames)``.

    Samples are clipped to [-1, 1], not normalised: an A/B comparison stays fair.
    """
    import numpy as np  # not for the panels that play nothing (the page opens sooner)

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(int(x.shape[0]))
        out.setsampwidth(2)
        out.setframerate(int(sr))
        out.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    return buffer.getvalue()


def qr_png(text: str, *, scale: int = 5) -> bytes:
    """A QR code of ``text`` as PNG bytes (segno; no Pillow needed)."""
    import segno

    buffer = io.BytesIO()
    segno.make(text, micro=False).save(buffer, kind="png", scale=scale, border=2)
    return buffer.getvalue()


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def render_state(state: Any, connected: bool = True) -> str:
    """A device state as a coloured label (``OFFLINE`` when disconnected)."""
    label = str(state or "?").upper() if connected else "OFFLINE"
    color = _STATE_COLORS.get(label, "#424242")
    return f'<span style="color:{color};font-weight:bold">{html.escape(label)}</span>'


def render_level(level_dbfs: Any, peak_dbfs: Any = None) -> str:
    """A horizontal level meter: the RMS level as a bar, the peak as a tick, in dBFS."""
    level, peak = _number(level_dbfs), _number(peak_dbfs)
    if level is None and peak is None:
        return '<span style="color:#9e9e9e">—</span>'

    def share(db: float) -> float:
        return max(0.0, min(1.0, (db - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS)) * 100

    loud = max(v for v in (level, peak) if v is not None)
    color = "#c62828" if loud > -1 else "#f9a825" if loud > -12 else "#2e7d32"
    bar = share(level) if level is not None else 0.0
    tick = (f'<div style="position:absolute;left:{share(peak):.1f}%;top:0;width:2px;'
            f'height:100%;background:#212121"></div>' if peak is not None else "")
    text = f"{level:.0f} dBFS" if level is not None else f"peak {peak:.0f}"
    return (f'<div style="display:flex;align-items:center;gap:6px">'
            f'<div style="position:relative;width:90px;height:10px;background:#e0e0e0">'
            f'<div style="width:{bar:.1f}%;height:100%;background:{color}"></div>{tick}</div>'
            f'<span style="font-size:smaller">{text}</span></div>')


def render_battery(battery: Any) -> str:
    """Battery charge (0 to 1) as a percentage; a dash when unknown."""
    value = _number(battery)
    if value is None:
        return "—"
    percent = round(value * 100)
    color = "#c62828" if percent < 15 else "inherit"
    return f'<span style="color:{color}">{percent}%</span>'


def render_clock(clock: Mapping[str, Any] | None) -> str:
    """Clock offset and round trip from a device's ``clock`` estimate, in milliseconds."""
    if not clock:
        return '<span style="color:#9e9e9e">not synced</span>'
    offset, rtt = _number(clock.get("offset_s")), _number(clock.get("rtt_s"))
    parts = []
    if offset is not None:
        parts.append(f"{offset * 1000:+.2f} ms")
    if rtt is not None:
        parts.append(f'<span style="color:#757575">rtt {rtt * 1000:.2f} ms</span>')
    return " ".join(parts) or "—"


def render_outcome(outcome: Mapping[str, Any] | None) -> str:
    """A command's outcome on one device: action, status, and the error if any."""
    if not outcome:
        return '<span style="color:#9e9e9e">—</span>'
    status = str(outcome.get("status") or "?").upper()
    color = _STATUS_COLORS.get(status, "#424242")
    action = outcome.get("action")
    text = f"{html.escape(str(action))} " if action else ""
    text += f'<span style="color:{color};font-weight:bold">{html.escape(status)}</span>'
    if outcome.get("error"):
        text += f': {html.escape(str(outcome["error"]))}'
    return text


def render_discovery(discovery: Mapping[str, Any] | None) -> str:
    """The mDNS advertising state, from ``lab.info["discovery"]``."""
    if not discovery:
        return "mDNS: unknown"
    state = str(discovery.get("state") or "unknown")
    color = {"advertising": "#2e7d32", "starting": "#ef6c00", "failed": "#c62828"}.get(
        state, "#607d8b")
    text = f'mDNS: <span style="color:{color};font-weight:bold">{html.escape(state)}</span>'
    name = discovery.get("instance") if state == "advertising" else None
    if name:
        text += f" as <code>{html.escape(str(name))}</code>"
    if discovery.get("error"):
        text += f' <span style="color:#757575">({html.escape(str(discovery["error"]))})</span>'
    return text
