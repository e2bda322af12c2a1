"""The embedded executor is equivalent to running ComfyUI the usual way (its server, over HTTP and
a websocket): identical output bytes, identical handler responses, identical errors, and the same
sequence of websocket frame types, apart from the differences listed in ``TOLERATED``."""

import asyncio
import dataclasses
import random

import pytest

from embedded import EmbeddedError
from embedded.job import events
from embedded.worker.handler import Worker
from embedded.worker.delivery import Delivery
from embedded.worker.response import execution_failure, failure

from ..helpers import png_bytes, workflow

IMAGES = {"load_and_invert_input": {"in.png": png_bytes((12, 9), (30, 60, 90))}}

#: model-free workflows, one per behaviour
PARITY_WORKFLOWS = [
    "solid_red_image",        # no input at all
    "load_and_invert_input",  # image ops on an input image
    "batch_of_three",         # a batch: three files, in a sub-folder
    "save_and_preview",       # several output nodes, one of them temp
    "preview_only",           # PreviewImage (temp) only
    "animated_webp",          # an animated image
    "video_mp4",              # SaveVideo
    "video_webm",             # SaveWEBM
    "audio_tone",             # SaveAudio
    "text_output",            # a text output from a custom node
    "image_size_text",        # PreviewAny text, and progress text
    "progress_steps",         # ProgressBar steps
    "prestartup_seen",        # a custom node whose pack's prestartup script ran before it imported
]
INVALID_WORKFLOWS = ["invalid_unknown_class", "invalid_missing_input", "invalid_out_of_range",
                     "invalid_link_to_missing_node", "invalid_no_output_node"]

#: Frame types the server sends and the embedded compat encoder does not, and why:
#: - "status": queue-size broadcasts of ComfyUI's HTTP queue, which the embedded executor has not;
#: - binary frames: previews (none here) and progress text, which the server sends as binary
#:   frame type 3 and the compat encoder as a JSON "progress_text" frame (mapped below).
TOLERATED = {"status"}


def comparable(result):
    """What must be identical: every output's origin, kind, name, type, MIME type and bytes.

    Compared otherwise, and why:
    - PreviewImage's temp file names carry a random part (ComfyUI's, in either mode);
    - a WebM file carries a random Matroska TrackUID (the muxer's, in either mode): WebM outputs
      are compared by their decoded frames.
    """
    return [(o.node_id, o.kind, o.filename if o.type == "output" else "<temp>", o.subfolder, o.type,
             o.mime_type, o.animated, webm_fingerprint(o.data) if o.mime_type == "video/webm" else o.data)
            for o in result.outputs]


def webm_fingerprint(data: bytes):
    import hashlib
    import io

    import av
    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray().tobytes() for frame in container.decode(video=0)]
    return ("webm", len(frames), hashlib.sha256(b"".join(frames)).hexdigest())


@pytest.mark.parametrize("name", PARITY_WORKFLOWS)
def test_outputs_are_byte_identical_with_metadata_off_and_on(backends_both_ways, name):
    results = {mode: ex.run(workflow(name), IMAGES.get(name)) for mode, ex in backends_both_ways.items()}
    assert results["embedded"].outputs, "the workflow produced nothing"
    assert comparable(results["embedded"]) == comparable(results["server"])
    assert results["embedded"].warnings == results["server"].warnings == []


@pytest.mark.parametrize("name", PARITY_WORKFLOWS)
def test_handler_responses_are_identical(backends, test_config, name):
    job_input = {"workflow": workflow(name)}
    if name in IMAGES:
        import base64
        job_input["images"] = [{"name": n, "image": base64.b64encode(d).decode()} for n, d in IMAGES[name].items()]
    responses = {mode: asyncio.run(Worker(dataclasses.replace(test_config, execution_mode=mode), executor=ex)
                                   .handle({"id": f"parity-{name}", "input": job_input}))
                 for mode, ex in backends.items()}
    assert normalized(responses["embedded"]) == normalized(responses["server"])


def normalized(response: dict) -> dict:
    """The response with WebM data replaced by its decoded frames (see ``comparable``)."""
    import base64
    import copy
    response = copy.deepcopy(response)
    for entry in response.get("videos", []):
        if entry["mime_type"] == "video/webm":
            entry["data"] = webm_fingerprint(base64.b64decode(entry["data"]))
    return response


