"""Workflows and input images are checked before ComfyUI sees them."""

import struct
import zlib

import pytest

from embedded import InputError, ValidationError, WorkflowFormatError
from embedded.job.inputs import (InputLimits, check_file_inputs, check_input_name, check_inputs, check_output_ids,
                                 check_output_targets, check_workflow, file_inputs, prepare_input_folder,
                                 write_inputs)

from ..helpers import animated_gif, png_bytes, workflow


def test_an_api_format_workflow_passes_unchanged():
    wf = workflow("solid_red_image")
    assert check_workflow(wf) is wf


def test_a_ui_format_workflow_is_told_to_use_export_api():
    with pytest.raises(WorkflowFormatError, match=r"Export \(API\)"):
        check_workflow(workflow("invalid_ui_format"))


def test_a_link_to_a_missing_node_is_left_to_comfyui_which_fails_only_the_outputs_needing_it():
    wf = workflow("invalid_link_to_missing_node")
    assert check_workflow(wf) is wf


def test_the_outputs_option_is_a_list_of_node_ids():
    assert check_output_ids(None) is None
    assert check_output_ids(["9", 12, "9"]) == ("9", "12")
    assert check_output_ids([]) == ()
    for bad in ("9", [True], [["9"]], {"9": 1}, 9):
        with pytest.raises(InputError, match="outputs must be a list of output node ids"):
            check_output_ids(bad)


def test_outputs_that_are_not_output_nodes_of_the_workflow_are_validation_errors():
    wf = workflow("save_and_preview")
    is_output = {"EmptyImage": False, "SaveImage": True, "PreviewImage": True}.get
    check_output_targets(wf, ("2", "3"), is_output)
    with pytest.raises(ValidationError) as info:
        check_output_targets(wf, ("1", "2", "42"), is_output)
    assert info.value.type == "invalid_outputs"
    assert [(e.node_id, e.type) for e in info.value.node_errors] == [("1", "not_an_output_node"),
                                                                    ("42", "output_not_found")]


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.png", "a/../../x.png", "a\\b.png", "x\x00.png", "",
                                  "./x.png", "a//b.png", "x" * 256 + ".png", "a/" * 600 + "b.png", 5, None])
def test_names_that_could_leave_the_input_folder_or_cannot_exist_are_refused(name):
    with pytest.raises(InputError):
        check_input_name(name)


@pytest.mark.parametrize("name", ["in.png", "sub/in.png", "my image (1).jpg", "~draft.png", "~/x.png",
                                  "café/日本語.png", "x" * 250 + ".png"])
def test_plain_relative_names_are_accepted_with_tilde_spaces_and_non_ascii(name):
    assert check_input_name(name) == name


@pytest.mark.parametrize("names, message", [
    (["a", "a/b.txt"], "'a' and 'a/b.txt' clash"),
    (["x/y/z.wav", "x/y"], "'x/y' and 'x/y/z.wav' clash"),
])
def test_names_that_cannot_exist_together_are_refused(names, message):
    with pytest.raises(InputError, match=message):
        check_inputs({n: b"data" for n in names})


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "text"])
def test_bytes_that_are_no_image_are_refused_under_an_image_name(data):
    with pytest.raises(InputError, match="in.png"):
        check_inputs({"in.png": data})


def test_a_decompression_bomb_is_an_input_error():
    with pytest.raises(InputError, match="bomb.png"):
        check_inputs({"bomb.png": png_header_only(20000, 10000)})


@pytest.mark.parametrize("name", ["clip.mp4", "voice.wav", "prompt.txt", "mask", "model.latent"])
def test_files_of_any_other_kind_are_taken_as_they_are(name):
    assert check_inputs({name: b"\x00\x01 any bytes"}) == {name: b"\x00\x01 any bytes"}


