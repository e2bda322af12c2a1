"""The worker answers as worker-comfyui's handler.py does where ComfyUI's server decides (issue 17,
items 2 and 3): ``"outputs"`` runs only those output nodes; a job whose valid outputs run while
another needs a missing node is a success with the valid outputs (upstream reads ComfyUI's 200
answer to ``/prompt`` and goes on), and the other output is named under ``errors``."""


from ..helpers import handle, workflow


def test_the_worker_runs_the_outputs_its_request_names(make_worker):
    answer = handle(make_worker(), {"workflow": workflow("save_and_preview"), "outputs": ["2"]}, "partial")
    assert [image["filename"] for image in answer["images"]] == ["kept_00001_.png"]
    refused = handle(make_worker(), {"workflow": workflow("save_and_preview"), "outputs": ["1"]}, "partial-bad")
    assert refused["error"].startswith("Workflow validation failed")
    assert "not an output node" in " ".join(refused["details"])


def test_a_job_with_one_output_on_a_missing_node_returns_the_valid_outputs(make_worker):
    wf = workflow("save_and_preview")
    wf["9"] = {"class_type": "SaveImage", "inputs": {"images": ["gone", 0], "filename_prefix": "never"}}
    answer = handle(make_worker(), {"workflow": wf}, "missing-link")
    assert [image["filename"] for image in answer["images"]] == ["kept_00001_.png"]
    assert answer["errors"] == ["Node 9 (SaveImage), input 'images': Input links to node gone, "
                                "which is not in the workflow"]
    assert "error" not in answer
