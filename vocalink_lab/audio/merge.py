"""Merge the recordings of a take into one file: end to end, one channel each, or mixed.

`merge` works on arrays; `merge_files` reads, aligns, merges and writes files (through
`vocalink_lab.audio.io`, the only file access here) block by block: it never holds a
whole track, so its memory does not grow with the length of the take. Both run the same
per-track pipeline (`_Placed`) and the same assembly (`_timeline`, `_concat_blocks`);
`merge` just feeds it whole arrays.

Placement on the timeline follows `vocalink_lab.audio.align`'s convention: sample ``n``
of track ``i`` is at reference time ``offsets_s[i] + n / (sr * (1 + drift_ppm[i] * 1e-6))``.
So track ``i`` is resampled from ``sr * (1 + drift_ppm[i] * 1e-6)`` to ``sr`` (soxr),
which removes its drift, then delayed by ``offsets_s[i]`` with sub-sample precision (a
windowed-sinc fractional delay for the part below one sample, `_Delay`, which carries its
last 32 input samples from block to block). The output's frame 0
is at reference time `timeline_start` (at or before 0, a whole number of samples, so
that the reference track itself is never interpolated).
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..errors import ParameterError
from ..progress import Progress, span
from . import io
from .align import Alignment
from .align import align as align_tracks
from .io import Audio

__all__ = ["MERGE_MODES", "merge", "merge_files", "timeline_start"]

log = logging.getLogger(__name__)

#: ``concat``: the tracks one after the other; ``multichannel``: aligned, one channel
#: per track; ``mix``: aligned and averaged.
MERGE_MODES = ("concat", "multichannel", "mix")
_SINC_HALF = 16  # taps on each side of the fractional-delay filter
_BLOCK = 1 << 16  # frames per block read, processed and written by merge_files


def _rates(sr: float | Sequence[float], n: int, errors: list[str]) -> float:
    """The one sample rate of ``n`` tracks; problems appended to ``errors``."""
    rates = [sr] * n if isinstance(sr, int | float) else list(sr)
    if not isinstance(sr, int | float) and len(rates) != n:
        errors.append(f"sr has {len(rates)} rates for {n} tracks")
    bad = [r for r in rates if not (isinstance(r, int | float) and math.isfinite(r) and r > 0)]
    if bad or not rates:
        errors.append(f"sample rates must be positive numbers, not {bad or sr!r}")
        return 0.0
    if len(set(rates)) > 1:
        errors.append(f"the tracks have different sample rates ({', '.join(map(str, rates))}): "
                      "resample them to one rate first (merge_files does)")
    return float(rates[0])


def _shape_problems(
    shapes: Sequence[tuple[int, int]], rate: float, mode: str, crossfade_s: float
) -> list[str]:
    """What the tracks' ``(channels, frames)`` shapes do not allow in ``mode``."""
    errors = []
    if mode in ("concat", "mix"):
        counts = sorted({c for c, _ in shapes} - {1})
        if len(counts) > 1:
            errors.append(f"mode {mode!r} needs mono tracks or tracks of one channel count, "
                          f"not {', '.join(map(str, counts))} channels")
    if mode == "concat" and crossfade_s > 0 and rate > 0:
        fade = round(crossfade_s * rate)
        for i, (_, frames) in enumerate(shapes):
            fades = (i > 0) + (i < len(shapes) - 1)
            if fades * fade > frames:
                errors.append(f"tracks[{i}] ({frames} frames) is shorter than its "
                              f"{fades} crossfade(s) of {fade} frames")
    return errors


def _check(
    tracks: Sequence[npt.ArrayLike],
    sr: float | Sequence[float],
    mode: str,
    alignment: Alignment | None,
    crossfade_s: float,
    gains: Sequence[float] | None,
) -> tuple[list[Audio], float]:
    errors: list[str] = []
    if mode not in MERGE_MODES:
        errors.append(f"mode must be one of {', '.join(MERGE_MODES)}, not {mode!r}")
    arrays = io.as_tracks(tracks, errors)
    if isinstance(tracks, np.ndarray) and tracks.ndim == 1:
        tracks = []
    rate = _rates(sr, len(tracks), errors) if len(tracks) else 0.0
    if alignment is not None and len(alignment) != len(tracks):
        errors.append(f"the alignment is of {len(alignment)} tracks, not {len(tracks)}")
    if not (math.isfinite(crossfade_s) and crossfade_s >= 0):
        errors.append(f"crossfade_s must be >= 0, not {crossfade_s}")
    elif crossfade_s > 0 and mode != "concat":
        errors.append("crossfade_s applies to mode 'concat' only")
    if gains is not None:
        if len(gains) != len(tracks):
            errors.append(f"gains has {len(gains)} entries for {len(tracks)} tracks")
        if not all(isinstance(g, int | float) and math.isfinite(g) for g in gains):
            errors.append("gains must be finite numbers")
        elif mode == "mix" and not any(gains):
            errors.append("gains are all 0: the mix would be silent")
    if len(arrays) == len(tracks) and math.isfinite(crossfade_s):
        errors += _shape_problems([x.shape for x in arrays], rate, mode, crossfade_s)
    if errors:
        raise ParameterError("; ".join(errors), errors=errors)
    return arrays, rate


