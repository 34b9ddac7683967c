"""The fine stage: sub-sample lags at the full rate around the coarse line, and the final fit.

Inside each coarse window that agreed with the coarse line, the loudest short window
of the track is read at the coarse drift (resampled, so that the drift does not smear
its correlation peak) and placed on the reference within a few samples of the coarse
line by `_fine_lag`, which also says how precise each placement is; the robust line
through these lags, weighted by precision, is the track's offset and drift.
"""

from __future__ import annotations

import math

import numpy as np

from ..io import resample
from .fit import _Fit, _fit_line
from .gcc import _fine_lag
from .params import _Params
from .signals import Array, _Signal

_MAX_STD = 1.0  # samples: a fine window less precise than this measures nothing


def _fine(
    ref: _Signal, trk: _Signal, coarse: _Fit, inliers: list[tuple[int, float]], windows: int,
    p: _Params,
) -> _Fit:
    """Full-rate GCC on short windows around the coarse line; the final robust line fit."""
    scale = p.sr / p.rc
    a0, b0 = coarse.a * scale, coarse.b  # the coarse line in full-rate samples
    drift0 = 1 / b0 - 1
    win = min(p.window_f, len(trk))
    guard = math.ceil(3 * scale) + 8
    margin = math.ceil(0.02 * p.sr)
    warp = abs(drift0) * win > 0.05
    xs, ys, cs, ws = [], [], [], []
    for start_c, conf in inliers:
        # the loudest fine window inside the coarse window
        span_lo = round(start_c * scale)
        span_hi = min(len(trk), round((start_c + p.window_c) * scale))
        hi = max(span_lo, span_hi - win)
        span = trk.slice(span_lo, hi + win)  # read once: the candidates and the window
        s = _loudest(span, span_lo, hi, win)
        if warp:
            # read the track at the estimated drift: sample j of w is track sample s + j(1+d)
            raw = trk.segment(s - margin, math.ceil((win + 2 * margin) * (1 + drift0)) + 2)
            w: Array = resample(raw, orig_sr=p.sr * (1 + drift0),
                                target_sr=p.sr)[margin:margin + win]
            first = s + margin * drift0  # the track position of w[0]
        else:
            w = span[s - span_lo:s - span_lo + win]
            first = s
        track_pos = first + (len(w) - 1) / 2 * (1 + drift0 if warp else 1.0)
        found = _fine_lag(ref, w, a0 + b0 * first, guard, p.sr)
        if found is None or found[1] > _MAX_STD:
            continue
        xs.append(track_pos)
        ys.append(found[0] + (len(w) - 1) / 2)
        cs.append(conf)
        ws.append(1 / max(found[1], 0.01) ** 2)
    if not xs:
        return _Fit(a0, b0, 0.0, windows, 0)
    x, y, c = np.array(xs), np.array(ys), np.array(cs)
    a, b, inl = _fit_line(x, y, np.array(ws), slope=p.drift,
                          tol=(2.0, max(2.0, 5e-4 * p.sr)))
    return _Fit(a, b, float(c[inl].sum() / max(windows, 1)), windows, int(inl.sum()))


def _loudest(span: Array, lo: int, hi: int, win: int) -> int:
    """Start in ``lo..hi`` of the ``win``-long stretch with the most energy.

    ``span`` holds the signal from ``lo`` to ``hi + win``.
    """
    if hi <= lo:
        return lo
    starts = np.unique(np.linspace(lo, hi, 9).round().astype(int))
    energy = [float(np.sum(np.square(span[s - lo:s - lo + win]))) for s in starts]
    return int(starts[int(np.argmax(energy))])
