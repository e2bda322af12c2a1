"""The response shape: worker-comfyui's for images and failures, our keys for the other kinds."""

import base64

from embedded import ExecutionError, JobTimeout, NodeError, ValidationError
from embedded.worker.delivery import Delivery
from embedded.worker.request import RequestError
from embedded.worker.response import execution_failure, failure, success
from embedded.job.types import Output, Result, Timings


def result(*outputs, warnings=()):
    return Result("job", "prompt", list(outputs), Timings(), list(warnings))


def out(kind, filename, mime, data=b"x", type="output", node="1"):
    return Output(node, kind, filename, "", type, mime, data)


def test_images_keep_upstreams_three_keys_and_others_get_node_and_mime():
    response = success(result(out("image", "a.png", "image/png", b"A"), out("video", "v.mp4", "video/mp4", b"V"),
                              out("audio", "t.flac", "audio/flac", b"T"), out("text", "1_0.txt", "text/plain", b"hi"),
                              out("file", "m.glb", "model/gltf-binary", b"M")), Delivery(False))
    assert response["images"] == [{"filename": "a.png", "type": "base64", "data": base64.b64encode(b"A").decode()}]
    assert response["videos"] == [{"node_id": "1", "filename": "v.mp4", "mime_type": "video/mp4", "type": "base64",
                                   "data": base64.b64encode(b"V").decode()}]
    assert response["audio"][0]["mime_type"] == "audio/flac"
    assert response["text"] == [{"node_id": "1", "filename": "1_0.txt", "type": "text", "mime_type": "text/plain",
                                 "data": "hi"}]
    assert response["files"][0]["filename"] == "m.glb"
    assert "status" not in response and "errors" not in response


def test_temp_outputs_are_skipped_and_nothing_left_is_success_no_images():
    assert success(result(out("image", "p.png", "image/png", type="temp")), Delivery(False)) == \
           {"images": [], "status": "success_no_images"}


def test_warnings_become_errors_and_only_errors_is_a_failure():
    assert success(result(out("image", "a.png", "image/png"), warnings=["w"]), Delivery(False))["errors"] == ["w"]
    assert success(result(warnings=["could not read"]), Delivery(False)) == {"error": "Job processing failed",
                                                                           "details": ["could not read"]}


def test_failure_shapes():
    assert failure(RequestError("Please provide input")) == {"error": "Please provide input"}
    validation = ValidationError("Prompt outputs failed validation", "prompt_outputs_failed_validation",
                                 [NodeError("4", "CheckpointLoaderSimple", "value_not_in_list", "Value not in list",
                                            "ckpt_name: 'x' not in []", "ckpt_name", ())])
    assert failure(validation)["details"] == [
        "Node 4 (CheckpointLoaderSimple), input 'ckpt_name': Value not in list: ckpt_name: 'x' not in []",
        "No values available for 'ckpt_name' (node 4): the folder is empty"]
    assert failure(ValidationError("Prompt has no outputs", "prompt_no_outputs")) == {
        "error": "Workflow validation failed:\n• Prompt has no outputs", "details": ["Prompt has no outputs"]}
    assert failure(JobTimeout(3)) == {"error": "The job exceeded its timeout of 3 s and was stopped"}
    assert failure(KeyError("k"))["error"] == "An unexpected error occurred: KeyError: 'k'"


def test_no_response_carries_a_local_path():
    assert failure(OSError(2, "No such file or directory", "/work/jobs/x/input/a.png")) == {
        "error": "An unexpected error occurred: FileNotFoundError: [Errno 2] No such file or directory: '<path>'"}
    assert failure(RequestError("bad", ["/etc/passwd is not readable", "see https://example.com/a/b"]))["details"] == [
        "<path> is not readable", "see https://example.com/a/b"]


def raised(outputs=(), message="bad\n"):
    exc = ExecutionError("2", "X", "ValueError", message)
    exc.outputs = list(outputs)
    return exc


def test_an_execution_error_without_images_is_upstreams_job_failed():
    assert execution_failure("job", raised(), Delivery(False)) == {
        "error": "Job processing failed",
        "details": ["Workflow execution error: Node Type: X, Node ID: 2, Message: bad\n"],
        "execution_error": {"node_id": "2", "node_type": "X", "exception_type": "ValueError",
                            "exception_message": "bad"}}


def test_an_execution_error_after_images_returns_them_with_the_line_under_errors():
    body = execution_failure("job", raised([out("image", "a.png", "image/png", b"A"),
                                            out("text", "t.txt", "text/plain", b"t")]), Delivery(False))
    assert body["images"] == [{"filename": "a.png", "type": "base64", "data": base64.b64encode(b"A").decode()}]
    assert body["errors"] == ["Workflow execution error: Node Type: X, Node ID: 2, Message: bad\n"]
    assert body["text"][0]["data"] == "t" and "error" not in body and "status" not in body


def test_an_execution_error_with_only_other_kinds_is_still_a_failure_that_keeps_them():
    body = execution_failure("job", raised([out("video", "v.mp4", "video/mp4", b"V")]), Delivery(False))
    assert body["error"] == "Job processing failed" and body["videos"][0]["filename"] == "v.mp4"


def test_a_success_with_only_other_kinds_and_a_warning_is_no_failure():
    body = success(result(out("video", "v.mp4", "video/mp4", b"V"), warnings=["w"]), Delivery(False))
    assert body["errors"] == ["w"] and body["status"] == "success_no_images" and "error" not in body
