"""Transcript artifacts: one JSON file per transcribed recording or take, under the data dir.

The catalog's ``transcripts`` table says which subjects have one (language, model,
segments...); the artifact holds the segments and words (`Transcript.to_dict`). It
lives at ``transcripts/<kind>/<id>.json``: a fixed name, so that it is replaced, never
duplicated, when the subject is transcribed again, and found without a lookup when the
subject is deleted. The artifact is written atomically before its row, so a row never
names a file that is not whole; a crash in between leaves a file that the next
transcription replaces.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import durable
from ..errors import StorageError, TranscriptNotFound
from .catalog import Catalog

__all__ = ["TRANSCRIPT_KINDS", "TranscriptStore"]

TRANSCRIPT_KINDS = ("recording", "take")


class TranscriptStore:
    """Stores and reads transcripts: the artifact on disk and its row in the catalog.

    Parameters
    ----------
    catalog : Catalog
        Holds the ``transcripts`` rows.
    data_dir : Path or str
        The data dir; artifacts go to its ``transcripts/`` folder.
    """

    def __init__(self, catalog: Catalog, data_dir: Path | str) -> None:
        self.catalog = catalog
        self.root = Path(data_dir).resolve()

    def relative(self, kind: str, subject_id: str) -> str:
        """Where the artifact of a subject lives, relative to the data dir."""
        if kind not in TRANSCRIPT_KINDS:
            raise ValueError(f"kind must be one of {TRANSCRIPT_KINDS}, not {kind!r}")
        path = (self.root / "transcripts" / kind / f"{subject_id}.json").resolve()
        if not path.is_relative_to(self.root / "transcripts" / kind):
            raise StorageError(f"'{subject_id}' is not a valid {kind} id")
        return path.relative_to(self.root).as_posix()

    async def put(self, kind: str, subject_id: str,
                  transcript: Mapping[str, Any]) -> dict[str, Any]:
        """Store a transcript (`Transcript.to_dict` form); its catalog summary.

        Raises
        ------
        RecordingNotFound, TakeNotFound
            The subject was deleted meanwhile: the artifact is removed again.
        InsufficientStorage
            The disk is full; nothing is stored.
        """
        relative = self.relative(kind, subject_id)
        path = self.root / relative

        def write() -> None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if durable.is_disk_full(exc):
                    raise durable.insufficient_storage(exc, "the transcript") from exc
                raise
            durable.write_json_atomic(path, dict(transcript))  # a full disk: 507 as well

        await asyncio.to_thread(write)
        segments = transcript.get("segments") or []
        try:
            return await self.catalog.put_transcript(
                kind, subject_id, path=relative, language=str(transcript.get("language") or ""),
                model=str(transcript.get("model") or ""),
                enhanced=bool(transcript.get("enhanced")), segments=len(segments),
                duration_s=float(transcript.get("duration_s") or 0.0))
        except Exception:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise

    async def get(self, kind: str, subject_id: str) -> dict[str, Any]:
        """The stored transcript (`Transcript.to_dict` form).

        Raises
        ------
        TranscriptNotFound
            The subject has no transcript (404); whether the subject exists is the
            caller's to check first.
        """
        row = await self.catalog.transcript_row(kind, subject_id)
        if row is None:
            raise TranscriptNotFound(f"{kind} '{subject_id}' has no transcript yet: "
                                     f"transcribe it first")
        path = self.root / self.relative(kind, subject_id)

        def read() -> dict[str, Any] | None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                return None
            return data if isinstance(data, dict) else None

        data = await asyncio.to_thread(read)
        if data is None:
            raise TranscriptNotFound(f"the transcript of {kind} '{subject_id}' is catalogued "
                                     "but its file is missing or unreadable: transcribe it "
                                     "again")
        return data

    def remove_file(self, kind: str, subject_id: str) -> None:
        """Delete a subject's artifact, if any (blocking: call it in a thread).

        The row goes with its subject (`Catalog.delete`, `Catalog.delete_take`).
        """
        path = self.root / self.relative(kind, subject_id)
        path.unlink(missing_ok=True)
