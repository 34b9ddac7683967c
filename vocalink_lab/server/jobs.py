"""Audio jobs over REST: enhance and merge run in the DSP pool and end as new recordings.

``POST /api/audio/{id}/enhance`` and ``POST /api/audio/merge`` validate the request
at once (a bad parameter is a 422 before any work starts), then answer 202 with
the job; ``GET /api/jobs/{id}`` follows it. A job writes its output to a
temporary file in ``uploads/``, which is catalogued under ``derived/`` with its
lineage (parents, parameters, the DSP report). Originals are never modified.

A job that fails or is cancelled leaves nothing: its temporary output is removed once
the DSP has let go of it, and a full disk reads as `InsufficientStorage` (507) in the
job's error. Once the output is complete, cataloguing it is not interrupted: a
cancellation that comes then is too late, and the job succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from .. import durable
from ..config import merge_budget
from ..errors import InvalidParameter, ParameterError, PayloadTooLarge, RecordingNotFound
from ..hub import DspPool, Job, Jobs, Progress
from ..protocol.codec import explain_validation_error
from ..storage import Catalog, Recording, RecordingStore
from .base import JsonHandler, check_id
from .ingest import Ingestor

__all__ = [
    "AudioJobs",
    "EnhanceHandler",
    "EnhanceRequest",
    "JobHandler",
    "JobsHandler",
    "MergeHandler",
    "MergeRequest",
    "answer_job",
]

T = TypeVar("T")
OutputFormat = Literal["flac", "wav"]
MAX_MERGE_INPUTS = 64
#: How much decoded audio (float32) a merge may process: it streams, so this bounds its
#: work and temporary copies (``Settings.max_merge_decoded_bytes``, by default four times
#: the machine's memory).
MAX_MERGE_DECODED_BYTES = merge_budget()
_FLOAT32_BYTES = 4


class EnhanceRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of ``POST /api/audio/{id}/enhance``.

    ``preset`` names a preset (``auto`` when both are left out); ``params``
    overrides any of its fields (see `EnhanceParams`).
    """

    preset: str | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    format: OutputFormat = "flac"


class MergeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of ``POST /api/audio/merge``."""

    ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_MERGE_INPUTS)]
    mode: str = "multichannel"
    align: bool = True
    drift: bool = True
    crossfade_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.0
    sample_rate: Annotated[int, msgspec.Meta(ge=8000, le=384000)] | None = None
    format: OutputFormat = "flac"


def _convert(body: Mapping[str, Any], kind: type[Any], what: str) -> Any:
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise InvalidParameter(f"invalid {what}: {explain_validation_error(str(exc))}") from None


class AudioJobs:
    """Starts enhance and merge jobs for the server (and, later, the Lab).

    Parameters
    ----------
    jobs : Jobs
        Tracks the jobs.
    pool : DspPool
        Runs the DSP off the event loop.
    catalog, store, ingestor
        Where inputs are found and outputs go.
    max_merge_decoded_bytes : int
        A merge whose inputs decode to more (frames × channels × 4 bytes at the output
        rate) is refused before it starts (413).
    """

    def __init__(self, *, jobs: Jobs, pool: DspPool, catalog: Catalog, store: RecordingStore,
                 ingestor: Ingestor,
                 max_merge_decoded_bytes: int = MAX_MERGE_DECODED_BYTES) -> None:
        self.max_merge_decoded_bytes = max_merge_decoded_bytes
        self.jobs = jobs
        self.pool = pool
        self.catalog = catalog
        self.store = store
        self.ingestor = ingestor

    def _temp(self, fmt: str) -> Path:
        return self.store.uploads_dir / f"job-{uuid.uuid4().hex}.{fmt}"

    async def enhance(self, recording_id: str, request: EnhanceRequest) -> Job:
        """Validate, then start enhancing one recording into a new one.

        Raises
        ------
        RecordingNotFound
            No such recording (404).
        ParameterError
            An unknown preset, a bad parameter, or a network that is not installed
            (422).
        """
        # DSP modules load on the first job: a server that never enhances starts lean.
        from ..audio.enhance import enhance_file, require_backend, resolve_params

        recording = await self.catalog.get(recording_id)
        params = resolve_params(request.preset, **request.params)
        require_backend(params)  # a network that is not installed: 422, not a failed job
        _check_writable(request.format, recording.sample_rate, recording.channels)
        source = self.store.absolute(recording.path)
        temp = self._temp(request.format)

        async def work(progress: Progress) -> dict[str, Any]:
            with _removed_on_failure(temp):
                report = await self.pool.run(enhance_file, source, temp, params,
                                             progress=progress)
                report_dict = report.to_dict()
                derived = await _to_the_end(self.ingestor.add_derived(
                    temp, kind="enhanced", parents=[recording],
                    params={"enhance": params.to_dict(), "preset": request.preset,
                            "report": report_dict},
                    take_id=recording.take_id, device_id=recording.device_id,
                    device_name=recording.device_name, started_at=recording.started_at))
            return {"recording": derived.to_dict(), "report": report_dict}

        return self.jobs.submit("enhance", {
            "recording_id": recording.id, "preset": request.preset,
            "params": params.to_dict(), "format": request.format}, work)

    async def merge(self, request: MergeRequest) -> Job:
        """Validate, then start merging recordings into a new one.

        Raises
        ------
        RecordingNotFound
            Some ids are not in the catalog (404, all of them named).
        ParameterError
            A bad mode, duplicate ids (422).
        PayloadTooLarge
            The inputs decode to more than ``max_merge_decoded_bytes`` (413).
        """
        from ..audio.merge import MERGE_MODES, merge_files

        problems = []
        if request.mode not in MERGE_MODES:
            problems.append(f"mode must be one of {', '.join(MERGE_MODES)}, "
                            f"not '{request.mode[:40]}'")
        ids = [check_id(i, "recording id") for i in request.ids]
        if len(set(ids)) != len(ids):
            problems.append("ids lists a recording more than once")
        if problems:
            raise ParameterError("; ".join(problems), errors=problems)
        found = [await self.catalog.find(i) for i in ids]
        missing = [i for i, r in zip(ids, found, strict=True) if r is None]
        if missing:
            raise RecordingNotFound(f"no recording {', '.join(repr(m) for m in missing)}; "
                                    "nothing was merged")
        recordings = [r for r in found if r is not None]
        rate = request.sample_rate or max(r.sample_rate for r in recordings)
        channels = (len(recordings) if request.mode == "multichannel"
                    else max(r.channels for r in recordings))
        _check_writable(request.format, rate, channels)
        self.check_decoded_size(recordings, request.sample_rate)
        sources = [self.store.absolute(r.path) for r in recordings]
        seeds = _seeds(recordings)
        temp = self._temp(request.format)

        async def work(progress: Progress) -> dict[str, Any]:
            with _removed_on_failure(temp):
                report = await self.pool.run(
                    merge_files, sources, temp, mode=request.mode, seeds_s=seeds,
                    align=request.align, drift=request.drift, crossfade_s=request.crossfade_s,
                    sample_rate=request.sample_rate, progress=progress)
                derived = await _to_the_end(self.ingestor.add_derived(
                    temp, kind="merged", parents=recordings,
                    params={"merge": _request_dict(request), "report": report},
                    take_id=_common(r.take_id for r in recordings),
                    device_id=_common(r.device_id for r in recordings),
                    device_name=_common(r.device_name for r in recordings),
                    started_at=_merged_start(recordings, report)))
            return {"recording": derived.to_dict(), "report": report}

        return self.jobs.submit("merge", _request_dict(request), work)

    def check_decoded_size(self, recordings: Sequence[Recording],
                           sample_rate: int | None) -> None:
        """Refuse (413) a merge whose inputs decode to too much, from the catalog alone.

        An hour of silence in a FLAC of about half a MiB is 660 MiB of float32 at 48
        kHz: a merge streams it in a few MiB, but its work (and any temporary copy of a
        source it must convert) grows with the decoded size, computed here before any
        file is read.
        """
        rate = sample_rate or max(r.sample_rate for r in recordings)
        sizes = [math.ceil(r.frames * rate / max(r.sample_rate, 1)) * r.channels
                 * _FLOAT32_BYTES for r in recordings]
        total = sum(sizes)
        if total > self.max_merge_decoded_bytes:
            limit = self.max_merge_decoded_bytes
            largest = max(zip(sizes, recordings, strict=True), key=lambda pair: pair[0])
            raise PayloadTooLarge(
                f"merging these {len(recordings)} recordings would decode {_mib(total)} of "
                f"audio at {rate} Hz (frames x channels x 4 bytes), above the limit of "
                f"{_mib(limit)} (VOCALINK_MAX_MERGE_DECODED_BYTES={limit}); the largest, "
                f"'{largest[1].id}', is {_mib(largest[0])}. Merge fewer or shorter "
                "recordings, or at a lower sample_rate; nothing was merged")


@contextlib.contextmanager
def _removed_on_failure(temp: Path) -> Any:
    """A job's temporary output never outlives a failed or cancelled job.

    `DspPool.run` returns (or raises) only once the DSP has let go of ``temp``, so that
    nothing writes it after it is removed here. A full disk (``ENOSPC``, ``EDQUOT``, from
    the DSP or from making the output durable) is raised as `InsufficientStorage`.
    """
    try:
        yield
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if durable.is_disk_full(exc):
            raise durable.insufficient_storage(exc, "the job's output") from exc
        raise


async def _to_the_end(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if the job is cancelled meanwhile; return its result.

    Cataloguing a finished output moves a file and writes a row in worker threads, which
    a cancellation would not stop: cut short, the job would read as cancelled while its
    recording is stored anyway (and announced to nobody). So the step finishes, and the
    job succeeds; the cancellation came too late.
    """
    task = asyncio.ensure_future(step)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})
    return task.result()


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


