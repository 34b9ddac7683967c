"""The settings of one `align` run, shared by its coarse and fine stages.

`align` checks its arguments, then hands the stages one `_Params`: the full and the
coarse sample rates (the coarse search runs on signals decimated to `COARSE_RATE`),
the window counts and lengths in each stage's samples, the weighting exponent, whether
to fit drift and how much of it to allow for, and the confidence below which a
measurement is not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Rate (Hz) of the decimated signals of the coarse search.
COARSE_RATE = 4000
_FINE_WINDOW_S = 2.0  # fine windows, at the full rate


@dataclass(frozen=True, slots=True)
class _Params:
    sr: float
    rc: float  # coarse rate
    beta: float
    windows: int
    window_c: int  # coarse window, coarse samples
    window_f: int  # fine window, full-rate samples
    drift: bool
    max_drift: float  # ppm
    min_confidence: float
