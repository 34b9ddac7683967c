"""Start-up check of the catalog against the files: report, never delete."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog
from .files import RecordingStore

__all__ = ["IntegrityReport", "check_integrity"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IntegrityReport:
    """What does not match between the catalog and the data dir.

    Attributes
    ----------
    missing_files : list of dict
        Catalog rows whose file is gone (``id`` and ``path``).
    orphan_files : list of str
        Files under ``recordings/`` or ``derived/`` that no row points to (e.g. a
        crash between the rename and the catalog insert).
    partial_uploads : list of str
        Files in ``uploads/``: uploads that were interrupted or are in progress.
    """

    missing_files: list[dict[str, str]] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    partial_uploads: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Whether every row has its file and every file its row."""
        return not self.missing_files and not self.orphan_files

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "clean": self.clean,
            "missing_files": self.missing_files,
            "orphan_files": self.orphan_files,
            "partial_uploads": self.partial_uploads,
        }


async def check_integrity(catalog: Catalog, store: RecordingStore) -> IntegrityReport:
    """Compare the catalog with the files on disk and log what does not match.

    Nothing is deleted or changed: a researcher decides what to do with an
    orphan file or a missing one.
    """
    catalogued = await catalog.all_paths()
    on_disk = set(await asyncio.to_thread(store.stored_files))
    partial = await asyncio.to_thread(store.partial_uploads)
    report = IntegrityReport(
        missing_files=[{"id": rid, "path": path} for path, rid in sorted(catalogued.items())
                       if path not in on_disk],
        orphan_files=sorted(on_disk - set(catalogued)),
        partial_uploads=partial,
    )
    for item in report.missing_files:
        log.warning("catalog row %s points to a missing file %s", item["id"], item["path"])
    for path in report.orphan_files:
        log.warning("file %s is in the data dir but not in the catalog (kept)", path)
    if partial:
        log.info("%d partial upload(s) kept in uploads/", len(partial))
    return report
