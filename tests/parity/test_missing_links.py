"""Links to missing nodes as ComfyUI (issue 17, item 3): the structural check refuses only what
ComfyUI cannot parse; a link to a node that is not in the workflow fails the outputs that depend
on it, with ComfyUI's error for them, while the valid outputs run. Both modes."""

import pytest

from embedded import ValidationError

MODES = ["embedded", "server"]


def one_output_links_to_a_missing_node() -> dict:
    """ComfyUI's test_missing_node_error, in API format: save 5 needs the absent node "removeme"."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 77}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["removeme", 0]}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "valid"}},
            "5": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "invalid"}}}


@pytest.mark.parametrize("mode", MODES)
def test_the_valid_output_runs_and_the_other_is_named_in_the_warnings(backends, mode):
    result = backends[mode].run(one_output_links_to_a_missing_node())
    assert [(o.node_id, o.filename) for o in result.outputs] == [("4", "valid_00001_.png")]
    assert result.warnings == ["Node 2 (ImageInvert), input 'image': Input links to node removeme, "
                               "which is not in the workflow"]


@pytest.mark.parametrize("mode", MODES)
def test_when_every_output_needs_the_missing_node_the_job_is_refused_with_the_link(backends, mode):
    wf = one_output_links_to_a_missing_node()
    del wf["4"]
    with pytest.raises(ValidationError) as info:
        backends[mode].run(wf)
    assert info.value.type == "prompt_outputs_failed_validation"
    assert [(e.node_id, e.input_name, e.type) for e in info.value.node_errors] == [
        ("2", "image", "missing_link_target")]


@pytest.mark.parametrize("mode", MODES)
def test_the_next_job_runs_normally_once_the_node_is_back(backends, mode):
    wf = one_output_links_to_a_missing_node()
    backends[mode].run(wf)
    wf["removeme"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 5}}
    assert sorted(o.node_id for o in backends[mode].run(wf).outputs) == ["4", "5"]
