"""Every job ends, in both modes, however its nodes behave: a node that never checks ComfyUI's
interrupt flag, an async node that never returns, tasks a node leaves behind; a cancel waits for
the job to stop instead of cancelling into ComfyUI; waiting time counts from submission, and each
node's run time is in the result."""

import asyncio
import dataclasses
import threading
import time

import pytest

from embedded import Executor, JobInterrupted, JobTimeout, WorkerStuck
from embedded.job.events import ExecutingEvent, InterruptedEvent

from ..helpers import workflow

GRACE = 1.0
#: how long the blocking node blocks: "answered before it returned" is the bound under test,
#: far longer than the grace period so that a slow machine still answers well within it
BLOCK = GRACE + 9.0


@pytest.fixture(scope="module")
def quick_grace(executor, test_config, server_config, tmp_path_factory):
    """Both backends with a one-second stop grace period (JOB_STOP_GRACE_S=1)."""
    embedded = Executor(dataclasses.replace(test_config, job_stop_grace_s=GRACE)).start()
    server = Executor(dataclasses.replace(server_config, job_stop_grace_s=GRACE,
                                          work_dir=tmp_path_factory.mktemp("server-work-grace"))).start()
    yield {"embedded": embedded, "server": server}
    server.close()
    embedded.close()


@pytest.fixture(params=["embedded", "server"])
def backend(request, quick_grace):
    ex = quick_grace[request.param]
    yield request.param, ex
    deadline = time.monotonic() + BLOCK + 30  # a blocked node may still hold the embedded runner
    while ex.stuck and time.monotonic() < deadline:
        time.sleep(0.1)


def _blocking(seconds: float) -> dict:
    wf = workflow("node_never_checks_interrupt")
    wf["2"]["inputs"]["seconds"] = seconds
    return wf


def _when_node_starts(node_id: str):
    started = threading.Event()

    def on_event(ev):
        if isinstance(ev, ExecutingEvent) and ev.node_id == node_id:
            started.set()
    return started, on_event


def test_a_node_that_never_checks_the_interrupt_flag_is_answered_after_the_grace_period(backend):
    mode, ex = backend
    started = time.monotonic()
    with pytest.raises(JobTimeout) as info:
        ex.run(_blocking(BLOCK), timeout=0.5)
    answered = time.monotonic() - started
    assert answered < BLOCK, "answered before the blocking node returned"
    message = str(info.value)
    assert message.startswith("The job exceeded its timeout of 0.5 s and was stopped at node 2 (EmbeddedTestBlock)")
    assert f"did not stop within {GRACE:g} s" in message
    if mode == "embedded":
        # nothing can take a thread back: the worker says it must be replaced, and takes no job
        assert info.value.refresh_worker is True and "asks to be replaced" in message
        assert ex.stuck
        with pytest.raises(WorkerStuck):
            ex.submit(workflow("solid_red_image"))
        deadline = time.monotonic() + BLOCK + 30
        while ex.stuck:  # until the node returns
            assert time.monotonic() < deadline
            time.sleep(0.05)
    else:
        # the server process went with its node
        assert info.value.refresh_worker is False and "ComfyUI's server was stopped" in message
    assert ex.run(workflow("solid_red_image"), timeout=60).outputs


def test_jobs_queued_behind_a_stuck_node_are_answered_too(backend):
    mode, ex = backend
    started, on_event = _when_node_starts("2")
    stuck = ex.submit(_blocking(BLOCK), on_event=on_event, timeout=0.3)
    assert started.wait(30)
    queued = ex.submit(workflow("solid_red_image"))
    with pytest.raises(JobTimeout):
        stuck.result(timeout=BLOCK)  # answered after the grace period, before the node returns
    if mode == "embedded":
        with pytest.raises(WorkerStuck):
            queued.result(timeout=1)
    else:  # the server restarts for it
        assert queued.result(timeout=60).outputs


