"""Rows of an ipydatagrid `DataGrid` by id: what the browser shows, and its selections.

Both tables (Recordings, Devices) keep their rows' ids in the order they sent them; the
browser may sort or filter its copy, and speaks of selections as rectangles of row
numbers in its own order. These turn one into the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["ids_in_rectangles", "rectangles_of", "shown_ids"]


def shown_ids(grid: Any, ids: Sequence[str]) -> list[str]:
    """The ids in the order the browser shows them (sorted or filtered there), else ours.

    Parameters
    ----------
    grid : ipydatagrid.DataGrid
        The table.
    ids : sequence of str
        Its rows' ids, in the order they were sent.

    Returns
    -------
    list of str
    """
    if not grid._transforms:
        return list(ids)
    visible = list(grid._visible_rows or [])
    if visible and all(0 <= i < len(ids) for i in visible):
        return [ids[i] for i in visible]
    return list(ids)


def rectangles_of(rows: Iterable[int], last_column: int) -> list[dict[str, int]]:
    """Selection rectangles covering these row numbers, one per run of adjacent rows.

    Parameters
    ----------
    rows : iterable of int
        Row numbers in the browser's order.
    last_column : int
        The rectangles span columns 0 to this.

    Returns
    -------
    list of dict
        ``{"r1", "r2", "c1", "c2"}`` each, as `DataGrid.selections` takes them.
    """
    rects: list[dict[str, int]] = []
    for r in sorted(set(rows)):
        if rects and rects[-1]["r2"] == r - 1:
            rects[-1]["r2"] = r
        else:
            rects.append({"r1": r, "r2": r, "c1": 0, "c2": last_column})
    return rects


def ids_in_rectangles(rects: Iterable[Mapping[str, Any]] | None,
                      view: Sequence[str]) -> list[str]:
    """The ids of the rows the rectangles cover, in the browser's order, each once.

    Parameters
    ----------
    rects : iterable of mapping, optional
        Selection rectangles as the browser reports them.
    view : sequence of str
        The ids in the browser's order (`shown_ids`).

    Returns
    -------
    list of str
    """
    chosen: dict[str, None] = {}
    for rect in rects or []:
        low, high = sorted((int(rect.get("r1", 0)), int(rect.get("r2", 0))))
        for r in range(max(0, low), min(high, len(view) - 1) + 1):
            chosen[view[r]] = None
    return list(chosen)
