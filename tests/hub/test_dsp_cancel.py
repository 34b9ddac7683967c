"""A cancelled job's DSP function stops, and nothing it does comes after the job ended.

Before, cancelling a job abandoned its function in the pool: the job read ``cancelled``
at once while the worker went on, and wrote its output after the job had cleaned up (a
cancelled merge left its file in ``uploads/``). Now the function's next ``progress`` call
raises in the worker, and `DspPool.run` raises `CancelledError` only once it has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.jobwork import counted
from tests.support.wait import wait_until
from vocalink_lab.hub import DspPool, EventBus, Job, Jobs, JobState

pytestmark = pytest.mark.asyncio

STEPS = 1000  # 10 s of work, if nothing stops it


def writes_when_done(path: str, steps: int, *,
                     progress: Callable[[float], None] | None = None) -> str:
    """Work ``steps`` times 10 ms, reporting progress, then write ``path`` (like a merge)."""
    import time

    for i in range(steps):
        time.sleep(0.01)
        if progress is not None:
            progress((i + 1) / steps)
    Path(path).write_text("finished")
    return path


@pytest_asyncio.fixture(params=["processes", "threads"])
async def pool(request: pytest.FixtureRequest) -> AsyncIterator[DspPool]:
    """One worker: work queues behind work, so that what runs next shows it is free."""
    executor = None if request.param == "processes" else ThreadPoolExecutor(
        1, thread_name_prefix="dsp-test")
    dsp = DspPool(executor, max_workers=1)
    try:
        yield dsp
    finally:
        await asyncio.to_thread(dsp.shutdown)
        if executor is not None:
            executor.shutdown(wait=True)


def submit(jobs: Jobs, pool: DspPool, out: Path) -> Job:
    async def work(progress: Callable[[float], None]) -> dict[str, object]:
        await pool.run(writes_when_done, str(out), STEPS, progress=progress)
        return {}

    return jobs.submit("long", {}, work)


async def test_a_cancelled_job_stops_its_worker_before_it_reads_cancelled(
        pool: DspPool, tmp_path: Path) -> None:
    jobs = Jobs(EventBus())
    running, queued = tmp_path / "running", tmp_path / "queued"
    try:
        first = submit(jobs, pool, running)
        await wait_until(lambda: first.progress > 0, timeout=60)  # in the worker
        second = submit(jobs, pool, queued)  # waits for the one worker
        jobs.cancel(second.id)
        jobs.cancel(first.id)
        for job in (first, second):
            await jobs.wait(job.id, timeout=30)
            assert job.state is JobState.CANCELLED, job
        # The worker is free: a job submitted now runs (work queues in order), and the
        # cancelled ones did not run to their end, nor start, behind the jobs' backs.
        assert (await pool.run(counted, 1))["count"] == 1
        assert not running.exists() and not queued.exists()
        assert first.progress < 1.0
    finally:
        await jobs.close()
