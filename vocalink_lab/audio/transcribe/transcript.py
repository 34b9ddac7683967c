"""What a transcription produces: timed words and segments, and their exports.

A `Transcript` is the text of one recording (``kind="recording"``) or of a whole take
on its common timeline (``kind="take"``, each segment attributed to a device). Its
JSON form (`Transcript.to_dict` / `Transcript.from_dict`) is the stored artifact and
what the API returns; `to_vtt`, `to_srt` and `to_csv` are its exports.

Times are seconds from the start of the audio transcribed: of the recording, or of
the take (``origin_at`` is that instant on the server's clock, when known).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["EXPORT_FORMATS", "Segment", "Transcript", "Word", "export"]

TranscriptKind = Literal["recording", "take"]
#: The export formats and their media types.
EXPORT_FORMATS: Mapping[str, str] = {
    "vtt": "text/vtt; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json; charset=utf-8",
}
CSV_COLUMNS = ("start", "end", "device", "device_id", "recording_id", "text", "confidence")


@dataclass(frozen=True, slots=True)
class Word:
    """One word with its time span (s) and the model's probability for it (0..1)."""

    start: float
    end: float
    word: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"start": _r(self.start), "end": _r(self.end), "word": self.word,
                "probability": _r(self.probability)}


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of speech: its span (s), text, words and confidence.

    ``confidence`` is 0..1: the mean probability of its words (or of its tokens when
    there are no words). In a take's transcript, ``device_id``, ``device_name`` and
    ``recording_id`` say whose track it was heard on (the one that heard it loudest),
    ``channel`` its channel in the aligned take, and ``level_db`` how loud it was there.
    """

    start: float
    end: float
    text: str
    confidence: float
    words: tuple[Word, ...] = ()
    device_id: str | None = None
    device_name: str | None = None
    recording_id: str | None = None
    channel: int | None = None
    level_db: float | None = None

    @property
    def device(self) -> str | None:
        """The device as people name it: its name, else its id."""
        return self.device_name or self.device_id

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (attribution fields only when set)."""
        out: dict[str, Any] = {"start": _r(self.start), "end": _r(self.end), "text": self.text,
                               "confidence": _r(self.confidence),
                               "words": [w.to_dict() for w in self.words]}
        for name in ("device_id", "device_name", "recording_id", "channel"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.level_db is not None:
            out["level_db"] = _r(self.level_db, 2)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Segment:
        """The inverse of `to_dict`."""
        words = tuple(Word(float(w["start"]), float(w["end"]), str(w["word"]),
                           float(w["probability"])) for w in data.get("words") or ())
        level = data.get("level_db")
        channel = data.get("channel")
        return cls(float(data["start"]), float(data["end"]), str(data["text"]),
                   float(data["confidence"]), words,
                   device_id=data.get("device_id"), device_name=data.get("device_name"),
                   recording_id=data.get("recording_id"),
                   channel=None if channel is None else int(channel),
                   level_db=None if level is None else float(level))


@dataclass(frozen=True, slots=True)
class Transcript:
    """The text of a recording or a take, segment by segment.

    Attributes
    ----------
    segments : tuple of Segment
        In time order.
    language : str
        The language spoken (ISO 639-1, as detected or as given).
    language_probability : float
        How sure the detection was (1.0 when the language was given).
    duration_s : float
        Length of the audio transcribed.
    kind : {"recording", "take"}
        What was transcribed.
    subject_id : str or None
        The recording's or the take's id.
    origin_at : float or None
        Server time of the audio's first sample (time 0 of the segments), when known.
    model, engine : str
        Which model and which engine (with versions) produced it.
    enhanced : bool
        Whether the audio was enhanced (auto mode) before transcription.
    tracks : tuple of dict
        For a take: each channel's recording id, device id and name.
    """

    segments: tuple[Segment, ...]
    language: str
    language_probability: float = 1.0
    duration_s: float = 0.0
    kind: TranscriptKind = "recording"
    subject_id: str | None = None
    origin_at: float | None = None
    model: str = ""
    engine: str = ""
    enhanced: bool = False
    tracks: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        """The whole text, segments joined by spaces."""
        return " ".join(s.text for s in self.segments if s.text)

    def shifted(self, offset_s: float) -> Transcript:
        """The same transcript with every time moved by ``offset_s``."""
        def move(seg: Segment) -> Segment:
            words = tuple(replace(w, start=w.start + offset_s, end=w.end + offset_s)
                          for w in seg.words)
            return replace(seg, start=seg.start + offset_s, end=seg.end + offset_s, words=words)

        return replace(self, segments=tuple(move(s) for s in self.segments))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the stored artifact and the API's answer."""
        return {"kind": self.kind, "subject_id": self.subject_id, "language": self.language,
                "language_probability": _r(self.language_probability),
                "duration_s": _r(self.duration_s), "origin_at": self.origin_at,
                "model": self.model, "engine": self.engine, "enhanced": self.enhanced,
                "tracks": [dict(t) for t in self.tracks], "text": self.text,
                "segments": [s.to_dict() for s in self.segments]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transcript:
        """The inverse of `to_dict`."""
        origin = data.get("origin_at")
        return cls(
            segments=tuple(Segment.from_dict(s) for s in data.get("segments") or ()),
            language=str(data.get("language") or ""),
            language_probability=float(data.get("language_probability") or 0.0),
            duration_s=float(data.get("duration_s") or 0.0),
            kind="take" if data.get("kind") == "take" else "recording",
            subject_id=data.get("subject_id"),
            origin_at=None if origin is None else float(origin),
            model=str(data.get("model") or ""), engine=str(data.get("engine") or ""),
            enhanced=bool(data.get("enhanced")),
            tracks=tuple(dict(t) for t in data.get("tracks") or ()))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per segment with `CSV_COLUMNS` (what a DataFrame is built from)."""
        return [{"start": round(s.start, 3), "end": round(s.end, 3), "device": s.device,
                 "device_id": s.device_id, "recording_id": s.recording_id, "text": s.text,
                 "confidence": round(s.confidence, 3)} for s in self.segments]

    def to_vtt(self) -> str:
        """WebVTT: one cue per segment, the device as the cue's voice (``<v name>``)."""
        out = ["WEBVTT", ""]
        for i, seg in enumerate(self.segments, 1):
            out.append(str(i))
            out.append(f"{_stamp(seg.start, '.')} --> {_stamp(max(seg.end, seg.start), '.')}")
            text = _one_line(seg.text).replace("-->", "->")
            speaker = seg.device
            if speaker:
                text = f"<v {_vtt_escape(_one_line(speaker))}>{_vtt_escape(text)}"
            else:
                text = _vtt_escape(text)
            out.extend([text, ""])
        return "\n".join(out)

    def to_srt(self) -> str:
        """SubRip: one numbered cue per segment, prefixed with ``[device]`` in a take."""
        out = []
        for i, seg in enumerate(self.segments, 1):
            text = _one_line(seg.text)
            if seg.device:
                text = f"[{_one_line(seg.device)}] {text}"
            out.extend([str(i),
                        f"{_stamp(seg.start, ',')} --> {_stamp(max(seg.end, seg.start), ',')}",
                        text, ""])
        return "\n".join(out)

    def to_csv(self) -> str:
        """CSV with a header row: `CSV_COLUMNS`, one row per segment."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: ("" if v is None else _csv_safe(v)) for k, v in row.items()})
        return buffer.getvalue()


def export(transcript: Transcript, fmt: str) -> str:
    """The transcript as ``fmt`` (one of `EXPORT_FORMATS`); ValueError for another."""
    if fmt == "vtt":
        return transcript.to_vtt()
    if fmt == "srt":
        return transcript.to_srt()
    if fmt == "csv":
        return transcript.to_csv()
    if fmt == "json":
        import json

        return json.dumps(transcript.to_dict(), ensure_ascii=False)
    raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")


def _r(value: float, digits: int = 3) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _stamp(seconds: float, sep: str) -> str:
    """``HH:MM:SS.mmm`` (VTT) or ``HH:MM:SS,mmm`` (SRT); negative times clamp to 0."""
    ms = max(0, int(round(seconds * 1000)))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def _one_line(text: str) -> str:
    # A blank line ends a cue in both formats: a segment's text must not contain one.
    return " ".join(text.split())


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _csv_safe(value: Any) -> Any:
    # A cell starting with = + - @ runs as a formula in a spreadsheet: text is the model's
    # output of what someone said, so quote it (OWASP's CSV injection advice).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