def test_inputs_are_written_inside_the_folder(tmp_path):
    written = write_inputs({"a.png": png_bytes(), "sub/b.mp4": b"video"}, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == ["a.png", "sub/b.mp4"]


def test_static_inputs_are_linked_in_and_the_jobs_file_wins_without_touching_them(tmp_path):
    static = tmp_path / "static"
    (static / "masks").mkdir(parents=True)
    (static / "logo.png").write_bytes(b"static logo")
    (static / "masks" / "m.png").write_bytes(b"static mask")
    job = tmp_path / "job"
    files = {"logo.png": b"job logo", "masks/new.png": b"job mask"}
    prepare_input_folder(job, (static, tmp_path / "absent"), files)
    write_inputs(files, job)
    assert (job / "logo.png").read_bytes() == b"job logo"
    assert (job / "masks" / "m.png").read_bytes() == b"static mask"  # still seen, through a link
    assert (job / "masks" / "new.png").read_bytes() == b"job mask"
    assert (static / "logo.png").read_bytes() == b"static logo"
    assert sorted(p.name for p in (static / "masks").iterdir()) == ["m.png"]  # nothing landed there


def test_the_first_static_folder_wins_a_name(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "x.txt").write_text(folder.name)
    prepare_input_folder(tmp_path / "job", (first, second), [])
    assert (tmp_path / "job" / "x.txt").read_text() == "first"


LOADER_SPEC = {"required": {"image": (["a.png"], {"image_upload": True}), "note": ("STRING", {})}}


@pytest.mark.parametrize("value", ["/etc/passwd", "../../secret.png", "sub/../../x.png", "/abs.png [input]"])
def test_loader_inputs_cannot_reach_outside_the_input_folders(value):
    wf = {"1": {"class_type": "Loader", "inputs": {"image": value, "note": "/not/a/file/input"}}}
    with pytest.raises(ValidationError) as info:
        check_file_inputs(wf, lambda class_type: file_inputs(LOADER_SPEC))
    assert info.value.node_errors[0].input_name == "image"
    assert info.value.node_errors[0].type == "input_file_outside_input_folder"


def test_loader_inputs_inside_the_input_folders_pass():
    wf = {"1": {"class_type": "Loader", "inputs": {"image": "sub/a.png [output]", "note": "/x"}}}
    check_file_inputs(wf, lambda class_type: file_inputs(LOADER_SPEC))
    assert file_inputs(LOADER_SPEC) == {"image"}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that only claims its size (a signature, IHDR and IEND): a few dozen bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_input_limits_are_bytes_per_file_and_pixels_per_image():
    limits = InputLimits(max_bytes=2048, max_pixels=100)
    with pytest.raises(InputError, match=r"'clip.wav' is 2049 bytes; the limit is 2048 \(INPUT_MAX_BYTES\)"):
        check_inputs({"clip.wav": b"\0" * 2049}, limits)
    with pytest.raises(InputError, match=r"'wide.png' is 11x10 pixels; the limit is 100 pixels"):
        check_inputs({"wide.png": png_bytes(size=(11, 10))}, limits)
    assert check_inputs({"ok.png": png_bytes(size=(10, 10))}, limits)


def nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value, problem", [
    (nested(33), "nested more than 32 levels deep"),
    (10 ** 30, "out of range: inputs take 64-bit integers"),
    (-(2 ** 63) - 1, "out of range"),
    ({"a": [2 ** 64]}, "out of range"),
])
def test_values_comfyui_cannot_hash_or_hold_are_validation_errors(value, problem):
    wf = {"1": {"class_type": "EmptyImage", "inputs": {"color": value}}}
    with pytest.raises(ValidationError, match=problem) as info:
        check_workflow(wf)
    assert info.value.node_errors[0].input_name == "color"


def test_64_bit_integers_and_shallow_lists_pass():
    check_workflow({"1": {"class_type": "KSampler", "inputs": {"seed": 2 ** 64 - 1, "cfg": nested(32)}}})


def video(size: tuple[int, int], frames: int) -> bytes:
    import io

    import av
    import numpy
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(numpy.full((size[1], size[0], 3), i * 8 % 255, numpy.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_every_frame_of_an_animated_image_counts_towards_the_pixel_limit():
    """Issue 18, item 2: each frame within INPUT_MAX_PIXELS, all of them together over it."""
    limits = InputLimits(max_pixels=200 * 200 * 4)
    assert check_inputs({"ok.gif": animated_gif((200, 200), 4)}, limits)
    with pytest.raises(InputError, match=r"'bomb.gif' is 5 frames of 200x200 pixels \(200000 in all.*INPUT_MAX_PIXELS"):
        check_inputs({"bomb.gif": animated_gif((200, 200), 5)}, limits)


def test_a_videos_frames_count_towards_the_pixel_limit_read_from_its_header():
    limits = InputLimits(max_pixels=64 * 64 * 20)
    assert check_inputs({"short.mp4": video((64, 64), 10)}, limits)
    with pytest.raises(InputError, match=r"'long.mp4' is 30 frames of 64x64 pixels"):
        check_inputs({"long.mp4": video((64, 64), 30)}, limits)
    assert check_inputs({"not-really.mp4": b"plain bytes"}, limits), "a file PyAV cannot read is the loader's to judge"
