"""The result of aligning a take: `Alignment`, each track's offset, drift and confidence.

An `Alignment` says where each track sits on the reference track's timeline (see the
package's conventions) and how each value was obtained: measured on the audio, kept
from the clock metadata, or neither. `Alignment.from_seeds` builds one from clock
metadata alone; `_relative_seeds` turns start instants on any common clock into
offsets from the reference's, as `align` uses them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import ParameterError
from .signals import Array


@dataclass(frozen=True, slots=True)
class Alignment:
    """Where each track of a take sits on the reference track's timeline.

    Track ``i``'s sample ``n`` is at reference time
    ``offsets_s[i] + n / (sr * (1 + drift_ppm[i] * 1e-6))`` seconds.

    Attributes
    ----------
    offsets_s : tuple of float
        Reference time of each track's first sample (0 for the reference).
    drift_ppm : tuple of float
        How fast each track's clock runs against the reference's (positive: faster,
        more samples per reference second).
    confidence : tuple of float
        0..1 per track (1 for the reference): the mean over the analysis windows that
        hold sound of each window's `Lag.confidence`, a window whose lag disagrees with
        the fitted offset and drift counting 0.
    method : tuple of str
        How each value was obtained: ``"reference"``, ``"xcorr"`` (measured on the audio),
        ``"seed"`` (the audio gave no confident answer: the seed was kept, drift 0) or
        ``"none"`` (neither audio nor seed: offset 0, drift 0).
    reference : int
        Index of the reference track.
    sr : float
        Sample rate the tracks were aligned at.
    notes : tuple of str
        Per track, what happened when it is worth saying ("" otherwise).
    """

    offsets_s: tuple[float, ...]
    drift_ppm: tuple[float, ...]
    confidence: tuple[float, ...]
    method: tuple[str, ...]
    reference: int
    sr: float
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.offsets_s)
        if not self.notes:
            object.__setattr__(self, "notes", ("",) * n)
        lengths = {len(self.drift_ppm), len(self.confidence), len(self.method), len(self.notes)}
        if lengths != {n}:
            raise ParameterError("an Alignment needs one offset, drift, confidence, method "
                                 "and note per track")
        if not 0 <= self.reference < max(n, 1):
            raise ParameterError(f"reference {self.reference} is not one of {n} tracks")

    def __len__(self) -> int:
        return len(self.offsets_s)

    @classmethod
    def from_seeds(
        cls, seeds_s: Sequence[float | None] | None, n: int, *, sr: float, reference: int = 0
    ) -> Alignment:
        """An alignment taken from clock metadata alone (no drift).

        Parameters
        ----------
        seeds_s : sequence of float or None, optional
            Start instants (e.g. ``started_at`` in server time); only their differences
            from the reference's matter. A missing one (or all) means offset 0.
        n : int
            Number of tracks.
        sr : float
            Sample rate.
        reference : int
            Index of the reference track.
        """
        seeds = _relative_seeds(seeds_s, n, reference)
        offsets = tuple(0.0 if s is None else s for s in seeds)
        methods = tuple("reference" if i == reference else "none" if s is None else "seed"
                        for i, s in enumerate(seeds))
        confidence = tuple(1.0 if i == reference else 0.0 for i in range(n))
        return cls(offsets, (0.0,) * n, confidence, methods, reference, sr)

    def to_reference(self, track: int, samples: npt.ArrayLike) -> Array:
        """Reference time (seconds) of sample indices ``samples`` of track ``track``."""
        rate = self.sr * (1 + self.drift_ppm[track] * 1e-6)
        return np.asarray(self.offsets_s[track] + np.asarray(samples, dtype=np.float64) / rate)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the attributes, tuples as lists."""
        return {
            "offsets_s": list(self.offsets_s),
            "drift_ppm": list(self.drift_ppm),
            "confidence": list(self.confidence),
            "method": list(self.method),
            "notes": list(self.notes),
            "reference": self.reference,
            "sr": self.sr,
        }


def _relative_seeds(
    seeds_s: Sequence[float | None] | None, n: int, reference: int
) -> list[float | None]:
    if seeds_s is None:
        return [None] * n
    ref = seeds_s[reference]
    if ref is None:
        return [None] * n
    return [None if s is None else float(s) - float(ref) for s in seeds_s]
