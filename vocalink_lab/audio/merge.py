"""Merge the recordings of a take into one file: end to end, one channel each, or mixed.

`merge` works on arrays; `merge_files` loads, aligns, merges and saves (through
`vocalink_lab.audio.io`, the only file access here).

Placement on the timeline follows `vocalink_lab.audio.align`'s convention: sample ``n``
of track ``i`` is at reference time ``offsets_s[i] + n / (sr * (1 + drift_ppm[i] * 1e-6))``.
So track ``i`` is resampled from ``sr * (1 + drift_ppm[i] * 1e-6)`` to ``sr`` (soxr),
which removes its drift, then delayed by ``offsets_s[i]`` with sub-sample precision (a
windowed-sinc fractional delay for the part below one sample). The output's frame 0
is at reference time `timeline_start` (at or before 0, a whole number of samples, so
that the reference track itself is never interpolated).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    if mode in ("concat", "mix") and len(arrays) == len(tracks):
        counts = sorted({x.shape[0] for x in arrays} - {1})
        if len(counts) > 1:
            errors.append(f"mode {mode!r} needs mono tracks or tracks of one channel count, "
                          f"not {', '.join(map(str, counts))} channels")
    if mode == "concat" and crossfade_s > 0 and rate > 0 and len(arrays) == len(tracks):
        fade = round(crossfade_s * rate)
        for i, x in enumerate(arrays):
            fades = (i > 0) + (i < len(arrays) - 1)
            if fades * fade > x.shape[1]:
                errors.append(f"tracks[{i}] ({x.shape[1]} frames) is shorter than its "
                              f"{fades} crossfade(s) of {fade} frames")
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
    if mode == "concat":
        return _concat(arrays, g, round(crossfade_s * rate))
    if alignment is None:
        alignment = Alignment.from_seeds(None, len(arrays), sr=rate)
    if mode == "multichannel":
        arrays = [x.mean(axis=0, keepdims=True) if x.shape[0] > 1 else x for x in arrays]
    placed = _place_all(arrays, rate, alignment)
    frames = max(pos + y.shape[1] for pos, y in placed)
    if mode == "multichannel":
        out = np.zeros((len(arrays), frames), dtype=np.float32)
        for i, (pos, y) in enumerate(placed):
            out[i, pos:pos + y.shape[1]] = g[i] * y[0]
        return out
    channels = max(x.shape[0] for x in arrays)
    acc = np.zeros((channels, frames), dtype=np.float64)
    for i, (pos, y) in enumerate(placed):
        acc[:, pos:pos + y.shape[1]] += g[i] * y  # a mono track broadcasts to every channel
    acc /= sum(abs(x) for x in g)
    return acc.astype(np.float32)


def timeline_start(alignment: Alignment | None, sr: float) -> float:
    """Reference time (s) of frame 0 of `merge`'s aligned output: the earliest track start.

    Rounded down to a whole number of samples, so that the reference track is copied
    without interpolation.
    """
    if alignment is None or not len(alignment):
        return 0.0
    return math.floor(min(min(alignment.offsets_s), 0.0) * sr + 1e-9) / sr


def _place_all(
    arrays: list[Audio], sr: float, alignment: Alignment
) -> list[tuple[int, Audio]]:
    """Each track drift-corrected and fractionally delayed, with its first output frame."""
    t0 = timeline_start(alignment, sr)
    placed = []
    for i, x in enumerate(arrays):
        drift = alignment.drift_ppm[i]
        y = io.resample(x, orig_sr=sr * (1 + drift * 1e-6), target_sr=sr) if drift else x
        start = (alignment.offsets_s[i] - t0) * sr
        whole = math.floor(start + 1e-9)
        frac = start - whole
        if frac > 1e-6:
            y = _fractional_delay(y, frac)
        placed.append((whole, np.asarray(y, dtype=np.float32)))
    return placed


def _fractional_delay(x: Audio, delay: float) -> Audio:
    """``y[n] = x(n - delay)`` for ``0 < delay < 1`` by a Kaiser-windowed sinc (33 taps).

    The result is one frame longer than ``x`` (the delayed tail).
    """
    k = np.arange(-_SINC_HALF, _SINC_HALF + 1)
    taps = np.sinc(k - delay) * np.kaiser(len(k), 8.0)
    taps /= taps.sum()
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    for c in range(x.shape[0]):
        full = np.convolve(x[c].astype(np.float64), taps)
        out[c] = full[_SINC_HALF:_SINC_HALF + x.shape[1] + 1]
    return out


def _concat(
    arrays: list[Audio], gains: list[float], fade: int
) -> Audio:
    channels = max(x.shape[0] for x in arrays)
    frames = sum(x.shape[1] for x in arrays) - fade * (len(arrays) - 1)
    out = np.zeros((channels, frames), dtype=np.float64)
    t = (np.arange(fade) + 0.5) / max(fade, 1)
    fade_in, fade_out = np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)
    pos = 0
    for i, x in enumerate(arrays):
        y = gains[i] * x.astype(np.float64)
        if fade and i > 0:
            y[:, :fade] *= fade_in
        if fade and i < len(arrays) - 1:
            y[:, -fade:] *= fade_out
        out[:, pos:pos + y.shape[1]] += y
        pos += y.shape[1] - fade
    return out.astype(np.float32)


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
    """Load, align, merge and save the recordings of a take.

    Blocking and CPU-heavy: run it in an executor (the server's job pool does).

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
    rate = sample_rate or max(io.probe(src).sample_rate for src in srcs)
    tracks = []
    reading = span(progress, 0.0, 0.3)
    for i, src in enumerate(srcs):
        audio, _ = io.load(src, sr=rate)
        tracks.append(audio)
        if reading is not None:
            reading((i + 1) / len(srcs))
    alignment: Alignment | None = None
    if mode != "concat":
        if align:
            alignment = align_tracks(tracks, rate, seeds_s=seeds_s, drift=drift,
                                     progress=span(progress, 0.3, 0.8))
        else:
            alignment = Alignment.from_seeds(seeds_s, len(tracks), sr=rate)
    out = merge(tracks, rate, mode=mode, alignment=alignment, crossfade_s=crossfade_s)
    del tracks
    report(0.9)
    io.save(dst, out, rate)
    report(1.0)
    start = timeline_start(alignment, rate) if mode != "concat" else 0.0
    return {
        "mode": mode,
        "sample_rate": rate,
        "channels": int(out.shape[0]),
        "frames": int(out.shape[1]),
        "duration_s": out.shape[1] / rate,
        "start_s": start,
        "alignment": None if alignment is None else alignment.to_dict(),
    }
