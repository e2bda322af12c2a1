"""Production mode, the SDK's real worker loop against a control plane simulated on loopback: a job
whose node never checks ComfyUI's interrupt flag is answered within the stop grace period of its
timeout or cancel, with ``stopPod: true``, and the worker takes no job until the node returns."""

import time

import pytest

from ..helpers import workflow
from ..servers import FakeJobApi, start_loop_worker

#: the node blocks for BLOCK s: an answer before that came while it still ran
TIMEOUT, GRACE, BLOCK = 3.0, 1.0, 15.0


@pytest.fixture(scope="module")
def loop_api(tmp_path_factory, extra_paths):
    api = FakeJobApi()
    work = tmp_path_factory.mktemp("stuck-loop-work")
    api.worker = start_loop_worker(api, work, extra_paths, work.parent / "stuck-loop.log",
                                   JOB_TIMEOUT_S=str(TIMEOUT), JOB_STOP_GRACE_S=str(GRACE))
    yield api
    api.worker.stop()
    api.close()


def blocking_job() -> dict:
    wf = workflow("node_never_checks_interrupt")
    wf["2"]["inputs"]["seconds"] = BLOCK
    return {"workflow": wf}


def assert_no_job_taken_until_the_node_returns(api, node_started: float, job_id: str) -> None:
    api.submit(job_id, {"workflow": workflow("solid_red_image")})
    time.sleep(1.0)
    assert api.jobs.qsize() == 1, "a stuck worker took a new job"
    result = api.result(job_id, timeout=60)
    assert result["output"]["images"], result
    assert time.monotonic() - node_started >= BLOCK - 0.5, "taken only once the node had returned"


def test_a_timed_out_job_whose_node_never_stops_is_answered_with_stop_pod(loop_api):
    loop_api.submit("stuck-timeout", blocking_job())
    started = loop_api.wait_for_node("stuck-timeout", "2")
    result = loop_api.result("stuck-timeout", timeout=30)
    answered = time.monotonic() - started
    assert answered < BLOCK, "answered while the node still ran: timeout, then grace, then the answer"
    assert result["stopPod"] is True
    assert result["error"] == (f"The job exceeded its timeout of {TIMEOUT:g} s and was stopped at node 2 "
                               f"(EmbeddedTestBlock); its node did not stop within {GRACE:g} s and still runs, so "
                               f"this worker takes no new job and asks to be replaced")
    assert_no_job_taken_until_the_node_returns(loop_api, started, "after-timeout")


def test_a_cancelled_job_whose_node_never_stops_is_answered_with_stop_pod(loop_api):
    loop_api.submit("stuck-cancel", blocking_job())
    started = loop_api.wait_for_node("stuck-cancel", "2")
    loop_api.stop("stuck-cancel")
    result = loop_api.result("stuck-cancel", timeout=30)
    assert time.monotonic() - started < TIMEOUT, "answered before its timeout: the cancel did it"
    assert result["stopPod"] is True
    assert result["error"].startswith("The job was interrupted at node 2 (EmbeddedTestBlock); its node did not "
                                      f"stop within {GRACE:g} s")
    assert_no_job_taken_until_the_node_returns(loop_api, started, "after-cancel")


def test_a_cancelled_job_that_stops_in_time_is_not_answered_and_the_worker_stays(loop_api):
    wf = workflow("slow_node")
    loop_api.submit("plain-cancel", {"workflow": wf})
    loop_api.wait_for_node("plain-cancel", "2")
    loop_api.stop("plain-cancel")
    loop_api.submit("after-plain-cancel", {"workflow": workflow("solid_red_image")})
    result = loop_api.result("after-plain-cancel", timeout=30)
    assert "stopPod" not in result and result["output"]["images"]
    finals = [p for p in loop_api.posts if p["job_id"] == "plain-cancel" and p["body"].get("status") != "IN_PROGRESS"]
    assert finals == [], "RunPod cancelled it: the SDK posts nothing for it, as before"
