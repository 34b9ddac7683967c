"""Jobs and the DSP pool: work runs off the loop, progress reaches the loop, errors are kept."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests.support.errors import assert_error_shape
from tests.support.jobwork import counted, failing, sleepy
from tests.support.wait import wait_until
from vocalink_lab.errors import ParameterError
from vocalink_lab.hub import DspPool, EventBus, JobNotFound, Jobs, JobState, Topic

pytestmark = pytest.mark.asyncio


async def test_a_process_pool_job_reports_progress_on_the_loop() -> None:
    pool = DspPool(max_workers=1)
    events = EventBus()
    jobs = Jobs(events)
    seen: list[float] = []
    updates: list[dict[str, object]] = []
    events.subscribe(Topic.JOB_UPDATED, lambda e: updates.append(e.data["job"]))
    loop = asyncio.get_running_loop()
    first_report = asyncio.Event()

    async def work(progress: object) -> dict[str, object]:
        def on_progress(fraction: float) -> None:
            assert asyncio.get_running_loop() is loop  # delivered on the loop, not a thread
            seen.append(fraction)
            first_report.set()
            progress(fraction)  # type: ignore[operator]
        return await pool.run(counted, 20, pause_s=0.02, progress=on_progress)

    try:
        job = jobs.submit("count", {"n": 20}, work)
        assert job.state is JobState.QUEUED
        # The loop stays free while the worker runs: this task hears of the first report
        # while the job is still running.
        await asyncio.wait_for(first_report.wait(), 60)
        assert job.state is JobState.RUNNING
        await jobs.wait(job.id, timeout=60)
        assert job.state is JobState.SUCCEEDED, job.error
        assert job.result is not None and job.result["count"] == 20
        assert job.result["pid"] != os.getpid()  # ran in another process
        # Every report arrives, in order, before the job ends: the last one too, though it
        # travels by another pipe than the result.
        assert seen == [(i + 1) / 20 for i in range(20)]
        states = [u["state"] for u in updates]
        assert states[0] == "queued" and states[-1] == "succeeded" and "running" in states
        assert updates[-1]["progress"] == 1.0
        assert jobs.get(job.id) is job and jobs.list()[0] is job
    finally:
        await asyncio.to_thread(pool.shutdown)


async def test_a_thread_pool_gets_progress_and_errors_become_the_jobs_error() -> None:
    with ThreadPoolExecutor(2) as executor:
        pool = DspPool(executor)
        jobs = Jobs(EventBus())
        progress_seen: list[float] = []

        async def work(progress: object) -> dict[str, object]:
            return await pool.run(counted, 5, pause_s=0.001, progress=progress_seen.append)

        ok = jobs.submit("count", {}, work)
        await jobs.wait(ok.id, timeout=10)
        assert ok.state is JobState.SUCCEEDED and ok.result is not None
        assert ok.result["pid"] == os.getpid() and progress_seen[-1] == 1.0

        async def bad(progress: object) -> dict[str, object]:
            await pool.run(failing, "the cable is unplugged")
            return {}

        failed = await jobs.wait(jobs.submit("fail", {}, bad).id, timeout=10)
        assert failed.state is JobState.FAILED and failed.error is not None
        assert "the cable is unplugged" in failed.error["error"]
        assert_error_shape(failed.error, 500, "internal_error")

        async def invalid(progress: object) -> dict[str, object]:
            raise ParameterError("prop_decrease must be in [0, 1]", errors=["a", "b"])

        refused = await jobs.wait(jobs.submit("enhance", {}, invalid).id, timeout=10)
        assert refused.error == {"ok": False, "error": "prop_decrease must be in [0, 1]",
                                 "errors": ["a", "b"], "status": 422,
                                 "code": "invalid_dsp_parameter"}


async def test_cancel_and_unknown_jobs() -> None:
    jobs = Jobs(EventBus())
    started = asyncio.Event()

    async def forever(progress: object) -> dict[str, object]:
        started.set()
        await asyncio.sleep(3600)
        return {}

    job = jobs.submit("wait", {}, forever)
    await started.wait()
    jobs.cancel(job.id)
    await jobs.wait(job.id, timeout=5)
    assert job.state is JobState.CANCELLED and job.finished_at is not None
    with pytest.raises(JobNotFound, match="no job 'job-nope'"):
        jobs.get("job-nope")


async def test_old_finished_jobs_are_forgotten_but_running_ones_kept() -> None:
    jobs = Jobs(EventBus(), keep=3)
    gate = asyncio.Event()

    async def blocked(progress: object) -> dict[str, object]:
        await gate.wait()
        return {}

    async def quick(progress: object) -> dict[str, object]:
        return {"t": time.time()}

    running = jobs.submit("blocked", {}, blocked)
    for _ in range(6):
        done = jobs.submit("quick", {}, quick)
        await jobs.wait(done.id, timeout=5)
    kept = jobs.list()
    assert running in kept and len(kept) <= 4
    gate.set()
    await jobs.wait(running.id, timeout=5)
    await jobs.close()


async def test_shutdown_ends_a_worker_in_the_middle_of_a_long_job(tmp_path: Path) -> None:
    pool = DspPool(max_workers=1)
    jobs = Jobs(EventBus())
    pid_file = tmp_path / "pid"

    async def work(progress: object) -> dict[str, object]:
        await pool.run(sleepy, str(pid_file), 600.0)
        return {}

    job = jobs.submit("long", {}, work)
    await wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=60)
    worker = psutil.Process(int(pid_file.read_text()))
    await jobs.close()  # the server's stop: cancel the jobs, then the pool
    await asyncio.to_thread(pool.shutdown)
    assert job.state is JobState.CANCELLED
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
