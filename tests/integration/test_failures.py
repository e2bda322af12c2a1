"""A failing node, an interrupt and a timeout each end the job with the right error, quickly, and
leave the executor ready for the next job."""

import threading
import time

import pytest

from embedded import ExecutionError, JobInterrupted, JobTimeout
from embedded.events import ExecutingEvent, InterruptedEvent

from ..helpers import workflow


def test_raising_node_error_names_node_id_type_and_message(executor):
    with pytest.raises(ExecutionError) as info:
        executor.run(workflow("node_raises"))
    err = info.value
    assert (err.node_id, err.node_type) == ("2", "EmbeddedTestRaise")
    assert (err.exception_type, err.exception_message) == ("RuntimeError", "deliberate failure")
    assert any("raise RuntimeError(message)" in line for line in err.traceback)
    assert str(err) == "Node 2 (EmbeddedTestRaise) failed: RuntimeError: deliberate failure"


def test_next_job_succeeds_after_a_node_raised(executor):
    with pytest.raises(ExecutionError):
        executor.run(workflow("node_raises"))
    assert executor.run(workflow("solid_red_image")).outputs


def _start_slow_job(executor, **kwargs):
    started = threading.Event()

    def on_event(ev):
        if isinstance(ev, ExecutingEvent) and ev.node_id == "2":
            started.set()

    future = executor.submit(workflow("slow_node"), on_event=on_event, **kwargs)
    assert started.wait(30), "the slow node never started"
    return future


def test_interrupt_stops_a_running_job_within_a_second(executor):
    events = []
    future = executor.submit(workflow("slow_node"), on_event=events.append)
    deadline = time.monotonic() + 30
    while not any(isinstance(e, ExecutingEvent) and e.node_id == "2" for e in events):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    asked = time.monotonic()
    assert executor.interrupt() is True
    with pytest.raises(JobInterrupted) as info:
        future.result(timeout=5)
    assert time.monotonic() - asked < 1.0
    assert not isinstance(info.value, JobTimeout)
    assert (info.value.node_id, info.value.node_type) == ("2", "EmbeddedTestSleep")
    assert isinstance(events[-1], InterruptedEvent)
    assert executor.run(workflow("solid_red_image")).outputs


def test_interrupt_by_job_id_leaves_other_jobs_alone(executor):
    future = _start_slow_job(executor, job_id="slow-1")
    assert executor.interrupt("some-other-job") is False
    time.sleep(0.2)
    assert not future.done()
    executor.interrupt("slow-1")
    with pytest.raises(JobInterrupted):
        future.result(timeout=5)


def test_a_cancel_for_an_unknown_or_ended_job_is_not_remembered(executor):
    assert executor.run(workflow("solid_red_image"), job_id="ended-1").outputs
    assert executor.interrupt("ended-1") is False
    assert executor.interrupt("never-submitted") is False
    # a later job with either id runs: nothing was kept for them
    assert executor.run(workflow("solid_red_image"), job_id="ended-1").outputs
    assert executor.run(workflow("solid_red_image"), job_id="never-submitted").outputs


def test_a_queued_job_cancelled_by_id_never_runs(executor):
    running = _start_slow_job(executor)
    queued = executor.submit(workflow("solid_red_image"), job_id="queued-1")
    executor.interrupt("queued-1")
    executor.interrupt()
    with pytest.raises(JobInterrupted):
        running.result(timeout=5)
    with pytest.raises(JobInterrupted, match="cancelled before it started"):
        queued.result(timeout=5)
    assert executor.run(workflow("solid_red_image")).outputs


def test_timeout_stops_the_job_within_a_second_of_the_limit(executor):
    started = time.monotonic()
    with pytest.raises(JobTimeout) as info:
        executor.run(workflow("slow_node"), timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert info.value.timeout == 0.5
    assert "exceeded its timeout of 0.5 s" in str(info.value)
    assert executor.run(workflow("solid_red_image"), timeout=30).outputs


def test_cancelling_an_awaiting_task_interrupts_the_job(executor):
    import asyncio

    async def main():
        task = asyncio.ensure_future(executor.run_async(workflow("slow_node"), job_id="async-1"))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # the job itself was interrupted: the next one does not wait 30 s behind it
    started = time.monotonic()
    assert executor.run(workflow("solid_red_image")).outputs
    assert time.monotonic() - started < 5
