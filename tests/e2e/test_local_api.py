"""Through the real runpod local API server (the worker as a subprocess): /runsync, /run + /status,
worker-comfyui's errors, every output kind."""

import base64
import json

import requests

from ..helpers import close_to, open_image, png_bytes, workflow
from ..servers import LocalApiWorker, worker_env


def test_runsync_returns_base64_images_with_the_expected_pixels(local_api):
    body = local_api.runsync({"workflow": workflow("solid_red_image")})
    assert body["status"] == "COMPLETED"
    [image] = body["output"]["images"]
    assert (image["filename"], image["type"]) == ("ComfyUI_00001_.png", "base64")
    im = open_image(base64.b64decode(image["data"])).convert("RGB")
    assert im.size == (64, 32) and im.getpixel((10, 10)) == (255, 0, 0)


def test_run_then_status_completes_the_job(local_api):
    job = requests.post(f"{local_api.url}/run", json={"input": {"workflow": workflow("load_and_invert_input"),
                        "images": [{"name": "in.png", "image": base64.b64encode(png_bytes()).decode()}]}},
                        timeout=30).json()
    assert job["status"] == "IN_PROGRESS"
    body = requests.post(f"{local_api.url}/status/{job['id']}", timeout=120).json()
    assert body["status"] == "COMPLETED"
    pixel = open_image(base64.b64decode(body["output"]["images"][0]["data"])).convert("RGB").getpixel((0, 0))
    assert close_to(pixel, (0, 255, 255))


def test_missing_workflow_fails_with_upstreams_message(local_api):
    body = local_api.runsync({"images": []})
    assert (body["status"], body["error"]) == ("FAILED", "Missing 'workflow' parameter")


def test_bad_images_fail_with_upstreams_message(local_api):
    body = local_api.runsync({"workflow": workflow("solid_red_image"), "images": [{"nom": "x"}]})
    assert (body["status"], body["error"]) == ("FAILED", "'images' must be a list of objects with 'name' and "
                                                         "'image' keys")


def test_validation_errors_name_every_node(local_api):
    body = local_api.runsync({"workflow": workflow("invalid_missing_input")})
    assert body["status"] == "FAILED"
    assert body["error"] == ("Workflow validation failed:\n"
                             "• Node 2 (SaveImage), input 'images': Required input is missing: images")


def test_execution_errors_name_node_and_message(local_api):
    body = local_api.runsync({"workflow": workflow("node_raises")})
    assert (body["status"], body["error"]) == ("FAILED", "Job processing failed")  # the local API drops the rest
    assert local_api.runsync({"workflow": workflow("solid_red_image")})["status"] == "COMPLETED"


def test_video_audio_and_text_outputs_come_back(local_api):
    video = local_api.runsync({"workflow": workflow("video_mp4")})["output"]["videos"][0]
    assert video["mime_type"] == "video/mp4" and base64.b64decode(video["data"])[4:8] == b"ftyp"
    audio = local_api.runsync({"workflow": workflow("audio_tone")})["output"]["audio"][0]
    assert audio["mime_type"] == "audio/flac" and base64.b64decode(audio["data"])[:4] == b"fLaC"
    text = local_api.runsync({"workflow": workflow("text_output")})["output"]["text"][0]
    assert text["data"] == "hello from a node"


def test_a_worker_that_cannot_boot_reports_it_on_every_job(tmp_path, extra_paths):
    env = worker_env(tmp_path / "work", extra_paths, COMFYUI_PATH=str(tmp_path / "no-comfyui"))
    worker = LocalApiWorker(env, tmp_path / "worker.log").wait_ready(timeout=60)
    try:
        for _ in range(2):
            body = worker.runsync({"workflow": workflow("solid_red_image")})
            assert body["status"] == "FAILED"
            assert body["error"].startswith("No ComfyUI tree at <path>: run")
            assert str(tmp_path) not in json.dumps(body)  # never a local path in a response
        assert worker.alive()
    finally:
        worker.stop()
