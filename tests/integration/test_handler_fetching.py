"""The handler's fields beyond upstream for files from elsewhere: images by URL, ``models``, a
job's own ``s3`` block, and outputs too large to return inline."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import urllib.parse

import pytest
import requests

from ..helpers import handle, open_image, png_bytes, workflow

pytestmark = pytest.mark.timeout(120)


def serve(server, path: str, data: bytes) -> str:
    server.files[path] = data
    return server.url(path)


def own_bucket(s3, **extra) -> dict:
    return {"endpoint_url": s3.endpoint, "bucket": "outputs", "access_key_id": s3.ACCESS_KEY,
            "secret_access_key": s3.SECRET_KEY, **extra}


def test_an_image_given_by_url_in_the_request_is_fetched(make_worker, file_server):
    url = serve(file_server, "/h/black.png", png_bytes((6, 6), (0, 0, 0)))
    out = handle(make_worker(), {"workflow": workflow("load_and_invert_input"),
                                 "images": [{"name": "in.png", "image": url}]})
    assert open_image(base64.b64decode(out["images"][0]["data"])).convert("RGB").getpixel((0, 0)) == (255, 255, 255)


def test_an_image_url_with_another_scheme_is_an_upstream_style_image_error(make_worker):
    out = handle(make_worker(), {"workflow": workflow("load_and_invert_input"),
                                 "images": [{"name": "in.png", "image": "file:///etc/passwd"}]})
    assert out["error"] == ("Failed to upload one or more input images: URL scheme 'file' is not allowed; "
                            "use http://, https://, s3://")
    assert out["details"] == ["URL scheme 'file' is not allowed; use http://, https://, s3://"]


def test_a_refused_image_url_is_an_error_naming_the_input_and_the_host(make_worker):
    out = handle(make_worker(), {"workflow": workflow("load_and_invert_input"),
                                 "images": [{"name": "in.png", "image": "http://169.254.169.254/latest/meta-data/"}]})
    assert out["error"].startswith("Input 'in.png': Refused to fetch from 169.254.169.254:80")
    assert "link-local" in out["error"]


def test_models_in_the_request_are_fetched_before_the_workflow_runs(make_worker, models, file_server):
    import folder_paths

    data = open(folder_paths.get_full_path_or_raise("checkpoints", "tiny-sd3.safetensors"), "rb").read()
    url = serve(file_server, "/h/requested.safetensors", data)
    wf = workflow("txt2img_checkpoint")
    wf["1"]["inputs"]["ckpt_name"] = "requested.safetensors"
    wf["4"]["inputs"].update(width=64, height=64)
    out = handle(make_worker(), {"workflow": wf, "models": [
        {"url": url, "folder": "checkpoints", "filename": "requested.safetensors",
         "sha256": hashlib.sha256(data).hexdigest()}]})
    assert "error" not in out, out
    assert open_image(base64.b64decode(out["images"][0]["data"])).size == (64, 64)


def test_a_bad_models_list_is_refused_with_each_problem(make_worker):
    out = handle(make_worker(), {"workflow": workflow("solid_red_image"), "models": [
        {"url": "ftp://h/x", "folder": "loras", "filename": "x.safetensors"},
        {"url": "https://h/y", "folder": "nope", "filename": "y.safetensors"}]})
    assert out["error"] == "Invalid 'models'"
    assert "scheme 'ftp'" in out["details"][0] and "not one of ComfyUI's" in out["details"][1]


def test_dry_run_lists_inputs_and_models_to_fetch(make_worker, file_server):
    out = handle(make_worker(), {"workflow": workflow("load_and_invert_input"), "dry_run": True,
                                 "images": [{"name": "in.png", "image": file_server.url("/h/never.png?token=abc")}],
                                 "models": [{"url": file_server.url("/h/m.safetensors"), "folder": "loras",
                                             "filename": "m.safetensors"}]})
    assert out["ok"] is True
    assert out["inputs_to_fetch"] == [
        {"kind": "input", "name": "in.png", "url": file_server.url("/h/never.png")},
        {"kind": "model", "name": "loras/m.safetensors", "url": file_server.url("/h/m.safetensors"),
         "cached": False}]
    assert file_server.hits("/h/never.png") == 0


def test_a_jobs_own_s3_block_receives_its_outputs(make_worker, s3, test_config):
    worker = make_worker(fetch_allow=test_config.fetch_allow.with_url(s3.endpoint))
    out = handle(worker, {"workflow": workflow("solid_red_image"), "s3": own_bucket(s3, prefix="team-a/")},
                 job_id="own-bucket-job")
    [image] = out["images"]
    assert image["type"] == "s3_url", out
    key = urllib.parse.urlparse(image["data"]).path.split("/outputs/", 1)[1]
    assert key.startswith("team-a/own-bucket-job/") and key.endswith(".png")
    stored = s3.client().get_object(Bucket="outputs", Key=key)
    assert stored["ContentType"] == "image/png"
    assert requests.get(image["data"], timeout=10).content == stored["Body"].read()


def test_a_jobs_own_bucket_on_a_private_address_is_refused_without_fetch_allow(make_worker, s3, caplog):
    out = handle(make_worker(), {"workflow": workflow("solid_red_image"), "s3": own_bucket(s3)})
    [image] = out["images"]
    assert image["type"] == "base64"
    assert out["errors"] == ["S3 upload of ComfyUI_00001_.png failed (the bucket endpoint is refused: it resolves "
                             "to a loopback address (FETCH_ALLOW lets it through)); returned as base64 instead"]


def test_s3_inputs_come_from_the_jobs_own_bucket(make_worker, executor, s3, test_config, monkeypatch):
    s3.client().put_object(Bucket="outputs", Key="in/black.png", Body=png_bytes((3, 3), (0, 0, 0)))
    allowed = dataclasses.replace(test_config, fetch_allow=test_config.fetch_allow.with_url(s3.endpoint))
    monkeypatch.setattr(executor, "config", allowed)  # the shared executor fetches with FETCH_ALLOW too
    monkeypatch.setattr(executor, "_fetching", None)
    worker = make_worker(fetch_allow=allowed.fetch_allow)
    out = handle(worker, {"workflow": workflow("load_and_invert_input"), "s3": own_bucket(s3),
                          "images": [{"name": "in.png", "image": "s3://outputs/in/black.png"}]})
    assert out["images"][0]["type"] == "s3_url", out


def test_the_s3_block_is_never_logged_or_echoed(make_worker, s3, caplog):
    caplog.set_level(logging.DEBUG)
    out = handle(make_worker(), {"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}},
                                 "s3": own_bucket(s3, secret_access_key="very-secret-value-123")})
    assert "error" in out
    assert "very-secret-value-123" not in caplog.text and "very-secret-value-123" not in str(out)
    assert s3.ACCESS_KEY not in caplog.text


@pytest.mark.parametrize("block", [{"bucket": "b"}, "s3://b", {"endpoint_url": "file:///x", "bucket": "b",
                                                                "access_key_id": "k", "secret_access_key": "s"}])
def test_a_malformed_s3_block_is_a_clear_error_without_its_values(make_worker, block):
    out = handle(make_worker(), {"workflow": workflow("solid_red_image"), "s3": block})
    assert out["error"].startswith(("'s3' must be an object", "'s3.endpoint_url'"))
    assert "\"s\"" not in out["error"]


def test_outputs_over_the_inline_limit_without_s3_are_an_error_naming_their_sizes(make_worker):
    out = handle(make_worker(output_max_inline_bytes=100), {"workflow": workflow("solid_red_image")})
    assert out["error"].startswith("The job's outputs are ")
    assert "OUTPUT_MAX_INLINE_BYTES (100)" in out["error"] and "BUCKET_ENDPOINT_URL" in out["error"]
    assert out["details"][0].startswith("ComfyUI_00001_.png: ")


def test_outputs_over_the_inline_limit_go_to_the_jobs_bucket(make_worker, s3, test_config):
    worker = make_worker(output_max_inline_bytes=100, fetch_allow=test_config.fetch_allow.with_url(s3.endpoint))
    out = handle(worker, {"workflow": workflow("solid_red_image"), "s3": own_bucket(s3)})
    assert out["images"][0]["type"] == "s3_url" and "errors" not in out


def test_an_output_that_could_not_be_uploaded_is_not_inlined_over_the_limit(make_worker, s3):
    out = handle(make_worker(output_max_inline_bytes=100), {"workflow": workflow("solid_red_image"),
                                                            "s3": own_bucket(s3)})  # refused: loopback
    assert out["error"] == "Job processing failed"
    assert "too large to return inline" in out["details"][0] and "was not returned" in out["details"][0]


def test_a_streaming_job_yields_its_downloads_before_its_outputs(make_worker, file_server):
    file_server.files["/h/stream.png"] = png_bytes((4, 4), (0, 0, 0))

    async def collect(worker):
        return [item async for item in worker.stream({"id": "stream-dl", "input": {
            "workflow": workflow("load_and_invert_input"),
            "images": [{"name": "in.png", "image": file_server.url("/h/stream.png")}]}})]

    items = asyncio.run(collect(make_worker(stream_outputs=True)))
    kinds = [item["type"] for item in items]
    assert kinds.index("download") < kinds.index("output") < kinds.index("result") == len(kinds) - 1
    done = [item for item in items if item["type"] == "download" and item["done"]]
    assert done == [{"type": "download", "kind": "input", "name": "in.png",
                     "received_bytes": len(file_server.files["/h/stream.png"]),
                     "total_bytes": len(file_server.files["/h/stream.png"]), "done": True}]