def merge(
    tracks: Sequence[npt.ArrayLike],
    sr: float | Sequence[float],
    *,
    mode: str,
    alignment: Alignment | None = None,
    crossfade_s: float = 0.0,
    gains: Sequence[float] | None = None,
) -> Audio:
    """Merge the tracks of a take into one ``(channels, frames)`` array.

    Parameters
    ----------
    tracks : sequence of np.ndarray, each shape (frames,) or (channels, frames)
        The recordings.
    sr : float or sequence of float
        Their sample rate (one per track is accepted, if they are all equal).
    mode : {"concat", "multichannel", "mix"}
        ``"concat"``: the tracks one after another, in order, each crossfaded into the
        next over ``crossfade_s`` with an equal-power (sine/cosine) fade; the length is
        the sum of the lengths minus one crossfade per joint.
        ``"multichannel"``: placed on the reference timeline by ``alignment``, one
        channel per input track (a multi-channel track is averaged to mono, so that
        channel ``i`` is always track ``i``), zero-padded at both ends to a common
        length.
        ``"mix"``: placed like ``"multichannel"`` and averaged: the sum of
        ``gains[i] * track[i]`` divided by ``sum(abs(gains))`` (the mean, with the
        default gains of 1), which cannot clip when no input does. Where only some
        tracks play, the level is lower in proportion. Channels: those of the inputs
        (mono tracks are copied to every channel of multi-channel ones).
    alignment : Alignment, optional
        Where each track sits (see `vocalink_lab.audio.align`); without it every track
        starts at 0 with no drift. Ignored by ``"concat"``.
    crossfade_s : float
        Crossfade between consecutive tracks of ``"concat"``.
    gains : sequence of float, optional
        A linear gain per track (relative weights in ``"mix"``).

    Returns
    -------
    np.ndarray, shape (channels, frames), float32
        Frame 0 is at reference time `timeline_start` for the aligned modes.

    Raises
    ------
    ParameterError
        With every problem listed: unknown mode, no tracks, unequal rates, a
        crossfade longer than a track, channel counts that do not go together...
    """
    arrays, rate = _check(tracks, sr, mode, alignment, crossfade_s, gains)
    g = [1.0] * len(arrays) if gains is None else [float(x) for x in gains]
    sources = [_ArraySource(x) for x in arrays]
    # whole arrays go through the pipeline in one piece: the same code as merge_files
    longest = max(x.shape[1] for x in arrays)
    return np.concatenate(list(_merged_blocks(sources, rate, mode, alignment, g, crossfade_s,
                                              block=2 * longest + 1024)), axis=1)


def timeline_start(alignment: Alignment | None, sr: float) -> float:
    """Reference time (s) of frame 0 of `merge`'s aligned output: the earliest track start.

    Rounded down to a whole number of samples, so that the reference track is copied
    without interpolation.
    """
    if alignment is None or not len(alignment):
        return 0.0
    return math.floor(min(min(alignment.offsets_s), 0.0) * sr + 1e-9) / sr


class _Source(Protocol):
    """A track read in blocks or by range: an `io.AudioReader`, or `_ArraySource`."""

    channels: int
    frames: int

    def read(self, start: int = 0, frames: int | None = None) -> Audio: ...

    def blocks(self, block_frames: int) -> Iterator[Audio]: ...


class _ArraySource:
    """An in-memory ``(channels, frames)`` track, read like an `io.AudioReader`."""

    def __init__(self, x: Audio) -> None:
        self.x = x
        self.channels, self.frames = x.shape

    def read(self, start: int = 0, frames: int | None = None) -> Audio:
        return self.x[:, start:None if frames is None else start + frames]

    def blocks(self, block_frames: int) -> Iterator[Audio]:
        for start in range(0, self.frames, block_frames):
            yield self.x[:, start:start + block_frames]


