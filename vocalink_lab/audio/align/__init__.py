"""Align the recordings of one take: where each starts, and how fast its clock runs.

Several devices record the same take. Their start instants are known from clock sync
(``started_at``, typically within a millisecond) but may be missing or wrong, and every
device's sample clock drifts (phones: up to about 280 ppm against each other, typically
10-100 ppm). `align` measures both from the audio itself.

Conventions
-----------
All tracks are at one sample rate ``sr``. Track ``reference`` defines the timeline:
its sample ``m`` is at time ``m / sr``. For every track ``i``, sample ``n`` of track
``i`` is at reference time::

    t = offsets_s[i] + n / (sr * (1 + drift_ppm[i] * 1e-6))

so ``offsets_s[i]`` is where track ``i``'s first sample falls on the reference timeline
(positive: track ``i`` started later than the reference), and ``drift_ppm[i] > 0``
means track ``i``'s clock runs fast: it records ``sr * (1 + drift_ppm[i] * 1e-6)``
samples per reference second. Resampling track ``i`` from that rate to ``sr`` and
delaying it by ``offsets_s[i]`` puts it on the reference timeline; that is what
`vocalink_lab.audio.merge` does.

`gcc_phat` follows the same direction: ``gcc_phat(a, b, sr).lag_s == d`` when
``a[n] ≈ g * b[n - d * sr]`` (``a`` is ``b`` delayed by ``d``), so a track's offset
is ``gcc_phat(reference, track, sr).lag_s``.

Internally everything is in samples (float, for sub-sample precision); seconds appear
only at the edges.

Modules
-------
The cross-correlation core: `xcorr` (the PHAT-beta weighted correlation peak, with
sub-sample interpolation), `gcc` (`gcc_phat`, `Lag`, and the coherence-weighted
sub-sample lag), on signals prepared by `signals` (mono, high-pass, segments).
Alignment of a take: `take` (`align`), through `coarse` (seeds and the coarse search)
and `fine` (sub-sample lags at the full rate), each ending in `fit` (the robust line
through the windows' lags: offset and drift); `params` holds the settings they share
and `result` the `Alignment` they return. None imports scipy before it runs.
"""

from __future__ import annotations

from .gcc import Lag, gcc_phat
from .params import COARSE_RATE
from .result import Alignment
from .signals import TrackSource as TrackSource  # the type of lazily read tracks
from .take import align

__all__ = ["COARSE_RATE", "Alignment", "Lag", "align", "gcc_phat"]
