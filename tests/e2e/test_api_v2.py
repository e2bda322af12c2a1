"""``python -m embedded serve``, driven by Comfy-Org's official client (``comfy-sdk``): jobs, their
outputs as assets, input assets, events, cancels, and every refusal in the API's envelope.

One server process for the module (a token, a queue bound of 2, the test custom nodes); raw HTTP
only where the client refuses locally what the server must refuse too, or retries what we look at.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import requests

from ..helpers import open_image, png_bytes, workflow
from ..servers import wait_until, worker_env
from .apiv2 import TOKEN, ApiServer, sdk_workflow, wait_status

comfy_sdk = pytest.importorskip("comfy_sdk")

pytestmark = pytest.mark.timeout(180)
MAX_QUEUE = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory, extra_paths):
    work = tmp_path_factory.mktemp("api-v2-work")
    srv = ApiServer(worker_env(work, extra_paths), work.parent / "api-v2.log", "--token", TOKEN,
                    "--max-queue", str(MAX_QUEUE), "--state-dir", str(work / "state")).wait_healthy()
    yield srv
    srv.stop()


@pytest.fixture()
def client(server, monkeypatch):
    monkeypatch.setenv("COMFY_BASE_URL", server.url)
    monkeypatch.setenv("COMFY_API_KEY", TOKEN)
    with comfy_sdk.Comfy() as c:
        yield c


def test_a_workflow_runs_and_its_outputs_download_whole_and_by_range(server, client):
    job = client.run(sdk_workflow(client, "solid_red_image"))
    assert job.status == "succeeded" and job.error is None
    [out] = job.outputs
    assert (out.node_id, out.type, out.content_type) == ("2", "image", "image/png")
    data = out.to_bytes()
    assert len(data) == out.size_bytes and open_image(data).getpixel((0, 0))[:3] == (255, 0, 0)
    assert out.to_bytes(range=(0, 7)) == data[:8] == b"\x89PNG\r\n\x1a\n"
    raw = server.raw("GET", f"/jobs/{job.id}").json()
    assert raw["progress"]["value"] == 1.0 and raw["progress"]["nodes_done"] == raw["progress"]["nodes_total"] == 2
    assert raw["metrics"]["execution_ms"] is not None and raw["started_at"] and raw["completed_at"]


def test_a_range_past_the_end_is_416(server, client):
    job = client.run(sdk_workflow(client, "solid_red_image"))
    size = job.outputs[0].size_bytes
    response = server.raw("GET", f"/assets/{job.outputs[0].id}/content", headers={"Range": f"bytes={size + 10}-"})
    assert response.status_code == 416


def test_an_input_asset_is_stored_once_by_hash_and_given_to_the_job_by_its_name(server, client):
    red = png_bytes((6, 4), (255, 0, 0))
    first = client.assets.from_bytes(red, filename="red.png", content_type="image/png")
    job = client.run(sdk_workflow(client, "load_and_invert_input", {("1", "image"): first}))
    assert job.status == "succeeded"
    assert open_image(job.outputs[0].to_bytes()).getpixel((0, 0))[:3] == (0, 255, 255)
    assert job.get_workflow().graph["1"]["inputs"]["image"] == "red.png"
    again = client.assets.from_bytes(red, filename="again.png", content_type="image/png")
    again.commit()
    assert again.created_new is False and again.hash == first.hash and again.id != first.id  # HEAD, then from-hash
    assert client.assets.get(again.id).file_path == "again.png"


def server_state(server):
    return server_work(server) / "state" / "assets"


def server_work(server):
    return __import__("pathlib").Path(server.proc.args[server.proc.args.index("--state-dir") + 1]).parent


def test_events_say_running_then_progress_then_each_output_before_the_terminal_status(client):
    job = client.submit(sdk_workflow(client, "output_then_slow_node"))
    events = list(job.events())
    kinds = [type(e).__name__ for e in events]
    assert isinstance(events[-1], comfy_sdk.StatusChange) and events[-1].status == "succeeded"
    statuses = [e.status for e in events if isinstance(e, comfy_sdk.StatusChange)]
    assert statuses[-1] == "succeeded" and "running" in statuses
    outputs = [e.output.name for e in events if isinstance(e, comfy_sdk.OutputReady)]
    assert outputs == ["early_00001_.png", "late_00001_.png"], kinds
    assert kinds.index("OutputReady") < len(kinds) - 1
    progress = [e for e in events if isinstance(e, comfy_sdk.Progress)]
    assert progress and all(0 <= p.value <= 1 for p in progress)
    assert [p.value for p in progress] == sorted(p.value for p in progress)
    assert job.result().status == "succeeded" and len(job.outputs) == 2


def test_previews_reach_the_stream_the_latest_on_connect_and_progress_moves_inside_a_non_output_node(
        server, client, tmp_path):
    gate = tmp_path / "gate"
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
             "2": {"class_type": "EmbeddedTestPreviewThenWait", "inputs": {"image": ["1", 0], "gate": str(gate)}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "previewed"}}}
    job = client.submit(client.workflows.from_json(graph))
    live = next(e for e in job.events() if isinstance(e, comfy_sdk.Preview))
    assert (live.node_id, live.content_type) == ("2", "image/jpeg")
    assert live.to_pil().format == "JPEG" and live.to_pil().getpixel((0, 0))[0] > 200, "the node's red preview"
    progress = server.raw("GET", f"/jobs/{job.id}").json()["progress"]
    assert (progress["nodes_done"], progress["current_node"]) == (1, "2"), "EmptyImage done, node 2 running"
    assert 1 / 3 < progress["value"] < 2 / 3, "a quarter of node 2's steps counts"
    on_connect = next(e for e in job.events() if isinstance(e, comfy_sdk.Preview))  # the gate is still shut
    assert on_connect.data == live.data, "a stream that connects gets the latest preview at once"
    gate.write_text("")
    assert job.wait(timeout=60).status == "succeeded"


def test_a_cache_hit_says_its_outputs_were_reused(server, client):
    fresh = client.run(sdk_workflow(client, "solid_red_image", {("1", "color"): 0x0A0B0C}))
    again = client.run(sdk_workflow(client, "solid_red_image", {("1", "color"): 0x0A0B0C}))
    assert server.raw("GET", f"/jobs/{fresh.id}").json()["outputs_reused"] is False
    assert server.raw("GET", f"/jobs/{again.id}").json()["outputs_reused"] is True
    assert again.outputs[0].to_bytes() == fresh.outputs[0].to_bytes()


def test_a_running_job_is_cancelled_and_a_second_cancel_answers_the_same(client):
    job = client.submit(sdk_workflow(client, "slow_node"))
    wait_status(client, job, "running")
    job.cancel()
    assert job.status in ("canceling", "canceled")
    job.wait(timeout=60)
    assert job.status == "canceled"
    job.cancel()
    assert job.status == "canceled"
    assert client.run(sdk_workflow(client, "solid_red_image")).status == "succeeded"  # the next job runs


def test_a_queued_job_is_cancelled_without_running(server, client):
    running = client.submit(sdk_workflow(client, "slow_node"))
    wait_status(client, running, "running")
    queued = client.submit(sdk_workflow(client, "solid_red_image"))
    assert client.jobs.get(queued.id).status == "queued"
    queued.cancel()
    running.cancel()
    queued.wait(timeout=60)
    running.wait(timeout=60)
    assert queued.status == "canceled" and queued.outputs == []
    assert server.raw("GET", f"/jobs/{queued.id}").json()["started_at"] is None, "it never ran"


def test_an_invalid_workflow_is_refused_with_each_nodes_reasons(client):
    with pytest.raises(comfy_sdk.InvalidWorkflow) as info:
        client.submit(sdk_workflow(client, "invalid_out_of_range"))
    assert info.value.http_status == 422
    [reason] = info.value.details["node_errors"]["1"]
    assert reason["field"] == "width" and "smaller than min" in reason["reason"]
    with pytest.raises(comfy_sdk.InvalidWorkflow) as unknown:
        client.submit(sdk_workflow(client, "invalid_unknown_class"))
    assert any(r["type"] == "missing_node_type" for rs in unknown.value.details["node_errors"].values() for r in rs)


def test_a_refused_submission_makes_no_job_and_an_accepted_one_on_an_idle_server_has_started(server, client):
    before = {j["id"] for j in server.raw("GET", "/jobs?limit=100").json()["jobs"]}
    refused = server.raw("POST", "/jobs", json={"workflow": workflow("invalid_out_of_range")})
    assert refused.status_code == 422
    assert {j["id"] for j in server.raw("GET", "/jobs?limit=100").json()["jobs"]} == before
    job = client.submit(sdk_workflow(client, "solid_red_image", {("1", "color"): 0x123456}))
    assert job.status in ("running", "succeeded"), "answered once ComfyUI validated it and it started"
    assert job.result().status == "succeeded"


def test_a_workflow_submitted_while_another_runs_is_validated_in_its_turn_and_fails_with_the_reasons(server, client):
    running = client.submit(sdk_workflow(client, "slow_node"))
    wait_status(client, running, "running")
    invalid = client.submit(sdk_workflow(client, "invalid_out_of_range"))
    assert invalid.status == "queued"
    running.cancel()
    invalid.wait(timeout=60)
    assert invalid.status == "failed" and invalid.error.code == "invalid_workflow"
    [reason] = server.raw("GET", f"/jobs/{invalid.id}").json()["error"]["details"]["node_errors"]["1"]
    assert reason["field"] == "width" and "smaller than min" in reason["reason"]


def test_a_refused_submission_is_answered_from_its_own_validation_never_behind_the_next_job(server, client,
                                                                                             tmp_path):
    import threading

    gate = tmp_path / "gate"
    held = {"1": {"class_type": "EmbeddedTestGatedValidation", "inputs": {"gate": str(gate)}}}
    answers: list = []
    refused = threading.Thread(target=lambda: answers.append(server.raw("POST", "/jobs", json={"workflow": held})))
    refused.start()
    wait_until(lambda: (tmp_path / "gate.waiting").exists(), 60, "the held workflow's validation")
    following = client.submit(sdk_workflow(client, "slow_node"))  # it waits for the runner: queued
    gate.write_text("")
    refused.join(60)
    assert answers and answers[0].status_code == 422, answers[0].text if answers else None
    assert answers[0].json()["error"]["code"] == "invalid_workflow"
    [reason] = answers[0].json()["error"]["details"]["node_errors"]["1"]
    assert "the gate said no" in reason["reason"]
    assert client.jobs.get(following.id).status in ("queued", "running"), "answered before the next job ended"
    following.cancel()
    following.wait(timeout=60)


def test_a_value_nested_too_deep_or_an_integer_past_64_bits_is_422_naming_its_node_and_gives_its_key_back(server):
    deep: list = [0]
    for _ in range(40):
        deep = [deep]
    for node, name, value in (("1", "color", 2 ** 70), ("1", "width", deep), ("2", "filename_prefix", deep)):
        wf = workflow("solid_red_image")
        wf[node]["inputs"][name] = value
        refused = server.raw("POST", "/jobs", json={"workflow": wf}, headers={"Idempotency-Key": f"deep-{node}{name}"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_workflow"), name
        [reason] = refused.json()["error"]["details"]["node_errors"][node]
        assert reason["field"] == name and reason["class_type"] == wf[node]["class_type"]
    far_too_deep = server.raw("POST", "/jobs", data=b'{"workflow": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                              headers={"Content-Type": "application/json", "Idempotency-Key": "deep-json"})
    assert (far_too_deep.status_code, far_too_deep.json()["error"]["code"]) == (422, "invalid_request")
    too_long = server.raw("POST", "/jobs", data=b'{"workflow": {"1": {"inputs": {"a": ' + b"1" * 5000 + b"}}}}",
                          headers={"Content-Type": "application/json"})  # past Python's 4300 digits
    odd_charset = server.raw("POST", "/jobs", data=b"{}", headers={"Content-Type": "application/json; charset=bogus"})
    for refused in (too_long, odd_charset):
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_request")
    again = server.raw("POST", "/jobs", json={"workflow": workflow("solid_red_image")},
                       headers={"Idempotency-Key": "deep-1color"})
    assert again.status_code == 201, "the refused submission gave its key back"
    assert "failed on this request" not in server.log() and "Traceback (most recent call last)" not in \
        server.log().split("serving Comfy API v2")[-1].split("embedded_broken_pack")[-1]


def test_what_the_client_refuses_locally_the_server_refuses_too(server):
    ui = server.raw("POST", "/jobs", json={"workflow": workflow("invalid_ui_format")})
    assert (ui.status_code, ui.json()["error"]["code"]) == (422, "workflow_format_ui")
    ghost = {"__type": "core/ASSET", "info": {"id": "no-such-asset", "file_path": "x.png"}}
    wf = workflow("load_and_invert_input")
    wf["1"]["inputs"]["image"] = ghost
    missing = server.raw("POST", "/jobs", json={"workflow": wf})
    assert missing.status_code == 422 and missing.json()["error"] == {
        "code": "missing_asset", "message": "Asset(s) not found: no-such-asset", "details": {"missing_ids": ["no-such-asset"]}}
    extra = server.raw("POST", "/jobs", json={"workflow": workflow("solid_red_image"), "webhook_url": "http://x"})
    assert (extra.status_code, extra.json()["error"]["code"]) == (422, "invalid_request")
    labels = server.raw("POST", "/jobs", json={"workflow": workflow("solid_red_image"), "metadata": {"k": 1}})
    assert (labels.status_code, labels.json()["error"]["code"]) == (422, "metadata_invalid")
    assert server.raw("GET", "/jobs/nope").json()["error"]["code"] == "not_found"
    assert server.raw("GET", "/nowhere").status_code == 404 and "error" in server.raw("GET", "/nowhere").json()


def test_an_idempotency_key_is_single_use_and_a_refused_submission_gives_it_back(server, client):
    job = client.submit(sdk_workflow(client, "solid_red_image"), idempotency_key="key-1")
    with pytest.raises(comfy_sdk.IdempotencyKeyReuse):
        client.submit(sdk_workflow(client, "solid_red_image"), idempotency_key="key-1")
    job.wait(timeout=60)  # an idle server validates at once
    refused = server.raw("POST", "/jobs", json={"workflow": workflow("invalid_out_of_range")},
                         headers={"Idempotency-Key": "key-2"})
    assert refused.status_code == 422
    assert client.submit(sdk_workflow(client, "solid_red_image"), idempotency_key="key-2").id != job.id


def test_beyond_the_queue_bound_a_submission_gets_429_with_retry_after(server, client):
    running = client.submit(sdk_workflow(client, "slow_node"))
    wait_status(client, running, "running")
    waiting = [client.submit(sdk_workflow(client, "solid_red_image")) for _ in range(MAX_QUEUE)]
    full = server.raw("POST", "/jobs", json={"workflow": workflow("solid_red_image")}, headers={"Idempotency-Key": "k-full"})
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
    assert int(full.headers["Retry-After"]) >= 1
    running.cancel()
    for job in waiting:
        job.wait(timeout=60)
    # the refused key was given back: the client's retry with it is accepted
    assert server.raw("POST", "/jobs", json={"workflow": workflow("solid_red_image")},
                      headers={"Idempotency-Key": "k-full"}).status_code == 201


def test_the_token_is_required_but_for_health_and_a_missing_or_wrong_one_is_401(server, monkeypatch):
    missing = server.raw("GET", "/jobs", token=None)
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    for wrong in ("wrong", TOKEN + "x", "\u00e9t\u00e9"):
        refused = server.raw("GET", "/jobs", token=wrong)
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized"), wrong
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    not_utf8 = server.raw("GET", "/jobs", token=None, headers={"Authorization": b"Bearer \xff\xfe" + TOKEN.encode()})
    assert (not_utf8.status_code, not_utf8.json()["error"]["code"]) == (401, "unauthorized")
    assert server.raw("GET", "/health", token=None).json()["status"] == "healthy"
    monkeypatch.setenv("COMFY_BASE_URL", server.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    with comfy_sdk.Comfy() as anonymous, pytest.raises(comfy_sdk.Unauthorized):
        anonymous.jobs.get("anything")


def test_an_upload_whose_hash_differs_is_refused_and_nothing_is_kept(server):
    before = set((server_state(server) / "blobs").iterdir())
    response = server.raw("POST", "/assets", files={"expected_hash": (None, "blake3:" + "0" * 64),
                                                    "file": ("x.png", png_bytes(), "image/png")})
    assert response.status_code == 409 and response.json()["error"]["code"] == "hash_mismatch"
    assert set((server_state(server) / "blobs").iterdir()) == before


def test_an_asset_a_job_uses_cannot_be_deleted_until_the_job_ends(server, client):
    asset = client.assets.from_bytes(png_bytes(), filename="in.png", content_type="image/png")
    graph = client.workflows.from_json({**workflow("slow_node"), "9": {"class_type": "LoadImage",
                                                                      "inputs": {"image": "placeholder"}}})
    graph.set_input("9", "image", asset)
    job = client.submit(graph)
    wait_status(client, job, "running")
    in_use = server.raw("DELETE", f"/assets/{asset.id}")
    assert (in_use.status_code, in_use.json()["error"]["code"]) == (409, "asset_in_use")
    job.cancel()
    job.wait(timeout=60)
    asset.delete()
    assert server.raw("DELETE", f"/assets/{asset.id}").status_code == 404


def test_the_job_list_is_newest_first_in_pages_and_filters_by_metadata(server, client):
    labelled = client.run(client.workflows.from_json(workflow("solid_red_image")))  # no label
    tagged = client.submit(sdk_workflow(client, "solid_red_image"), metadata={"team": "blue", "run": "7"})
    tagged.wait(timeout=60)
    everything = [j["id"] for j in server.raw("GET", "/jobs?limit=100").json()["jobs"]]
    assert everything[0] == tagged.id and labelled.id in everything
    paged = [j.id for j in client.list_jobs(limit=2)]  # the client follows next_cursor
    assert paged == everything
    blue = list(client.list_jobs(metadata={"team": "blue"}))
    assert [j.id for j in blue] == [tagged.id] and blue[0].metadata == {"team": "blue", "run": "7"}
    assert server.raw("GET", "/jobs?cursor=bogus").json()["error"]["code"] == "invalid_cursor"


def test_a_non_loopback_host_without_a_token_is_refused_before_anything_starts(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "embedded", "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--token" in proc.stderr and "serving" not in proc.stdout


def test_sigterm_lets_the_running_job_end_then_the_server_exits(server, client):
    """Last in this module: it stops the module's server."""
    import threading

    job = client.submit(sdk_workflow(client, "output_then_slow_node"))
    wait_status(client, job, "running")
    seen: list = []
    reader = threading.Thread(target=lambda: seen.extend(job.events()), daemon=True)
    reader.start()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    refused = server.raw("POST", "/jobs", json={"workflow": workflow("solid_red_image")})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert client.jobs.get(job.id).status in ("running", "succeeded")
    assert server.proc.wait(60) == 0
    reader.join(10)
    assert isinstance(seen[-1], comfy_sdk.StatusChange) and seen[-1].status == "succeeded"
    assert "failed in the server" not in server.log() and "Task exception" not in server.log()


