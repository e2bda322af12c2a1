"""Hostile input through the local API: each gets a clear error, the worker stays healthy for the
next job, and nothing is left in the work folder or written outside it."""

import base64
import os

import pytest

from ..helpers import png_bytes, workflow

GOOD = base64.b64encode(png_bytes()).decode()
IMAGES_FAILED = "Failed to upload one or more input images"


def assert_clean(local_api):
    jobs = local_api.work_dir / "jobs"
    assert not jobs.exists() or list(jobs.iterdir()) == []
    for idle in ("input", "output", "temp"):
        assert list((local_api.work_dir / "idle" / idle).iterdir()) == []
    assert not (local_api.work_dir.parent / "evil.png").exists()


def assert_next_job_runs(local_api):
    assert local_api.runsync({"workflow": workflow("solid_red_image")})["status"] == "COMPLETED"


@pytest.mark.parametrize("name", ["../evil.png", "../../evil.png", "/tmp/evil.png", "sub\\..\\evil.png",
                                  "evil\x00.png", "a/../../evil.png"])
def test_image_names_that_escape_the_input_folder_are_refused(local_api, name):
    body = local_api.runsync({"workflow": workflow("load_and_invert_input"),
                              "images": [{"name": name, "image": GOOD}]})
    assert body["status"] == "FAILED" and body["error"].startswith(IMAGES_FAILED + ": ")
    assert_clean(local_api)
    assert_next_job_runs(local_api)


@pytest.mark.parametrize("payload", [base64.b64encode(b"GIF89a but not really").decode(), "!!!not base64!!!",
                                     "data:image/png;base64,", base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()])
def test_bytes_that_are_not_an_image_are_refused_before_anything_runs(local_api, payload):
    body = local_api.runsync({"workflow": workflow("load_and_invert_input"),
                              "images": [{"name": "in.png", "image": payload}]})
    # the reason and the input are in the error itself: the runpod SDK's local API drops ``details``
    assert body["status"] == "FAILED" and body["error"].startswith(IMAGES_FAILED + ": ")
    assert "in.png" in body["error"] and ("base64" in body["error"] or "image" in body["error"])
    assert_clean(local_api)
    assert_next_job_runs(local_api)


def test_a_50_mb_payload_gets_a_clear_error(local_api):
    payload = base64.b64encode(b"\x89PNG\r\n\x1a\n" + os.urandom(50 * 1024 * 1024)).decode()
    body = local_api.runsync({"workflow": workflow("load_and_invert_input"),
                              "images": [{"name": "in.png", "image": payload}]}, timeout=300)
    assert body["status"] == "FAILED" and body["error"].startswith(IMAGES_FAILED + ": Input 'in.png'")
    assert_clean(local_api)
    assert_next_job_runs(local_api)


@pytest.mark.parametrize("bad", [[{"class_type": "EmptyImage"}], "not a workflow", 42])
def test_a_workflow_that_is_not_an_object_is_refused(local_api, bad):
    body = local_api.runsync({"workflow": bad})
    assert body["status"] == "FAILED"
    assert body["error"].startswith("The workflow must be a JSON object in ComfyUI's API format")
    assert_next_job_runs(local_api)


def test_inputs_of_one_job_are_gone_before_the_next(local_api):
    ok = local_api.runsync({"workflow": workflow("load_and_invert_input"), "images": [{"name": "in.png",
                                                                                      "image": GOOD}]})
    assert ok["status"] == "COMPLETED"
    again = local_api.runsync({"workflow": workflow("load_and_invert_input")})
    assert again["status"] == "FAILED" and "Invalid image file: in.png" in again["error"]
    assert_clean(local_api)
