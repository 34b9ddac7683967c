"""Jobs: long DSP work (enhance, merge) run off the event loop, with progress.

`Jobs` tracks every job (queued → running → succeeded / failed / cancelled),
publishes each change on the event bus and keeps the last few hundred for
``GET /api/jobs``. `DspPool` runs a job's blocking function in an executor and
forwards its ``progress(fraction)`` calls to the loop: from a process pool of
its own through a multiprocessing queue, from a thread pool directly. Any other
`concurrent.futures.Executor` (a Dask client's) works too, without progress.

A cancelled job's function is stopped, not abandoned: its next ``progress`` call raises
in the worker, and `DspPool.run` returns (raising `asyncio.CancelledError`) only once the
worker has let go, so that what the job removes on cancellation (a half-written output)
is not written again behind its back.

Nothing here knows Tornado or SQLite: what a job does, and what it stores, is
the ``work`` coroutine its submitter passes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import JobCancelled, JobNotFound, TooBusy, VocalinkError, error_shape
from ..progress import Progress
from ..protocol.events import JobState, Topic
from .events import EventBus

__all__ = ["DspPool", "Job", "JobNotFound", "JobState", "Jobs", "Progress"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Progress events are published at most this often per job (a chunked job may call
#: ``progress`` thousands of times).
PROGRESS_INTERVAL_S = 0.1
#: How long a finished process-pool job waits for the last of its progress reports.
DRAIN_TIMEOUT_S = 5.0
#: Jobs queued or running at most, by default (``Settings.max_pending_jobs``).
MAX_PENDING = 32
#: How long `Jobs.close` (the server stopping) waits for cancelled jobs' workers to stop
#: before giving them up to the pool's shutdown.
CANCEL_GRACE_S = 1.0
#: Slots of the table through which the loop tells pool processes which jobs to stop:
#: a cancelled job's token goes in slot ``token % STOP_SLOTS`` (far more slots than jobs
#: can be in the pool at once).
STOP_SLOTS = 4096


@dataclass(slots=True)
class Job:
    """One job and what is known about it.

    Attributes
    ----------
    id : str
        ``job-…``.
    kind : str
        What it does (``enhance``, ``merge``).
    params : dict
        The request, as validated.
    state : JobState
    progress : float
        0 to 1.
    result : dict or None
        What the work returned (for audio jobs: the new recording and a report).
    error : dict or None
        The one JSON error shape, when it failed.
    """

    id: str
    kind: str
    params: dict[str, Any]
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id, "kind": self.kind, "state": str(self.state),
            "progress": round(self.progress, 4), "params": self.params,
            "result": self.result, "error": self.error, "created_at": self.created_at,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "elapsed_s": (None if self.started_at is None
                          else round((self.finished_at or time.time()) - self.started_at, 3)),
        }


class Jobs:
    """The jobs of one server (or one Lab), run as tasks on the event loop.

    Parameters
    ----------
    events : EventBus
        Where ``job.updated`` events go (the widgets' live progress).
    keep : int
        Finished jobs kept for ``GET /api/jobs``; older ones are forgotten.
    max_pending : int
        Jobs queued or running at most; `submit` refuses one more (`TooBusy`).
    """

    def __init__(self, events: EventBus, *, keep: int = 200,
                 max_pending: int = MAX_PENDING) -> None:
        self.events = events
        self.keep = keep
        self.max_pending = max_pending
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._published: dict[str, float] = {}

    def submit(self, kind: str, params: Mapping[str, Any],
               work: Callable[[Progress], Awaitable[dict[str, Any]]]) -> Job:
        """Start ``work(progress)`` as a job; return at once.

        Parameters
        ----------
        kind : str
            What the job does.
        params : mapping
            The validated request, shown with the job.
        work : callable
            A coroutine function given a ``progress(fraction)`` callback (call it on
            the loop); what it returns is the job's result. A `VocalinkError` it raises
            becomes the job's error as is; anything else is logged and reported as an
            internal error.

        Raises
        ------
        TooBusy
            ``max_pending`` jobs are queued or running already (503); nothing started.
        """
        pending = sum(1 for j in self._jobs.values() if not j.state.finished)
        if pending >= self.max_pending:
            raise TooBusy(
                f"{pending} jobs are queued or running, the most this server takes "
                f"(VOCALINK_MAX_PENDING_JOBS={self.max_pending}); wait for some to finish, "
                "or cancel some (DELETE /api/jobs/{id})", retry_after_s=10)
        job = Job(id=f"job-{uuid.uuid4().hex[:12]}", kind=kind, params=dict(params))
        self._jobs[job.id] = job
        self._forget_old()
        job._task = asyncio.get_running_loop().create_task(self._run(job, work),
                                                          name=f"vocalink-{job.id}")
        job._task.add_done_callback(lambda _: self._cancelled_before_start(job))
        self._publish(job)
        return job

    def _cancelled_before_start(self, job: Job) -> None:
        """A task cancelled before its first step never runs `_run`: end its job here.

        Without this, a job cancelled while queued would stay queued for ever (and hold
        one of the ``max_pending`` places).
        """
        if job.state.finished:
            return
        job.state = JobState.CANCELLED
        job.error = JobCancelled("the job was cancelled before it started").to_dict()
        job.finished_at = time.time()
        job._done.set()
        self._publish(job)

    async def _run(self, job: Job,
                   work: Callable[[Progress], Awaitable[dict[str, Any]]]) -> None:
        job.state = JobState.RUNNING
        job.started_at = time.time()
        self._publish(job)

        def progress(fraction: float) -> None:
            if job.state is JobState.RUNNING:
                job.progress = min(1.0, max(job.progress, float(fraction)))
                self._publish(job, throttle=True)

        try:
            job.result = await work(progress)
            job.state = JobState.SUCCEEDED
            job.progress = 1.0
        except asyncio.CancelledError:
            job.state = JobState.CANCELLED
            job.error = JobCancelled("the job was cancelled").to_dict()
        except VocalinkError as exc:
            job.state = JobState.FAILED
            job.error = exc.to_dict()
        except Exception as exc:
            log.exception("%s (%s) failed", job.id, job.kind)
            job.state = JobState.FAILED
            message = f"{job.kind} failed: {type(exc).__name__}: {exc}"
            job.error = error_shape(500, message)
        finally:
            job.finished_at = time.time()
            job._done.set()
            self._publish(job)

    def _publish(self, job: Job, *, throttle: bool = False) -> None:
        now = time.monotonic()
        if throttle and now - self._published.get(job.id, 0.0) < PROGRESS_INTERVAL_S:
            return
        self._published[job.id] = now
        self.events.publish(Topic.JOB_UPDATED, job=job.to_dict())

    def _forget_old(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.state.finished]
        for job_id in finished[:max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job_id]
            self._published.pop(job_id, None)

    def get(self, job_id: str) -> Job:
        """The job with this id.

        Raises
        ------
        JobNotFound
        """
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(f"no job '{job_id}' (jobs are kept in memory until the server "
                              "restarts; the most recent are listed at /api/jobs)") from None

    def list(self) -> list[Job]:
        """Every job kept, newest first."""
        return list(reversed(self._jobs.values()))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job has finished (whatever its outcome); return it."""
        job = self.get(job_id)
        await asyncio.wait_for(job._done.wait(), timeout)
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished (its result, if any comes, is discarded).

        Returns at once; the job is ``cancelled`` once its work has wound down (a DSP
        function stops at its next progress report). Work past the point where it can be
        undone (an audio job cataloguing its output) may finish instead, and succeed.
        """
        job = self.get(job_id)
        # Once only: a second cancellation would give up waiting for the worker (`close`).
        if not job.state.finished and job._task is not None and not job._task.cancelling():
            job._task.cancel()
        return job

    async def close(self) -> None:
        """Cancel the jobs still running and wait for them to wind down.

        Jobs get `CANCEL_GRACE_S` to stop their workers; those still waiting for one then
        are given up (cancelled again): the server stops the pool next, which ends them.
        """
        tasks = [j._task for j in self._jobs.values() if j._task and not j._task.done()]
        for task in tasks:
            if not task.cancelling():
                task.cancel()
        if tasks:
            _, waiting = await asyncio.wait(tasks, timeout=CANCEL_GRACE_S)
            for task in waiting:
                task.cancel()
            if waiting:
                await asyncio.wait(waiting, timeout=10)


# -- running blocking DSP off the loop, with progress -----------------------------------------


class _Stopped(BaseException):
    """Raised in a worker by the progress callback of a job that was cancelled.

    A `BaseException`, like `asyncio.CancelledError`: DSP code that catches `Exception`
    to go on with the next file must not swallow it.
    """


_worker_queue: Any = None  # set in each pool process by _init_worker
_worker_stops: Any = None  # the shared table of stopped tokens, likewise


def _init_worker(queue: Any, stops: Any = None) -> None:
    global _worker_queue, _worker_stops
    _worker_queue = queue
    _worker_stops = stops


def _stop_requested(token: int) -> bool:
    return _worker_stops is not None and _worker_stops[token % STOP_SLOTS] == token


def _report(token: int, fraction: float) -> None:
    if _stop_requested(token):
        raise _Stopped(f"the job of token {token} was cancelled")
    if _worker_queue is not None:
        _worker_queue.put((token, fraction))


def _call_with_queue(token: int, fn: Callable[..., T], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> T:
    """Run in a pool process: ``fn`` with a ``progress`` that reports through the queue.

    The ``progress`` raises `_Stopped` once the loop has asked this token to stop (its job
    was cancelled). An end mark ``(token, None)`` follows the job's last report on the queue.
    """
    try:
        if _stop_requested(token):  # cancelled while it waited for a worker
            raise _Stopped(f"the job of token {token} was cancelled")
        return fn(*args, progress=functools.partial(_report, token), **kwargs)
    finally:
        if _worker_queue is not None:
            _worker_queue.put((token, None))


def _moot(waiter: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of work whose job was cancelled (else asyncio logs it)."""
    if not waiter.cancelled():
        waiter.exception()


async def _stoppable(future: Future[T], stop: Callable[[], None]) -> T:
    """The result of ``future``; if the awaiting task is cancelled, stop the work first.

    A queued function is simply dropped. A running one is told to stop (``stop``) and
    waited for: `asyncio.CancelledError` is raised once it has ended. Cancelled a second
    time while it waits (`Jobs.close`: the server is stopping, and ends the pool's
    workers next), it gives up waiting.
    """
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if not future.cancel():  # running (or just finished): it must let go first
            stop()
            waiter = asyncio.wrap_future(future)
            waiter.add_done_callback(_moot)
            await asyncio.wait({waiter})  # a second cancellation leaves ``waiter`` be
        raise


class DspPool:
    """Run blocking DSP functions off the event loop and relay their progress.

    Parameters
    ----------
    executor : concurrent.futures.Executor, optional
        Where to run. By default a process pool of ``max_workers`` processes is
        made on first use (``spawn`` start method: forking a process that runs an
        event loop, SQLite and zeroconf threads is unsafe). A `ThreadPoolExecutor`
        gets progress directly; other executors (a Dask client's) run without it,
        and a function cancelled on them runs to its end (`run` waits for it).
    max_workers : int, optional
        Size of the default process pool (default: the CPU count, at most 4).
    """

    def __init__(self, executor: Executor | None = None, *,
                 max_workers: int | None = None) -> None:
        self._executor = executor
        self._owned = executor is None
        self.max_workers = max_workers or min(4, os.cpu_count() or 1)
        self._queue: Any = None
        self._stops: Any = None
        self._reader: threading.Thread | None = None
        self._listeners: dict[int, tuple[asyncio.AbstractEventLoop, Progress,
                                         asyncio.Event]] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def executor(self) -> Executor:
        """The executor in use (the default process pool is made here, on first use)."""
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("spawn")
                self._queue = context.Queue()
                self._stops = context.Array("q", STOP_SLOTS)
                self._executor = ProcessPoolExecutor(
                    self.max_workers, mp_context=context, initializer=_init_worker,
                    initargs=(self._queue, self._stops))
                self._reader = threading.Thread(target=self._relay, name="vocalink-dsp-progress",
                                                daemon=True)
                self._reader.start()
            return self._executor

    async def run(self, fn: Callable[..., T], *args: Any,
                  progress: Progress | None = None, **kwargs: Any) -> T:
        """Await ``fn(*args, progress=..., **kwargs)`` run in the executor.

        ``fn`` must accept a ``progress`` keyword (a callable taking 0..1, or None),
        and be importable by name when the executor is a process pool.

        Cancelling the awaiting task stops ``fn``: on the default process pool and on a
        `ThreadPoolExecutor`, its next ``progress`` call raises (a `BaseException`, so
        that it ends the function). `asyncio.CancelledError` is raised only once ``fn``
        has returned or raised: nothing it does comes after the caller's clean-up.
        """
        executor = self.executor
        loop = asyncio.get_running_loop()
        if self._owned:
            token = next(self._tokens)
            reported = asyncio.Event()
            if progress is not None:
                self._listeners[token] = (loop, progress, reported)
            try:
                future = executor.submit(_call_with_queue, token, fn, args, kwargs)
                result = await _stoppable(future, functools.partial(self._stop, token))
                if progress is not None:
                    # The result and the reports travel by different pipes: the last reports
                    # may still be on their way. The worker's end mark comes after them.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(reported.wait(), DRAIN_TIMEOUT_S)
                return result
            finally:
                self._listeners.pop(token, None)
        stop = threading.Event()
        checked: Progress | None = None
        if isinstance(executor, ThreadPoolExecutor):
            callback = progress

            def checked(fraction: float) -> None:
                if stop.is_set():
                    raise _Stopped("the job was cancelled")
                if callback is not None:
                    loop.call_soon_threadsafe(callback, fraction)

        future = executor.submit(functools.partial(fn, *args, progress=checked, **kwargs))
        return await _stoppable(future, stop.set)

    def _stop(self, token: int) -> None:
        """Tell the pool's processes that the job of ``token`` is cancelled."""
        if self._stops is not None:
            self._stops[token % STOP_SLOTS] = token

    def _relay(self) -> None:
        """Reader thread: hand each worker's progress to its job, on the job's loop."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            token, fraction = item
            listener = self._listeners.get(token)
            if listener is not None:
                loop, callback, reported = listener
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    if fraction is None:  # the end mark: every report is handed over
                        loop.call_soon_threadsafe(reported.set)
                    else:
                        loop.call_soon_threadsafe(callback, fraction)

    def shutdown(self) -> None:
        """Stop the default pool, ending the jobs still running. Blocking.

        An executor passed in is the caller's to stop. A worker in the middle of an
        hour-long job is terminated rather than waited for: its job was cancelled
        already, and a server that is stopping must not hang on it, nor leave a
        worker writing a file nobody will catalog.
        """
        with self._lock:
            executor = self._executor
            if not self._owned or executor is None:
                return
            # ProcessPoolExecutor has no public way to end a running task before 3.14.
            workers = list(getattr(executor, "_processes", {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()
            for worker in workers:
                worker.join(timeout=5)
            self._queue.put(None)
            if self._reader is not None:
                self._reader.join(timeout=5)
            self._queue.close()
            self._executor = None
            self._reader = None
