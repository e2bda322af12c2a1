"""The SDK's production loop (job fetch, stop signals, results) driven by a fake job API on
loopback: progress updates, cancel, timeout and refresh_worker reach RunPod as they should."""

import time

from ..helpers import workflow


def test_results_carry_stop_pod_when_refresh_worker_is_set(job_loop):
    job_loop.submit("ok-1", {"workflow": workflow("solid_red_image")})
    result = job_loop.result("ok-1", timeout=60)
    assert result["stopPod"] is True
    assert result["output"]["images"][0]["filename"] == "ComfyUI_00001_.png"


def test_progress_updates_report_nodes_and_steps(job_loop):
    job_loop.submit("steps-1", {"workflow": workflow("many_steps")})
    assert "images" in job_loop.result("steps-1", timeout=60)["output"]
    time.sleep(0.5)  # progress_update posts from daemon threads: let the last ones land
    updates = job_loop.progress("steps-1")
    nodes = [u["node_id"] for u in updates if u["step"] is None]
    assert {"1", "2", "3", "4", "5"} <= set(nodes), updates
    steps = [u for u in updates if u["node_id"] == "2" and u["step"] is not None]
    assert 1 <= len(steps) < 40, "step updates are throttled, not one per step"
    assert any(u["step"] == 40 and u["max_steps"] == 40 for u in steps), "a node's last step is reported"
    assert all(u["nodes_total"] == 5 and u["class_type"] for u in updates)
    assert max(u["percent"] for u in updates) <= 100
    executing_5 = [u for u in updates if u["node_id"] == "5" and u["step"] is None][0]
    assert executing_5["nodes_done"] == 4 and executing_5["percent"] == 80.0


#: how long the slow node sleeps (tests/fixtures/workflows/slow_node.json): the bound of the stops
SLOW_NODE_S = workflow("slow_node")["2"]["inputs"]["seconds"]


def test_a_stop_signal_interrupts_the_running_job_and_the_next_job_runs(job_loop):
    job_loop.submit("slow-1", {"workflow": workflow("slow_node")})
    job_loop.wait_for_node("slow-1", "2")
    job_loop.stop("slow-1")
    stopped = time.monotonic()
    job_loop.submit("after-cancel", {"workflow": workflow("solid_red_image")})
    result = job_loop.result("after-cancel", timeout=30)
    assert "images" in result["output"]
    # the sleeping node (30 s) was interrupted in ComfyUI, not left running behind the next job:
    # the next job's answer came before that node could have ended by itself
    assert time.monotonic() - stopped < SLOW_NODE_S
    assert job_loop.worker.alive()


def test_job_timeout_fails_a_long_job_and_the_worker_goes_on(job_loop):
    job_loop.submit("too-long", {"workflow": workflow("slow_node")})
    started = time.monotonic()
    result = job_loop.result("too-long", timeout=60)
    assert result["error"] == "The job exceeded its timeout of 8 s and was stopped at node 2 (EmbeddedTestSleep)"
    assert time.monotonic() - started < SLOW_NODE_S, "stopped inside the 30 s node"
    job_loop.submit("after-timeout", {"workflow": workflow("solid_red_image")})
    assert "images" in job_loop.result("after-timeout", timeout=30)["output"]


def test_no_job_leaves_files_behind(job_loop):
    job_loop.submit("files-1", {"workflow": workflow("solid_red_image")})
    job_loop.result("files-1", timeout=30)
    jobs = job_loop.work_dir / "jobs"
    assert not jobs.exists() or list(jobs.iterdir()) == []
    for idle in ("input", "output", "temp"):
        assert list((job_loop.work_dir / "idle" / idle).iterdir()) == []
