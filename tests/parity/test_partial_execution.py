"""Partial execution (issue 17, item 2): a job's ``outputs`` runs only those output nodes and what
they need, as ComfyUI's ``partial_execution_targets``; an empty list and an id that is not an
output node of the workflow are validation errors. Both modes, the Python API and the worker."""

import pytest

from embedded import ValidationError
from embedded.job.events import ExecutingEvent

MODES = ["embedded", "server"]


def two_branches() -> dict:
    """Two saves, each with a node of its own upstream, and a preview of the first branch."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1234}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "first"}},
            "4": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 4321}},
            "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "second"}},
            "6": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def ran(ex, wf, **options) -> tuple[list[str], list[str]]:
    events = []
    result = ex.run(wf, on_event=events.append, **options)
    return sorted(e.node_id for e in events if isinstance(e, ExecutingEvent)), [o.node_id for o in result.outputs]


@pytest.mark.parametrize("mode", MODES)
def test_only_the_chosen_outputs_and_what_they_need_run(backends, mode):
    wf = two_branches()
    wf["1"]["inputs"]["color"], wf["4"]["inputs"]["color"] = 1000 + MODES.index(mode), 1100 + MODES.index(mode)
    nodes, outputs = ran(backends[mode], wf, outputs=["5"])
    assert (nodes, outputs) == (["4", "5"], ["5"])
    nodes, outputs = ran(backends[mode], wf, outputs=["3", "6"])
    assert (nodes, outputs) == (["1", "2", "3", "6"], ["3", "6"])


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_list_of_outputs_is_comfyuis_no_outputs_error(backends, mode):
    with pytest.raises(ValidationError) as info:
        backends[mode].run(two_branches(), outputs=[])
    assert (info.value.type, str(info.value)) == ("prompt_no_outputs", "Prompt has no outputs")


@pytest.mark.parametrize("mode", MODES)
def test_an_output_that_is_not_an_output_node_of_the_workflow_is_a_validation_error(backends, mode):
    for bad, kind in (("2", "not_an_output_node"), ("99", "output_not_found")):
        with pytest.raises(ValidationError) as info:
            backends[mode].run(two_branches(), outputs=["3", bad])
        assert info.value.type == "invalid_outputs"
        assert [(e.node_id, e.type) for e in info.value.node_errors] == [(bad, kind)]


@pytest.mark.parametrize("mode", MODES)
def test_a_preflight_checks_only_the_chosen_outputs(backends, mode):
    wf = two_branches()
    wf["5"]["inputs"]["images"] = ["4", 7]  # the second branch cannot run
    assert [e.split(":")[0] for e in backends[mode].check(wf).errors] == ["Node 5 (SaveImage)"]
    chosen = backends[mode].check(wf, outputs=["3"])
    assert chosen.ok and chosen.errors == []
