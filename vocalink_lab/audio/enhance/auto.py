"""The auto mode's rule: what to do with a channel, given its estimated SNR.

Its thresholds are constants here; ``benchmarks/enhance.py`` measures what it gains.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "AUTO_BLEND_SNR_DB",
    "AUTO_CLEAN_SNR_DB",
    "AUTO_FULL_SNR_DB",
    "AUTO_HIGH_SNR_DB",
    "AUTO_LOW_SNR_DB",
    "AUTO_MAX_PROP",
    "AUTO_MAX_STD",
    "AUTO_MIN_PROP",
    "AUTO_MIN_STD",
    "AUTO_RUMBLE_SHARE",
    "AUTO_TIME_SMOOTH_MS",
]

#: A channel whose estimated SNR reaches this is left alone by the auto mode.
AUTO_CLEAN_SNR_DB = 40.0
#: Under these estimated SNRs (dB), the auto mode averages in the non-stationary gate.
AUTO_BLEND_SNR_DB = (3.0, 6.0)
#: Up to this estimated SNR the auto mode's ``prop_decrease`` is `AUTO_MAX_PROP`; from
#: here to `AUTO_CLEAN_SNR_DB` it falls to `AUTO_MIN_PROP`. (1.0 gains SI-SDR at very low
#: SNR, but loses STOI: 0.9 keeps both above noisereduce's defaults.)
AUTO_FULL_SNR_DB = 20.0
AUTO_MAX_PROP, AUTO_MIN_PROP = 0.9, 0.5
#: The auto mode smooths the mask in time (not across frequency) over 100 ms at
#: `AUTO_LOW_SNR_DB` or less (fewer "musical noise" artefacts: better STOI), down to
#: 32 ms at `AUTO_FULL_SNR_DB` or more (onsets less smeared: better SI-SDR).
AUTO_TIME_SMOOTH_MS = (100.0, 32.0)
#: The stationary threshold (standard deviations above the noise's mean level): 2.5
#: at `AUTO_LOW_SNR_DB` or less, 1.0 at `AUTO_HIGH_SNR_DB` or more, linear between.
AUTO_LOW_SNR_DB, AUTO_HIGH_SNR_DB = 5.0, 30.0
AUTO_MAX_STD, AUTO_MIN_STD = 2.5, 1.0
#: A share of the power below 50 Hz above this is reported as rumble (with a hint).
AUTO_RUMBLE_SHARE = 0.10


def _auto_blend(snr_db: float) -> float:
    """Weight of the non-stationary gate in the auto mode: 0.5 up to 3 dB, 0 from 6 dB.

    Measured (``benchmarks/enhance.py``): at -5 dB pink noise the stationary gate
    alone fell 0.6 dB of SI-SDR short of noisereduce's defaults on one clip in three;
    the average of both gates beat them on every clip, and at 5 dB and above the
    stationary gate alone is best.
    """
    low, high = AUTO_BLEND_SNR_DB
    return 0.5 * float(np.clip((high - snr_db) / (high - low), 0.0, 1.0))


def _auto_gate(snr_db: float) -> tuple[float, float, float]:
    """The auto mode's gate settings for an estimated SNR (see the ``AUTO_*`` constants).

    Returns ``(prop_decrease, n_std_thresh_stationary, time_mask_smooth_ms)``.
    """

    def ramp(low: float, high: float) -> float:
        return float(np.clip((snr_db - low) / (high - low), 0.0, 1.0))

    prop = AUTO_MAX_PROP - ramp(AUTO_FULL_SNR_DB, AUTO_CLEAN_SNR_DB) * (
        AUTO_MAX_PROP - AUTO_MIN_PROP)
    n_std = AUTO_MAX_STD - ramp(AUTO_LOW_SNR_DB, AUTO_HIGH_SNR_DB) * (AUTO_MAX_STD
                                                                      - AUTO_MIN_STD)
    slow, fast = AUTO_TIME_SMOOTH_MS
    smooth = slow - ramp(AUTO_LOW_SNR_DB, AUTO_FULL_SNR_DB) * (slow - fast)
    return round(prop, 3), round(n_std, 3), round(smooth, 1)