@pytest.mark.parametrize("name", INVALID_WORKFLOWS + ["node_raises", "uses_broken_pack"])
def test_errors_are_identical(backends, name):
    errors = {}
    for mode, ex in backends.items():
        with pytest.raises(EmbeddedError) as info:
            ex.run(workflow(name))
        errors[mode] = info.value
    embedded, server = errors["embedded"], errors["server"]
    assert type(embedded) is type(server)
    assert str(embedded) == str(server)
    assert embedded.details() == server.details()
    assert failure(embedded) == failure(server)


def test_a_missing_model_lists_the_same_available_files(backends, test_config):
    folder = test_config.models / "checkpoints"
    (folder / "parity-a.safetensors").write_bytes(b"")
    try:
        found = {mode: failure(pytest.raises(EmbeddedError, ex.run, workflow("missing_model")).value)
                 for mode, ex in backends.items()}
    finally:
        (folder / "parity-a.safetensors").unlink()
    assert found["embedded"] == found["server"]
    assert "parity-a.safetensors" in found["embedded"]["details"][1]


@pytest.mark.parametrize("name", ["solid_red_image", "progress_steps", "image_size_text", "save_and_preview",
                                  "load_and_invert_input"])
def test_websocket_frame_types_match_the_server(backends, name):
    wf = workflow(name)
    if "color" in wf["1"]["inputs"]:
        wf["1"]["inputs"]["color"] = random.randrange(1 << 24)  # uncached in both backends
    images = {"in.png": png_bytes((5, 5), tuple(random.randrange(256) for _ in range(3)))}
    embedded, server = [], []
    backends["embedded"].run(wf, images, on_event=lambda e: embedded.extend(f["type"] for f in events.to_frames(e)))
    runner = backends["server"]._runner
    runner.on_frame = lambda f: server.append("progress_text" if f == {"type": "binary", "event": 3} else f["type"])
    try:
        backends["server"].run(wf, images)
    finally:
        runner.on_frame = None
    assert embedded == [t for t in server if t not in TOLERATED]
    assert embedded[0] == "execution_start" and embedded[-2:] == ["execution_success", "executing"]


def test_error_frames_match_the_server(backends):
    wf = workflow("node_raises")
    wf["1"]["inputs"]["color"] = random.randrange(1 << 24)
    embedded, server = [], []
    with pytest.raises(EmbeddedError):
        backends["embedded"].run(wf, on_event=lambda e: embedded.extend(f["type"] for f in events.to_frames(e)))
    runner = backends["server"]._runner
    runner.on_frame = lambda f: server.append(f["type"])
    try:
        with pytest.raises(EmbeddedError):
            backends["server"].run(wf)
    finally:
        runner.on_frame = None
    assert embedded == [t for t in server if t not in TOLERATED]
    assert embedded[-2:] == ["execution_error", "executing"]


@pytest.mark.parametrize("name", ["solid_red_image", "video_mp4", "audio_tone", "save_and_preview"])
def test_repeat_jobs_return_the_same_outputs_in_both_modes(backends_both_ways, name):
    for ex in backends_both_ways.values():
        first, second = ex.run(workflow(name)), ex.run(workflow(name))
        assert comparable(first) == comparable(second) and first.outputs


def test_the_server_receives_the_workflow_exactly_as_written(backends_with_metadata):
    """Metadata on: the PNG's embedded prompt is the user's workflow, nothing added, in both modes."""
    import json

    from ..helpers import open_image
    for ex in backends_with_metadata.values():
        png = open_image(ex.run(workflow("solid_red_image")).outputs[0].data)
        assert json.loads(png.info["prompt"]) == workflow("solid_red_image")


def test_an_execution_error_keeps_the_outputs_made_before_it_in_both_modes(backends, test_config):
    answers = {}
    for mode, ex in backends.items():
        with pytest.raises(EmbeddedError) as info:
            ex.run(workflow("node_raises_after_output"))
        assert [o.filename for o in info.value.outputs] == ["before_00001_.png"]
        answers[mode] = execution_failure(f"parity-{mode}", info.value, Delivery(False))
    assert answers["embedded"] == answers["server"]


@pytest.mark.parametrize("name", ["txt2img_checkpoint", "txt2img_split_loaders"])
def test_sampling_gives_identical_bytes_in_both_modes(backends, models, name):
    wf = workflow(name)
    wf["5"]["inputs"]["seed"] = 1234
    results = {mode: ex.run(wf) for mode, ex in backends.items()}
    assert results["embedded"].outputs
    assert comparable(results["embedded"]) == comparable(results["server"])
