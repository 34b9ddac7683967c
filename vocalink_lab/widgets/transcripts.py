"""How a transcript shows in a panel: lines by device as a table, and its download links.

The Takes tab shows a take's transcript under its recordings (`transcript_html`), and
both the Takes and the Recordings tabs link its WebVTT, SRT and CSV files on the server
(`transcript_links`), which the browser downloads with the page's token.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["EXPORTS", "MAX_LINES_SHOWN", "transcript_html", "transcript_links"]

#: The formats offered for download, in the order shown.
EXPORTS = ("vtt", "srt", "csv")
#: Lines drawn in a panel at most (the downloads hold them all).
MAX_LINES_SHOWN = 500


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def transcript_links(lab: Controller, *, recording_id: str | None = None,
                     take_id: str | None = None) -> str:
    """HTML links to download a transcript as WebVTT, SRT and CSV.

    Parameters
    ----------
    lab : Controller
        Makes the browser's URLs (with the token when one is needed).
    recording_id, take_id : str, optional
        Whose transcript (one of the two).

    Returns
    -------
    str
        ``⤓ VTT · ⤓ SRT · ⤓ CSV``, each an ``<a download>`` with class
        ``vocalink-transcript-<format>``.
    """
    base = (f"/api/takes/{take_id}/transcript" if take_id is not None
            else f"/api/audio/{recording_id}/transcript")
    return " · ".join(
        f"<a href='{html.escape(lab.browser_url(f'{base}?format={fmt}'))}' download "
        f"target='_blank' class='vocalink-transcript-{fmt}'>⤓ {fmt.upper()}</a>"
        for fmt in EXPORTS)


def transcript_html(data: Mapping[str, Any]) -> str:
    """A transcript (`Transcript.to_dict` form) as a table: time, device, text, confidence.

    Lines the model was unsure of (confidence under 0.5) are greyed. At most
    `MAX_LINES_SHOWN` lines are drawn; the rest are counted.
    """
    segments = list(data.get("segments") or ())
    if not segments:
        return "<i>Transcribed: no speech was found.</i>"
    rows = []
    for seg in segments[:MAX_LINES_SHOWN]:
        device = seg.get("device_name") or seg.get("device_id") or ""
        confidence = seg.get("confidence")
        faint = confidence is not None and confidence < 0.5
        style = " style='color:#888'" if faint else ""
        rows.append(
            f"<tr{style}><td>{_clock(float(seg.get('start') or 0))}</td>"
            f"<td>{html.escape(str(device))}</td><td>{html.escape(str(seg.get('text') or ''))}"
            f"</td><td>{'' if confidence is None else f'{confidence:.0%}'}</td></tr>")
    more = len(segments) - MAX_LINES_SHOWN
    tail = (f"<tr><td colspan='4'><i>… and {more} more lines: download the transcript"
            "</i></td></tr>") if more > 0 else ""
    heads = ("time", "device", "text", "confidence")
    head = "".join(f"<th style='text-align:left;padding-right:12px'>{h}</th>" for h in heads)
    language = html.escape(str(data.get("language") or "?"))
    caption = (f"<caption style='text-align:left'>Transcript · {len(segments)} lines · "
               f"language {language}{' · enhanced first' if data.get('enhanced') else ''}"
               "</caption>")
    return (f"<table class='vocalink-transcript' style='font-size:13px'>{caption}<tr>{head}"
            f"</tr>{''.join(rows)}{tail}</table>")
