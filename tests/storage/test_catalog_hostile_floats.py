"""Issue 12 in the catalog: no value that JSON cannot hold is stored, and rows that hold one
(written by older code) read back with ``null`` in its place.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from tests.storage.test_catalog import rec
from vocalink_lab.errors import InvalidParameter
from vocalink_lab.storage import Catalog

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(("fields", "named"), [
    ({"started_at": math.nan}, ["started_at"]),
    ({"started_at": math.inf}, ["started_at"]),
    ({"started_at": 1e306}, ["started_at"]),
    ({"started_at": -1.0}, ["started_at"]),
    ({"duration_s": math.inf}, ["duration_s"]),
    ({"created_at": math.nan}, ["created_at"]),
    ({"params": {"clock": {"offset_s": math.inf}}}, ["params"]),
    ({"params": {"gains": [1.0, math.nan]}}, ["params"]),
    ({"started_at": -math.inf, "duration_s": math.nan, "params": {"x": math.inf}},
     ["started_at", "duration_s", "params"]),
])
async def test_add_refuses_what_json_cannot_hold_and_stores_nothing(
    tmp_path: Path, fields: dict[str, object], named: list[str]
) -> None:
    async with Catalog(tmp_path / "v.db") as catalog:
        with pytest.raises(InvalidParameter) as info:
            await catalog.add(rec(1, **fields))
        assert len(info.value.errors) == len(named), info.value.errors
        for problem, name in zip(info.value.errors, named, strict=True):
            assert problem.startswith(f"recording 'rec-001': {name}"), problem
        assert await catalog.count() == 0
        assert await catalog.add(rec(1, started_at=1_700_000_000.0)) is not None


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_takes_refuse_instants_json_cannot_hold(tmp_path: Path, value: float) -> None:
    async with Catalog(tmp_path / "v.db") as catalog:
        with pytest.raises(InvalidParameter, match="started_at"):
            await catalog.take_started("take-a", value, [])
        await catalog.take_started("take-a", 1_700_000_000.0, [])
        with pytest.raises(InvalidParameter, match="stopped_at"):
            await catalog.take_stopped("take-a", value)
        assert (await catalog.take("take-a"))["stopped_at"] is None


async def test_rows_written_by_older_code_read_back_as_null(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with Catalog(path) as catalog:
        await catalog.add(rec(1, started_at=1_700_000_000.0, take_id="take-a"))
        await catalog.add(rec(2, started_at=1_700_000_000.0, take_id="take-a"))
        await catalog.take_started("take-a", 1_700_000_000.0, ["mic-1"])
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE recordings SET started_at = ?, duration_s = ?, params = ? "
                   "WHERE id = 'rec-001'",
                   (math.inf, -math.inf, json.dumps({"a": math.nan, "b": [math.inf]})))
        db.execute("UPDATE recordings SET started_at = 1e306 WHERE id = 'rec-002'")
        db.execute("UPDATE takes SET started_at = ?, stopped_at = ?", (-math.inf, math.inf))
    db.close()
    async with Catalog(path) as catalog:
        first = await catalog.get("rec-001")
        assert first.started_at is None and dict(first.params) == {"a": None, "b": [None]}
        row = first.to_dict()
        assert row["duration_s"] is None and row["started_at"] is None
        assert (await catalog.get("rec-002")).started_at is None
        page = await catalog.query()
        json.dumps(page.to_dict(), allow_nan=False)
        take = await catalog.take("take-a")
        assert take["started_at"] is None and take["stopped_at"] is None
        assert take["duration_s"] is None
        json.dumps(take, allow_nan=False)
        items, _ = await catalog.takes()
        json.dumps(items, allow_nan=False)
