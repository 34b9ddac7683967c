"""When a recording of the simulated room's click track began, read off its audio.

`ClickSource` plays clicks at every multiple of a period of TRUE time, each a burst of a
sine that starts at phase 0. The first click in a recording therefore says, to a tiny
fraction of a sample, the true time of the recording's first sample: the click's own
phase at a sample gives that sample's distance from the click's true instant. Tests and
benchmarks measure start skew on the audio with it, as a listener would, instead of
trusting any clock.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["CLICK_HZ", "click_start"]

#: The tone of `ClickSource`'s clicks (a burst of it starting at phase 0).
CLICK_HZ = 2000.0
#: Silent samples that must come before a click's first one.
_QUIET_SAMPLES = 8


def click_start(samples: npt.ArrayLike, samples_per_second: float, *, period_s: float,
                near: float, amplitude: float = 0.8, frequency_hz: float = CLICK_HZ) -> float:
    """The true time of a click-track recording's first sample.

    Parameters
    ----------
    samples : array_like
        The recording (mono, or the first channel is used), as floats in [-1, 1].
    samples_per_second : float
        Samples per second of TRUE time: the nominal rate times the device's clock rate
        (its drift), as the simulation knows it.
    period_s : float
        The click period (clicks at every multiple of it, true time).
    near : float
        A guess of the answer within a quarter period (e.g. the device's own report):
        it only picks which click is which.
    amplitude, frequency_hz : float
        The clicks' peak and tone, as the `ClickSource` made them.

    Returns
    -------
    float
        True time of sample 0, in seconds since the epoch.

    Raises
    ------
    ValueError
        No whole click in the recording.
    """
    y = np.asarray(samples, dtype=np.float64)
    if y.ndim > 1:
        y = y[:, 0]
    # A click's first sample is the first sound after a run of digital silence (a click
    # cut by the recording's start is skipped: its phase is unknown).
    sound = np.flatnonzero(y != 0.0)
    quiet = _QUIET_SAMPLES
    onsets = sound[1:][np.diff(sound) > quiet]
    if sound.size and sound[0] >= quiet:
        onsets = np.concatenate([sound[:1], onsets])
    # Within the rising first quarter of the click's sine, the phase at a sample, hence
    # its time since the click's instant, is asin(y / amplitude); take the first sample
    # loud enough for a precise one.
    quarter = int(samples_per_second / (4 * frequency_hz))
    for onset in onsets:
        head = y[onset:onset + quarter]
        loud = np.flatnonzero(head > 0.2 * amplitude)
        if loud.size:
            index = int(onset + loud[0])
            break
    else:
        raise ValueError("no whole click in the recording")
    since = math.asin(min(1.0, y[index] / amplitude)) / (2 * math.pi * frequency_hz)
    sample_at = near + index / samples_per_second  # about when that sample was heard
    click = round((sample_at - since) / period_s) * period_s
    return click + since - index / samples_per_second
