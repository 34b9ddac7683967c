"""Storage: the SQLite catalog and the recording files under the data dir."""

from __future__ import annotations

from .catalog import KINDS, Catalog, Page, Recording
from .files import NO_TAKE, RecordingStore, Spool, hash_file
from .integrity import IntegrityReport, check_integrity
from .resumable import UPLOAD_ID_PATTERN, PartialUpload, ResumableStore
from .transcripts import TRANSCRIPT_KINDS, TranscriptStore

__all__ = [
    "UPLOAD_ID_PATTERN",
    "PartialUpload",
    "ResumableStore",
    "KINDS",
    "NO_TAKE",
    "Catalog",
    "IntegrityReport",
    "Page",
    "Recording",
    "RecordingStore",
    "TRANSCRIPT_KINDS",
    "TranscriptStore",
    "Spool",
    "check_integrity",
    "hash_file",
]
