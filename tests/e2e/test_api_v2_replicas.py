"""Every machine: replicas of ``python -m embedded serve --state postgresql://...`` with one real
PostgreSQL (Debian's, in a temporary folder on loopback) and one real bucket (SeaweedFS) serve any
job, whichever replica a client talks to.

Two replicas, A and B (one device each, short leases), for the module; Comfy-Org's official client
submits to one and reads from the other. A third replica is started, and killed with SIGKILL under
its job, by the test of a lost replica; the database restarts in the last test.
"""

from __future__ import annotations

import json
import os
import signal
import time

import psycopg
import pytest
import requests

from ..helpers import open_image, png_bytes, workflow
from ..servers import wait_until, worker_env
from .apiv2 import TOKEN, ApiServer, sdk_workflow, wait_status

comfy_sdk = pytest.importorskip("comfy_sdk")

pytestmark = pytest.mark.timeout(240)
LEASE_S, GRACE_S = 2, 2
MAX_QUEUE = 2


@pytest.fixture(scope="module")
def replica_env(tmp_path_factory, extra_paths, postgres, s3):
    database = postgres.database()

    def env(name: str) -> dict[str, str]:
        work = tmp_path_factory.mktemp(f"work-{name}")
        return worker_env(work, extra_paths, SERVE_STATE=database, TMPDIR=str(work),  # (a killed one's cache too)
                          BUCKET_ENDPOINT_URL=f"{s3.endpoint}/outputs", BUCKET_ACCESS_KEY_ID=s3.ACCESS_KEY,
                          BUCKET_SECRET_ACCESS_KEY=s3.SECRET_KEY, BUCKET_PREFIX="replicas",
                          SERVE_LEASE_S=str(LEASE_S), SERVE_LEASE_GRACE_S=str(GRACE_S),
                          SERVE_MAX_QUEUE=str(MAX_QUEUE))
    env.database = database
    return env


def start_replica(replica_env, tmp_path_factory, name: str) -> ApiServer:
    log = tmp_path_factory.mktemp(f"replica-{name}") / "serve.log"
    return ApiServer(replica_env(name), log, "--token", TOKEN)


@pytest.fixture()
def another_replica(replica_env, tmp_path_factory):
    """Starts one more replica (``another_replica(name)``, once it is healthy), stopped after the
    test whatever happens."""
    started: list[ApiServer] = []

    def start(name: str) -> ApiServer:
        started.append(start_replica(replica_env, tmp_path_factory, name))
        return started[-1].wait_healthy()
    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def replicas(replica_env, tmp_path_factory):
    a = start_replica(replica_env, tmp_path_factory, "a")
    b = start_replica(replica_env, tmp_path_factory, "b")
    a.wait_healthy(), b.wait_healthy()
    yield a, b
    a.stop(), b.stop()


def client_of(server: ApiServer, monkeypatch):
    monkeypatch.setenv("COMFY_BASE_URL", server.url)
    monkeypatch.setenv("COMFY_API_KEY", TOKEN)
    return comfy_sdk.Comfy()


@pytest.fixture()
def clients(replicas, monkeypatch):
    a, b = replicas
    with client_of(a, monkeypatch) as at_a, client_of(b, monkeypatch) as at_b:
        yield at_a, at_b


def sleeping(client, seconds: float):
    return sdk_workflow(client, "short_sleep", {("2", "seconds"): seconds})


def events(server: ApiServer, job_id: str, timeout: float = 60) -> list[tuple[str, dict]]:
    """The job's event stream at ``server``, read to its end."""
    seen: list[tuple[str, dict]] = []
    with server.raw("GET", f"/jobs/{job_id}/events", stream=True, timeout=timeout) as response:
        assert response.status_code == 200
        event = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event is not None:
                seen.append((event, json.loads(line[len("data: "):])))
    return seen


def test_a_job_submitted_to_one_replica_is_read_streamed_and_downloaded_at_the_other(replicas, clients):
    a, b = replicas
    at_a, at_b = clients
    job = at_a.submit(sleeping(at_a, 1.0))
    stream = events(b, job.id)
    kinds = [e for e, _ in stream]
    assert kinds[-1] == "status" and stream[-1][1]["status"] == "succeeded"
    assert "output" in kinds and kinds.index("output") < len(kinds) - 1, "outputs come before the terminal status"
    read = at_b.jobs.get(job.id)
    assert read.status == "succeeded" and read.error is None
    [out] = read.outputs
    image = open_image(out.to_bytes())  # through the bucket's presigned URL
    assert image.size == (8, 8)
    content = b.raw("GET", f"/assets/{out.id}/content", allow_redirects=False)
    assert content.status_code == 302 and "X-Amz-Signature" in content.headers["Location"]
    assert at_b.jobs.get(job.id).get_workflow().graph["2"]["inputs"]["seconds"] == 1.0


