"""Several devices through the Python API (``COMFY_DEVICES=cpu,cpu``: two CPU executors, each in a
child process): jobs run at once, each sees only its own files, a cancel reaches the job it names,
and a child that dies or holds a node that never stops costs only its own job.

Jobs show they ran at once by meeting: each ``EmbeddedTestWhere`` node writes its pid into a folder
and waits until the other's file is there (``tests/custom_nodes``), whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import threading
from pathlib import Path

import pytest

from embedded import (ExecutionError, Executor, InputError, JobInterrupted, JobTimeout, ValidationError,
                      WorkerLost)
from embedded.job.events import ExecutingEvent, StartEvent

from ..helpers import png_bytes, workflow
from ..servers import wait_until


def where(tag: str, folder: Path | str = "", wait_for: str = "", seconds: float = 0.0) -> dict:
    return {"1": {"class_type": "EmbeddedTestWhere",
                  "inputs": {"tag": tag, "folder": str(folder), "wait_for": wait_for, "seconds": seconds}}}


def seen(result) -> dict:
    return json.loads(result.outputs[0].data)


@pytest.fixture(scope="module")
def pool(test_config, executor):
    """Two CPU executors beside the session's own (``executor``: booted first, so that the node
    index the children read exists); a node deaf to interrupts is given up after 1 s."""
    config = dataclasses.replace(test_config, job_stop_grace_s=1.0)
    ex = Executor(config, devices="cpu,cpu").start()
    yield ex
    ex.close()


@pytest.fixture
def meeting(tmp_path) -> Path:
    folder = tmp_path / "meeting"
    folder.mkdir()
    return folder


def pid_of(folder: Path, tag: str, timeout: float = 60) -> int:
    """The pid a meeting node wrote (it runs from then on)."""
    return wait_until(lambda: (folder / tag).exists() and int((folder / tag).read_text()), timeout,
                      f"node {tag} to start")


def test_the_pool_boots_one_cpu_executor_per_device(pool):
    assert pool.capacity == 2
    assert pool.boot_info.devices == ("cpu:0", "cpu:1")
    assert pool.boot_info.cpu


def test_two_jobs_run_at_once_in_two_processes(pool, meeting):
    a = pool.submit(where("a", meeting, "b"))
    b = pool.submit(where("b", meeting, "a"))
    first, second = seen(a.result(timeout=120)), seen(b.result(timeout=120))
    assert first["pid"] != second["pid"] and os.getpid() not in (first["pid"], second["pid"])
    assert first["cpu"] and first["cuda_visible"] == ""  # a CPU executor sees no GPU


def test_threads_calling_run_share_the_devices(pool, meeting):
    results: dict[str, dict] = {}

    def run(tag: str, other: str) -> None:
        results[tag] = seen(pool.run(where(tag, meeting, other)))

    threads = [threading.Thread(target=run, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert {results["a"]["pid"], results["b"]["pid"]} == {int((meeting / "a").read_text()),
                                                         int((meeting / "b").read_text())}


def test_run_async_runs_jobs_at_once(pool, meeting):
    async def both():
        return await asyncio.gather(pool.run_async(where("a", meeting, "b")), pool.run_async(where("b", meeting, "a")))

    a, b = asyncio.run(both())
    assert seen(a)["pid"] != seen(b)["pid"]


def test_a_third_job_waits_for_a_free_device(pool, meeting):
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def recorder(tag: str):
        def record(ev):
            if isinstance(ev, StartEvent):
                with lock:
                    events.append((tag, "start"))
        return record

    a = pool.submit(where("a", meeting, "b,release"), on_event=recorder("a"))
    b = pool.submit(where("b", meeting, "a,release"), on_event=recorder("b"))
    pid_of(meeting, "a"), pid_of(meeting, "b")
    c = pool.submit(where("c"), on_event=recorder("c"))
    assert not c.done()
    (meeting / "release").write_text("")
    for future in (a, b, c):
        future.result(timeout=120)
    assert events.index(("c", "start")) == 2, events  # it started only once a device was free


def test_each_job_sees_only_its_own_files(pool, meeting):
    a = pool.submit(where("a", meeting, "b"), files={"only-a.png": png_bytes()})
    b = pool.submit(where("b", meeting, "a"), files={"only-b.png": png_bytes(color=(0, 0, 255))})
    inputs_a, inputs_b = seen(a.result(timeout=120))["inputs"], seen(b.result(timeout=120))["inputs"]
    assert "only-a.png" in inputs_a and "only-b.png" not in inputs_a
    assert "only-b.png" in inputs_b and "only-a.png" not in inputs_b


def test_a_cancel_reaches_the_job_it_names_and_no_other(pool, meeting):
    a = pool.submit(where("a", meeting, "b", seconds=0.0), job_id="cancel-a")
    b = pool.submit(where("b", meeting, "a,release"), job_id="keep-b")
    pid_of(meeting, "a"), pid_of(meeting, "b")
    a.result(timeout=120)  # met b, then ended
    c = pool.submit(where("c", meeting, "never"), job_id="cancel-c")
    pid_of(meeting, "c")
    assert pool.interrupt("cancel-c")
    with pytest.raises(JobInterrupted):
        c.result(timeout=60)
    assert not b.done()  # the other device's job runs on
    (meeting / "release").write_text("")
    assert seen(b.result(timeout=120))["tag"] == "b"


def test_a_queued_job_is_cancelled_without_running(pool, meeting):
    a = pool.submit(where("a", meeting, "release"))
    b = pool.submit(where("b", meeting, "release"))
    pid_of(meeting, "a"), pid_of(meeting, "b")
    queued = pool.submit(where("q", meeting), job_id="queued-job")
    assert pool.interrupt("queued-job")
    with pytest.raises(JobInterrupted, match="before it started"):
        queued.result(timeout=10)
    (meeting / "release").write_text("")
    a.result(timeout=120), b.result(timeout=120)
    assert not (meeting / "q").exists()


def test_a_killed_process_fails_only_its_job_and_is_replaced(pool, meeting):
    doomed = pool.submit(where("doomed", meeting, "never"))
    other = pool.submit(where("other", meeting, "doomed,release"))
    victim = pid_of(meeting, "doomed")
    pid_of(meeting, "other")
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerLost) as lost:
        doomed.result(timeout=60)
    assert lost.value.kind == "worker_lost" and lost.value.device in ("cpu:0", "cpu:1")
    assert lost.value.device in str(lost.value) and "SIGKILL" in str(lost.value)
    assert not other.done()
    (meeting / "release").write_text("")
    assert seen(other.result(timeout=120))["tag"] == "other"
    # the next jobs run on both devices again, the killed one's on a new process
    x = pool.submit(where("x", meeting, "y"))
    y = pool.submit(where("y", meeting, "x"))
    pids = {seen(x.result(timeout=180))["pid"], seen(y.result(timeout=180))["pid"]}
    assert len(pids) == 2 and victim not in pids


def test_a_node_that_ends_its_process_fails_only_its_job(pool):
    with pytest.raises(WorkerLost, match="exited with code 3"):
        pool.run({"1": {"class_type": "EmbeddedTestExit", "inputs": {"code": 3}}})
    assert seen(pool.run(where("after")))["tag"] == "after"


def test_a_node_deaf_to_interrupts_is_given_up_and_its_process_replaced(pool, meeting):
    deaf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "EmbeddedTestBlock", "inputs": {"image": ["1", 0], "seconds": 600.0}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    nodes: list[str] = []
    other = pool.submit(where("other", meeting, "release"))
    pid_of(meeting, "other")
    blocked = pool.submit(deaf, timeout=1.0, on_event=lambda ev: isinstance(ev, ExecutingEvent) and nodes.append(ev.node_id))
    with pytest.raises(JobTimeout) as stopped:
        blocked.result(timeout=60)
    assert stopped.value.node_id == "2" and not stopped.value.refresh_worker
    assert "did not stop within 1 s" in str(stopped.value) and "was ended" in str(stopped.value)
    assert not other.done()  # the other device was not touched
    (meeting / "release").write_text("")
    other.result(timeout=120)
    assert not pool.stuck
    assert seen(pool.run(where("after")))["tag"] == "after"


def test_a_preflight_runs_on_a_device(pool):
    report = pool.check({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert not report.ok and report.missing_nodes


def test_a_node_error_and_a_refusal_come_back_whole_from_a_device(pool):
    with pytest.raises(ExecutionError) as failed:
        pool.run(workflow("node_raises"))
    assert failed.value.node_id and failed.value.exception_type and failed.value.traceback
    with pytest.raises(ValidationError) as refused:
        pool.run(workflow("invalid_unknown_class"))
    assert refused.value.diagnosis is not None and refused.value.diagnosis.missing_nodes


def test_a_job_past_its_timeout_is_stopped_by_its_device_and_the_device_kept(pool, meeting):
    with pytest.raises(JobTimeout) as stopped:
        pool.run(where("late", meeting, "never"), timeout=1.0)
    assert stopped.value.node_id == "1" and "did not stop" not in str(stopped.value)
    pid = int((meeting / "late").read_text())
    # the device's process was not replaced: it runs the next jobs (two at once: one of them is it)
    x = pool.submit(where("x", meeting, "y"))
    y = pool.submit(where("y", meeting, "x"))
    assert pid in {seen(x.result(timeout=120))["pid"], seen(y.result(timeout=120))["pid"]}


def test_a_job_whose_values_cannot_travel_to_a_device_is_refused_and_the_pool_goes_on(pool):
    with pytest.raises(InputError, match="cannot be sent to a device's process"):
        pool.run(where("x"), extra_data={"lock": threading.Lock()})
    assert seen(pool.run(where("after")))["tag"] == "after"