def _merged_blocks(
    sources: Sequence[_Source], sr: float, mode: str, alignment: Alignment | None,
    gains: list[float], crossfade_s: float, *, block: int,
) -> Iterator[Audio]:
    """The merged output, block by block (float32); what `merge` returns, concatenated."""
    channels = max(src.channels for src in sources)
    if mode == "concat":
        return _concat_blocks(sources, gains, round(crossfade_s * sr), channels, block)
    if alignment is None:  # every track at 0, no drift
        alignment = Alignment.from_seeds(None, len(sources), sr=sr)
    t0 = timeline_start(alignment, sr)
    mono = mode == "multichannel"  # one channel per track: a multi-channel one is averaged
    tracks = [_Placed(src.blocks(block), 1 if mono else src.channels, sr,
                      alignment.drift_ppm[i], (alignment.offsets_s[i] - t0) * sr, mono=mono)
              for i, src in enumerate(sources)]
    return _timeline(tracks, gains, mode, channels, block)


def _resampled(stream: Any, x: Audio, *, last: bool) -> Audio:
    """A ``(channels, n)`` block through a ``soxr.ResampleStream``."""
    y = stream.resample_chunk(np.ascontiguousarray(x.T), last=last)
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, x.shape[0]).T)


class _Delay:
    """``y[n] = x(n - delay)`` for ``0 < delay < 1``, block by block: a Kaiser-windowed sinc.

    33 taps; each call keeps the last 32 input samples for the next. The whole output
    is one frame longer than the input (the delayed tail, given by the ``last`` call).
    """

    def __init__(self, delay: float, channels: int) -> None:
        k = np.arange(-_SINC_HALF, _SINC_HALF + 1)
        taps = np.sinc(k - delay) * np.kaiser(len(k), 8.0)
        self.taps = taps / taps.sum()
        self.history = np.zeros((channels, _SINC_HALF))  # the zeros before the signal

    def __call__(self, x: Audio, *, last: bool = False) -> Audio:
        parts = [self.history, x.astype(np.float64)]
        if last:  # the zeros after it: the filter's tail
            parts.append(np.zeros((x.shape[0], _SINC_HALF + 1)))
        buf = np.concatenate(parts, axis=1)
        count = buf.shape[1] - 2 * _SINC_HALF
        if count <= 0:
            self.history = buf
            return np.zeros((x.shape[0], 0), np.float32)
        out = np.empty((x.shape[0], count), dtype=np.float32)
        for c in range(x.shape[0]):
            out[c] = np.convolve(buf[c], self.taps, mode="valid")
        self.history = buf[:, -2 * _SINC_HALF:]
        return out


class _Placed:
    """One track placed on the output timeline, produced block by block.

    Drift removed (resampled from ``sr * (1 + drift_ppm * 1e-6)`` to ``sr`` by a soxr
    stream, which gives what one-shot `io.resample` does, sample for sample), then the
    fraction of a sample of its start delayed by `_Delay`; its first sample is at output
    frame `first`.
    """

    def __init__(self, blocks: Iterator[Audio], channels: int, sr: float, drift_ppm: float,
                 start: float, *, mono: bool) -> None:
        import soxr

        self.first = math.floor(start + 1e-9)
        frac = start - self.first
        self._blocks = blocks
        self._mono = mono
        self._resampler = (soxr.ResampleStream(sr * (1 + drift_ppm * 1e-6), sr, channels,
                                               dtype="float32", quality="HQ")
                           if drift_ppm else None)
        self._delay = _Delay(frac, channels) if frac > 1e-6 else None
        self._channels = channels
        self._pending: list[Audio] = []
        self._pending_frames = 0
        self._stages = self._run()

    def _stage(self, x: Audio, last: bool) -> Audio:
        if self._resampler is not None:
            x = _resampled(self._resampler, x, last=last)
        if self._delay is not None:
            x = self._delay(x, last=last)
        return x

    def _run(self) -> Iterator[Audio]:
        for x in self._blocks:
            if self._mono and x.shape[0] > 1:
                x = x.mean(axis=0, keepdims=True)
            yield self._stage(x, False)
        yield self._stage(np.zeros((self._channels, 0), np.float32), True)

    def take(self, frames: int) -> Audio:
        """The next ``frames`` frames (fewer only at the end)."""
        while self._pending_frames < frames:
            y = next(self._stages, None)
            if y is None:
                break
            self._pending.append(y)
            self._pending_frames += y.shape[1]
        data = (np.concatenate(self._pending, axis=1) if len(self._pending) > 1
                else self._pending[0] if self._pending
                else np.zeros((self._channels, 0), np.float32))
        out, rest = data[:, :frames], data[:, frames:]
        self._pending = [rest] if rest.shape[1] else []
        self._pending_frames = rest.shape[1]
        return out


