"""The robust line fit: a track's offset and drift from the lags of its windows.

Each stage measures, per analysis window, where the window's centre falls on the
reference; a track's offset and drift are the intercept and slope of the line
through these points. `_fit_line` fits it robustly (Theil-Sen, the points too far
from that line dropped, then weighted least squares on the rest), and `_Fit` is the
line a stage returns, with the confidence and the count of windows behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .signals import Array


@dataclass(frozen=True, slots=True)
class _Fit:
    a: float  # reference position (samples) of the track's sample 0
    b: float  # reference samples per track sample: 1 / (1 + drift)
    confidence: float
    windows: int  # windows that held sound
    inliers: int


def _fit_line(
    x: Array, y: Array, w: Array, *, slope: bool, tol: tuple[float, float]
) -> tuple[float, float, npt.NDArray[np.bool_]]:
    """Robust line ``y = a + b x``: Theil-Sen, outliers dropped, weighted least squares.

    Theil-Sen (the median of pairwise slopes) ignores up to 29% of wild points, such
    as windows where an echo or a pause won the correlation; the least-squares refit on
    the points within ``clip(4 * 1.4826 * MAD, *tol)`` of that line then uses the
    precision of the good ones. ``slope=False`` fixes ``b = 1`` (no drift).
    """
    b = 1.0
    if slope and len(x) >= 3 and np.ptp(x) > 0:
        i, j = np.triu_indices(len(x), 1)
        dx = x[j] - x[i]
        ok = dx != 0
        b = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    a = float(np.median(y - b * x))
    res = y - (a + b * x)
    mad = float(np.median(np.abs(res)))
    thr = float(np.clip(4 * 1.4826 * mad, *tol))
    inl = np.abs(res) <= thr
    for _ in range(2):
        xi, yi, wi = x[inl], y[inl], w[inl] + 1e-6
        if slope and inl.sum() >= 3 and np.ptp(xi) > 0:
            mx = float(np.average(xi, weights=wi))
            my = float(np.average(yi, weights=wi))
            b = float(np.sum(wi * (xi - mx) * (yi - my)) / np.sum(wi * (xi - mx) ** 2))
            a = my - b * mx
        elif inl.any():
            a = float(np.average(yi - b * xi, weights=wi))
        inl = np.abs(y - (a + b * x)) <= thr
    return a, b, inl
