"""A replay of the VocalLink Android app's client side, for tests and benchmarks.

The app is the VocalLink fork of Fossify Voice Recorder (Kotlin). This module does what
its network layer (the app's RestClient, WebSocketManager and SessionManager), its
RecorderService and its MediaRecorder wrapper do, read from their sources: the same
HTTP requests and WebSocket frames, byte for byte where it matters (kotlinx.serialization
omits fields equal to their default; Kotlin ``Float`` values are float32 and printed as
Java prints them), the same state machine with its quirks, and the same float32
arithmetic for delayed actions.

Only the hardware and time are faked: the phone's clock (an offset and a drift against
true time), its microphone (a callable giving samples at true instants, by default a
click track on true time) and MediaRecorder's start latency. The recording is a real
AAC-in-MP4 file (.m4a) encoded with PyAV, named as the app names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import struct
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vocalink_lab.agent.clicktrack import CLICK_HZ

log = logging.getLogger(__name__)

__all__ = [
    "AAC_FRAME",
    "APP_USER_AGENT",
    "CLOCK_SYNC_REPORT",
    "CLOCK_SYNC_TIK",
    "CLOCK_SYNC_TOK",
    "DELAY_CAP_MS",
    "REC_METADATA",
    "REC_STAGE_INFO",
    "SESSION_METADATA",
    "STATE_REPORT",
    "WS_ACTION_TARGET",
    "WS_EVENT_TARGET",
    "AndroidApp",
    "ClickTrack",
    "Field",
    "KotlinJsonError",
    "Take",
    "app_delay_ms",
    "decode_object",
    "encode_frame",
    "encode_m4a",
    "encode_object",
    "java_float_str",
    "kotlin_float",
    "mp4_boxes_info",
    "recording_file_name",
]

#: OkHttp's default User-Agent for the version the app is built with (5.3.2).
APP_USER_AGENT = "okhttp/5.3.2"
#: The longest delay the app's RecorderService waits for a ``triggerTime`` (ms).
DELAY_CAP_MS = 10000
#: Samples per AAC-LC frame.
AAC_FRAME = 1024
#: The app's default MediaRecorder bit rate (its Constants' DEFAULT_BITRATE).
DEFAULT_BITRATE = 96000

# The app's RecorderService status constants (its Constants file).
_RUNNING, _STOPPED, _PAUSED = 0, 1, 2
_STATE_NAMES = {_RUNNING: "running", _STOPPED: "stopped", _PAUSED: "paused"}


# -- Kotlin numbers -----------------------------------------------------------------------

def _i64(value: int) -> int:
    """Wrap to a Kotlin ``Long`` (two's complement, 64 bits), as JVM arithmetic does."""
    return (value + 2**63) % 2**64 - 2**63


def kotlin_float(value: int | float) -> np.float32:
    """A Kotlin ``Long``/``Int``/``Double`` converted to ``Float`` (round to nearest).

    Parameters
    ----------
    value : int or float
        The value; an int is converted exactly first when it fits a double's 53 bits
        (epoch milliseconds do), so only one rounding happens, as on the JVM.

    Returns
    -------
    numpy.float32
    """
    if isinstance(value, int) and abs(value) >= 2**53:
        return _fraction_to_f32(Fraction(value))
    return np.float32(float(value))


def _fraction_to_f32(exact: Fraction) -> np.float32:
    # Round an exact rational to float32 with one rounding (ties to even).
    f = np.float32(float(exact))
    if not np.isfinite(f) or Fraction(float(f)) == exact:
        return f
    toward = np.float32(np.inf) if exact > Fraction(float(f)) else np.float32(-np.inf)
    other = np.nextafter(f, toward)
    if not np.isfinite(other):
        return f
    mid = (Fraction(float(f)) + Fraction(float(other))) / 2
    dist_f, dist_o = abs(exact - Fraction(float(f))), abs(exact - Fraction(float(other)))
    if dist_o < dist_f:
        return np.float32(other)
    if dist_o == dist_f and exact == mid:
        # Ties to even: the one whose last mantissa bit is 0.
        bits_f = int(np.array(f, dtype=np.float32).view(np.uint32))
        return f if bits_f % 2 == 0 else np.float32(other)
    return f


def _parse_f32(text: str) -> np.float32:
    """Decimal text to float32 with ONE rounding, as Java's ``Float.parseFloat``.

    Going through a double rounds twice; that differs only when the double lands exactly
    on a float32 midpoint, so only then is the exact value consulted.
    """
    d = float(text)
    f = np.float32(d)
    if not np.isfinite(f) or float(f) == d:
        return f
    toward = np.float32(np.inf) if d > float(f) else np.float32(-np.inf)
    other = np.nextafter(f, toward)
    if np.isfinite(other) and d == (float(f) + float(other)) / 2:
        return _fraction_to_f32(Fraction(text))
    return f


def java_float_str(value: float | np.float32) -> str:
    """A float32 printed as Java's ``Float.toString`` (what kotlinx writes for a ``Float``).

    Shortest digits that read back as the same float32; plain notation for magnitudes in
    [1e-3, 1e7), else ``d.dddE±n``; always at least one fractional digit (``3.0``).

    Parameters
    ----------
    value : float or numpy.float32
        Rounded to float32 first.

    Returns
    -------
    str
    """
    f = np.float32(value)
    if np.isnan(f):
        return "NaN"
    if np.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0:
        return "-0.0" if np.signbit(f) else "0.0"
    magnitude = abs(float(f))
    if 1e-3 <= magnitude < 1e7:
        return np.format_float_positional(f, unique=True, trim="0")
    text = np.format_float_scientific(f, unique=True, trim="0", exp_digits=1)
    mantissa, exponent = text.split("e")
    return f"{mantissa}E{int(exponent)}"


# -- kotlinx.serialization (the app's Json { ignoreUnknownKeys; classDiscriminator }) -------

class KotlinJsonError(ValueError):
    """What kotlinx.serialization would throw decoding or encoding this JSON."""


_REQUIRED: Any = object()


@dataclass(frozen=True)
class Field:
    """A property of a ``@Serializable`` Kotlin class.

    Attributes
    ----------
    name : str
        The JSON key.
    kind : str or tuple of str
        ``"String"``, ``"Int"``, ``"Long"``, ``"Float"``, ``"List<String>"``, or a tuple of
        an enum's serial names.
    nullable : bool
        The Kotlin type ends in ``?``.
    default : object
        The property's default value; `_REQUIRED` when it has none (then it must be in
        the JSON, and is always written).
    """

    name: str
    kind: str | tuple[str, ...]
    nullable: bool = False
    default: Any = _REQUIRED


#: The app's session metadata (stage request, stage answer, session_activated/update).
SESSION_METADATA = (
    Field("id", "String"), Field("name", "String"), Field("ip", "String"),
    Field("battery", "Int", True, None), Field("device", "String"),
    Field("lastRTT", "Float", True, None), Field("theta", "Float", True, None),
    Field("lastSync", "Long", True, None),
)
CLOCK_SYNC_TIK = (Field("t1", "Long"),)
CLOCK_SYNC_TOK = (Field("t1", "Long"), Field("t2", "Long"), Field("t3", "Long"))
CLOCK_SYNC_REPORT = (Field("theta", "Float"), Field("rtt", "Float"))
WS_ACTION_TARGET = (Field("id", "String"), Field("triggerTime", "Long", True, None))
WS_EVENT_TARGET = (Field("id", "String"),)
STATE_REPORT = (
    Field("id", "String"), Field("state", ("stopped", "running", "paused")),
    Field("duration", "Int", False, 0),
)
REC_STAGE_INFO = (
    Field("sessionId", "String"), Field("recName", "String"), Field("duration", "Int"),
    Field("sizeBytes", "Long"),
)
_REC_STATES = ("ok", "na", "working")
REC_METADATA = (
    Field("rid", "String"), Field("recName", "String"), Field("sessionId", "String"),
    Field("speaker", "String"), Field("device", "String"), Field("duration", "Float"),
    Field("sizeBytes", "Long"), Field("createdAt", "Long"),
    Field("original", _REC_STATES, False, "na"), Field("enhanced", _REC_STATES, False, "na"),
    Field("transcript", _REC_STATES, False, "na"),
    Field("merged", "List<String>", True, None),
)
_WS_KINDS = ("action", "event", "error", "sync")


class _NumberText:
    """A JSON number with a fraction or exponent, kept as its text (kotlinx reads the text)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _reject_constant(name: str) -> Any:
    # kotlinx (not lenient) rejects NaN/Infinity literals; Python's json accepts them.
    raise KotlinJsonError(f"unexpected JSON token {name}")


def _parse_tree(text: str) -> Any:
    try:
        return json.loads(text, parse_float=_NumberText, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise KotlinJsonError(f"malformed JSON: {exc}") from exc


_LONG_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)[fFdD]?")


def _decode_long(value: Any, key: str, lo: int, hi: int) -> int:
    # kotlinx's tree decoder parses a primitive's CONTENT: 5 and "5" both read as 5;
    # 5.0, true or null do not.
    if isinstance(value, bool) or value is None:
        raise KotlinJsonError(f"'{key}': expected an integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _LONG_TEXT.fullmatch(value):
        number = int(value)
    else:
        raise KotlinJsonError(f"'{key}': expected an integer, got {value!r}")
    if not lo <= number <= hi:
        raise KotlinJsonError(f"'{key}': {number} out of range")
    return number


def _decode_float(value: Any, key: str) -> np.float32:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise KotlinJsonError(f"'{key}': expected a number, got {value!r}")
    text = value.text if isinstance(value, _NumberText) else str(value)
    if isinstance(value, str):
        # A quoted number: Java's parseFloat syntax (Python's float() is looser: "1_0").
        match = _FLOAT_TEXT.fullmatch(value.strip())
        if match is None:
            raise KotlinJsonError(f"'{key}': {value!r} is not a number")
        text = match.group(1)
    try:
        f = _parse_f32(text)
    except ValueError as exc:
        raise KotlinJsonError(f"'{key}': {text!r} is not a number") from exc
    if not np.isfinite(f):
        # allowSpecialFloatingPointValues is false by default.
        raise KotlinJsonError(f"'{key}': {text} is not a finite Float")
    return f


def _decode_value(f: Field, value: Any) -> Any:
    if value is None:
        if f.nullable:
            return None
        raise KotlinJsonError(f"'{f.name}': null for a non-null property")
    kind = f.kind
    if isinstance(kind, tuple):
        content = value.text if isinstance(value, _NumberText) else value
        if not isinstance(content, (str, int)) or isinstance(content, bool) \
                or str(content) not in kind:
            raise KotlinJsonError(f"'{f.name}': {value!r} is not one of {kind}")
        return str(content)
    if kind == "String":
        # Not lenient: a string must be a quoted JSON string.
        if not isinstance(value, str):
            raise KotlinJsonError(f"'{f.name}': string literal expected, got {value!r}")
        return value
    if kind == "Int":
        return _decode_long(value, f.name, -(2**31), 2**31 - 1)
    if kind == "Long":
        return _decode_long(value, f.name, -(2**63), 2**63 - 1)
    if kind == "Float":
        return _decode_float(value, f.name)
    if kind == "List<String>":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise KotlinJsonError(f"'{f.name}': expected a list of strings")
        return list(value)
    raise AssertionError(kind)


def decode_object(schema: tuple[Field, ...], element: Any) -> dict[str, Any]:
    """Decode a JSON element as kotlinx decodes it into the class ``schema`` describes.

    Unknown keys are ignored (``ignoreUnknownKeys = true``); a missing property takes its
    default, or fails if it has none; null fails for a non-null property; ``Float``
    values are float32.

    Parameters
    ----------
    schema : tuple of Field
        One of this module's schemas (`SESSION_METADATA`...).
    element : object
        Parsed JSON (a dict), or JSON text.

    Returns
    -------
    dict
        Every property, by name.

    Raises
    ------
    KotlinJsonError
        What kotlinx would throw.
    """
    if isinstance(element, str):
        element = _parse_tree(element)
    if not isinstance(element, dict):
        raise KotlinJsonError(f"expected a JSON object, got {type(element).__name__}")
    out: dict[str, Any] = {}
    for f in schema:
        if f.name in element:
            out[f.name] = _decode_value(f, element[f.name])
        elif f.default is _REQUIRED:
            raise KotlinJsonError(f"field '{f.name}' is required but it was missing")
        else:
            out[f.name] = f.default
    return out


def _encode_value(kind: str | tuple[str, ...], value: Any) -> str:
    if kind == "Float":
        f = np.float32(value)
        if not np.isfinite(f):
            raise KotlinJsonError(f"{value} is not a finite Float")
        return java_float_str(f)
    if kind in ("Int", "Long"):
        return str(int(value))
    # Strings, enum serial names and lists of strings: JSON strings, non-ASCII unescaped.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_object(schema: tuple[Field, ...], values: dict[str, Any]) -> str:
    """JSON text of an object as the app's kotlinx ``Json`` writes it.

    Properties in declaration order, no spaces, and a property equal to its default is
    left out (``encodeDefaults`` is false by default): a null optional, a zero
    ``StateReport.duration``...

    Parameters
    ----------
    schema : tuple of Field
        The class.
    values : dict
        Property values; a missing one is its default.

    Returns
    -------
    str

    Raises
    ------
    KotlinJsonError
        A required property is missing, or a ``Float`` is not finite.
    """
    parts = []
    for f in schema:
        value = values.get(f.name, f.default)
        if value is _REQUIRED:
            raise KotlinJsonError(f"'{f.name}' is required")
        if f.default is not _REQUIRED and _equals_default(value, f.default):
            continue
        key = json.dumps(f.name)
        parts.append(f"{key}:null" if value is None else f"{key}:{_encode_value(f.kind, value)}")
    return "{" + ",".join(parts) + "}"


def _equals_default(value: Any, default: Any) -> bool:
    if value is None or default is None:
        return value is default
    return bool(value == default)


def encode_frame(kind: str, msg_type: str, body: str | None) -> str:
    """The app's ``WSPayload`` frame text.

    Parameters
    ----------
    kind : str
        ``"action"``, ``"event"``, ``"error"`` or ``"sync"``.
    msg_type : str
        The message type (the enum constant's name, lowercased, as the app sends it).
    body : str or None
        The body's JSON text; None leaves ``body`` out (its default).

    Returns
    -------
    str
    """
    head = f'{{"kind":{json.dumps(kind)},"msgType":{json.dumps(msg_type, ensure_ascii=False)}'
    return head + ("}" if body is None else f',"body":{body}}}')


# -- the app's delayed actions -----------------------------------------------------------

def app_delay_ms(trigger_time_ms: int | None, local_now_ms: int,
                 theta: float | np.float32 | None) -> int | None:
    """How long the app's RecorderService waits before a START/STOP/PAUSE/RESUME.

    The service computes the server's "now" as ``localNow + theta`` with ``localNow`` a
    ``Long`` and ``theta`` a ``Float``: Kotlin makes that a ``Float`` (float32), and
    ``triggerTime - serverNow`` a float32 too, truncated toward zero by ``toLong()``. At
    today's epoch milliseconds (~1.8e12) float32 steps are 131072 ms, so the delay is
    nearly always 0 and now and then ±131072 ms; a positive one is capped at 10000 ms.

    Parameters
    ----------
    trigger_time_ms : int or None
        The action's ``triggerTime``; None (or -1, the app's "none") for no trigger.
    local_now_ms : int
        ``System.currentTimeMillis()`` on the phone when the command is handled.
    theta : float or None
        The session's ``theta`` (ms, float32); None counts as 0.

    Returns
    -------
    int or None
        Milliseconds to wait, in (0, 10000]; None to act at once.
    """
    if trigger_time_ms is None or trigger_time_ms == -1:
        return None
    theta32 = np.float32(0.0 if theta is None else theta)
    with np.errstate(over="ignore", invalid="ignore"):
        server_now = np.float32(kotlin_float(local_now_ms) + theta32)
        diff = np.float32(kotlin_float(trigger_time_ms) - server_now)
    delay = _float_to_long(diff)
    if delay <= 0:
        return None
    return min(delay, DELAY_CAP_MS)


def _float_to_long(x: np.float32) -> int:
    # Kotlin's Float.toLong(): NaN is 0, out of range saturates, else toward zero.
    if np.isnan(x):
        return 0
    if np.isinf(x):
        return 2**63 - 1 if x > 0 else -(2**63)
    return max(-(2**63), min(2**63 - 1, math.trunc(float(x))))


# -- the microphone and the file ---------------------------------------------------------

class ClickTrack:
    """The default microphone: a 2 kHz click every ``period_s`` of TRUE time.

    The same signal as the agent's ``ClickSource`` (a burst of `CLICK_HZ` from phase 0 at
    every true multiple of the period), so ``click_start`` reads a file's true start.

    Parameters
    ----------
    period_s : float, default 0.25
    click_s : float, default 0.002
    amplitude : float, default 0.8
    """

    def __init__(self, period_s: float = 0.25, click_s: float = 0.002,
                 amplitude: float = 0.8) -> None:
        self.period_s = period_s
        self.click_s = click_s
        self.amplitude = amplitude

    def __call__(self, true_times: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        """Samples at the given true instants (seconds since the epoch)."""
        since = np.mod(true_times, self.period_s)
        y = np.where(since < self.click_s,
                     self.amplitude * np.sin(2 * math.pi * CLICK_HZ * since), 0.0)
        return y.astype(np.float32)


def recording_file_name(local_ms: int, extension: str = "m4a") -> str:
    """The name the app gives a recording: its clock's local date-time, then the extension.

    The app's shared helper formats ``System.currentTimeMillis()`` as
    ``yyyy_MM_dd_HH_mm_ss`` in the phone's time zone.

    Parameters
    ----------
    local_ms : int
        The phone's clock (epoch ms) when the recording starts.
    extension : str
        ``m4a`` by default (the app's default format).

    Returns
    -------
    str
    """
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.localtime(local_ms // 1000))
    return f"{stamp}.{extension}"


def _iter_boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    # MP4 boxes: (type, payload start, payload end).
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def mp4_boxes_info(data: bytes) -> dict[str, Any]:
    """What an MP4 file declares about timing: movie duration and the audio edit list.

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    dict
        ``movie_duration_ms`` (what Android's MediaMetadataRetriever reports as the
        duration), ``edit_list`` (``(segment_duration, media_time)`` pairs of the first
        track, in movie and media timescales) and ``media_timescale``.
    """
    info: dict[str, Any] = {"movie_duration_ms": None, "edit_list": [], "media_timescale": None}
    for kind, a, b in _iter_boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for k2, a2, b2 in _iter_boxes(data, a, b):
            if k2 == b"mvhd":
                version = data[a2]
                if version == 1:
                    timescale, duration = struct.unpack(">IQ", data[a2 + 20:a2 + 32])
                else:
                    timescale, duration = struct.unpack(">II", data[a2 + 12:a2 + 20])
                info["movie_duration_ms"] = duration * 1000 // timescale
            elif k2 == b"trak" and not info["edit_list"]:
                for k3, a3, b3 in _iter_boxes(data, a2, b2):
                    if k3 == b"edts":
                        info["edit_list"] = _read_elst(data, a3, b3)
                    elif k3 == b"mdia":
                        for k4, a4, _b4 in _iter_boxes(data, a3, b3):
                            if k4 == b"mdhd":
                                version = data[a4]
                                off = a4 + (20 if version == 1 else 12)
                                info["media_timescale"] = struct.unpack(
                                    ">I", data[off:off + 4])[0]
    return info


def _read_elst(data: bytes, a: int, b: int) -> list[tuple[int, int]]:
    for kind, a2, _b2 in _iter_boxes(data, a, b):
        if kind != b"elst":
            continue
        version = data[a2]
        count = struct.unpack(">I", data[a2 + 4:a2 + 8])[0]
        entries = []
        pos = a2 + 8
        for _ in range(count):
            if version == 1:
                dur, media_time = struct.unpack(">Qq", data[pos:pos + 16])
                pos += 20
            else:
                dur, media_time = struct.unpack(">Ii", data[pos:pos + 8])
                pos += 12
            entries.append((int(dur), int(media_time)))
        return entries
    return []


def encode_m4a(path: Path, chunks: Iterator[npt.NDArray[np.float32]], sample_rate: int,
               bit_rate: int = DEFAULT_BITRATE, *, declare_priming: bool = True
               ) -> dict[str, Any]:
    """Encode mono float samples to AAC-LC in MP4 (.m4a) with PyAV (FFmpeg's encoder).

    Blocking: run it in a worker thread from the event loop.

    Parameters
    ----------
    path : Path
        The file to write.
    chunks : iterator of numpy.ndarray
        The samples, in order, in chunks of any length.
    sample_rate : int
    bit_rate : int
    declare_priming : bool
        Write the edit list that declares the encoder's priming (FFmpeg does by default);
        without it the decoded audio starts with the priming, as files without one (what
        Android's MediaRecorder is not known to declare) do.

    Returns
    -------
    dict
        ``samples`` (fed in), ``priming`` (samples the encoder put before the first
        one), ``priming_declared``, ``packets``, and `mp4_boxes_info` of the file.
    """
    import av

    out = av.open(str(path), "w", format="mp4",
                  options={} if declare_priming else {"use_editlist": "0"})
    try:
        stream = out.add_stream("aac", rate=sample_rate, layout="mono")
        stream.bit_rate = bit_rate
        pending = np.zeros(0, dtype=np.float32)
        pts = 0
        packets = 0
        first_pts: int | None = None

        def feed(block: npt.NDArray[np.float32] | None) -> None:
            nonlocal pts, packets, first_pts
            frame = None
            if block is not None:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block)[None, :],
                                                   format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = pts
                pts += block.shape[0]
            for packet in stream.encode(frame):
                if first_pts is None and packet.pts is not None:
                    first_pts = int(packet.pts)
                packets += 1
                out.mux(packet)

        for chunk in chunks:
            pending = np.concatenate([pending, np.asarray(chunk, dtype=np.float32)])
            whole = pending.shape[0] - pending.shape[0] % AAC_FRAME
            for i in range(0, whole, AAC_FRAME):
                feed(pending[i:i + AAC_FRAME])
            pending = pending[whole:]
        if pending.shape[0]:
            feed(pending)
        feed(None)
    finally:
        out.close()
    info = mp4_boxes_info(path.read_bytes())
    # Declared, the first packet starts at minus the priming; undeclared it starts at 0,
    # and the priming is FFmpeg's AAC encoder delay, one frame (measured: a click fed at
    # sample 10000 decodes at 11024).
    priming = -first_pts if declare_priming and first_pts is not None else AAC_FRAME
    return {"samples": pts, "priming": priming, "priming_declared": declare_priming,
            "packets": packets, **info}


# -- a recording ---------------------------------------------------------------------------

@dataclass
class Take:
    """One recording the replayed app made.

    Attributes
    ----------
    name : str
        The file name (the app's date-time name), also ``recName`` in ``rec_stage``.
    path : Path
        Where the file is (gone if cancelled).
    local_start_ms : int
        The phone's clock when RecorderService started the recording.
    true_call : float
        True time when MediaRecorder.start() ran.
    segments : list of [float, float or None]
        True instants when capture ran: start, end (None while running). Pauses split
        them; the file holds them back to back.
    true_rate : float
        Samples per second of true time (the nominal rate times the phone's clock rate).
    samples : int
        Samples captured (set at stop).
    true_first_sample : float or None
        True time of the file's first sample (None if nothing was captured).
    cancelled : bool
    file_info : dict
        `encode_m4a`'s answer (priming, edit list, declared duration), once written.
    size_bytes, duration_s : int
        What ``rec_stage`` reported.
    rid : str or None
        The server's id, from ``rec_staged``.
    upload_status : int or None
        HTTP status of the upload.
    """

    name: str
    path: Path
    local_start_ms: int
    true_call: float
    segments: list[list[float | None]]
    true_rate: float
    samples: int = 0
    true_first_sample: float | None = None
    cancelled: bool = False
    file_info: dict[str, Any] = field(default_factory=dict)
    size_bytes: int | None = None
    duration_s: int | None = None
    rid: str | None = None
    upload_status: int | None = None
    written: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def sample_times(self, chunk: int = 48000) -> Iterator[npt.NDArray[np.float64]]:
        """True instants of the file's samples, chunk by chunk (pauses cut out)."""
        for start, end in self.segments:
            assert start is not None and end is not None
            n = max(0, math.floor((end - start) * self.true_rate))
            for i in range(0, n, chunk):
                k = np.arange(i, min(n, i + chunk), dtype=np.float64)
                yield start + k / self.true_rate


# -- the app -------------------------------------------------------------------------------

class AndroidApp:
    """The VocalLink Android app, replayed: REST staging, the control WebSocket, the
    recorder service and MediaRecorder, with a fake clock and microphone.

    Parameters
    ----------
    base_url : str
        The server, ``http://host:port`` (the app builds every URL by appending to it).
    name, device, ip, battery
        What the app stages its session with.
    offset_s, drift_ppm : float
        The phone's clock against true time: ``now = true + offset + drift * (true - t0)``.
    start_latency_s : float
        MediaRecorder's capture starts this long after ``start()`` runs.
    sample_rate : int
        The recording's nominal rate (the app's default is 48000).
    sync_period_s, sync_jitter_s : float
        The clock-sync ``tik`` period and its random extra (the app: 5 s + [0, 1) s,
        whole milliseconds).
    source : callable, optional
        ``source(true_times) -> samples``: the microphone; a `ClickTrack` by default.
    true_time : callable
        True time in seconds since the epoch (the server's clock in tests).
    seed : int
        Seeds the sync jitter.
    recordings_dir : Path, optional
        Where files are written; a fresh temporary directory by default.
    bit_rate : int
        The AAC bit rate (the app's default 96000).
    declare_priming : bool
        Whether the m4a declares the AAC priming (an edit list); see `encode_m4a`.

    Attributes
    ----------
    sent, received : list of dict
        Frames written to / read from the WebSocket, parsed.
    attempted : list of dict
        Every frame the app tried to send, including while not connected (dropped then).
    parse_errors : list of str
        Frames the app failed to decode or handle (it logs and ignores them).
    errors : list of str
        ``error`` frames and connection failures (the app shows them as toasts).
    takes : list of Take
        Every recording, in order (also ``recordings``).
    uploads : list of (str, int)
        ``(rid, HTTP status)`` of each upload; ``upload_errors`` for those that failed
        before any answer.
    """

    def __init__(self, base_url: str, *, name: str = "User 7a1f", device: str = "Google Pixel 7",
                 ip: str = "127.0.0.23", battery: int = 80, offset_s: float = 0.0,
                 drift_ppm: float = 0.0, start_latency_s: float = 0.0, sample_rate: int = 48000,
                 sync_period_s: float = 5.0, sync_jitter_s: float = 1.0,
                 source: Callable[[npt.NDArray[np.float64]], npt.ArrayLike] | None = None,
                 true_time: Callable[[], float] = time.time, seed: int = 0,
                 recordings_dir: Path | None = None, bit_rate: int = DEFAULT_BITRATE,
                 declare_priming: bool = True) -> None:
        self.declare_priming = declare_priming
        self.base_url = base_url
        self.name, self.device, self.ip, self.battery = name, device, ip, battery
        self.offset_s, self.drift_ppm = offset_s, drift_ppm
        self.start_latency_s = start_latency_s
        self.sample_rate, self.bit_rate = sample_rate, bit_rate
        self.sync_period_s, self.sync_jitter_s = sync_period_s, sync_jitter_s
        self.source = source if source is not None else ClickTrack()
        self.true_time = true_time
        self.t_ref = true_time()
        self.rng = np.random.default_rng(seed)
        self.recordings_dir = Path(recordings_dir) if recordings_dir is not None \
            else Path(tempfile.mkdtemp(prefix="vocalink-android-"))
        self.recordings_dir.mkdir(parents=True, exist_ok=True)

        self.sent: list[dict[str, Any]] = []
        self.sent_raw: list[str] = []
        self.sent_at: list[float] = []
        self.attempted: list[dict[str, Any]] = []
        self.received: list[Any] = []
        self.received_raw: list[str] = []
        self.received_at: list[float] = []
        self.parse_errors: list[str] = []
        self.errors: list[str] = []
        self.takes: list[Take] = []
        self.uploads: list[tuple[str, int]] = []
        self.upload_errors: list[tuple[str, str]] = []
        self.stage_answer: dict[str, Any] | None = None

        # SessionManager: the metadata it keeps, its mirror of the recorder's state.
        self.session: dict[str, Any] | None = None
        self.activated = False
        self._internal_state = _STOPPED
        self._internal_duration = 0
        self._last_recorded_duration = 0
        self._pending_uploads: dict[str, Take] = {}
        # WebSocketManager: the session id it was connected with (never updated later).
        self._ws_session_id = ""
        self._ws: Any = None
        self._ws_open = False
        self._sync_in_progress = False
        # RecorderService.
        self._svc_status = _STOPPED
        self._svc_duration = 0
        self._pending_action: asyncio.TimerHandle | None = None
        self._duration_task: asyncio.Task[None] | None = None
        self._take: Take | None = None  # MediaRecorder's current recording

        self._outbox: asyncio.Queue[str] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None

    # -- clock -------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The phone's ``System.currentTimeMillis()``."""
        t = self.true_time()
        local = t + self.offset_s + self.drift_ppm * 1e-6 * (t - self.t_ref)
        return math.floor(local * 1000)

    @property
    def true_sample_rate(self) -> float:
        """Samples per second of true time: the audio clock drifts with the phone's."""
        return self.sample_rate * (1 + self.drift_ppm * 1e-6)

    @property
    def state(self) -> str:
        """SessionManager's view: ``"stopped"``, ``"running"`` or ``"paused"``."""
        return _STATE_NAMES[self._internal_state]

    @property
    def duration(self) -> int:
        """SessionManager's duration counter (whole seconds, as last broadcast)."""
        return self._internal_duration

    @property
    def recordings(self) -> list[Take]:
        """The takes (an alias)."""
        return self.takes

    @property
    def theta(self) -> np.float32:
        """The theta the app uses for delayed actions (``sessionMetadata?.theta ?: 0f``)."""
        if self.session is None or self.session.get("theta") is None:
            return np.float32(0.0)
        return np.float32(self.session["theta"])

    @property
    def last_file_priming(self) -> dict[str, Any] | None:
        """The last written file's priming: encoder samples and what the MP4 declares."""
        for take in reversed(self.takes):
            if take.file_info:
                elst = take.file_info.get("edit_list") or []
                return {"encoder_priming": take.file_info.get("priming"),
                        "edit_list": elst,
                        "declared_media_time": elst[0][1] if elst else None}
        return None

    # -- REST ----------------------------------------------------------------------------

    async def _http(self, method: str, url: str, body: bytes,
                    headers: dict[str, str]) -> tuple[int, str, bytes]:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        client = AsyncHTTPClient(force_instance=True, max_body_size=2**31)
        try:
            # OkHttp: connect 10 s, read/write 60 s each. No Authorization header at all.
            response = await client.fetch(
                HTTPRequest(url, method=method, body=body,
                            headers={"User-Agent": APP_USER_AGENT,
                                     "Accept-Encoding": "gzip", **headers},
                            connect_timeout=10, request_timeout=130, decompress_response=True),
                raise_error=False)
        finally:
            client.close()
        if response.code == 599 and response.error is not None:
            raise ConnectionError(str(response.error))
        return response.code, response.reason or "", response.body or b""

    async def stage(self) -> dict[str, Any]:
        """``POST {base}/sessions`` with the app's SessionMetadata; keep the answer.

        Returns
        -------
        dict
            The decoded SessionMetadata (also ``self.session``).

        Raises
        ------
        RuntimeError
            A non-2xx answer or an empty body (the app's ``Result.failure``).
        KotlinJsonError
            The answer does not decode as SessionMetadata.
        """
        body = encode_object(SESSION_METADATA, {
            "id": "", "name": self.name, "ip": self.ip, "battery": self.battery,
            "device": self.device})
        # OkHttp adds the charset to a String body's media type.
        code, reason, raw = await self._http(
            "POST", f"{self.base_url}/sessions", body.encode(),
            {"Content-Type": "application/json; charset=utf-8"})
        if not 200 <= code < 300:
            raise RuntimeError(f"HTTP {code}: {reason}")
        if not raw:
            raise RuntimeError("Empty response body")
        meta = decode_object(SESSION_METADATA, raw.decode("utf-8"))
        self.stage_answer = meta
        self.session = meta
        return meta

    async def _upload(self, take: Take, rid: str) -> None:
        # The app's RestClient.uploadRecording: multipart/form-data, one part "file".
        data = await asyncio.to_thread(take.path.read_bytes)
        boundary = str(uuid.uuid4())
        head = (f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="file"; filename="upload_{rid}"\r\n'
                f"Content-Type: audio/*\r\nContent-Length: {len(data)}\r\n\r\n").encode()
        body = head + data + f"\r\n--{boundary}--\r\n".encode()
        try:
            code, _, _ = await self._http(
                "POST", f"{self.base_url}/recordings/{rid}", body,
                {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        except Exception as exc:  # the app logs "Upload failed" and moves on
            self.upload_errors.append((rid, repr(exc)))
            return
        take.upload_status = code
        self.uploads.append((rid, code))

    # -- WebSocket -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open ``{base with http→ws}/ws/control``; on open send ``session_activate``.

        Like the app, this needs a staged session (its id is what it activates).
        """
        if self.session is None:
            raise RuntimeError("stage() first")
        from websockets.asyncio.client import connect

        self._ws_session_id = self.session["id"]
        # The app replaces EVERY "http" in the base URL (https→wss follows).
        url = self.base_url.replace("http", "ws") + "/ws/control"
        # OkHttp sends no pings by default and keeps reading whatever size comes.
        self._ws = await connect(url, user_agent_header=APP_USER_AGENT, ping_interval=None,
                                 max_size=None, open_timeout=10)
        self._ws_open = True
        self._outbox = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop())
        # onOpen: session_activate {id}.
        self._send_event_target("session_activate", self._ws_session_id)
        # SessionManager.initialize asks the service for its info right after connecting.
        self._request_recorder_info()
        self._reader = asyncio.create_task(self._read_loop())

    async def _write_loop(self) -> None:
        assert self._outbox is not None
        while True:
            text = await self._outbox.get()
            try:
                await self._ws.send(text)
            except Exception as exc:  # OkHttp's send() just returns false once closed
                log.debug("send dropped: %s", exc)
                continue
            self.sent_raw.append(text)
            self.sent.append(json.loads(text))
            self.sent_at.append(self.true_time())

    async def _read_loop(self) -> None:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        try:
            async for message in self._ws:
                if isinstance(message, str):  # onMessage(bytes) is not overridden
                    self.handle_text(message)
        except ConnectionClosedOK:
            pass
        except ConnectionClosed as exc:
            self.errors.append(f"WebSocket failure: {exc}")
        finally:
            # onClosed stops the sync loop; with OkHttp, sends after that are no-ops.
            self._ws_open = False
            self._sync_in_progress = False

    def _send(self, kind: str, msg_type: str, body: str) -> None:
        text = encode_frame(kind, msg_type, body)
        self.attempted.append(json.loads(text))
        if self._ws_open and self._outbox is not None:
            self._outbox.put_nowait(text)

    def _send_event_target(self, event: str, session_id: str) -> None:
        self._send("event", event, encode_object(WS_EVENT_TARGET, {"id": session_id}))

    def handle_text(self, text: str) -> None:
        """Handle one received text frame as the app's WebSocketManager.onMessage does.

        Public so that tests can feed frames without a server. A frame that fails to
        decode (or whose handler throws) is logged by the app and ignored; here it is
        also added to ``parse_errors``.
        """
        self.received_raw.append(text)
        self.received_at.append(self.true_time())
        try:
            self.received.append(json.loads(text))
        except ValueError:
            self.received.append(text)
        try:
            self._on_message(text)
        except Exception as exc:  # the app catches every Exception here
            self.parse_errors.append(f"{exc} in {text[:200]}")
            log.info("Parse error: %s", exc)

    def _on_message(self, text: str) -> None:
        payload = _parse_tree(text)
        if not isinstance(payload, dict):
            raise KotlinJsonError("WSPayload: expected a JSON object")
        # The streaming decoder wants quoted strings for the enum and the String.
        kind, msg_type = payload.get("kind", _REQUIRED), payload.get("msgType", _REQUIRED)
        if kind is _REQUIRED or msg_type is _REQUIRED:
            raise KotlinJsonError("WSPayload: 'kind' and 'msgType' are required")
        if not isinstance(kind, str) or kind not in _WS_KINDS:
            raise KotlinJsonError(f"WSPayload: unknown kind {kind!r}")
        if not isinstance(msg_type, str):
            raise KotlinJsonError("WSPayload: msgType must be a string")
        body = payload.get("body")
        # The app maps msgType to an enum constant by NAME, uppercased: unknown is ignored.
        name = msg_type.upper()
        if kind == "event":
            if name in _EVENTS:
                self._handle_event(name, body)
        elif kind == "sync":
            if name in ("TIK", "TOK", "SYNC_REPORT"):
                self._handle_sync(name, body)
        elif kind == "action":
            if name in _ACTIONS:
                self._handle_action(name, body)
        else:
            self.errors.append(name if name in _ERRORS else msg_type)

    def _handle_event(self, event: str, body: Any) -> None:
        if body is None:
            return
        if event == "SESSION_ACTIVATED":
            self.session = decode_object(SESSION_METADATA, body)
            self.activated = True
            if not self._sync_in_progress:
                self._sync_in_progress = True
                self._sync_task = self._spawn(self._sync_loop())
        elif event == "SESSION_UPDATE":
            self.session = decode_object(SESSION_METADATA, body)
        elif event == "DROPPED":
            # Decoded, then handed to a callback SessionManager never sets.
            decode_object(WS_EVENT_TARGET, body)
        elif event == "REC_STAGED":
            meta = decode_object(REC_METADATA, body)
            take = self._pending_uploads.pop(meta["recName"], None)
            if take is not None:
                take.rid = meta["rid"]
                self._spawn(self._upload(take, meta["rid"]))

    def _handle_action(self, action: str, body: Any) -> None:
        target = None
        if body is not None:
            # A body that does not decode counts as no target: the action is obeyed.
            with contextlib.suppress(KotlinJsonError):
                target = decode_object(WS_ACTION_TARGET, body)
        if target is not None and target["id"] not in ("all", self._ws_session_id):
            return
        trigger = target["triggerTime"] if target is not None else None
        if action == "START":
            self._service_start_delayed(trigger)
        elif action == "STOP":
            self._service_stop_delayed(trigger)
        elif action == "PAUSE":
            self._service_toggle_pause_delayed(trigger, _PAUSED)
        elif action == "RESUME":
            self._service_toggle_pause_delayed(trigger, _RUNNING)
        elif action == "CANCEL":
            self._service_cancel()
        elif action == "GET_STATE":
            # sendState runs at once (Main.immediate); the service's answer to
            # GET_RECORDER_INFO arrives after it.
            self._send_state()
            self._request_recorder_info()

    def _handle_sync(self, kind: str, body: Any) -> None:
        if kind != "TOK":
            return
        tok = decode_object(CLOCK_SYNC_TOK, body)
        t4 = self.now_ms()
        t1, t2, t3 = tok["t1"], tok["t2"], tok["t3"]
        rtt = _i64(_i64(t4 - t1) - _i64(t3 - t2))
        theta = np.float32(kotlin_float(_i64(_i64(t2 - t1) + _i64(t3 - t4))) / np.float32(2))
        self._send("sync", "sync_report",
                   encode_object(CLOCK_SYNC_REPORT, {"theta": theta, "rtt": kotlin_float(rtt)}))

    async def _sync_loop(self) -> None:
        jitter_ms = round(self.sync_jitter_s * 1000)
        while self._sync_in_progress and self._ws_open:
            self._send("sync", "tik", encode_object(CLOCK_SYNC_TIK, {"t1": self.now_ms()}))
            extra = int(self.rng.integers(0, jitter_ms)) if jitter_ms > 0 else 0
            await asyncio.sleep(self.sync_period_s + extra / 1000)

    def rename(self, name: str) -> None:
        """The user renames the phone: the app sends ``session_update`` with its metadata."""
        self.name = name
        if self.session is None:
            return
        self.session = {**self.session, "name": name}
        self._send("event", "session_update", encode_object(SESSION_METADATA, self.session))

    # -- SessionManager's EventBus handlers --------------------------------------------

    def _on_recording_status(self, status: int) -> None:
        new = status if status in (_RUNNING, _PAUSED) else _STOPPED
        if new == self._internal_state:
            return
        old, self._internal_state = self._internal_state, new
        if old == _PAUSED and new == _RUNNING:
            self._report("resumed")
        else:
            self._report({_RUNNING: "started", _PAUSED: "paused"}.get(new, "stopped"))

    def _on_recording_completed(self) -> None:
        self._last_recorded_duration = self._internal_duration
        self._internal_state = _STOPPED
        self._internal_duration = 0
        self._report("stopped")

    def _report(self, event: str) -> None:
        # The state events carry the session metadata's id (session_activated's).
        if self.session is not None:
            self._send_event_target(event, self.session["id"])

    def _send_state(self) -> None:
        if self.session is None:
            return
        self._send("event", "session_state_report", encode_object(STATE_REPORT, {
            "id": self._ws_session_id, "state": _STATE_NAMES[self._internal_state],
            "duration": self._internal_duration}))

    def _request_recorder_info(self) -> None:
        # The service broadcasts its status and ITS duration (not reset at stop).
        self._on_recording_status(self._svc_status)
        self._internal_duration = self._svc_duration

    def _on_recording_saved(self, take: Take) -> None:
        if self.session is None:
            return
        duration_ms = take.file_info.get("movie_duration_ms") if take.samples else None
        # MediaMetadataRetriever's duration in whole seconds; the counter if it fails.
        take.duration_s = duration_ms // 1000 if duration_ms is not None \
            else self._last_recorded_duration
        take.size_bytes = take.path.stat().st_size
        self._pending_uploads[take.name] = take
        self._send("event", "rec_stage", encode_object(REC_STAGE_INFO, {
            "sessionId": self.session["id"], "recName": take.name,
            "duration": take.duration_s, "sizeBytes": take.size_bytes}))

    # -- RecorderService ---------------------------------------------------------------

    def _post_delayed(self, delay_ms: int, action: Callable[[], None]) -> None:
        self._cancel_pending()

        def run() -> None:
            self._pending_action = None
            action()

        # Handler.postDelayed counts the phone's uptime, which runs at its clock's rate.
        seconds = delay_ms / 1000 / (1 + self.drift_ppm * 1e-6)
        self._pending_action = asyncio.get_running_loop().call_later(seconds, run)

    def _cancel_pending(self) -> None:
        if self._pending_action is not None:
            self._pending_action.cancel()
        self._pending_action = None

    def tap_record(self) -> None:
        """The person taps the record button on the phone (no server command)."""
        self._service_start_delayed(None)

    def tap_stop(self) -> None:
        """The person taps stop on the phone (no server command)."""
        self._service_stop_delayed(None)

    def _service_start_delayed(self, trigger: int | None) -> None:
        if self._svc_status != _STOPPED or self._pending_action is not None:
            return
        delay = app_delay_ms(trigger, self.now_ms(), self.theta)
        if delay is None:
            self._start_recording()
        else:
            self._post_delayed(delay, self._start_recording)

    def _service_stop_delayed(self, trigger: int | None) -> None:
        if self._svc_status == _STOPPED:
            return  # even with a start pending: that start still happens
        delay = app_delay_ms(trigger, self.now_ms(), self.theta)
        if delay is None:
            self._stop_recording()
        else:
            self._post_delayed(delay, self._stop_recording)

    def _service_toggle_pause_delayed(self, trigger: int | None, desired: int) -> None:
        # No guard: a delayed pause/resume replaces whatever action was pending.
        delay = app_delay_ms(trigger, self.now_ms(), self.theta)
        if delay is None:
            self._toggle_pause(desired)
        else:
            self._post_delayed(delay, lambda: self._toggle_pause(desired))

    def _start_recording(self) -> None:
        if self._svc_status != _STOPPED:
            return
        local = self.now_ms()
        name = recording_file_name(local)
        true_call = self.true_time()
        begin = true_call + self.start_latency_s
        take = Take(name=name, path=self.recordings_dir / name, local_start_ms=local,
                    true_call=true_call, segments=[[begin, None]],
                    true_rate=self.true_sample_rate)
        self.takes.append(take)
        self._take = take
        self._svc_duration = 0
        self._svc_status = _RUNNING
        self._request_recorder_info()
        self._duration_task = self._spawn(self._duration_ticks())

    async def _duration_ticks(self) -> None:
        # Timer.scheduleAtFixedRate(task, 1000, 1000): counts only while running.
        loop = asyncio.get_running_loop()
        first = loop.time()
        k = 1
        while True:
            await asyncio.sleep(max(0.0, first + k - loop.time()))
            k += 1
            if self._svc_status == _RUNNING:
                self._svc_duration += 1
                self._internal_duration = self._svc_duration

    def _toggle_pause(self, desired: int) -> None:
        if self._svc_status == desired:
            return
        now = self.true_time()
        take = self._take
        if desired == _PAUSED and self._svc_status == _RUNNING:
            if take is not None:
                seg = take.segments[-1]
                assert seg[0] is not None
                seg[1] = max(now, seg[0])
            self._svc_status = _PAUSED
        elif desired == _RUNNING and self._svc_status == _PAUSED:
            if take is not None:
                last_end = take.segments[-1][1]
                assert last_end is not None
                take.segments.append([max(now, last_end), None])
            self._svc_status = _RUNNING
        self._on_recording_status(self._svc_status)

    def _close_take(self) -> Take | None:
        take, self._take = self._take, None
        if take is None:
            return None
        seg = take.segments[-1]
        if seg[1] is None:
            assert seg[0] is not None
            seg[1] = max(self.true_time(), seg[0])
        take.samples = sum(max(0, math.floor((e - s) * take.true_rate))
                           for s, e in take.segments if s is not None and e is not None)
        for s, e in take.segments:
            if s is not None and e is not None and math.floor((e - s) * take.true_rate) > 0:
                take.true_first_sample = s
                break
        return take

    def _stop_duration(self) -> None:
        if self._duration_task is not None:
            self._duration_task.cancel()
            self._duration_task = None

    def _stop_recording(self) -> None:
        self._cancel_pending()
        self._stop_duration()
        self._svc_status = _STOPPED  # not broadcast: "stopped" comes from completion
        take = self._close_take()
        if take is None:
            return
        # RecordingCompleted is posted right away (the file is final when MediaRecorder
        # stops); RecordingSaved once the media scanner has seen the file.
        asyncio.get_running_loop().call_soon(self._on_recording_completed)
        self._spawn(self._write_and_save(take))

    async def _write_and_save(self, take: Take) -> None:
        await asyncio.to_thread(self._write_file, take)
        take.written.set()
        self._on_recording_saved(take)

    def _write_file(self, take: Take) -> None:
        if take.samples == 0:
            # MediaRecorder.stop() throws with no audio (the app toasts "too short").
            take.path.write_bytes(b"")
            return

        def chunks() -> Iterator[npt.NDArray[np.float32]]:
            for t in take.sample_times():
                yield np.asarray(self.source(t), dtype=np.float32).reshape(-1)

        take.file_info = encode_m4a(take.path, chunks(), self.sample_rate, self.bit_rate,
                                    declare_priming=self.declare_priming)

    def _service_cancel(self) -> None:
        self._cancel_pending()
        self._stop_duration()
        self._svc_status = _STOPPED
        take, self._take = self._take, None
        if take is not None:
            take.cancelled = True  # the file is deleted: never written here
        self._on_recording_completed()
        # stopSelf(): a new service instance next time, its duration back at 0.
        self._svc_duration = 0

    # -- lifecycle ---------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_for(self, predicate: Callable[[AndroidApp], Any],
                       timeout: float = 10.0) -> Any:
        """Poll ``predicate(self)`` until it is truthy; return its value.

        Raises
        ------
        TimeoutError
            Not within ``timeout`` seconds.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s; "
                                   f"parse_errors={self.parse_errors}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Disconnect (close 1000) and end every task the app runs."""
        self._sync_in_progress = False
        self._cancel_pending()
        self._stop_duration()
        ws, self._ws = self._ws, None
        self._ws_open = False
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000, "Client disconnecting"), 5)
        tasks = [t for t in (self._reader, self._writer, self._sync_task) if t is not None]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending_uploads.clear()


_EVENTS = frozenset({
    "DASHBOARD_INIT", "DASHBOARD_RENAME", "SESSION_UPDATE", "SESSION_ACTIVATE",
    "SESSION_ACTIVATED", "SUCCESS", "FAILED", "SESSION_STATE_REPORT", "STARTED", "STOPPED",
    "PAUSED", "RESUMED", "DROPPED", "REC_STAGE", "REC_STAGED", "REC_AMEND"})
_ACTIONS = frozenset({
    "START", "STOP", "PAUSE", "RESUME", "CANCEL", "DROP", "GET_STATE", "START_ALL",
    "STOP_ALL", "PAUSE_ALL", "RESUME_ALL", "CANCEL_ALL"})
_ERRORS = frozenset({
    "INVALID_KIND", "INVALID_EVENT", "INVALID_ACTION", "INVALID_BODY", "ACTION_NOT_ALLOWED",
    "SESSION_NOT_FOUND", "INVALID_EXTENSION", "ITEM_NOT_FOUND"})
