"""The RunPod handler in-process, on the real executor: worker-comfyui's request/response contract,
every output kind, S3 delivery against a real S3 server, and its failure modes."""

import asyncio
import base64
import json
import urllib.parse

import pytest
import requests

from embedded.worker.handler import _local_api_args

from ..helpers import close_to, handle, open_image, png_bytes, workflow


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- input, as upstream ---------------------------------------------------------------------------

@pytest.mark.parametrize("job_input, message", [
    (None, "Please provide input"),
    ("{not json", "Invalid JSON format in input"),
    ({}, "Missing 'workflow' parameter"),
    ({"workflow": {"1": {}}, "images": "x"}, "'images' must be a list of objects with 'name' and 'image' keys"),
    ({"workflow": {"1": {}}, "images": [{"name": "a.png"}]},
     "'images' must be a list of objects with 'name' and 'image' keys"),
])
def test_upstream_bad_input_cases_keep_their_exact_messages(make_worker, job_input, message):
    assert handle(make_worker(), job_input) == {"error": message}


def test_input_may_be_a_json_string(make_worker):
    out = handle(make_worker(), json.dumps({"workflow": workflow("solid_red_image")}))
    assert [i["filename"] for i in out["images"]] == ["ComfyUI_00001_.png"]


def test_images_accept_a_data_uri_prefix(make_worker):
    image = "data:image/png;base64," + b64(png_bytes((6, 6), (0, 0, 0)))
    out = handle(make_worker(), {"workflow": workflow("load_and_invert_input"),
                                 "images": [{"name": "in.png", "image": image}]})
    assert open_image(base64.b64decode(out["images"][0]["data"])).convert("RGB").getpixel((0, 0)) == (255, 255, 255)


# --- output ----------------------------------------------------------------------------------------

def test_success_returns_images_exactly_as_upstream(make_worker):
    out = handle(make_worker(), {"workflow": workflow("save_and_preview")})
    assert set(out) == {"images"}  # the PreviewImage (temp) output is skipped, as upstream
    [image] = out["images"]
    assert set(image) == {"filename", "type", "data"}
    assert (image["filename"], image["type"]) == ("kept_00001_.png", "base64")
    assert open_image(base64.b64decode(image["data"])).convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_no_images_is_success_no_images(make_worker):
    assert handle(make_worker(), {"workflow": workflow("preview_only")}) == {"status": "success_no_images",
                                                                            "images": []}


@pytest.mark.parametrize("name, key, mime", [("video_mp4", "videos", "video/mp4"), ("video_webm", "videos", "video/webm"),
                                             ("audio_tone", "audio", "audio/flac")])
def test_video_and_audio_come_back_under_their_own_keys(make_worker, name, key, mime):
    out = handle(make_worker(), {"workflow": workflow(name)})
    assert out["images"] == [] and out["status"] == "success_no_images"
    [entry] = out[key]
    assert (entry["mime_type"], entry["type"]) == (mime, "base64")
    assert entry["node_id"] in workflow(name)
    assert len(base64.b64decode(entry["data"])) > 100


def test_text_comes_back_inline(make_worker):
    out = handle(make_worker(), {"workflow": workflow("text_output")})
    assert out["text"] == [{"node_id": "1", "filename": "1_0.txt", "type": "text", "mime_type": "text/plain",
                            "data": "hello from a node"}]


def test_animated_webp_stays_an_image(make_worker):
    [image] = handle(make_worker(), {"workflow": workflow("animated_webp")})["images"]
    assert image["filename"].endswith(".webp") and open_image(base64.b64decode(image["data"])).n_frames == 2


def test_refresh_worker_is_carried_by_every_result(make_worker):
    worker = make_worker(refresh_worker=True)
    assert handle(worker, {"workflow": workflow("solid_red_image")})["refresh_worker"] is True
    assert handle(worker, {})["refresh_worker"] is True


# --- failures --------------------------------------------------------------------------------------

def test_validation_errors_give_one_detail_per_node(make_worker):
    out = handle(make_worker(), {"workflow": workflow("invalid_out_of_range")})
    assert out["details"] == ["Node 1 (EmptyImage), input 'width': Value 0 smaller than min of 1: width"]
    assert out["error"] == ("Workflow validation failed:\n"
                            "• Node 1 (EmptyImage), input 'width': Value 0 smaller than min of 1: width")