def _request_dict(request: MergeRequest) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(request)
    return out


def _seeds(recordings: Sequence[Recording]) -> list[float] | None:
    """Each recording's start relative to the first's (server clock), when all are known."""
    starts = [r.started_at for r in recordings]
    if any(s is None for s in starts):
        return None
    first = starts[0]
    assert first is not None
    return [float(s) - first for s in starts if s is not None]


def _common(values: Iterable[str | None]) -> str | None:
    """The one value all share, or None."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _merged_start(recordings: Sequence[Recording], report: Mapping[str, Any]) -> float | None:
    """Server time of the merged file's first sample, when the inputs' are known.

    The first input is the alignment's reference; ``start_s`` is where the merged
    file starts on its timeline (0 for concat, at most 0 otherwise).
    """
    first = recordings[0].started_at
    if first is None:
        return None
    return first + float(report.get("start_s") or 0.0)


def answer_job(handler: JsonHandler, job: Job) -> None:
    """Answer a request that started a job: 202, the job, ``Location: /api/jobs/{id}``."""
    handler.set_header("Location", f"/api/jobs/{job.id}")
    handler.write_json(job.to_dict(), status=202)


class EnhanceHandler(JsonHandler):
    """``POST /api/audio/{id}/enhance`` → 202 and the job (``Location: /api/jobs/{id}``)."""

    def initialize(self, audio_jobs: AudioJobs) -> None:
        self.audio_jobs = audio_jobs

    async def post(self, recording_id: str) -> None:
        request = _convert(self.json_body(), EnhanceRequest, "enhance request")
        answer_job(self, await self.audio_jobs.enhance(check_id(recording_id, "recording id"),
                                                       request))


class MergeHandler(JsonHandler):
    """``POST /api/audio/merge`` → 202 and the job (``Location: /api/jobs/{id}``)."""

    def initialize(self, audio_jobs: AudioJobs) -> None:
        self.audio_jobs = audio_jobs

    async def post(self) -> None:
        request = _convert(self.json_body(), MergeRequest, "merge request")
        answer_job(self, await self.audio_jobs.merge(request))


class JobsHandler(JsonHandler):
    """``GET /api/jobs``: the jobs kept in memory, newest first."""

    def initialize(self, jobs: Jobs) -> None:
        self.jobs = jobs

    def get(self) -> None:
        self.write_json({"items": [job.to_dict() for job in self.jobs.list()]})


class JobHandler(JsonHandler):
    """``GET /api/jobs/{id}``: a job's state, progress and result; ``DELETE`` cancels it."""

    def initialize(self, jobs: Jobs) -> None:
        self.jobs = jobs

    def get(self, job_id: str) -> None:
        self.write_json(self.jobs.get(check_id(job_id, "job id")).to_dict())

    def delete(self, job_id: str) -> None:
        self.write_json(self.jobs.cancel(check_id(job_id, "job id")).to_dict())


def _check_writable(fmt: str, rate: int, channels: int) -> None:
    """Refuse (422) an output the job could compute but not write, before any work."""
    from ..audio.io import write_problems

    problems = write_problems(fmt, rate, channels)
    if problems:
        raise ParameterError("; ".join(problems), errors=problems)
