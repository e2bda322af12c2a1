"""Worker processes for the end-to-end tests: the runpod local API and the SDK's production loop
against a fake job API, each on a fresh work folder with the test custom nodes."""

import pytest

from ..helpers import CUSTOM_NODES
from ..servers import FakeJobApi, LocalApiWorker, start_loop_worker, worker_env, wait_until


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

    api = FakeJobApi()
    work = tmp_path_factory.mktemp("job-loop-work")
    worker = start_loop_worker(api, work, extra_paths, work.parent / "job-loop.log", JOB_TIMEOUT_S="8",
                               REFRESH_WORKER="true")
    api.worker, api.work_dir = worker, work
    yield api
    worker.stop()
    api.close()


__all__ = ["wait_until"]