def _timeline(
    tracks: list[_Placed], gains: list[float], mode: str, channels: int, block: int
) -> Iterator[Audio]:
    """Aligned output blocks: one channel per track (``multichannel``) or their ``mix``.

    It ends with the last track: zeros pad the others, as `merge` documents.
    """
    t = 0
    ends: list[int | None] = [None] * len(tracks)  # output frame where each track ended
    while True:
        parts: list[tuple[int, int, Audio]] = []
        for i, track in enumerate(tracks):
            at = max(0, track.first - t)  # where it starts in this block
            if ends[i] is not None or at >= block:
                continue
            y = track.take(block - at)
            if y.shape[1] < block - at:
                ends[i] = t + at + y.shape[1]
            parts.append((i, at, y))
        done = all(e is not None for e in ends)
        length = max(e for e in ends if e is not None) - t if done else block
        if length > 0:
            yield _combine(parts, len(tracks), gains, mode, channels, length)
        if done:
            return
        t += length


def _combine(parts: list[tuple[int, int, Audio]], count: int, gains: list[float], mode: str,
             channels: int, length: int) -> Audio:
    """One output block from each track's part ``(track, start in the block, samples)``."""
    if mode == "multichannel":
        out = np.zeros((count, length), dtype=np.float32)
        for i, at, y in parts:
            out[i, at:at + y.shape[1]] = gains[i] * y[0]
        return out
    acc = np.zeros((channels, length), dtype=np.float64)
    for i, at, y in parts:
        acc[:, at:at + y.shape[1]] += gains[i] * y  # a mono track broadcasts to every channel
    acc /= sum(abs(x) for x in gains)
    return acc.astype(np.float32)


def _concat_blocks(
    sources: Sequence[_Source], gains: list[float], fade: int, channels: int, block: int
) -> Iterator[Audio]:
    """The tracks end to end, each faded into the next over ``fade`` frames (equal power)."""
    t = (np.arange(fade) + 0.5) / max(fade, 1)
    fade_in, fade_out = np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)
    carry = np.zeros((channels, 0))  # the faded-out end of the previous track

    def read(src: _Source, g: float, start: int, frames: int) -> npt.NDArray[np.float64]:
        return g * src.read(start, frames).astype(np.float64)

    for i, src in enumerate(sources):
        head = fade if i > 0 else 0
        tail = fade if i < len(sources) - 1 else 0
        if head:
            carry = carry + read(src, gains[i], 0, head) * fade_in
            yield carry.astype(np.float32)
        for start in range(head, src.frames - tail, block):
            y = read(src, gains[i], start, min(block, src.frames - tail - start))
            yield np.broadcast_to(y, (channels, y.shape[1])).astype(np.float32)
        if tail:
            carry = np.zeros((channels, fade)) + read(src, gains[i], src.frames - tail,
                                                         tail) * fade_out


