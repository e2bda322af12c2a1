"""Each kind of invalid workflow is refused before it runs, with a message that names the problem,
and the executor runs the next job normally."""

import pytest

from embedded import ValidationError, WorkflowFormatError

from ..helpers import workflow


def test_unknown_node_class_names_the_class(executor):
    with pytest.raises(ValidationError) as info:
        executor.run(workflow("invalid_unknown_class"))
    assert info.value.type == "invalid_prompt"
    assert "NoSuchNode does not exist" in str(info.value)
    assert "#1" in str(info.value)


def test_missing_required_input_names_node_and_input(executor):
    with pytest.raises(ValidationError) as info:
        executor.run(workflow("invalid_missing_input"))
    [error] = info.value.node_errors
    assert (error.node_id, error.class_type, error.input_name, error.type) == ("2", "SaveImage", "images",
                                                                             "required_input_missing")
    assert info.value.details() == ["Node 2 (SaveImage), input 'images': Required input is missing: images"]


def test_value_out_of_range_names_the_limit(executor):
    with pytest.raises(ValidationError) as info:
        executor.run(workflow("invalid_out_of_range"))
    [error] = info.value.node_errors
    assert (error.node_id, error.input_name, error.type) == ("1", "width", "value_smaller_than_min")
    assert "Value 0 smaller than min of 1" in error.line()


def test_link_to_a_missing_node_says_which_node_is_missing(executor):
    with pytest.raises(ValidationError) as info:
        executor.run(workflow("invalid_link_to_missing_node"))
    [error] = info.value.node_errors
    assert (error.node_id, error.class_type, error.input_name) == ("2", "SaveImage", "images")
    assert "node 99, which is not in the workflow" in error.line()


def test_workflow_without_output_node_is_refused(executor):
    with pytest.raises(ValidationError) as info:
        executor.run(workflow("invalid_no_output_node"))
    assert info.value.type == "prompt_no_outputs"
    assert str(info.value) == "Prompt has no outputs"


def test_ui_format_workflow_asks_for_export_api(executor):
    with pytest.raises(WorkflowFormatError) as info:
        executor.run(workflow("invalid_ui_format"))
    assert "Export (API)" in str(info.value)


@pytest.mark.parametrize("bad", [[], "a string", {}, {"1": "not a node"}])
def test_workflow_that_is_not_an_api_object_is_refused(executor, bad):
    with pytest.raises(WorkflowFormatError):
        executor.run(bad)


def test_invalid_output_beside_a_valid_one_runs_the_valid_one_with_a_warning(executor):
    wf = workflow("solid_red_image")
    wf["3"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "broken"}}
    result = executor.run(wf)
    assert [o.node_id for o in result.outputs] == ["2"]
    assert result.warnings == ["Node 3 (SaveImage), input 'images': Required input is missing: images"]


def test_next_job_runs_after_a_refused_one(executor):
    with pytest.raises(ValidationError):
        executor.run(workflow("invalid_out_of_range"))
    assert len(executor.run(workflow("solid_red_image")).outputs) == 1


def test_a_misspelt_node_type_gets_the_closest_names_and_what_to_install(executor):
    wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
          "2": {"class_type": "ImageBlurr", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
          "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    with pytest.raises(ValidationError) as info:
        executor.run(wf)
    text = str(info.value)
    assert "did you mean 'ImageBlur'" in text and "custom-node pack" in text and "custom_nodes" in text


def test_a_missing_input_file_names_the_ways_to_give_it(executor):
    with pytest.raises(ValidationError) as info:
        executor.run(workflow("load_and_invert_input"))  # its LoadImage names in.png, and no file is given
    text = str(info.value)
    assert "Invalid image file" in text and "files={'" in text and "--image " in text and '"images"' in text


def test_a_missing_model_names_its_model_folders_and_what_to_do(executor):
    with pytest.raises(ValidationError) as info:
        executor.run(workflow("missing_model"))
    text = str(info.value)
    assert "does-not-exist.safetensors" in text and "none of the 'checkpoints' model folders" in text
    assert "give its URL in the job's models" in text