def test_a_missing_model_lists_the_available_files_of_that_kind(make_worker, test_config):
    folder = test_config.models / "checkpoints"
    (folder / "tiny-a.safetensors").write_bytes(b"")
    (folder / "tiny-b.safetensors").write_bytes(b"")
    try:
        out = handle(make_worker(), {"workflow": workflow("missing_model")})
    finally:
        for name in ("tiny-a.safetensors", "tiny-b.safetensors"):
            (folder / name).unlink()
    assert out["details"][0].startswith("Node 1 (CheckpointLoaderSimple), input 'ckpt_name': Value not in list")
    prefix = "Available values for 'ckpt_name' (node 1): "
    assert out["details"][1].startswith(prefix)
    listed = set(out["details"][1][len(prefix):].split(", "))
    import folder_paths
    assert {"tiny-a.safetensors", "tiny-b.safetensors"} <= listed
    assert listed == set(folder_paths.get_filename_list("checkpoints")) | {"tiny-a.safetensors", "tiny-b.safetensors"}


UPSTREAM_EXECUTION_LINE = "Workflow execution error: Node Type: EmbeddedTestRaise, Node ID: {}, Message: deliberate failure\n"


def test_an_execution_error_is_upstreams_job_failed_with_the_node_line(make_worker):
    out = handle(make_worker(), {"workflow": workflow("node_raises")})
    assert out == {"error": "Job processing failed", "details": [UPSTREAM_EXECUTION_LINE.format(2)],
                   "execution_error": {"node_id": "2", "node_type": "EmbeddedTestRaise",
                                       "exception_type": "RuntimeError", "exception_message": "deliberate failure"}}


def test_an_execution_error_returns_the_images_saved_before_it_with_the_line_under_errors(make_worker):
    out = handle(make_worker(), {"workflow": workflow("node_raises_after_output")})
    assert [i["filename"] for i in out["images"]] == ["before_00001_.png"]
    assert open_image(base64.b64decode(out["images"][0]["data"])).getpixel((0, 0)) == (0, 0, 255)
    assert out["errors"] == [UPSTREAM_EXECUTION_LINE.format(3)]
    assert "error" not in out and "status" not in out
    assert out["execution_error"]["node_id"] == "3"


def test_a_ui_format_workflow_is_told_to_use_export_api(make_worker):
    assert "Export (API)" in handle(make_worker(), {"workflow": workflow("invalid_ui_format")})["error"]


def test_job_timeout_ends_a_long_job_with_a_clear_error(make_worker):
    out = handle(make_worker(job_timeout=0.5), {"workflow": workflow("slow_node")})
    assert out == {"error": "The job exceeded its timeout of 0.5 s and was stopped at node 2 (EmbeddedTestSleep)"}


def api_key_probe(run: str) -> dict:
    """The probe, with an input of its own per run: the key is no input of the node, so ComfyUI's
    cache would serve an identical workflow's result whatever the key (as its server does)."""
    wf = workflow("api_key_probe")
    wf["1"]["inputs"]["run"] = run
    return wf


def test_comfy_org_api_key_reaches_api_nodes_request_key_first(make_worker):
    worker = make_worker(comfy_org_api_key="env-key")
    assert handle(worker, {"workflow": api_key_probe("env")})["text"][0]["data"] == "api_key=env-key"
    out = handle(worker, {"workflow": api_key_probe("request"), "comfy_org_api_key": "request-key"})
    assert out["text"][0]["data"] == "api_key=request-key"
    assert handle(make_worker(), {"workflow": api_key_probe("none")})["text"][0]["data"] == "api_key=None"


def test_serve_api_locally_serves_on_all_interfaces_unless_told_otherwise():
    assert _local_api_args(["h"], True) == ["h", "--rp_serve_api", "--rp_api_host", "0.0.0.0"]
    assert _local_api_args(["h", "--rp_api_host", "127.0.0.1"], True) == ["h", "--rp_api_host", "127.0.0.1",
                                                                          "--rp_serve_api"]
    assert _local_api_args(["h", "--rp_serve_api"], True) == ["h", "--rp_serve_api"]
    assert _local_api_args(["h"], False) == ["h"]


# --- S3 against a real server ----------------------------------------------------------------------

@pytest.fixture
def s3_env(s3, monkeypatch):
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", f"{s3.endpoint}/outputs")
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", s3.ACCESS_KEY)
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", s3.SECRET_KEY)
    return s3


