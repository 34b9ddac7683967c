"""A take's transcript: each line once, from the device that heard it loudest.

Every device's track is transcribed. The input is a take aligned by
`vocalink_lab.audio.merge.merge_files` in mode ``"multichannel"``: channel ``i`` is
recording ``i`` on the common, drift-corrected timeline. Every phone in the room hears
every speaker, so whisper writes the same sentence on several channels (split
differently now and then); `attribute` keeps one copy of each, the one from the channel
where it was loudest, which is the device of the person speaking (each speaker sits by
their own phone).

How segments are grouped (`attribute`)
--------------------------------------
Two segments of *different* channels are linked when they overlap by at least
``min_overlap`` of the shorter one's duration; a group is a connected set of links. A
weak overlap never links: turns that touch or overlap a little (crosstalk, whisper's
loose segment ends, a short gap between speakers) stay separate groups however long the
conversation, so a chain cannot run from one turn to the next through them. Segments of
one channel never link to each other directly; they meet in a group only through a
segment of another channel that strongly overlaps both, which is the same speech split
differently on the two channels (one long segment here, two short ones there). A segment
linked to nothing is a group of its own and is kept: it is speech only that channel's
transcription found (the loud channel's voice detection dropped it, or it was said
quietly far from every other phone), and losing speech is worse than a less certain
attribution.

Each group goes to the channel, among those with segments in it, that is loudest over
the group's span (the RMS of the aligned channel, `channel_levels`); ties go to the
lowest channel index. Its segments of the group are kept, with ``channel`` and
``level_db`` set; the other channels' segments of the group are dropped.

Then the groups are taken loudest first, and a kept segment is dropped when the
segments already kept from other channels cover ``min_overlap`` of its span between
them: the same speech cut so differently on two channels that no single pair of
segments overlapped enough (4-6 s here, 3-5 s and 5-8 s there). A line only a quieter
channel has is not covered, and stays.

Known limit: when one channel's segment runs across a change of speaker (whisper merged
two turns with a short pause between them), it strongly overlaps both turns and the
group holds both; the winning channel then speaks for both of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ParameterError
from ...levels import FLOOR_DBFS, power_dbfs
from ...progress import Progress, span
from ..io import AudioReader
from .transcript import Segment, Transcript

__all__ = ["TRACK_KEYS", "attribute", "channel_levels", "transcribe_take_file"]

#: What each entry of ``tracks`` must hold: whose recording each channel is.
TRACK_KEYS = ("recording_id", "device_id", "device_name")
#: Levels within this many dB are equal (the tie-break decides): float noise in the
#: RMS of identical channels must not pick a winner at random.
_TIE_DB = 1e-6
_BLOCK = 1 << 16  # frames read at a time by channel_levels: memory stays bounded
#: The share of the progress range spent transcribing; the rest measures levels.
_TRANSCRIBE_SHARE = 0.95

Levels = Callable[[float, float], Sequence[float]]


def _linked(a: Segment, b: Segment, min_overlap: float) -> bool:
    """Whether ``a`` and ``b`` (of different channels) are the same speech."""
    shorter = min(a.end - a.start, b.end - b.start)
    overlap = min(a.end, b.end) - max(a.start, b.start)
    if shorter <= 0:
        # An instant (whisper writes a few): the same speech when inside the other.
        return overlap >= 0
    return overlap > 0 and overlap >= min_overlap * shorter


def attribute(
    channels: Sequence[Sequence[Segment]],
    levels: Levels,
    *,
    min_overlap: float = 0.5,
) -> list[Segment]:
    """Keep each stretch of speech once, from the channel that heard it loudest.

    The grouping rule and what happens at the edges are in this module's docstring:
    segments of different channels overlapping by at least ``min_overlap`` of the
    shorter one are the same speech (linked); a group is a connected set of links; each
    group goes to the loudest of its channels over its span (ties: lowest index); a
    segment covered for ``min_overlap`` of its span by louder groups' lines of other
    channels is dropped.

    Parameters
    ----------
    channels : sequence of sequences of Segment
        ``channels[i]`` is channel ``i``'s transcription, times on the common timeline
        (s). The segments are returned as they are (device fields included) apart from
        ``channel`` and ``level_db``.
    levels : callable
        ``levels(start_s, end_s)`` gives each channel's level over that span, in dB
        (one value per channel, ``len(channels)`` of them); `channel_levels` reads them
        from the aligned take. Called once per group.
    min_overlap : float
        The share (0 < x <= 1) of the shorter segment's duration two segments must
        overlap by to be the same speech.

    Returns
    -------
    list of Segment
        The kept segments sorted by start (then end, then channel), each with
        ``channel`` (its channel's index) and ``level_db`` (that channel's level over
        its group's span).

    Raises
    ------
    ParameterError
        ``min_overlap`` is out of range, or ``levels`` gave the wrong number of values.

    Examples
    --------
    >>> a = Segment(0.0, 2.0, "hello there", 0.9)
    >>> b = Segment(0.1, 2.1, "hello there", 0.8)
    >>> [(s.channel, s.level_db) for s in attribute([[a], [b]], lambda s, e: [-30, -20])]
    [(1, -20.0)]
    """
    if not (isinstance(min_overlap, int | float) and 0 < min_overlap <= 1):
        raise ParameterError(f"min_overlap must be in (0, 1], not {min_overlap!r}")
    items = sorted(((seg, c) for c, segs in enumerate(channels) for seg in segs),
                   key=lambda item: (item[0].start, item[0].end, item[1]))
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Sorted by start, so the segments overlapping item i's span follow it, up to the
    # first one starting after it ends.
    for i, (a, ca) in enumerate(items):
        for j in range(i + 1, len(items)):
            b, cb = items[j]
            if b.start > a.end:
                break
            if ca != cb and _linked(a, b, min_overlap):
                parent[root(j)] = root(i)

    groups: dict[int, list[int]] = {}
    for i in range(len(items)):
        groups.setdefault(root(i), []).append(i)

    chosen: list[tuple[float, float, list[Segment]]] = []
    for members in groups.values():
        start = min(items[i][0].start for i in members)
        end = max(items[i][0].end for i in members)
        heard = [float(v) for v in levels(start, end)]
        if len(heard) != len(channels):
            raise ParameterError(f"levels gave {len(heard)} values for "
                                 f"{len(channels)} channels")
        present = sorted({items[i][1] for i in members})
        loudest = max(heard[c] for c in present)
        winner = next(c for c in present if heard[c] >= loudest - _TIE_DB)
        chosen.append((heard[winner], start,
                       [replace(items[i][0], channel=winner, level_db=heard[winner])
                        for i in members if items[i][1] == winner]))

    # Loudest groups first: a segment mostly covered by louder lines of other channels
    # is the same speech cut so differently that no single pair overlapped enough.
    chosen.sort(key=lambda g: (-g[0], g[1]))
    out: list[Segment] = []
    for _, _, kept in chosen:
        out.extend(s for s in kept if not _covered(s, out, min_overlap))
    out.sort(key=lambda s: (s.start, s.end, s.channel or 0))
    return out


def _covered(seg: Segment, kept: Sequence[Segment], min_overlap: float) -> bool:
    """Whether ``kept``'s segments of other channels cover ``min_overlap`` of ``seg``."""
    pieces = sorted((max(k.start, seg.start), min(k.end, seg.end)) for k in kept
                    if k.channel != seg.channel and k.start <= seg.end and k.end >= seg.start)
    length = seg.end - seg.start
    if length <= 0:
        return bool(pieces)
    total, reach = 0.0, seg.start
    for a, b in pieces:  # the union's length, pieces in order of start
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total > 0 and total >= min_overlap * length


class _SpanLevels:
    """`channel_levels`' callable: opens the file for each span, reads only that span."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with AudioReader(path) as reader:  # fail now, not at the first group
            self.channels = reader.channels

    def __call__(self, start_s: float, end_s: float) -> list[float]:
        with AudioReader(self.path) as reader:
            rate, total = reader.sample_rate, reader.frames
            first = min(max(0, math.floor(start_s * rate)), total)
            # At least one frame: an instant still reads the sample it falls on.
            stop = min(max(math.ceil(end_s * rate), first + 1), total)
            sums = np.zeros(reader.channels, dtype=np.float64)
            count, pos = 0, first
            while pos < stop:
                block = reader.read(pos, min(_BLOCK, stop - pos))
                if block.shape[1] == 0:
                    break
                sums += np.sum(np.square(block, dtype=np.float64), axis=1)
                count += block.shape[1]
                pos += block.shape[1]
        if count == 0:
            return [FLOOR_DBFS] * len(sums)
        return [power_dbfs(float(s) / count) for s in sums]


def channel_levels(path: Path | str) -> Callable[[float, float], list[float]]:
    """A `levels` function for `attribute`: each channel's RMS over a span of a file.

    Parameters
    ----------
    path : Path or str
        An audio file, typically the aligned multichannel take (WAV or FLAC, which
        seek; other formats decode from their start on every call).

    Returns
    -------
    callable
        ``levels(start_s, end_s) -> list of float``: the RMS of each channel over
        ``[start_s, end_s)`` in dBFS (`vocalink_lab.levels.power_dbfs`,
        ``FLOOR_DBFS`` for silence or a span outside the file). It reads that span
        only, in blocks of 65536 frames: memory does not grow with the span.

    Raises
    ------
    AudioFormatError
        The file is not audio this package reads.
    """
    return _SpanLevels(Path(path))


def _check(tracks: Sequence[Mapping[str, Any]], channels: int, offset_s: float) -> None:
    errors: list[str] = []
    if not (isinstance(offset_s, int | float) and math.isfinite(offset_s)):
        errors.append(f"offset_s must be a finite number, not {offset_s!r}")
    if len(tracks) != channels:
        errors.append(f"tracks has {len(tracks)} entries for a file of {channels} channels")
    for i, track in enumerate(tracks):
        missing = [k for k in TRACK_KEYS if k not in track]
        if missing:
            errors.append(f"tracks[{i}] lacks {', '.join(missing)}")
    if errors:
        raise ParameterError("; ".join(errors), errors=errors)


def transcribe_take_file(
    path: Path | str,
    tracks: Sequence[Mapping[str, Any]],
    *,
    take_id: str | None = None,
    origin_at: float | None = None,
    offset_s: float = 0.0,
    language: str | None = None,
    model: str | Path | None = None,
    enhance: bool = False,
    progress: Progress | None = None,
    work_dir: Path | str | None = None,
) -> Transcript:
    """Transcribe an aligned take, each line once, attributed to the device that spoke it.

    Every channel is transcribed (`vocalink_lab.audio.transcribe.engine.transcribe_file`
    with ``channel=i``); the segments are attributed with `attribute`, the levels read
    from ``path`` itself (an enhanced copy would not do: enhancement evens out each
    channel's loudness, which is what tells the devices apart). Blocking and CPU-heavy:
    run it in an executor.

    Parameters
    ----------
    path : Path or str
        The take aligned by `vocalink_lab.audio.merge.merge_files` in mode
        ``"multichannel"``: channel ``i`` is ``tracks[i]``'s recording.
    tracks : sequence of mapping
        One per channel, each with ``recording_id``, ``device_id`` and ``device_name``
        (`TRACK_KEYS`); stored in the transcript as given.
    take_id : str, optional
        The take's id (the transcript's ``subject_id``).
    origin_at : float, optional
        Server time of the take's start (time 0 of the transcript), when known.
    offset_s : float
        Where ``path`` starts on the take's timeline (s): merge_files' ``start_s``.
        Every time is shifted by it, so that they are seconds from the take's start.
    language : str, optional
        ISO 639-1 code; by default detected on the first channel and that language
        used for the others, so that all lines are in one language.
    model : str or Path, optional
        A faster-whisper model folder; by default the engine's (see
        `vocalink_lab.audio.transcribe.model.locate_model`).
    enhance : bool
        Enhance each channel (auto mode) before transcribing it.
    progress : callable, optional
        Called with the fraction done (0..1); may raise to cancel (the exception
        propagates, nothing is returned).
    work_dir : Path or str, optional
        Where the engine may write temporary files.

    Returns
    -------
    Transcript
        ``kind="take"``, ``subject_id=take_id``, the segments of `attribute` (device,
        recording, channel and level set) in take time, ``tracks`` as given.

    Raises
    ------
    ParameterError
        ``tracks`` does not match the file's channels or lacks a key, or ``offset_s``
        is not finite (all listed, before any transcription).
    AudioFormatError
        The file does not decode.
    TranscriptionUnavailable
        The ``[asr]`` extra or its model is not installed.
    """
    levels = _SpanLevels(Path(path))
    count = levels.channels
    _check(tracks, count, offset_s)
    from .engine import transcribe_file  # the model's libraries load only when needed

    work = None if work_dir is None else Path(work_dir)
    per_channel: list[list[Segment]] = []
    results: list[Transcript] = []
    lang = language
    for i, track in enumerate(tracks):
        share = span(progress, _TRANSCRIBE_SHARE * i / count,
                     _TRANSCRIBE_SHARE * (i + 1) / count)
        result = transcribe_file(path, channel=i, language=lang, model=model,
                                 enhance=enhance, progress=share, work_dir=work)
        if lang is None and result.language:
            lang = result.language
        results.append(result)
        per_channel.append([replace(seg, device_id=track.get("device_id"),
                                    device_name=track.get("device_name"),
                                    recording_id=track.get("recording_id"))
                            for seg in result.segments])

    segments = attribute(per_channel, levels)
    if progress is not None:
        progress(1.0)
    first = results[0]  # a file has at least one channel, and tracks match them
    transcript = Transcript(
        segments=tuple(segments),
        language=lang or first.language,
        language_probability=first.language_probability,
        duration_s=max(r.duration_s for r in results),
        kind="take",
        subject_id=take_id,
        origin_at=origin_at,
        model=first.model,
        engine=first.engine,
        enhanced=any(r.enhanced for r in results),
        tracks=tuple(dict(t) for t in tracks),
    )
    return transcript.shifted(offset_s) if offset_s else transcript
