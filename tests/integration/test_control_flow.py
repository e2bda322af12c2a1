"""No job touches another's control flow (issue 17, item 10): a preflight is never cancelled by
another job's end, and ``interrupt(job_id)`` always reaches its job, whatever phase it is in:
fetching its files, handed to the backend (its downloads over, not queued yet), queued, started,
finishing. Each phase is reached through the job's own events, never a clock."""

import asyncio
import threading

import pytest

from embedded import JobInterrupted
from embedded.job.events import DownloadEvent, ExecutingEvent, StartEvent, SuccessEvent

from ..helpers import png_bytes, workflow

pytestmark = pytest.mark.timeout(120)


def async_wait(seconds: float) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 3}},
            "2": {"class_type": "EmbeddedTestAsyncWait", "inputs": {"image": ["1", 0], "seconds": seconds}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def test_a_preflight_sent_while_a_job_with_an_async_node_runs_is_answered(executor):
    in_async_node = threading.Event()
    job = executor.submit(async_wait(3.0), on_event=lambda ev: in_async_node.set()
                          if isinstance(ev, ExecutingEvent) and ev.node_id == "2" else None)
    assert in_async_node.wait(60)
    report = executor.check(workflow("solid_red_image"))  # queued behind the job, answered after it
    assert report.ok and report.errors == []
    assert job.result(timeout=60).outputs


def interrupt_on(executor, job_id: str, when):
    """An ``on_event`` that interrupts ``job_id`` at the first event ``when`` accepts."""
    done = threading.Event()

    def on_event(ev):
        if not done.is_set() and when(ev):
            done.set()
            assert executor.interrupt(job_id) is True
    return on_event, done


def test_an_interrupt_after_the_downloads_ended_but_before_the_job_is_queued_reaches_it(executor, file_server):
    file_server.files["/handoff/in.png"] = png_bytes()
    on_event, done = interrupt_on(executor, "handoff-1", lambda ev: isinstance(ev, DownloadEvent) and ev.done)
    ran = []
    with pytest.raises(JobInterrupted):
        executor.run(workflow("load_and_invert_input"), files={"in.png": file_server.url("/handoff/in.png")},
                     job_id="handoff-1", on_event=lambda ev: (on_event(ev), ran.append(ev)))
    assert done.is_set()
    assert not [e for e in ran if isinstance(e, ExecutingEvent)], "no node ran"


def test_the_same_for_an_async_caller(executor, file_server):
    file_server.files["/handoff/in2.png"] = png_bytes()
    on_event, done = interrupt_on(executor, "handoff-2", lambda ev: isinstance(ev, DownloadEvent) and ev.done)

    async def main():
        await executor.run_async(workflow("load_and_invert_input"), files={"in.png": file_server.url("/handoff/in2.png")},
                                 job_id="handoff-2", on_event=on_event)
    with pytest.raises(JobInterrupted):
        asyncio.run(main())
    assert done.is_set()


@pytest.mark.parametrize("phase", [StartEvent, ExecutingEvent, SuccessEvent], ids=lambda p: p.__name__)
def test_an_interrupt_reaches_a_running_job_at_each_of_its_events(executor, phase):
    job_id = f"phase-{phase.__name__}"
    on_event, done = interrupt_on(executor, job_id, lambda ev: isinstance(ev, phase))
    with pytest.raises(JobInterrupted):
        executor.run(workflow("progress_steps"), job_id=job_id, on_event=on_event)
    assert done.is_set()
    assert executor.run(workflow("solid_red_image")).outputs, "the next job runs"


def test_an_interrupt_reaches_a_queued_job(executor):
    in_async_node = threading.Event()
    first = executor.submit(async_wait(2.0), on_event=lambda ev: in_async_node.set()
                            if isinstance(ev, ExecutingEvent) else None)
    assert in_async_node.wait(60)
    queued = executor.submit(workflow("solid_red_image"), job_id="queued-1")
    assert executor.interrupt("queued-1") is True
    with pytest.raises(JobInterrupted):
        queued.result(timeout=60)
    assert first.result(timeout=60).outputs
