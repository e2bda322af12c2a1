"""Workflows and input images are checked before ComfyUI sees them."""

import pytest

from embedded import InputError, ValidationError, WorkflowFormatError
from embedded.inputs import check_image_name, check_images, check_workflow, write_images

from ..helpers import png_bytes, workflow


def test_an_api_format_workflow_passes_unchanged():
    wf = workflow("solid_red_image")
    assert check_workflow(wf) is wf


def test_a_ui_format_workflow_is_told_to_use_export_api():
    with pytest.raises(WorkflowFormatError, match=r"Export \(API\)"):
        check_workflow(workflow("invalid_ui_format"))


def test_a_link_to_a_missing_node_is_a_validation_error_naming_both_nodes():
    with pytest.raises(ValidationError) as info:
        check_workflow(workflow("invalid_link_to_missing_node"))
    assert info.value.details() == ["Node 2 (SaveImage), input 'images': Input links to node 99, "
                                    "which is not in the workflow"]


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.png", "a/../../x.png", "a\\b.png", "x\x00.png", "", "~/x.png",
                                  "./x.png", 5, None])
def test_names_that_could_leave_the_input_folder_are_refused(name):
    with pytest.raises(InputError):
        check_image_name(name)


@pytest.mark.parametrize("name", ["in.png", "sub/in.png", "my image (1).jpg"])
def test_plain_relative_names_are_accepted(name):
    assert check_image_name(name) == name


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "text"])
def test_bytes_that_are_no_image_are_refused(data):
    with pytest.raises(InputError, match="in.png"):
        check_images({"in.png": data})


def test_images_are_written_inside_the_folder(tmp_path):
    written = write_images({"a.png": png_bytes(), "sub/b.png": png_bytes()}, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == ["a.png", "sub/b.png"]