def merge_files(
    srcs: Sequence[Path | str],
    dst: Path | str,
    *,
    mode: str,
    seeds_s: Sequence[float | None] | None = None,
    align: bool = True,
    drift: bool = True,
    crossfade_s: float = 0.0,
    sample_rate: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Read, align, merge and write the recordings of a take, in bounded memory.

    Blocking and CPU-heavy: run it in an executor (the server's job pool does).
    Everything is streamed in blocks of 65536 frames: alignment reads only its
    analysis windows (see `align`'s lazily read tracks), and the output is produced
    and written block by block, the same samples `merge` would return. A source at
    another rate than the output's, or in a format that cannot seek (M4A, WebM, 3GP,
    Opus), is first converted to a temporary float WAV next to ``dst``.

    Parameters
    ----------
    srcs : sequence of Path or str
        Audio files in any format `vocalink_lab.audio.io` reads; the first is the
        alignment reference.
    dst : Path or str
        Output file, ``.wav`` or ``.flac`` (24-bit PCM).
    mode : {"concat", "multichannel", "mix"}
        See `merge`.
    seeds_s : sequence of float or None, optional
        Each recording's start instant on a common clock (``started_at``, server time);
        seeds `align`, or places the tracks by itself when ``align`` is False.
    align : bool
        Measure offsets and drift on the audio (`vocalink_lab.audio.align.align`);
        False places the tracks by ``seeds_s`` alone (or all at 0). Not used by
        ``"concat"``.
    drift : bool
        Estimate and correct clock drift when aligning.
    crossfade_s : float
        Crossfade between consecutive recordings in ``"concat"``.
    sample_rate : int, optional
        Output rate; by default the highest among the inputs (the others are resampled).
    progress : callable, optional
        Called with the fraction done (0..1) now and then.

    Returns
    -------
    dict
        ``mode``, ``sample_rate``, ``channels``, ``frames``, ``duration_s``,
        ``start_s`` (reference time of the output's first frame) and ``alignment``
        (`Alignment.to_dict`, or None for ``"concat"``).

    Raises
    ------
    ParameterError
        With every invalid parameter listed (checked before any file is read).
    AudioFormatError
        A source does not decode.
    """
    errors: list[str] = []
    if mode not in MERGE_MODES:
        errors.append(f"mode must be one of {', '.join(MERGE_MODES)}, not {mode!r}")
    if len(srcs) == 0:
        errors.append("srcs is empty: give at least one recording")
    if seeds_s is not None and len(seeds_s) != len(srcs):
        errors.append(f"seeds_s has {len(seeds_s)} entries for {len(srcs)} recordings")
    if sample_rate is not None and not (isinstance(sample_rate, int) and sample_rate > 0):
        errors.append(f"sample_rate must be a positive integer, not {sample_rate!r}")
    if not (math.isfinite(crossfade_s) and crossfade_s >= 0):
        errors.append(f"crossfade_s must be >= 0, not {crossfade_s}")
    ext = Path(dst).suffix.lower().lstrip(".")
    if ext not in io.WRITE_FORMATS:
        errors.append(f"dst must end in {' or '.join('.' + f for f in io.WRITE_FORMATS)}, "
                      f"not '.{ext}'")
    if errors:
        raise ParameterError("; ".join(errors), errors=errors)

    def report(fraction: float) -> None:
        if progress is not None:
            progress(min(max(fraction, 0.0), 1.0))

    report(0.0)
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(io.AudioReader(src)) for src in srcs]
        rate = sample_rate or max(r.sample_rate for r in readers)
        # the rate-converted copies go next to dst: /tmp may be RAM
        temp = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=".merge-", dir=Path(dst).parent)))
        reading = span(progress, 0.0, 0.3)
        sources = []
        for i, reader in enumerate(readers):
            sources.append(_seekable_at(reader, rate, temp / f"{i}.wav", stack))
            if reading is not None:
                reading((i + 1) / len(readers))
        problems = _shape_problems([(s.channels, s.frames) for s in sources], rate, mode,
                                   crossfade_s)
        if problems:
            raise ParameterError("; ".join(problems), errors=problems)
        alignment: Alignment | None = None
        if mode != "concat":
            if align:
                alignment = align_tracks(sources, rate, seeds_s=seeds_s, drift=drift,
                                         progress=span(progress, 0.3, 0.8))
            else:
                alignment = Alignment.from_seeds(seeds_s, len(sources), sr=rate)
        channels = (len(sources) if mode == "multichannel"
                    else max(s.channels for s in sources))
        expected = max(s.frames for s in sources)  # about the output's length, for progress
        writing = span(progress, 0.8, 1.0)
        with io.AudioWriter(dst, rate, channels) as writer:
            for block in _merged_blocks(sources, rate, mode, alignment, [1.0] * len(sources),
                                        crossfade_s, block=_BLOCK):
                writer.write(block)
                if writing is not None:
                    writing(min(writer.frames / expected, 1.0))
            frames = writer.frames
    report(1.0)
    start = timeline_start(alignment, rate) if mode != "concat" else 0.0
    return {
        "mode": mode,
        "sample_rate": rate,
        "channels": channels,
        "frames": frames,
        "duration_s": frames / rate,
        "start_s": start,
        "alignment": None if alignment is None else alignment.to_dict(),
    }


def _seekable_at(reader: io.AudioReader, rate: int, temp: Path,
                 stack: contextlib.ExitStack) -> io.AudioReader:
    """``reader``, or a float WAV copy of it at ``rate`` if at another rate or not seekable.

    Compressed phone formats decode only from the start; the copy is written block by
    block (a soxr stream gives what one-shot `io.resample` does, sample for sample).
    """
    if reader.sample_rate == rate and reader.random_access:
        return reader
    import soxr

    stream = soxr.ResampleStream(reader.sample_rate, rate, reader.channels, dtype="float32",
                                 quality="HQ")
    with io.AudioWriter(temp, rate, reader.channels, subtype="FLOAT") as writer:
        for block in reader.blocks(_BLOCK):
            writer.write(_resampled(stream, block, last=False))
        writer.write(_resampled(stream, np.zeros((reader.channels, 0), np.float32), last=True))
    reader.close()
    return stack.enter_context(io.AudioReader(temp))