def test_after_a_restart_finished_jobs_and_their_outputs_are_there_and_the_running_one_failed(
        tmp_path, extra_paths, monkeypatch):
    env = worker_env(tmp_path / "work", extra_paths)
    state = ["--state-dir", str(tmp_path / "state")]
    first = ApiServer(env, tmp_path / "first.log", *state)
    monkeypatch.setenv("COMFY_BASE_URL", first.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    with comfy_sdk.Comfy() as client:
        done = client.run(sdk_workflow(client, "solid_red_image"))
        data = done.outputs[0].to_bytes()
        running = client.submit(sdk_workflow(client, "slow_node"), idempotency_key="kept-key")
        wait_status(client, running, "running")
    first.proc.kill()  # no goodbye: as a crash or a lost machine
    first.stop()
    second = ApiServer(env, tmp_path / "second.log", *state)
    monkeypatch.setenv("COMFY_BASE_URL", second.url)
    try:
        with comfy_sdk.Comfy() as client:
            again = client.jobs.get(done.id)
            assert again.status == "succeeded" and again.outputs[0].to_bytes() == data
            lost = client.jobs.get(running.id)
            assert lost.status == "failed" and lost.error.code == "server_restarted"
            with pytest.raises(comfy_sdk.IdempotencyKeyReuse):
                client.submit(sdk_workflow(client, "solid_red_image"), idempotency_key="kept-key")
            assert {j.id for j in client.list_jobs(limit=10)} == {done.id, running.id}
    finally:
        second.stop()


def test_with_a_bucket_outputs_are_uploaded_there_and_handed_out_as_presigned_urls(tmp_path, extra_paths, s3,
                                                                                   monkeypatch):
    env = worker_env(tmp_path / "work", extra_paths, BUCKET_ENDPOINT_URL=f"{s3.endpoint}/outputs",
                     BUCKET_ACCESS_KEY_ID=s3.ACCESS_KEY, BUCKET_SECRET_ACCESS_KEY=s3.SECRET_KEY)
    srv = ApiServer(env, tmp_path / "bucket.log")
    monkeypatch.setenv("COMFY_BASE_URL", srv.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    try:
        with comfy_sdk.Comfy() as client:
            job = client.run(sdk_workflow(client, "solid_red_image"))
            [out] = job.outputs
            url = requests.get(f"{srv.api}/jobs/{job.id}", timeout=30).json()["outputs"][0]["url"]
            assert url.startswith(f"{s3.endpoint}/outputs/{job.id}/") and "X-Amz-Signature" in url
            assert out.get_download_url().url == url
            data = out.to_bytes()  # /content answers with the presigned URL, the client follows it
            assert open_image(data).getpixel((0, 0))[:3] == (255, 0, 0)
            [stored] = s3.client().list_objects_v2(Bucket="outputs", Prefix=f"{job.id}/")["Contents"]
            assert stored["Size"] == len(data) == out.size_bytes
            assert s3.ACCESS_KEY not in srv.log() and s3.SECRET_KEY not in srv.log()
    finally:
        srv.stop()