def test_s3_upload_returns_a_url_to_the_same_bytes_under_the_job_id(make_worker, executor, s3_env):
    worker = make_worker(bucket_endpoint_url=f"{s3_env.endpoint}/outputs", bucket_credentials_set=True)
    expected = executor.run(workflow("solid_red_image")).outputs[0].data
    out = handle(worker, {"workflow": workflow("solid_red_image")}, job_id="s3-job-42")
    [image] = out["images"]
    assert image["type"] == "s3_url" and image["filename"] == "ComfyUI_00001_.png"
    assert "errors" not in out
    assert requests.get(image["data"], timeout=10).content == expected
    key = urllib.parse.unquote(urllib.parse.urlparse(image["data"]).path.split("/outputs/", 1)[1])
    assert "/s3-job-42/" in f"/{key}" and key.endswith(".png")
    stored = s3_env.client().get_object(Bucket="outputs", Key=key)["Body"].read()
    assert stored == expected


def test_s3_uploads_videos_with_their_content_type(make_worker, s3_env):
    worker = make_worker(bucket_endpoint_url=f"{s3_env.endpoint}/outputs", bucket_credentials_set=True)
    [video] = handle(worker, {"workflow": workflow("video_mp4")}, job_id="s3-video")["videos"]
    assert video["type"] == "s3_url"
    got = requests.get(video["data"], timeout=10)
    assert got.headers["Content-Type"] == "video/mp4" and got.content[4:8] == b"ftyp"


def test_wrong_s3_credentials_return_the_output_as_base64_and_say_why(make_worker, s3_env, monkeypatch):
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "wrong-secret")
    worker = make_worker(bucket_endpoint_url=f"{s3_env.endpoint}/outputs", bucket_credentials_set=True)
    out = handle(worker, {"workflow": workflow("solid_red_image")})
    [image] = out["images"]
    assert image["type"] == "base64"
    assert close_to(open_image(base64.b64decode(image["data"])).convert("RGB").getpixel((0, 0)), (255, 0, 0))
    [error] = out["errors"]
    assert "S3 upload of ComfyUI_00001_.png failed" in error and "SignatureDoesNotMatch" in error
    assert "wrong-secret" not in json.dumps(out)


@pytest.mark.parametrize("where", ["missing bucket", "closed port"])
def test_s3_errors_reach_the_client_without_endpoint_bucket_or_key(make_worker, s3_env, monkeypatch, where):
    from ..servers import free_port

    endpoint = (f"{s3_env.endpoint}/no-such-bucket-here" if where == "missing bucket"
                else f"http://127.0.0.1:{free_port()}/outputs")
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", endpoint)
    worker = make_worker(bucket_endpoint_url=endpoint, bucket_credentials_set=True)
    out = handle(worker, {"workflow": workflow("solid_red_image")}, job_id="s3-secret-job")
    assert out["images"][0]["type"] == "base64"
    [error] = out["errors"]
    expected = "S3 error NoSuchBucket" if where == "missing bucket" else "the bucket endpoint could not be reached"
    assert error == f"S3 upload of ComfyUI_00001_.png failed ({expected}); returned as base64 instead"
    text = json.dumps(out)
    for secret in ("127.0.0.1", "no-such-bucket-here", "s3-secret-job/", s3_env.ACCESS_KEY):
        assert secret not in text


def test_without_all_three_bucket_variables_nothing_is_uploaded(make_worker, s3_env, monkeypatch, tmp_path):
    monkeypatch.delenv("BUCKET_SECRET_ACCESS_KEY")
    monkeypatch.chdir(tmp_path)
    from embedded.config import Config
    config = Config.from_env()
    assert config.s3_enabled is False
    out = handle(make_worker(bucket_endpoint_url=config.bucket_endpoint_url,
                             bucket_credentials_set=config.bucket_credentials_set),
                 {"workflow": workflow("solid_red_image")})
    assert out["images"][0]["type"] == "base64"
    assert not (tmp_path / "simulated_uploaded").exists()


def test_output_never_carries_a_local_path(make_worker, test_config):
    text = json.dumps(handle(make_worker(), {"workflow": workflow("save_and_preview")}))
    assert str(test_config.work_dir) not in text and "/tmp/" not in text


# --- leak-aware recycling -----------------------------------------------------------------------------

