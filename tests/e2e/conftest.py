"""Worker processes for the end-to-end tests: the runpod local API and the SDK's production loop
against a fake job API, each on a fresh work folder with the test custom nodes."""

import pytest

from ..helpers import CUSTOM_NODES
from ..servers import FakeJobApi, LocalApiWorker, Process, worker_env, wait_until


@pytest.fixture(scope="session")
def extra_paths(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e-config") / "extra_model_paths.yaml"
    path.write_text(f"tests:\n  custom_nodes: {CUSTOM_NODES}\n")
    return path


@pytest.fixture(scope="session")
def local_api(tmp_path_factory, extra_paths):
    work = tmp_path_factory.mktemp("local-api-work")
    worker = LocalApiWorker(worker_env(work, extra_paths), work.parent / "local-api.log").wait_ready()
    worker.work_dir = work
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def job_loop(tmp_path_factory, extra_paths):
    """The SDK's production loop (``RUNPOD_WEBHOOK_GET_JOB`` set) fed by a fake job API."""
    import sys

    api = FakeJobApi()
    work = tmp_path_factory.mktemp("job-loop-work")
    env = worker_env(work, extra_paths, JOB_TIMEOUT_S="8", REFRESH_WORKER="true", **api.env())
    worker = Process([sys.executable, "-m", "embedded.handler"], env, work.parent / "job-loop.log")
    api.submit("warm-1", {"workflow": {"1": {"class_type": "EmptyImage", "inputs": {
        "width": 8, "height": 8, "batch_size": 1, "color": 0}}, "2": {"class_type": "PreviewImage", "inputs": {
        "images": ["1", 0]}}}})
    try:
        api.result("warm-1", timeout=180)
    except TimeoutError:
        raise RuntimeError(f"the worker never took a job:\n{worker.log()[-3000:]}") from None
    api.worker, api.work_dir = worker, work
    yield api
    worker.stop()
    api.close()


__all__ = ["wait_until"]