def test_previews_and_progress_of_a_job_at_one_replica_reach_a_stream_at_the_other(replicas, clients, tmp_path):
    a, b = replicas
    at_a, at_b = clients
    gate = tmp_path / "gate"
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
             "2": {"class_type": "EmbeddedTestPreviewThenWait", "inputs": {"image": ["1", 0], "gate": str(gate)}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "previewed"}}}
    job = at_a.submit(at_a.workflows.from_json(graph))
    followed = at_b.jobs.get(job.id)
    live = next(e for e in followed.events() if isinstance(e, comfy_sdk.Preview))
    assert (live.node_id, live.content_type) == ("2", "image/jpeg") and live.to_pil().format == "JPEG"
    progress = wait_until(lambda: (p := b.raw("GET", f"/jobs/{job.id}").json()["progress"])["current_node"] == "2"
                          and p, 30, "node 2's progress at B")
    assert progress["nodes_done"] == 1 and 1 / 3 < progress["value"] < 2 / 3
    gate.write_text("")
    assert followed.wait(timeout=60).status == "succeeded"


def test_a_job_running_at_one_replica_is_cancelled_at_the_other(replicas, clients):
    a, b = replicas
    at_a, at_b = clients
    job = at_a.submit(sleeping(at_a, 60))
    wait_status(at_b, job, "running")
    cancelled = b.raw("POST", f"/jobs/{job.id}/cancel").json()
    assert cancelled["status"] in ("canceling", "canceled")
    assert wait_status(at_b, job, "canceled", timeout=30).status == "canceled"
    assert at_a.jobs.get(job.id).status == "canceled"


def test_a_waiting_job_is_cancelled_at_the_other_replica_and_never_runs(replicas, clients):
    a, b = replicas
    at_a, at_b = clients
    busy = [at_a.submit(sleeping(at_a, 60)) for _ in range(2)]  # one on each replica's device
    for job in busy:
        wait_status(at_b, job, "running")
    waiting = at_a.submit(sleeping(at_a, 60))
    assert at_b.jobs.get(waiting.id).status == "queued"
    assert b.raw("POST", f"/jobs/{waiting.id}/cancel").json()["status"] == "canceled"
    for job in busy:
        b.raw("POST", f"/jobs/{job.id}/cancel")
    for job in busy:
        wait_status(at_a, job, "canceled")
    read = a.raw("GET", f"/jobs/{waiting.id}").json()
    assert read["status"] == "canceled" and read["started_at"] is None


def test_an_idempotency_key_used_at_one_replica_is_refused_at_the_other(replicas):
    a, b = replicas
    body = {"workflow": workflow("solid_red_image")}
    first = a.raw("POST", "/jobs", json=body, headers={"Idempotency-Key": "same-key-both-replicas"})
    assert first.status_code == 201
    again = b.raw("POST", "/jobs", json=body, headers={"Idempotency-Key": "same-key-both-replicas"})
    assert again.status_code == 422 and again.json()["error"]["code"] == "idempotency_key_reuse"


def test_an_asset_uploaded_to_one_replica_runs_in_a_job_submitted_to_the_other(replicas, clients):
    a, b = replicas
    at_a, at_b = clients
    red = png_bytes((6, 4), (255, 0, 0))
    asset = at_a.assets.from_bytes(red, filename="red.png", content_type="image/png")
    asset.commit()  # uploaded to A
    assert b.raw("HEAD", f"/assets/by-hash/{asset.hash}").status_code == 200
    assert at_b.assets.get(asset.id).file_path == "red.png"
    job = at_b.run(sdk_workflow(at_b, "load_and_invert_input", {("1", "image"): at_b.assets.get(asset.id)}))
    assert job.status == "succeeded", job.error
    assert open_image(job.outputs[0].to_bytes()).getpixel((0, 0))[:3] == (0, 255, 255)
    assert requests.get(b.raw("GET", f"/assets/{asset.id}/content", allow_redirects=False).headers["Location"],
                        timeout=10).content == red
    in_use = at_a.submit(sdk_workflow(at_a, "load_and_invert_input", {("1", "image"): asset}))
    refused = b.raw("DELETE", f"/assets/{asset.id}")
    if at_b.jobs.get(in_use.id).status in ("queued", "running"):
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "asset_in_use"
    wait_status(at_b, in_use, "succeeded")


