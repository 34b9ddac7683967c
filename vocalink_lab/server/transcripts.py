"""Transcripts over REST: a recording's, or a take's on its common timeline, as a job.

``POST /api/audio/{id}/transcribe`` and ``POST /api/takes/{id}/transcribe`` check at
once that transcription can run here (the ``[asr]`` extra and a model: else a 422
``transcription_unavailable`` that says how to install them, and nothing is fetched from
anywhere), then answer 202 with the job. A take's job first aligns its originals into a
temporary multichannel file (`merge_files`, at 16 kHz), then transcribes each channel and
gives each line to the device that heard it loudest (`transcribe_take_file`). The result
is stored (`TranscriptStore`: the catalog's row and a JSON artifact), replacing an older
one, and announced (``transcript.updated``; a take's also as ``take.updated``).

``GET /api/audio/{id}/transcript`` and ``GET /api/takes/{id}/transcript`` return it, as
JSON or, with ``?format=vtt|srt|csv``, as a file to download.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import Conflict, InvalidParameter
from ..hub import DspPool, Hub, Job, Jobs, Progress, Topic
from ..progress import span
from ..storage import Catalog, Recording, RecordingStore, TranscriptStore
from .base import JsonHandler, check_id
from .jobs import AudioJobs, _convert, _removed_on_failure, _seeds, _to_the_end, answer_job
from .takes import publish_take_updated

if TYPE_CHECKING:
    from ..audio.transcribe import Transcript

__all__ = ["TakeTranscriptHandler", "TranscribeHandler", "TranscribeRequest", "Transcription",
           "TranscriptHandler", "TakeTranscribeHandler"]

#: A take is aligned for transcription at the rate whisper listens at.
TAKE_RATE = 16_000
#: Of a take job's progress, how much is the alignment (the rest is transcription).
_ALIGN_SHARE = 0.15
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


class TranscribeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of ``POST /api/audio/{id}/transcribe`` and ``POST /api/takes/{id}/transcribe``.

    ``language`` is an ISO 639-1 code (``en``, ``fr``...; detected when left out);
    ``enhance`` cleans the audio first with the auto mode (the server's default when left
    out: ``VOCALINK_TRANSCRIBE_ENHANCE``).
    """

    language: str | None = None
    enhance: bool | None = None


class Transcription:
    """Starts transcription jobs and serves their results.

    Parameters
    ----------
    jobs, pool
        Track the jobs; run the engine off the event loop.
    catalog, store, transcripts
        Where recordings are found and transcripts go.
    audio_jobs : AudioJobs
        Its limit on the audio a merge may decode applies to a take's alignment too.
    hub : Hub
        Knows the take being recorded; announces transcripts.
    model : Path, optional
        A faster-whisper model folder (``Settings.asr_model``); the ``[asr]`` extra's
        whisper base by default.
    enhance : bool
        Whether audio is enhanced first when a request does not say.
    """

    def __init__(self, *, jobs: Jobs, pool: DspPool, catalog: Catalog, store: RecordingStore,
                 transcripts: TranscriptStore, audio_jobs: AudioJobs, hub: Hub,
                 model: Path | None = None, enhance: bool = False) -> None:
        self.jobs = jobs
        self.pool = pool
        self.catalog = catalog
        self.store = store
        self.transcripts = transcripts
        self.audio_jobs = audio_jobs
        self.hub = hub
        self.model = model
        self.enhance = enhance

    async def _check(self, request: TranscribeRequest) -> dict[str, Any]:
        """Refuse (422) what cannot run here before any job starts; the job's parameters."""
        from ..audio.transcribe.model import model_languages, require_engine

        source = await asyncio.to_thread(require_engine, self.model)
        if request.language is not None:
            known = await asyncio.to_thread(model_languages, source)
            if not _LANGUAGE.match(request.language) or request.language not in known:
                raise InvalidParameter(
                    f"language must be a language code whisper knows (en, fr, de, es...), "
                    f"not '{request.language[:20]}'; leave it out to detect the language")
        return {"language": request.language,
                "enhance": self.enhance if request.enhance is None else request.enhance,
                "model": source.name}

    def _model_arg(self) -> str | None:
        return None if self.model is None else str(self.model)

    async def recording(self, recording_id: str, request: TranscribeRequest) -> Job:
        """Validate, then start transcribing one recording (its channels mixed).

        Raises
        ------
        RecordingNotFound
            No such recording (404).
        TranscriptionUnavailable
            No engine or no model here (422).
        InvalidParameter
            An unknown language (422).
        """
        from ..audio.transcribe import transcribe_file

        params = await self._check(request)  # first: without an engine nothing else matters
        recording = await self.catalog.get(recording_id)
        source = self.store.absolute(recording.path)

        async def work(progress: Progress) -> dict[str, Any]:
            transcript: Transcript = await self.pool.run(
                transcribe_file, source, language=params["language"],
                model=self._model_arg(), enhance=params["enhance"],
                work_dir=self.store.uploads_dir, progress=progress)
            transcript = dataclasses.replace(transcript, subject_id=recording.id,
                                             origin_at=recording.started_at)
            return await _to_the_end(self._store("recording", recording.id, transcript))

        return self.jobs.submit("transcribe", {"recording_id": recording.id, **params}, work)

    async def take(self, take_id: str, request: TranscribeRequest) -> Job:
        """Validate, then start transcribing a take: one transcript on its timeline.

        Raises
        ------
        TakeNotFound
            No such take (404).
        Conflict
            The take is still recording, or has no recording yet (409).
        TranscriptionUnavailable
            No engine or no model here (422).
        PayloadTooLarge
            Its recordings decode to more than a merge may (413).
        """
        from ..audio.merge import merge_files
        from ..audio.transcribe import transcribe_take_file

        params = await self._check(request)
        take, members = await self.catalog.take_members(take_id)
        if take_id == self.hub.active_take_id:
            raise Conflict(f"take '{take_id}' is still recording; stop it, then transcribe it")
        originals = [r for r in members if r.kind == "original"]
        if not originals:
            raise Conflict(f"take '{take_id}' has no recording yet: the devices upload "
                           "theirs when the take stops; transcribe it once they have")
        self.audio_jobs.check_decoded_size(originals, TAKE_RATE)
        sources = [self.store.absolute(r.path) for r in originals]
        tracks = [_track(r) for r in originals]
        seeds = _seeds(originals)
        temp = self.store.uploads_dir / f"job-{uuid.uuid4().hex}.flac"

        async def work(progress: Progress) -> dict[str, Any]:
            with _removed_on_failure(temp):
                report = await self.pool.run(
                    merge_files, sources, temp, mode="multichannel", seeds_s=seeds,
                    sample_rate=TAKE_RATE, progress=span(progress, 0.0, _ALIGN_SHARE))
                start = float(report.get("start_s") or 0.0)
                first = originals[0].started_at
                origin = take.get("started_at")
                # Lines are placed from the take's start; the aligned file starts at
                # `start` on the first recording's clock.
                offset = (first + start - origin if first is not None and origin is not None
                          else start)
                transcript: Transcript = await self.pool.run(
                    transcribe_take_file, temp, tracks, take_id=take_id,
                    origin_at=origin if first is not None else None, offset_s=offset,
                    language=params["language"], model=self._model_arg(),
                    enhance=params["enhance"], work_dir=self.store.uploads_dir,
                    progress=span(progress, _ALIGN_SHARE, 1.0))
            await asyncio.to_thread(temp.unlink, missing_ok=True)
            return await _to_the_end(self._store("take", take_id, transcript))

        return self.jobs.submit("transcribe_take", {
            "take_id": take_id, "recordings": [r.id for r in originals], **params}, work)

    async def _store(self, kind: str, subject_id: str,
                     transcript: Transcript) -> dict[str, Any]:
        summary = await self.transcripts.put(kind, subject_id, transcript.to_dict())
        self.hub.events.publish(Topic.TRANSCRIPT_UPDATED, transcript=summary)
        if kind == "take":  # its row now carries the transcript's summary
            publish_take_updated(self.hub, await self.catalog.take(subject_id))
        text = transcript.text
        return {"transcript": summary, "text": text[:500] + ("…" if len(text) > 500 else "")}

    async def get(self, kind: str, subject_id: str) -> dict[str, Any]:
        """A stored transcript (`Transcript.to_dict` form).

        Raises
        ------
        RecordingNotFound, TakeNotFound
            No such subject (404).
        TranscriptNotFound
            It has not been transcribed (404).
        """
        if kind == "recording":
            await self.catalog.get(subject_id)
        else:
            await self.catalog.take_members(subject_id)
        return await self.transcripts.get(kind, subject_id)


