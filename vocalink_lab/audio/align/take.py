"""Alignment of a take (`align`): every track against the reference, coarse then fine.

`align` checks its arguments, prepares the signals (mono, high-passed, and decimated to
`COARSE_RATE` for the coarse stage), then measures each track: around its seed if it
has one, else (or when the seeded search finds nothing confident) around a seed found
by a whole-reference search; a track the audio cannot place keeps its seed, or
offset 0, and the reason is logged and kept in `Alignment.notes`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ...errors import ParameterError
from ...progress import Progress
from ..io import Audio, as_tracks, resample
from .coarse import _coarse, _Probe
from .fine import _fine
from .fit import _Fit
from .params import _FINE_WINDOW_S, COARSE_RATE, _Params
from .result import Alignment, _relative_seeds
from .signals import (
    TrackSource,
    _ArraySignal,
    _highpass,
    _is_source,
    _LazySignal,
    _mono,
    _Signal,
)

log = logging.getLogger(__package__)  # "vocalink_lab.audio.align", as before the split


def _sources(tracks: Sequence[object], sr: float, errors: list[str]) -> list[TrackSource]:
    """The tracks when they are all `TrackSource`s (checked), else [] (arrays: `as_tracks`)."""
    lazy = [_is_source(t) for t in tracks]
    if not any(lazy):
        return []
    if not all(lazy):
        errors.append("tracks must be all arrays or all sources (objects with frames and read)")
        return []
    for i, t in enumerate(tracks):
        if not int(getattr(t, "frames", 0)) > 0:
            errors.append(f"tracks[{i}] is empty")
        rate = getattr(t, "sample_rate", sr)
        if rate != sr:
            errors.append(f"tracks[{i}] is at {rate} Hz, not sr={sr}: resample it first")
    return [t for t in tracks if isinstance(t, TrackSource)] if not errors else []


def _validate(
    tracks: Sequence[npt.ArrayLike | TrackSource],
    sr: float,
    seeds_s: Sequence[float | None] | None,
    reference: int,
    numbers: dict[str, float],
) -> tuple[list[Audio], list[TrackSource]]:
    """The tracks as arrays, or (all of them lazily read) as sources; one error for all."""
    errors: list[str] = []
    sources = _sources(tracks, sr, errors)
    arrays: list[Audio] = [] if sources or errors else as_tracks(tracks, errors)  # type: ignore[arg-type]
    if isinstance(tracks, np.ndarray) and tracks.ndim == 1:
        tracks = []
    if not (isinstance(sr, int | float) and sr > 0 and math.isfinite(sr)):
        errors.append(f"sr must be a positive number, not {sr!r}")
    if seeds_s is not None:
        if len(seeds_s) != len(tracks):
            errors.append(f"seeds_s has {len(seeds_s)} entries for {len(tracks)} tracks")
        bad = [i for i, s in enumerate(seeds_s) if s is not None and not math.isfinite(s)]
        if bad:
            errors.append(f"seeds_s must be finite numbers or None (entries {bad})")
    if len(tracks) and not 0 <= reference < len(tracks):
        errors.append(f"reference must index one of the {len(tracks)} tracks, not {reference}")
    for name, value in numbers.items():
        if not (math.isfinite(value) and value > 0):
            errors.append(f"{name} must be positive, not {value}")
    if errors:
        raise ParameterError("; ".join(errors), errors=errors)
    return arrays, sources


def align(
    tracks: Sequence[npt.ArrayLike | TrackSource],
    sr: float,
    *,
    seeds_s: Sequence[float | None] | None = None,
    search_s: float = 0.5,
    drift: bool = True,
    reference: int = 0,
    max_drift_ppm: float = 500.0,
    windows: int = 12,
    window_s: float = 4.0,
    beta: float = 0.8,
    min_confidence: float = 0.2,
    highpass_hz: float | None = 60.0,
    progress: Progress | None = None,
) -> Alignment:
    """Find each track's offset and clock drift against the reference track.

    For each track, in two stages:

    1. Coarse, on signals decimated to `COARSE_RATE` (4 kHz): ``windows`` windows of
       ``window_s`` spread over the expected overlap are each searched in the reference
       within ``search_s`` (plus what ``max_drift_ppm`` can add over the track) of the
       seeded lag, by PHAT-beta cross-correlation (as `gcc_phat`); a robust line through
       their lags (Theil-Sen, outliers dropped, weighted least squares) gives offset and
       drift to about a coarse sample (0.25 ms). Without a usable seed (none given, or
       the seeded search found nothing confident), three loud 20 s chunks of the track
       are searched over the whole reference first (one FFT each, the reference's
       spectrum computed once) and their agreeing answer becomes the seed.
    2. Fine, at the full rate: a 2 s window (the loudest) inside each coarse window that
       agreed with the line, read at the coarse drift (resampled with soxr, so that the
       drift does not smear its correlation peak), is searched within a few samples of
       the coarse line by maximum-likelihood-weighted GCC (coherence from Welch
       averaging; see `gcc_phat`), which also gives each window's Cramér-Rao precision;
       the robust line through these sub-sample lags, weighted by precision, is the
       result.

    Confidence, per track: the mean over the coarse windows that hold sound of each
    window's `Lag.confidence` (peak against the next peak), a window whose lag the
    final line rejects (coarse or fine) counting 0.

    A track whose confidence stays below ``min_confidence`` keeps its seed (method
    ``"seed"``, drift 0), or offset 0 without one (``"none"``), and says so in ``notes``.

    Parameters
    ----------
    tracks : sequence of np.ndarray (shape (frames,) or (channels, frames)) or of TrackSource
        The recordings, all at ``sr``; channels are averaged for the estimate. Gains
        may differ. Arrays are prepared whole; sources (objects with ``frames`` and
        ``read(start, frames)``, such as `vocalink_lab.audio.io.AudioReader`) are read
        only where a window is measured, so that hour-long takes never sit in memory
        (only the whole-reference search, without a usable seed, decimates the whole
        reference: 115 MB per hour at 4 kHz).
    sr : float
        Their sample rate in Hz.
    seeds_s : sequence of float or None, optional
        The take's clock metadata: each track's start instant in seconds on any common
        clock (e.g. ``started_at`` in server time). Only differences from the
        reference's matter: ``seeds_s[i] - seeds_s[reference]`` is the prior for
        ``offsets_s[i]``. ``None`` entries are tracks without a clock estimate.
    search_s : float
        How far (seconds) from its seed a track's offset may be.
    drift : bool
        Estimate clock drift; False assumes every clock runs at the reference's rate.
    reference : int
        Index of the track that defines the timeline.
    max_drift_ppm : float
        The largest drift to allow for when sizing search windows; a fitted drift
        beyond it is not trusted.
    windows : int
        Analysis windows per track.
    window_s : float
        Length of each coarse analysis window.
    beta : float
        PHAT-beta weighting exponent (see `gcc_phat`).
    min_confidence : float
        Below this, a track's measurement is not trusted.
    highpass_hz : float or None
        Every track is high-passed here first (see `gcc_phat`); None: no filter.
    progress : callable, optional
        Called with the fraction done (0..1) after each track.

    Returns
    -------
    Alignment
        ``offsets_s[i]``: reference time of track ``i``'s first sample;
        ``drift_ppm[i]``: track ``i``'s clock rate against the reference's; sample
        ``n`` of track ``i`` is at ``offsets_s[i] + n / (sr * (1 + drift_ppm[i] * 1e-6))``.

    Raises
    ------
    ParameterError
        With every invalid parameter listed.

    Examples
    --------
    >>> from vocalink_lab.audio.synth import speech_like
    >>> x = speech_like(20.0, 16000, seed=1)
    >>> late = x[8000:]  # started 0.5 s after the reference
    >>> round(align([x, late], 16000).offsets_s[1], 4)
    0.5
    """
    arrays, sources = _validate(tracks, sr, seeds_s, reference,
                       {"search_s": search_s, "max_drift_ppm": max_drift_ppm,
                        "windows": windows, "window_s": window_s})
    errors = []
    if not 0 <= beta <= 1:
        errors.append(f"beta must be in 0..1, not {beta}")
    if not 0 <= min_confidence <= 1:
        errors.append(f"min_confidence must be in 0..1, not {min_confidence}")
    if errors:
        raise ParameterError("; ".join(errors), errors=errors)
    n = len(arrays) + len(sources)
    sr = float(sr)
    rc = float(min(COARSE_RATE, sr))
    p = _Params(sr=sr, rc=rc, beta=beta, windows=int(windows),
                window_c=max(1, round(window_s * rc)), window_f=max(1, round(_FINE_WINDOW_S * sr)),
                drift=drift, max_drift=max_drift_ppm, min_confidence=min_confidence)
    seeds = _relative_seeds(seeds_s, n, reference)
    if seeds_s is not None and seeds_s[reference] is None:
        log.warning("the reference track has no seed: aligning without seeds")

    mono, coarse = _signals(arrays, sources, sr, rc, highpass_hz)
    probe = _Probe(coarse[reference], p)

    offsets, drifts, confs, methods, notes = [], [], [], [], []
    for i in range(n):
        if i == reference:
            offsets.append(0.0)
            drifts.append(0.0)
            confs.append(1.0)
            methods.append("reference")
            notes.append("")
        else:
            o, d, c, m, note = _align_one(mono[reference], mono[i], coarse[reference],
                                          coarse[i], seeds[i], search_s, probe, p)
            offsets.append(o)
            drifts.append(d)
            confs.append(c)
            methods.append(m)
            notes.append(note)
            if m != "xcorr":
                log.warning("track %d: %s", i, note)
        if progress is not None:
            progress((i + 1) / n)
    return Alignment(tuple(offsets), tuple(drifts), tuple(confs), tuple(methods), reference,
                     sr, tuple(notes))


def _signals(
    arrays: list[Audio], sources: list[TrackSource], sr: float, rc: float, hz: float | None,
) -> tuple[list[_Signal], list[_Signal]]:
    """Each track mono and high-passed, at the full and at the coarse rate.

    Arrays are prepared whole; sources are read window by window when a stage asks.
    """
    if sources:
        fine: list[_Signal] = [_LazySignal(s, sr, hz, sr) for s in sources]
        coarse: list[_Signal] = [f if rc == sr else _LazySignal(s, sr, hz, rc)
                                 for f, s in zip(fine, sources, strict=True)]
        return fine, coarse
    mono = [_highpass(_mono(x), sr, hz) for x in arrays]
    return ([_ArraySignal(m) for m in mono],
            [_ArraySignal(m if rc == sr else resample(m, orig_sr=sr, target_sr=rc)
                          .astype(np.float64)) for m in mono])


def _align_one(
    ref_f: _Signal, trk_f: _Signal, ref_c: _Signal, trk_c: _Signal, seed_s: float | None,
    search_s: float, probe: _Probe, p: _Params,
) -> tuple[float, float, float, str, str]:
    """(offset_s, drift_ppm, confidence, method, note) of one track."""
    drift_slack = p.max_drift * 1e-6 * len(trk_c) if p.drift else 0.0
    best: _Fit | None = None
    note = ""
    if seed_s is not None:
        half = math.ceil(search_s * p.rc + drift_slack) + 2
        best = _measure(ref_f, trk_f, ref_c, trk_c, seed_s * p.rc, half, p)
    if best is None or best.confidence < p.min_confidence:
        found = probe.seed(trk_c)
        if found is not None and found[1] >= p.min_confidence / 2:
            half = math.ceil(drift_slack + 0.05 * p.rc) + 2
            fit = _measure(ref_f, trk_f, ref_c, trk_c, found[0], half, p)
            if best is None or fit.confidence > best.confidence:
                best = fit
                if seed_s is not None and fit.confidence >= p.min_confidence:
                    note = (f"the seed was {seed_s - fit.a / p.sr:+.3f} s off: "
                            "found by a search over the whole reference")
    conf = 0.0 if best is None else best.confidence
    if best is not None and conf >= p.min_confidence:
        drift_ppm = (1 / best.b - 1) * 1e6
        if abs(drift_ppm) <= p.max_drift:
            return best.a / p.sr, drift_ppm, conf, "xcorr", note
        conf = 0.0
        note = f"a drift of {drift_ppm:.0f} ppm is beyond max_drift_ppm; "
    else:
        note = ""
    if seed_s is not None:
        return seed_s, 0.0, conf, "seed", note + (
            f"confidence {conf:.2f} < {p.min_confidence}: kept the seed")
    return 0.0, 0.0, conf, "none", note + (
        f"confidence {conf:.2f} < {p.min_confidence} and no seed: offset 0")


def _measure(
    ref_f: _Signal, trk_f: _Signal, ref_c: _Signal, trk_c: _Signal, seed_c: float, half: int,
    p: _Params,
) -> _Fit:
    """Coarse, then fine alignment around ``seed_c`` (coarse samples); full-rate result."""
    fit_c, inliers = _coarse(ref_c, trk_c, seed_c, half, p)
    # A coarse line with an impossible drift (a few windows of a short, periodic take can
    # give any slope) is not refined: reading the track at it is meaningless (below -100 %
    # it is a negative length). It comes back as it is, and `_align_one` rejects it.
    implausible = fit_c.b <= 0 or abs(1 / fit_c.b - 1) * 1e6 > p.max_drift
    if not inliers or fit_c.confidence < p.min_confidence / 2 or implausible:
        return _Fit(fit_c.a * p.sr / p.rc, fit_c.b, fit_c.confidence, fit_c.windows, 0)
    return _fine(ref_f, trk_f, fit_c, inliers, fit_c.windows, p)