def test_an_async_node_that_never_returns_is_answered_and_the_runner_is_free(backend):
    mode, ex = backend
    with pytest.raises(JobTimeout) as info:
        ex.run(workflow("async_node_never_returns"), timeout=0.5)
    assert info.value.refresh_worker is False, "nothing still runs: no need for a new worker"
    assert not ex.stuck
    assert ex.run(workflow("solid_red_image"), timeout=60).outputs


def test_a_cancel_interrupts_and_waits_for_the_job_instead_of_cancelling_into_comfyui(backend):
    mode, ex = backend
    events = []
    started, on_event = _when_node_starts("3")

    def record(ev):
        events.append(ev)
        on_event(ev)

    async def main():
        task = asyncio.ensure_future(ex.run_async(workflow("async_task_then_sleep"), on_event=record))
        while not started.is_set():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # ComfyUI itself saw an interrupt and said so: the job ran to its own end
    assert any(isinstance(ev, InterruptedEvent) for ev in events)
    assert ex.run(workflow("solid_red_image")).outputs


def test_a_cancel_of_a_job_whose_node_never_stops_answers_after_the_grace_period(backend):
    mode, ex = backend
    started, on_event = _when_node_starts("2")

    async def main():
        task = asyncio.ensure_future(ex.run_async(_blocking(BLOCK), on_event=on_event))
        while not started.is_set():
            await asyncio.sleep(0.02)
        cancelled = time.monotonic()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, JobInterrupted) as exc:
            return exc, time.monotonic() - cancelled

    outcome, waited = asyncio.run(main())
    assert waited < BLOCK, "answered after the grace period, before the node returned"
    if mode == "embedded":  # the caller learns that the node still holds the process
        assert isinstance(outcome, JobInterrupted) and outcome.refresh_worker
    else:  # the server was stopped: an ordinary cancel
        assert isinstance(outcome, asyncio.CancelledError)


@pytest.mark.parametrize("name", ["async_task_then_raise", "async_task_then_sleep"])
def test_no_task_of_an_ended_job_writes_anything_later(backend, name):
    mode, ex = backend
    config = ex.config
    if name == "async_task_then_raise":
        with pytest.raises(Exception):
            ex.run(workflow(name))
    else:
        with pytest.raises(JobTimeout):
            ex.run(workflow(name), timeout=0.3)
    time.sleep(1.5)  # the node's task would write 1 s after it started
    assert not list(config.work_dir.rglob("late.txt"))
    result = ex.run(workflow("solid_red_image"))
    assert [o.filename for o in result.outputs] == ["ComfyUI_00001_.png"]
    time.sleep(0.2)
    assert not list(config.work_dir.rglob("late.txt"))


def test_waiting_time_counts_from_submission(backend):
    mode, ex = backend
    first = workflow("short_sleep")
    ahead = ex.submit(first)
    behind = ex.submit(workflow("solid_red_image"))
    ahead_result, behind_result = ahead.result(timeout=60), behind.result(timeout=60)
    ran_ahead = ahead_result.timings.validate + ahead_result.timings.execute
    assert behind_result.timings.wait >= ran_ahead * 0.9 > 0


def test_results_time_every_node_and_the_times_add_up(backends):
    for mode, ex in backends.items():
        first = ex.run(workflow("short_sleep"))
        nodes = first.node_timings
        assert list(nodes) == ["1", "2", "3"], mode
        assert [(t.class_type, t.cached) for t in nodes.values()] == [
            ("EmptyImage", False), ("EmbeddedTestSleep", False), ("SaveImage", False)], mode
        assert nodes["2"].ms >= 1450, (mode, nodes)  # the node sleeps 1.5 s: it cannot take less
        assert sum(t.ms for t in nodes.values()) <= first.timings.execute * 1000 + 50, mode
        again = ex.run(workflow("short_sleep")).node_timings
        assert {n: t.cached for n, t in again.items()} == {"1": True, "2": True, "3": True}, mode
        assert again["1"].ms == again["2"].ms == again["3"].ms == 0.0
