"""The API server never freezes and every job ends: the boot runs beside the server (jobs
submitted meanwhile wait for it), ``/health`` is 200 only when a job can run (else 503 and why), a
failed boot is remembered, ``JOB_TIMEOUT_S`` applies, and a runner stuck in a node deaf to
interrupts retires the process (exit status 75) once its jobs are answered.

The boot is held by the test pack's prestartup script until the test opens its gate (a file).
"""

from __future__ import annotations

import pytest

from ..helpers import workflow
from ..servers import wait_until, worker_env
from .apiv2 import ApiServer

pytestmark = pytest.mark.timeout(180)
#: answers the event loop gives while the boot is held (a frozen loop never answers)
PROMPTLY_S = 10


@pytest.fixture()
def gated(tmp_path, extra_paths):
    gate = tmp_path / "boot-gate"
    srv = ApiServer(worker_env(tmp_path / "work", extra_paths, EMBEDDED_TEST_BOOT_GATE=str(gate)),
                    tmp_path / "server.log")
    yield srv, gate
    gate.write_text("open")
    srv.stop()


def health(srv):
    response = srv.raw("GET", "/health", token=None, timeout=PROMPTLY_S)
    return response.status_code, response.json()


def submit(srv, name="solid_red_image"):
    return srv.raw("POST", "/jobs", token=None, json={"workflow": workflow(name)}, timeout=PROMPTLY_S)


def job(srv, job_id):
    return srv.raw("GET", f"/jobs/{job_id}", token=None, timeout=PROMPTLY_S).json()


def ended(srv, job_id, timeout=60):
    return wait_until(lambda: (j := job(srv, job_id))["status"] in ("succeeded", "failed", "canceled") and j,
                      timeout, f"job {job_id} to end")


def test_while_comfyui_boots_the_server_answers_health_says_booting_and_a_job_waits_then_runs(gated):
    srv, gate = gated
    code, said = health(srv)
    assert (code, said["status"], said["booted"]) == (503, "booting", False)
    accepted = submit(srv)
    assert accepted.status_code == 201 and accepted.json()["status"] == "queued"
    code, said = health(srv)  # the loop still answers once a job waits for the boot
    assert (code, said["status"], said["jobs_waiting"]) == (503, "booting", 1)
    cancelled = submit(srv).json()["id"]
    srv.raw("POST", f"/jobs/{cancelled}/cancel", token=None, timeout=PROMPTLY_S)
    assert ended(srv, cancelled)["status"] == "canceled", "a cancel ends a job waiting for the boot at once"
    gate.write_text("open")
    assert ended(srv, accepted.json()["id"])["status"] == "succeeded"
    assert health(srv)[0] == 200 and health(srv)[1]["status"] == "healthy"


def test_a_failed_boot_fails_the_waiting_jobs_is_remembered_and_refuses_submissions_at_once(gated):
    srv, gate = gated
    waiting = submit(srv).json()["id"]
    gate.write_text("fail")
    failed = ended(srv, waiting)
    assert failed["status"] == "failed" and failed["error"]["code"] == "boot_failed"
    assert "the test asked this boot to fail" in failed["error"]["message"]
    code, said = health(srv)
    assert (code, said["status"]) == (503, "boot_failed") and "the test asked this boot to fail" in said["error"]
    for _ in range(3):
        refused = submit(srv)
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "boot_failed")
    assert srv.log().count("ComfyUI failed to boot") == 1, "booted once, never again per job"
    assert srv.alive(), "it stays up to say why (an orchestrator replaces it)"


@pytest.fixture(scope="module")
def strict(tmp_path_factory, extra_paths):
    """A server whose jobs time out after 3 s, and whose stop grace is 1 s."""
    work = tmp_path_factory.mktemp("api-v2-strict")
    srv = ApiServer(worker_env(work, extra_paths, JOB_TIMEOUT_S="3", JOB_STOP_GRACE_S="1",
                               SERVE_SHUTDOWN_GRACE_S="5"), work.parent / "api-v2-strict.log")
    yield srv
    srv.stop()


def test_job_timeout_s_applies_to_api_jobs(strict):
    slow = submit(strict, "slow_node").json()["id"]  # 30 s, checking the interrupt flag
    failed = ended(strict, slow)
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout"
    assert health(strict)[0] == 200
    assert ended(strict, submit(strict).json()["id"])["status"] == "succeeded", "the next job runs"


def test_a_runner_stuck_in_a_deaf_node_says_so_refuses_jobs_and_exits_75_once_its_jobs_are_answered(strict):
    """Last in this module: it ends the module's server."""
    deaf = workflow("node_never_checks_interrupt")
    deaf["2"]["inputs"]["seconds"] = 60.0
    stuck = strict.raw("POST", "/jobs", token=None, json={"workflow": deaf}).json()["id"]
    failed = ended(strict, stuck)
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout"
    code, said = health(strict)
    assert (code, said["status"]) == (503, "stuck")
    refused = submit(strict)
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "stuck")
    assert job(strict, stuck)["status"] == "failed", "its jobs can still be read"
    assert strict.proc.wait(60) == 75