def test_a_job_waiting_at_one_replica_runs_at_the_other_with_its_asset_and_its_api_key(replicas, clients,
                                                                                       replica_env):
    a, b = replicas
    at_a, at_b = clients
    busy = at_a.submit(sleeping(at_a, 60))  # A's device is taken: what A takes next waits in the queue
    wait_status(at_b, busy, "running")
    blue = at_a.assets.from_bytes(png_bytes((5, 3), (0, 0, 255)), filename="blue.png", content_type="image/png")
    blue.commit()
    graph = {**workflow("load_and_invert_input"), "9": {"class_type": "EmbeddedTestApiKey", "inputs": {}}}
    graph["1"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": blue.id}}
    key = "sk-test-only-for-the-claimant"
    posted = a.raw("POST", "/jobs", json={"workflow": graph, "extra_data": {"api_key_comfy_org": key}})
    assert posted.status_code == 201 and posted.json()["status"] == "queued", posted.text
    job = at_b.jobs.get(posted.json()["id"])
    done = wait_status(at_b, job, "succeeded", "failed", timeout=60)
    assert done.status == "succeeded", done.error
    texts = [o for o in done.outputs if o.type == "text"]
    images = [o for o in done.outputs if o.type == "image"]
    assert [t.to_bytes().decode() for t in texts] == [f"api_key={key}"], "the claimant got the key"
    assert open_image(images[0].to_bytes()).getpixel((0, 0))[:3] == (255, 255, 0), "and the asset's file"
    with psycopg.connect(replica_env.database) as conn:
        run, record = conn.execute("SELECT run, record::text FROM embedded_jobs WHERE id = %s", (job.id,)).fetchone()
    assert run is None and key not in record, "the key is gone from the database once claimed"
    assert key not in a.log() + b.log()
    b.raw("POST", f"/jobs/{busy.id}/cancel")
    wait_status(at_a, busy, "canceled")


def test_six_jobs_submitted_to_one_replica_run_on_both(replicas, clients):
    a, b = replicas
    at_a, at_b = clients
    jobs = []
    for _ in range(3):  # the bound: two devices, MAX_QUEUE waiting
        jobs += [at_a.submit(sleeping(at_a, 1.5)) for _ in range(2)]
        for job in jobs[-2:]:
            wait_status(at_b, job, "running", "succeeded")
    done = [wait_status(at_b, job, "succeeded") for job in jobs]
    raw = [b.raw("GET", f"/jobs/{j.id}").json() for j in done]
    spans = sorted((r["started_at"], r["completed_at"]) for r in raw)
    overlapping = [(x, y) for x, y in zip(spans, spans[1:]) if y[0] < x[1]]
    assert overlapping, f"no two jobs ran at once: {spans}"


def test_the_queue_bound_holds_across_replicas(replicas, clients):
    a, b = replicas
    at_a, at_b = clients
    held = [at_a.submit(sleeping(at_a, 60)) for _ in range(2)]
    held += [at_b.submit(sleeping(at_b, 60)) for _ in range(MAX_QUEUE)]
    refused = b.raw("POST", "/jobs", json={"workflow": workflow("short_sleep")})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
    assert refused.headers["Retry-After"]
    health = a.raw("GET", "/health", token=None).json()
    assert health["replicas"] == 2 and health["jobs_unfinished"] == 4 and health["jobs_waiting"] == 2
    for job in held:
        a.raw("POST", f"/jobs/{job.id}/cancel")
    for job in held:
        wait_status(at_b, job, "canceled")


def test_a_replica_killed_mid_job_leaves_its_job_failed_worker_lost_at_the_others(replicas, clients, another_replica,
                                                                                    monkeypatch):
    a, b = replicas
    at_a, at_b = clients
    c = another_replica("c")
    with client_of(c, monkeypatch) as at_c:
        job = at_c.submit(sleeping(at_c, 120))  # C's device is free: the job is C's
        wait_status(at_a, job, "running")
        os.killpg(c.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        c.proc.wait(10)
        ended = wait_status(at_a, job, "failed", timeout=LEASE_S + GRACE_S + 30)
        waited = time.monotonic() - killed
    raw = b.raw("GET", f"/jobs/{job.id}").json()
    assert raw["status"] == "failed" and raw["error"]["code"] == "worker_lost", raw
    assert ended.error.code == "worker_lost"
    print(f"worker_lost after {waited:.1f} s (lease {LEASE_S} s + grace {GRACE_S} s)")
    after = at_b.run(sleeping(at_b, 0.1))  # the others go on
    assert after.status == "succeeded"


def test_a_replica_cut_off_past_its_lease_finds_its_job_ended_and_stops_it_writing_nothing(
        replicas, clients, another_replica, monkeypatch):
    a, b = replicas
    at_a, at_b = clients
    d = another_replica("d")
    with client_of(d, monkeypatch) as at_d:
        job = at_d.submit(sleeping(at_d, 120))
        wait_status(at_a, job, "running")
        os.killpg(d.proc.pid, signal.SIGSTOP)  # frozen: no lease renewed, nothing answered
        try:
            wait_status(at_a, job, "failed", timeout=LEASE_S + GRACE_S + 30)
        finally:
            os.killpg(d.proc.pid, signal.SIGCONT)
        wait_until(lambda: f"job {job.id} was ended by another replica" in d.log(), 30, "D to find its job ended")
        wait_until(lambda: d.raw("GET", "/health", token=None).status_code == 200, 30, "D's device to be free")
    raw = b.raw("GET", f"/jobs/{job.id}").json()
    assert raw["status"] == "failed" and raw["error"]["code"] == "worker_lost", "the owner wrote nothing after"


def test_a_replica_stopped_by_sigterm_ends_its_job_and_leaves_the_live_ones(replicas, clients, another_replica,
                                                                             monkeypatch):
    a, b = replicas
    at_a, at_b = clients
    e = another_replica("e")
    wait_until(lambda: a.raw("GET", "/health", token=None).json()["replicas"] == 3, 30, "three live replicas")
    with client_of(e, monkeypatch) as at_e:
        job = at_e.submit(sleeping(at_e, 1.5))  # E's: its device is free
        wait_status(at_a, job, "running")
        os.killpg(e.proc.pid, signal.SIGTERM)
        assert e.proc.wait(60) == 0
    assert at_a.jobs.get(job.id).status == "succeeded", "a running job ends within the grace"
    assert a.raw("GET", "/health", token=None).json()["replicas"] == 2, "it left the live replicas"


def test_after_a_postgresql_restart_both_replicas_run_jobs(replicas, clients, postgres):
    a, b = replicas
    at_a, at_b = clients
    postgres.restart()
    for server in (a, b):  # each answers 200 once it has reconnected
        wait_until(lambda s=server: s.raw("GET", "/health", token=None).status_code == 200, 60, "health after restart")
    for client in (at_a, at_b):
        job = client.run(sleeping(client, 0.1))
        assert job.status == "succeeded", job.error
    stream = events(a, at_b.submit(sleeping(at_b, 0.5)).id)
    assert stream[-1][1]["status"] == "succeeded"


def test_a_job_running_through_a_database_outage_longer_than_its_lease_ends_as_it_ran(replicas, clients, postgres):
    a, b = replicas
    at_a, at_b = clients
    job = at_a.submit(sleeping(at_a, 8))
    wait_status(at_b, job, "running")
    postgres.halt()
    try:
        for server in (a, b):
            wait_until(lambda s=server: s.raw("GET", "/health", token=None).json()["status"] == "state_unavailable",
                       30, "health to say the state is away")
        refused = b.raw("GET", f"/jobs/{job.id}")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "state_unavailable"
        assert "Traceback" not in refused.text
        time.sleep(LEASE_S + GRACE_S + 2)  # the fault: away longer than a lease and its grace
    finally:
        postgres.start()
    for server in (a, b):
        wait_until(lambda s=server: s.raw("GET", "/health", token=None).status_code == 200, 60, "health after restart")
    done = wait_status(at_b, job, "succeeded", "failed", timeout=60)
    assert done.status == "succeeded", done.error


def test_what_postgresql_cannot_keep_is_refused_in_the_api_envelope_never_a_traceback(replicas):
    a, b = replicas
    assert b.raw("GET", "/jobs/a%00b").status_code == 404
    assert b.raw("GET", "/assets/a%00b").status_code == 404
    assert b.raw("GET", "/jobs", params={"cursor": "a\x00"}).json()["error"]["code"] == "invalid_cursor"
    assert b.raw("GET", "/jobs", params={"metadata[a]": "\x00"}).json()["jobs"] == []
    nul = b.raw("POST", "/jobs", json={"workflow": workflow("solid_red_image"), "metadata": {"a": "x\x00y"}})
    nan = b.raw("POST", "/jobs", data='{"workflow": {"1": {"class_type": "EmptyImage", "inputs": {"width": NaN}}}}',
                headers={"Content-Type": "application/json"})
    for refused in (nul, nan):
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request", refused.text
    assert "embedded/apiv2" not in a.log() + b.log(), "nothing of ours failed unanswered"
