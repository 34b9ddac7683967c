"""What a take's recordings say about how well its devices started together."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["skew_report"]


def skew_report(started_at: float | None,
                recordings: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The start skew of a take's original recordings, from their start instants.

    Each recording's ``started_at`` is its first sample in server time (the device's
    report corrected by its clock estimate at ingest).

    Parameters
    ----------
    started_at : float or None
        The take's scheduled (or issued) start, server time.
    recordings : iterable of mapping
        Catalog rows (``to_dict`` form) of the take.

    Returns
    -------
    dict
        ``skew_ms`` (latest minus earliest start; ``None`` with fewer than two devices)
        and, per device, ``start_offset_ms`` from the take's start.
    """
    starts = {r["device_id"] or r["id"]: float(r["started_at"]) for r in recordings
              if r.get("kind") == "original" and r.get("started_at") is not None}
    per_device = {
        device: None if started_at is None else round((t - started_at) * 1000, 3)
        for device, t in sorted(starts.items())
    }
    skew = (max(starts.values()) - min(starts.values())) * 1000 if len(starts) > 1 else None
    return {"skew_ms": None if skew is None else round(skew, 3), "devices": len(starts),
            "start_offset_ms": per_device}
