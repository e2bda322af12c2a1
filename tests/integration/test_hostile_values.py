"""Values that used to escape as Python exceptions (and left the job's folder behind) are input or
validation errors without local paths: deep nesting, integers beyond 64 bits, a decompression
bomb, files over INPUT_MAX_BYTES and images over INPUT_MAX_PIXELS. The worker runs the next job."""

import base64
import dataclasses
import struct
import zlib

import pytest

from embedded import InputError, ValidationError
from embedded.worker.handler import Worker
from embedded.worker.request import IMAGES_FAILED

from ..helpers import handle, png_bytes, workflow


@pytest.fixture
def worker(executor, test_config):
    return Worker(dataclasses.replace(test_config, input_max_bytes=64 * 1024, input_max_pixels=1_000_000),
                  executor=executor)


def nested(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def bomb_png(width=20000, height=10000) -> bytes:
    """A 1-bit PNG of ``width`` x ``height`` black pixels: about 25 KB on disk, 200 megapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" * (1 + (width + 7) // 8)
    pixels = zlib.compressobj(9)
    body = b"".join(pixels.compress(row) for _ in range(height)) + pixels.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_a_value_nested_500_levels_deep_is_a_validation_error(executor, test_config):
    wf = workflow("solid_red_image")
    wf["1"]["inputs"]["color"] = nested(500)
    with pytest.raises(ValidationError) as info:
        executor.run(wf)
    assert [(e.node_id, e.input_name) for e in info.value.node_errors] == [("1", "color")]
    assert "nested more than 32 levels deep" in str(info.value)
    assert executor.run(workflow("solid_red_image")).outputs


def test_an_integer_of_5000_digits_is_a_validation_error(executor):
    wf = workflow("solid_red_image")
    wf["1"]["inputs"]["width"] = 10 ** 5000
    with pytest.raises(ValidationError, match="out of range: inputs take 64-bit integers"):
        executor.run(wf)
    wf["1"]["inputs"]["width"] = 2 ** 64 - 1  # the largest ComfyUI takes (seeds) still reaches its own check
    with pytest.raises(ValidationError, match="Value 18446744073709551615 bigger than max"):
        executor.run(wf)


def test_hostile_values_through_the_handler_are_answered_without_a_local_path(worker, test_config):
    wf = workflow("solid_red_image")
    wf["1"]["inputs"]["color"] = nested(500)
    body = handle(worker, {"workflow": wf})
    assert body["error"].startswith("Workflow validation failed:")
    assert body["details"] == ["Node 1 (EmptyImage), input 'color': Value is nested more than 32 levels deep"]
    assert str(test_config.work_dir) not in str(body)
    assert "images" in handle(worker, {"workflow": workflow("solid_red_image")})


def test_a_decompression_bomb_is_an_input_error(worker):
    bomb = bomb_png()
    assert len(bomb) < 40_000
    body = handle(worker, {"workflow": workflow("load_and_invert_input"),
                           "images": [{"name": "bomb.png", "image": base64.b64encode(bomb).decode()}]})
    assert body["error"] == f"{IMAGES_FAILED}: {body['details'][0]}"
    assert body["details"] == ["Input 'bomb.png' is larger than Pillow opens (178956970 pixels); the limit is "
                               "1000000 pixels (INPUT_MAX_PIXELS)"]


def test_images_over_input_max_pixels_and_files_over_input_max_bytes_are_refused(worker):
    big_image = png_bytes(size=(1001, 1000))
    big_file = b"\0" * (64 * 1024 + 1)
    body = handle(worker, {"workflow": workflow("load_and_invert_input"),
                           "images": [{"name": "wide.png", "image": base64.b64encode(big_image).decode()},
                                      {"name": "clip.wav", "image": base64.b64encode(big_file).decode()}]})
    assert body["error"] == f"{IMAGES_FAILED}: {'; '.join(body['details'])}"
    assert body["details"] == [
        "Input 'wide.png' is 1001x1000 pixels; the limit is 1000000 pixels (INPUT_MAX_PIXELS)",
        "Input 'clip.wav' is 65537 bytes; the limit is 65536 (INPUT_MAX_BYTES)"]


def test_the_python_api_applies_the_same_limits(executor):
    with pytest.raises(InputError, match="larger than Pillow opens"):
        executor.run(workflow("load_and_invert_input"), {"bomb.png": bomb_png()})


def test_a_chain_deeper_than_pythons_recursion_limit_is_a_validation_error(executor, test_config):
    chain = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    for i in range(2, 1502):
        chain[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    chain["1502"] = {"class_type": "SaveImage", "inputs": {"images": ["1501", 0], "filename_prefix": "deep"}}
    with pytest.raises(ValidationError) as info:
        executor.run(chain)
    assert "recursion" in str(info.value) or "too deeply" in str(info.value)
    assert str(test_config.work_dir) not in str(info.value)
    assert not list(test_config.jobs_dir.iterdir())
    assert executor.run(workflow("solid_red_image")).outputs


def test_a_file_system_error_preparing_a_job_is_an_input_error_without_a_path(test_config, tmp_path):
    from embedded import Executor

    work = tmp_path / "work"
    work.mkdir()
    (work / "jobs").write_text("a file where the jobs folder should be")
    with Executor(dataclasses.replace(test_config, work_dir=work)) as ex:
        with pytest.raises(InputError) as info:
            ex.run(workflow("solid_red_image"))
        assert str(info.value).startswith("Could not write the job's input files: ")
        assert str(work) not in str(info.value)
        (work / "jobs").unlink()
        assert ex.run(workflow("solid_red_image")).outputs
