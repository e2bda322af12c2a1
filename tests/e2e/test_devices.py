"""Several devices behind the front doors (``COMFY_DEVICES=cpu,cpu``): the RunPod worker's production
loop (the SDK's real ``JobScaler`` against a job API on loopback) takes two jobs at once, and the
Comfy API v2 server runs two at once with honest queue positions; a killed device process fails
only its own job, and the next jobs run on both devices.

Jobs show they ran at once by meeting (``EmbeddedTestWhere``: each writes its pid into a folder and
waits for the other's file), never by timings.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from ..servers import FakeJobApi, Process, start_loop_worker, wait_until, worker_env
from .apiv2 import TOKEN, ApiServer, wait_status

pytestmark = pytest.mark.timeout(300)


def where(tag: str, folder: Path | str = "", wait_for: str = "", seconds: float = 0.0) -> dict:
    return {"1": {"class_type": "EmbeddedTestWhere",
                  "inputs": {"tag": tag, "folder": str(folder), "wait_for": wait_for, "seconds": seconds}}}


def pid_of(folder: Path, tag: str, timeout: float = 120) -> int:
    return wait_until(lambda: (folder / tag).exists() and int((folder / tag).read_text()), timeout,
                      f"node {tag} to start")


@pytest.fixture
def meeting(tmp_path) -> Path:
    folder = tmp_path / "meeting"
    folder.mkdir()
    return folder


# --- the RunPod worker -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def job_loop(tmp_path_factory, extra_paths):
    api = FakeJobApi()
    work = tmp_path_factory.mktemp("devices-loop-work")
    worker = start_loop_worker(api, work, extra_paths, work.parent / "devices-loop.log", COMFY_DEVICES="cpu,cpu")
    api.worker = worker
    yield api
    worker.stop()
    api.close()


def test_the_worker_takes_two_jobs_at_once(job_loop, meeting):
    job_loop.submit("meet-a", {"workflow": where("a", meeting, "b")})
    job_loop.submit("meet-b", {"workflow": where("b", meeting, "a")})
    a, b = job_loop.result("meet-a", timeout=180), job_loop.result("meet-b", timeout=180)
    assert "error" not in a and "error" not in b, (a, b)
    assert int((meeting / "a").read_text()) != int((meeting / "b").read_text())
    assert "stopPod" not in a and "stopPod" not in b


def test_a_killed_device_process_fails_only_its_job_in_the_worker(job_loop, meeting):
    job_loop.submit("doomed", {"workflow": where("doomed", meeting, "never")})
    job_loop.submit("other", {"workflow": where("other", meeting, "doomed,release")})
    victim = pid_of(meeting, "doomed")
    pid_of(meeting, "other")
    os.kill(victim, signal.SIGKILL)
    lost = job_loop.result("doomed", timeout=120)
    assert "SIGKILL" in lost["error"] and "cpu:" in lost["error"], lost
    assert "stopPod" not in lost  # the worker replaced the process itself
    (meeting / "release").write_text("")
    assert "error" not in job_loop.result("other", timeout=120)
    job_loop.submit("next-x", {"workflow": where("x", meeting, "y")})
    job_loop.submit("next-y", {"workflow": where("y", meeting, "x")})
    x, y = job_loop.result("next-x", timeout=180), job_loop.result("next-y", timeout=180)
    assert "error" not in x and "error" not in y, (x, y)
    assert victim not in {int((meeting / "x").read_text()), int((meeting / "y").read_text())}


@pytest.fixture
def refreshing_loop(tmp_path_factory, extra_paths):
    api = FakeJobApi()
    work = tmp_path_factory.mktemp("devices-refresh-work")
    api.worker = None  # started by the test once both jobs wait: its first take is of both
    yield api, work
    if api.worker is not None:
        api.worker.stop()
    api.close()


def test_with_refresh_worker_the_last_job_in_flight_asks_for_a_fresh_worker(refreshing_loop, extra_paths, meeting):
    api, work = refreshing_loop
    api.submit("meet-a", {"workflow": where("a", meeting, "b")})
    api.submit("meet-b", {"workflow": where("b", meeting, "a")})
    api.worker = Process([sys.executable, "-m", "embedded.handler"],
                         worker_env(work, extra_paths, COMFY_DEVICES="cpu,cpu", REFRESH_WORKER="true", **api.env()),
                         work.parent / "devices-refresh.log")
    a, b = api.result("meet-a", timeout=180), api.result("meet-b", timeout=180)
    first, last = sorted((a, b), key=lambda r: r["received_at"])
    assert "error" not in first and "error" not in last, (first, last)
    assert "stopPod" not in first, "the other device's job was still running"
    assert last["stopPod"] is True


# --- the Comfy API v2 server -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory, extra_paths):
    work = tmp_path_factory.mktemp("devices-api-work")
    srv = ApiServer(worker_env(work, extra_paths), work.parent / "devices-api.log", "--token", TOKEN,
                    "--devices", "cpu,cpu", "--max-queue", "4").wait_healthy()
    yield srv
    srv.stop()


@pytest.fixture()
def client(server, monkeypatch):
    comfy_sdk = pytest.importorskip("comfy_sdk")
    monkeypatch.setenv("COMFY_BASE_URL", server.url)
    monkeypatch.setenv("COMFY_API_KEY", TOKEN)
    with comfy_sdk.Comfy() as c:
        yield c


def sdk_where(client, *args, **kwargs):
    return client.workflows.from_json(where(*args, **kwargs))


def test_health_says_how_many_jobs_run_at_once(server):
    health = server.raw("GET", "/health", token=None).json()
    assert health["status"] == "healthy"
    assert health["jobs_at_once"] == 2 and health["devices"] == ["cpu:0", "cpu:1"]


def test_the_server_runs_two_jobs_at_once_and_a_third_waits_first_in_line(server, client, meeting):
    a = client.submit(sdk_where(client, "a", meeting, "b,release"))
    b = client.submit(sdk_where(client, "b", meeting, "a,release"))
    pid_of(meeting, "a"), pid_of(meeting, "b")
    c = client.submit(sdk_where(client, "c"))
    for job in (a, b):
        assert wait_status(client, job, "running").status == "running"
    waiting = server.raw("GET", f"/jobs/{c.id}").json()
    assert waiting["status"] == "queued" and waiting["queue_position"] == 1
    (meeting / "release").write_text("")
    for job in (a, b, c):
        assert wait_status(client, job, "succeeded", "failed", timeout=120).status == "succeeded"


def test_a_killed_device_process_fails_only_its_job_on_the_server(server, client, meeting):
    doomed = client.submit(sdk_where(client, "doomed", meeting, "never"))
    other = client.submit(sdk_where(client, "other", meeting, "doomed,release"))
    victim = pid_of(meeting, "doomed")
    pid_of(meeting, "other")
    os.kill(victim, signal.SIGKILL)
    failed = wait_status(client, doomed, "failed", timeout=120)
    raw = server.raw("GET", f"/jobs/{doomed.id}").json()
    assert raw["error"]["code"] == "worker_lost" and "SIGKILL" in raw["error"]["message"], raw
    assert failed.status == "failed"
    assert client.jobs.get(other.id).status == "running"
    (meeting / "release").write_text("")
    assert wait_status(client, other, "succeeded", "failed", timeout=120).status == "succeeded"
    x = client.submit(sdk_where(client, "x", meeting, "y"))
    y = client.submit(sdk_where(client, "y", meeting, "x"))
    for job in (x, y):
        assert wait_status(client, job, "succeeded", "failed", timeout=180).status == "succeeded"
    assert server.raw("GET", "/health", token=None).json()["status"] == "healthy"
