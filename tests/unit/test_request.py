"""A RunPod job's input is parsed as worker-comfyui parses it, and refused with its messages."""

import base64

import pytest

from embedded import ValidationError, WorkflowFormatError
from embedded.worker.request import IMAGES_FAILED, RequestError, decode_base64_image, parse

from ..helpers import png_bytes, workflow

PNG = png_bytes()
WF = workflow("solid_red_image")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_full_request_parses():
    req = parse({"workflow": WF, "images": [{"name": "a.png", "image": b64(PNG)}], "comfy_org_api_key": "sk-secret"})
    assert (req.workflow, req.images, req.comfy_org_api_key) == (WF, {"a.png": PNG}, "sk-secret")
    assert "sk-secret" not in repr(req)


def test_data_uri_prefix_and_line_breaks_are_accepted():
    encoded = b64(PNG)
    assert decode_base64_image(f"data:image/png;base64,{encoded[:10]}\n{encoded[10:]}") == PNG


def test_every_bad_image_is_listed_in_details():
    with pytest.raises(RequestError) as info:
        parse({"workflow": WF, "images": [{"name": "../x.png", "image": b64(PNG)},
                                          {"name": "ok.png", "image": "%%%"},
                                          {"name": "text.png", "image": b64(b"hello")},
                                          {"name": "good.png", "image": b64(PNG)},
                                          {"name": "good.png", "image": b64(PNG)}]})
    details = info.value.details
    assert info.value.message == f"{IMAGES_FAILED}: {'; '.join(details)}"  # the local API drops details
    assert len(details) == 4
    assert "'../x.png'" in details[0]
    assert details[1].startswith("Error decoding base64 for ok.png")
    assert details[2].startswith("Input 'text.png' is not an image: its bytes are none of the formats read (PNG")
    assert "BytesIO" not in details[2]
    assert details[3] == "Input name 'good.png' is given twice"


@pytest.mark.parametrize("workflow_value, error", [([], WorkflowFormatError), ("{}", WorkflowFormatError),
                                                   (workflow("invalid_ui_format"), WorkflowFormatError),
                                                   ({"1": {"class_type": "EmptyImage", "inputs": {"width": 2 ** 70}}},
                                                    ValidationError)])
def test_the_workflow_is_checked_before_it_is_queued(workflow_value, error):
    with pytest.raises(error):
        parse({"workflow": workflow_value})


def test_outputs_name_the_output_nodes_to_run():
    assert parse({"workflow": workflow("save_and_preview")}).outputs is None
    assert parse({"workflow": workflow("save_and_preview"), "outputs": ["3"]}).outputs == ("3",)
    with pytest.raises(RequestError, match="'outputs': outputs must be a list of output node ids"):
        parse({"workflow": workflow("save_and_preview"), "outputs": "3"})


def test_input_that_is_neither_object_nor_json_string_is_refused():
    with pytest.raises(RequestError, match="expected a JSON object"):
        parse(["workflow"])
    with pytest.raises(RequestError, match="expected a JSON object"):
        parse('["a json list"]')


def test_a_non_string_api_key_is_refused():
    with pytest.raises(RequestError, match="comfy_org_api_key"):
        parse({"workflow": WF, "comfy_org_api_key": 5})


def test_unload_models_free_memory_and_timings_are_read_and_must_be_booleans():
    req = parse({"workflow": WF, "unload_models": True, "free_memory": False, "timings": True})
    assert (req.unload_models, req.free_memory, req.timings) == (True, False, True)
    assert (parse({"workflow": WF}).unload_models, parse({"workflow": WF}).free_memory) == (False, False)
    with pytest.raises(RequestError, match="'free_memory' must be true or false"):
        parse({"workflow": WF, "free_memory": "yes"})
