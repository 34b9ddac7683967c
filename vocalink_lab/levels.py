"""Levels in dBFS: one conversion for the agent's meters, the audio lab and the panels.

Standard library only, so that every layer (the agent's base install included) can use it.
"""

from __future__ import annotations

import math

__all__ = ["FLOOR_DBFS", "amplitude_dbfs", "power_dbfs"]

#: What digital silence reads: a finite floor keeps JSON, plots and averages well defined.
FLOOR_DBFS = -120.0


def amplitude_dbfs(amplitude: float, *, floor_dbfs: float = FLOOR_DBFS) -> float:
    """An amplitude (an RMS or a peak, 1.0 is full scale) in dBFS.

    Parameters
    ----------
    amplitude : float
        Linear amplitude, ``>= 0``.
    floor_dbfs : float
        Returned for silence and anything quieter.

    Returns
    -------
    float
        ``20 log10(amplitude)``, never below ``floor_dbfs``.
    """
    if not amplitude > 10 ** (floor_dbfs / 20):  # also catches NaN
        return floor_dbfs
    return 20.0 * math.log10(amplitude)


def power_dbfs(power: float, *, floor_dbfs: float = FLOOR_DBFS) -> float:
    """A mean square (power, 1.0 is full scale) in dBFS: ``10 log10(power)``, floored.

    Parameters
    ----------
    power : float
        Mean of the squared samples, ``>= 0``.
    floor_dbfs : float
        Returned for silence and anything quieter.

    Returns
    -------
    float
    """
    if not power > 10 ** (floor_dbfs / 10):
        return floor_dbfs
    return 10.0 * math.log10(power)
