"""A failing node, an interrupt and a timeout each end the job with the right error, inside the node
that was running (its events say so: no clock), and leave the executor ready for the next job."""

import threading
import time

import pytest

from embedded import ExecutionError, JobInterrupted, JobTimeout
from embedded.job.events import ExecutedEvent, ExecutingEvent, InterruptedEvent

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


def _start_slow_job(executor, on_event_also=None, **kwargs):
    """The slow node's job, once its 30 s node runs."""
    started = threading.Event()

    def on_event(ev):
        if on_event_also is not None:
            on_event_also(ev)
        if isinstance(ev, ExecutingEvent) and ev.node_id == "2":
            started.set()

    future = executor.submit(workflow("slow_node"), on_event=on_event, **kwargs)
    assert started.wait(30), "the slow node never started"
    return future


def test_interrupt_stops_a_running_job_in_its_node(executor):
    """The slow node (30 s, checking the flag) is stopped inside: it never reports ``executed``."""
    events = []
    future = _start_slow_job(executor, on_event_also=events.append)
    assert executor.interrupt() is True
    with pytest.raises(JobInterrupted) as info:
        future.result(timeout=60)
    assert not isinstance(info.value, JobTimeout)
    assert (info.value.node_id, info.value.node_type) == ("2", "EmbeddedTestSleep")
    assert not any(isinstance(e, ExecutedEvent) and e.node_id == "2" for e in events), "stopped inside the node"
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


def test_a_timeout_stops_the_job_inside_its_node(executor):
    events = []
    with pytest.raises(JobTimeout) as info:
        executor.run(workflow("slow_node"), timeout=0.5, on_event=events.append)
    assert info.value.timeout == 0.5
    assert "exceeded its timeout of 0.5 s" in str(info.value)
    assert any(isinstance(e, ExecutingEvent) and e.node_id == "2" for e in events), "the 30 s node ran"
    assert not any(isinstance(e, ExecutedEvent) and e.node_id == "2" for e in events), "and was stopped inside"
    assert executor.run(workflow("solid_red_image"), timeout=30).outputs


def test_cancelling_an_awaiting_task_interrupts_the_running_job(executor):
    import asyncio

    events = []

    async def main():
        loop = asyncio.get_running_loop()
        running = asyncio.Event()

        def on_event(ev):
            events.append(ev)
            if isinstance(ev, ExecutingEvent) and ev.node_id == "2":
                loop.call_soon_threadsafe(running.set)

        task = asyncio.ensure_future(executor.run_async(workflow("slow_node"), job_id="async-1", on_event=on_event))
        await asyncio.wait_for(running.wait(), 60)  # the job runs: the cancel is no queued cancel
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert isinstance(events[-1], InterruptedEvent), "the job itself was interrupted, inside its 30 s node"
    assert not any(isinstance(e, ExecutedEvent) and e.node_id == "2" for e in events)
    assert executor.run(workflow("solid_red_image")).outputs
