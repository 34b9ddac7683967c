"""What a take's recordings say about how well its devices started together."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["SKEW_FLAG_MS", "skew_report"]

#: A take whose start skew may exceed this (its bound) is flagged: sample-accurate use of
#: its tracks wants `align` first. Half a millisecond is 24 samples at 48 kHz, about what
#: 17 cm of air adds; below it a take reads as started together.
SKEW_FLAG_MS = 0.5


def _uncertainty_s(recording: Mapping[str, Any]) -> float | None:
    """How far a recording's start in server time may be off (``None``: unknown)."""
    params = recording.get("params")
    clock = params.get("clock") if isinstance(params, Mapping) else None
    value = clock.get("start_uncertainty_s") if isinstance(clock, Mapping) else None
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def skew_report(started_at: float | None,
                recordings: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The start skew of a take's original recordings, and how far it may be off.

    Each recording's ``started_at`` is its first sample in server time (the device's
    report converted with its clock estimate at ingest), and its
    ``params["clock"]["start_uncertainty_s"]`` how far that may be from the truth.

    Parameters
    ----------
    started_at : float or None
        The take's scheduled (or issued) start, server time.
    recordings : iterable of mapping
        Catalog rows (``to_dict`` form) of the take.

    Returns
    -------
    dict
        ``skew_ms``: latest minus earliest start (``None`` with fewer than two devices).
        ``bound_ms``: what the true skew is at most, every start moved by its
        uncertainty the worst way; ``None`` when a device's clock was not measured (its
        start is in its own clock) or with fewer than two devices.
        ``flagged``: two devices or more and a bound over `SKEW_FLAG_MS`, or unknown;
        ``flag``: why, in a sentence (``None`` when not flagged).
        ``start_offset_ms`` and ``uncertainty_ms``: per device, the start from the take's
        start and its uncertainty.
    """
    starts: dict[str, float] = {}
    uncertain: dict[str, float | None] = {}
    for r in recordings:
        if r.get("kind") == "original" and r.get("started_at") is not None:
            device = r["device_id"] or r["id"]
            starts[device] = float(r["started_at"])
            uncertain[device] = _uncertainty_s(r)
    per_device = {
        device: None if started_at is None else round((t - started_at) * 1000, 3)
        for device, t in sorted(starts.items())
    }
    skew = bound = None
    flag = None
    if len(starts) > 1:
        skew = (max(starts.values()) - min(starts.values())) * 1000
        unknown = sorted(d for d, u in uncertain.items() if u is None)
        if unknown:
            flag = (f"start skew unknown: the clock of {', '.join(unknown[:3])}"
                    f"{' and others' if len(unknown) > 3 else ''} was not measured")
        else:
            late = max(t + (uncertain[d] or 0.0) for d, t in starts.items())
            early = min(t - (uncertain[d] or 0.0) for d, t in starts.items())
            bound = (late - early) * 1000
            if bound > SKEW_FLAG_MS:
                flag = (f"start skew may be up to {bound:.2f} ms (measured {skew:.2f} ms), "
                        f"over {SKEW_FLAG_MS} ms: align the take before using it "
                        "sample-accurately")
    return {"skew_ms": None if skew is None else round(skew, 3),
            "bound_ms": None if bound is None else round(bound, 3),
            "flagged": flag is not None, "flag": flag,
            "devices": len(starts), "start_offset_ms": per_device,
            "uncertainty_ms": {d: None if u is None else round(u * 1000, 3)
                               for d, u in sorted(uncertain.items())}}