def _track(recording: Recording) -> dict[str, Any]:
    return {"recording_id": recording.id, "device_id": recording.device_id,
            "device_name": recording.device_name}


class TranscribeHandler(JsonHandler):
    """``POST /api/audio/{id}/transcribe`` → 202 and the job (``Location: /api/jobs/{id}``)."""

    def initialize(self, transcription: Transcription) -> None:
        self.transcription = transcription

    async def post(self, recording_id: str) -> None:
        request = _convert(self.json_body(), TranscribeRequest, "transcribe request")
        answer_job(self, await self.transcription.recording(
            check_id(recording_id, "recording id"), request))


class TakeTranscribeHandler(JsonHandler):
    """``POST /api/takes/{id}/transcribe`` → 202 and the job."""

    def initialize(self, transcription: Transcription) -> None:
        self.transcription = transcription

    async def post(self, take_id: str) -> None:
        request = _convert(self.json_body(), TranscribeRequest, "transcribe request")
        answer_job(self, await self.transcription.take(check_id(take_id, "take id"), request))


class TranscriptHandler(JsonHandler):
    """``GET /api/audio/{id}/transcript``: JSON, or a WebVTT / SRT / CSV file to download."""

    kind = "recording"

    def initialize(self, transcription: Transcription) -> None:
        self.transcription = transcription

    async def get(self, subject_id: str) -> None:
        from ..audio.transcribe import EXPORT_FORMATS, Transcript, export

        subject_id = check_id(subject_id, f"{self.kind} id")
        fmt = self.get_query_argument("format", "json")
        if fmt not in EXPORT_FORMATS:
            raise InvalidParameter(f"format must be one of {', '.join(EXPORT_FORMATS)}, "
                                   f"not '{fmt[:20]}'")
        data = await self.transcription.get(self.kind, subject_id)
        if fmt == "json":
            self.write_json(data)
            return
        body = export(Transcript.from_dict(data), fmt)
        self.set_header("Content-Type", EXPORT_FORMATS[fmt])
        self.set_header("Content-Disposition",
                        f'attachment; filename="{subject_id}-transcript.{fmt}"')
        self.set_header("Cache-Control", "private, no-store")
        self.finish(body.encode("utf-8"))


class TakeTranscriptHandler(TranscriptHandler):
    """``GET /api/takes/{id}/transcript``: the take's, lines by device, in any format."""

    kind = "take"