def test_a_worker_grown_past_max_rss_growth_pct_asks_to_be_replaced(make_worker):
    worker = make_worker(max_rss_growth_pct=5)
    worker.boot()  # the executor is up already: this takes the baseline
    assert worker.memory.baseline > 0
    assert "refresh_worker" not in handle(worker, {"workflow": workflow("solid_red_image")})
    leaky = workflow("leaky_node")
    leaky["2"]["inputs"]["megabytes"] = int(worker.memory.baseline * 0.08 / 2 ** 20) + 16
    try:
        grown = handle(worker, {"workflow": leaky})
        assert grown["images"] and grown["refresh_worker"] is True
    finally:
        leaky["2"]["inputs"]["release"] = True
        handle(worker, {"workflow": leaky})


def test_without_max_rss_growth_pct_a_grown_worker_stays(make_worker):
    worker = make_worker()
    worker.boot()
    leaky = workflow("leaky_node")
    try:
        assert "refresh_worker" not in handle(worker, {"workflow": leaky})
    finally:
        leaky["2"]["inputs"]["release"] = True
        handle(worker, {"workflow": leaky})


def test_timings_true_adds_queued_total_and_per_node_times(make_worker):
    worker = make_worker()
    body = handle(worker, {"workflow": workflow("save_and_preview"), "timings": True})
    timings = body["timings"]
    assert set(timings) == {"queued_ms", "total_ms", "nodes"}
    assert 0 <= timings["queued_ms"] <= timings["total_ms"]
    assert set(timings["nodes"]) == set(workflow("save_and_preview"))
    assert all(set(n) == {"class_type", "ms", "cached"} for n in timings["nodes"].values())
    assert sum(n["ms"] for n in timings["nodes"].values()) <= timings["total_ms"]
    assert "timings" not in handle(worker, {"workflow": workflow("save_and_preview")})


def test_bucket_prefix_puts_outputs_under_it_and_the_job_id(make_worker, executor, s3_env):
    """BUCKET_PREFIX (worker-comfyui #190/#191): ``<prefix>/<job id>/<name>``, images and other files alike."""
    worker = make_worker(bucket_endpoint_url=f"{s3_env.endpoint}/outputs", bucket_credentials_set=True,
                         bucket_prefix="team-a/renders")
    out = handle(worker, {"workflow": workflow("solid_red_image")}, job_id="s3-job-43")
    [image] = out["images"]
    key = urllib.parse.unquote(urllib.parse.urlparse(image["data"]).path.split("/outputs/", 1)[1])
    # after the runpod SDK's month folder (its default bucket name, as for every upload of the worker)
    assert key.split("/", 1)[1] == "team-a/renders/s3-job-43/ComfyUI_00001_.png", key
    assert s3_env.client().get_object(Bucket="outputs", Key=key)["Body"].read() == \
        requests.get(image["data"], timeout=10).content


def test_uploads_send_checksums_only_where_required_as_s3_compatible_stores_need(make_worker, s3_env):
    """R2, GCS and other S3-compatible stores refuse boto3's default checksums (worker-comfyui #224):
    our clients and the runpod SDK's compute and validate them only when an operation requires it."""
    from runpod.serverless.utils import rp_upload

    from embedded.staging.downloads import S3Settings

    ours = S3Settings(s3_env.endpoint, s3_env.ACCESS_KEY, s3_env.SECRET_KEY).client().meta.config
    assert (ours.request_checksum_calculation, ours.response_checksum_validation) == ("when_required",) * 2
    worker = make_worker(bucket_endpoint_url=f"{s3_env.endpoint}/outputs", bucket_credentials_set=True)
    assert handle(worker, {"workflow": workflow("solid_red_image")})["images"][0]["type"] == "s3_url"
    sdk_client, _ = rp_upload.get_boto_client()
    assert (sdk_client.meta.config.request_checksum_calculation,
            sdk_client.meta.config.response_checksum_validation) == ("when_required",) * 2


def test_a_request_that_cannot_run_is_answered_during_the_boot_without_waiting_for_it(make_worker):
    worker = make_worker(server_start_timeout_s=600.0)
    worker._started.clear()  # ComfyUI still booting: a good job would wait for it
    try:
        out = asyncio.run(asyncio.wait_for(worker.handle({"id": "ui", "input": {"workflow": workflow("invalid_ui_format")}}),
                                           timeout=30))
    finally:
        worker._started.set()
    assert "Export (API)" in out["error"]
