"""The coarse stage: where a track roughly sits, from its seed or from a whole-reference search.

At `COARSE_RATE`, windows spread over a track's expected overlap with the reference
are each searched in the reference within ``search_s`` (plus what drift can add) of
the seeded lag, and a robust line through their lags gives offset and drift to about
a coarse sample (`_coarse`). When there is no usable seed, `_Probe` makes one from
the audio: a few loud chunks of the track are searched over the whole reference (whose
spectrum is computed once) and the answer most of them agree with becomes the seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from .fit import _Fit, _fit_line
from .params import _Params
from .signals import _SILENCE, _loud, _Signal
from .xcorr import _LOBE_S, _fast_len, _gcc

_PROBES = 3  # chunks of a track searched over the whole reference when there is no usable seed
_PROBE_CANDIDATES = 8
_PROBE_S = 20.0
_MIN_OVERLAP_S = 0.25


def _coarse(
    ref: _Signal, trk: _Signal, seed: float, half: int, p: _Params
) -> tuple[_Fit, list[tuple[int, float]]]:
    """Windows of ``trk`` searched in ``ref`` within ``half`` of the seeded lag (coarse rate).

    Returns the fitted line (coarse samples) and the inlier windows as
    ``(start, confidence)``.
    """
    win = min(p.window_c, len(trk))
    lo = max(0, math.floor(-seed))
    hi = min(len(trk), math.ceil(len(ref) - seed))
    if hi - lo < win:  # a short predicted overlap: one window over what there is
        lo, hi = (lo, hi) if hi - lo >= _MIN_OVERLAP_S * p.rc else (0, len(trk))
        win = min(win, hi - lo)
    count = p.windows if hi - lo > win else 1
    starts = np.unique(np.round(np.linspace(lo, hi - win, count)).astype(int))
    lobe = math.ceil(_LOBE_S * p.rc) + math.ceil(p.max_drift * 1e-6 * win)
    xs, ys, cs, used = [], [], [], []
    for s in starts:
        chunk = trk.slice(int(s), int(s) + win)
        r0 = math.floor(s + seed) - half
        seg = ref.segment(r0, win + 2 * half)
        if not (_loud(chunk) and _loud(seg)):
            continue
        peak = _gcc(seg, chunk, 0, 2 * half, beta=p.beta, lobe=lobe, refine=False)
        xs.append(s + (win - 1) / 2)
        ys.append(r0 + peak.lag + (win - 1) / 2)
        cs.append(peak.confidence)
        used.append(int(s))
    if not xs:
        return _Fit(seed, 1.0, 0.0, 0, 0), []
    x, y, c = np.array(xs), np.array(ys), np.array(cs)
    a, b, inl = _fit_line(x, y, c, slope=p.drift, tol=(1.5, 4.0))
    fit = _Fit(a, b, float(c[inl].sum() / len(c)), len(c), int(inl.sum()))
    return fit, [(used[k], float(c[k])) for k in np.flatnonzero(inl)]


class _Probe:
    """Searches chunks of a track over the whole reference (coarse rate): a seed from audio."""

    def __init__(self, ref: _Signal, p: _Params) -> None:
        self.signal = ref
        self._ref: npt.NDArray[np.floating[Any]] | None = None  # prepared on first use
        self.p = p
        self.length = max(1, round(_PROBE_S * p.rc))
        self._spectra: dict[int, npt.NDArray[np.complex128]] = {}

    def seed(self, trk: _Signal) -> tuple[float, float] | None:
        """(offset in coarse samples, confidence) or None when the track holds no sound."""
        win = min(self.length, len(trk))
        if win < 1 or len(self.signal) < 1:
            return None
        candidates = np.unique(np.linspace(0, len(trk) - win, _PROBE_CANDIDATES).round()
                               .astype(int))
        chunks = {int(s): trk.slice(int(s), int(s) + win) for s in candidates}
        energy = np.array([float(np.mean(np.square(chunks[int(s)]))) for s in candidates])
        order = [int(candidates[k]) for k in np.argsort(-energy) if energy[k] > _SILENCE]
        if not order:
            return None  # a silent track: no need to prepare the whole reference
        if self._ref is None:
            self._ref = self.signal.whole()
        ref = self._ref
        n = _fast_len(len(ref) + win - 1)
        if n not in self._spectra:
            self._spectra[n] = np.fft.rfft(ref, n)
        fa = self._spectra[n]
        found = []
        lobe = math.ceil(_LOBE_S * self.p.rc) + math.ceil(self.p.max_drift * 1e-6 * win)
        for s in order[:_PROBES]:
            chunk = chunks[s]
            peak = _gcc(ref, chunk, -(win // 2), len(ref) - win // 2,
                        beta=self.p.beta, refine=False, fa=fa, n=n, lobe=lobe)
            found.append((peak.lag - s, peak.confidence))
        if not found:
            return None
        # the candidate that most others agree with (within what drift can explain)
        tol = self.p.max_drift * 1e-6 * len(trk) + 2
        offsets = np.array([f[0] for f in found])
        confs = np.array([f[1] for f in found])
        support = [float(confs[np.abs(offsets - o) <= tol].sum()) for o in offsets]
        best = int(np.argmax(support))
        members = np.abs(offsets - offsets[best]) <= tol
        offset = float(np.median(offsets[members]))
        return offset, support[best] / max(len(found), 1)
