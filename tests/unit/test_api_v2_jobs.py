"""The API server's jobs, without a server: how long they are kept."""

from __future__ import annotations

import time

from embedded.apiv2.assets import AssetStore


def test_jobs_that_ended_a_day_ago_are_forgotten_with_their_keys(tmp_path):
    from embedded.apiv2 import jobs as jobs_module
    from embedded.apiv2.jobs import Jobs
    from embedded.apiv2.record import JOB_TTL_S, JobRecord

    jobs = Jobs(executor=None, assets=AssetStore(tmp_path / "assets", 10, 10, 0), max_queue=1)
    day = JOB_TTL_S
    old = JobRecord("old", {}, {}, time.time() - 2 * day, status="succeeded", completed_at=time.time() - day - 1)
    recent = JobRecord("recent", {}, {}, time.time(), status="failed", completed_at=time.time())
    running = JobRecord("running", {}, {}, time.time() - 2 * day, status="running")
    jobs._jobs.update({j.id: j for j in (old, recent, running)})
    jobs._keys.update({"old-key": ("old", time.time() - jobs_module.IDEMPOTENCY_TTL_S - 1), "new-key": ("recent", time.time())})
    assert jobs.sweep() == 1
    assert set(jobs._jobs) == {"recent", "running"} and set(jobs._keys) == {"new-key"}
