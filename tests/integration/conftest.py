import dataclasses

import pytest

from embedded.worker.handler import Worker


@pytest.fixture
def make_worker(executor, test_config):
    """A RunPod worker on the session's executor, its configuration changed as given."""
    def make(**changes):
        return Worker(dataclasses.replace(test_config, **changes), executor=executor)
    return make


@pytest.fixture(autouse=True)
def _no_leftover_job_folders(executor, test_config):
    """Every job's folders are gone once it ends, whatever the outcome (the device processes' of a
    pool, ``devices/*/jobs``, too)."""
    yield
    jobs = test_config.jobs_dir
    left = sorted(p.name for p in jobs.iterdir()) if jobs.exists() else []
    left += sorted(str(p.relative_to(test_config.work_dir)) for p in test_config.work_dir.glob("devices/*/jobs/*"))
    assert left == [], f"job folders left behind: {left}"
