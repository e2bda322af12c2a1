"""Every output kind comes back with its bytes, kind, MIME type and origin."""

import io

import av
import pytest

from embedded.job.types import AUDIO, IMAGE, TEXT, VIDEO

from ..helpers import close_to, open_image, png_bytes, workflow


def test_saved_image_decodes_to_the_requested_size_and_colour(executor):
    result = executor.run(workflow("solid_red_image"))
    [out] = result.outputs
    assert (out.node_id, out.kind, out.type, out.mime_type) == ("2", IMAGE, "output", "image/png")
    assert out.filename == "ComfyUI_00001_.png" and out.subfolder == ""
    im = open_image(out.data)
    assert im.size == (64, 32)
    assert im.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert im.convert("RGB").getpixel((63, 31)) == (255, 0, 0)


def test_load_image_reads_an_input_passed_in_images(executor):
    result = executor.run(workflow("load_and_invert_input"), {"in.png": png_bytes((10, 6), (10, 200, 30))})
    [out] = result.outputs
    im = open_image(out.data).convert("RGB")
    assert im.size == (10, 6)
    assert close_to(im.getpixel((5, 3)), (245, 55, 225))


def test_input_images_may_sit_in_a_subfolder(executor):
    wf = workflow("load_and_invert_input")
    wf["1"]["inputs"]["image"] = "batch/in.png"
    result = executor.run(wf, {"batch/in.png": png_bytes((4, 4), (0, 0, 0))})
    assert open_image(result.outputs[0].data).convert("RGB").getpixel((0, 0)) == (255, 255, 255)


def test_preview_images_come_back_as_temp_outputs(executor):
    result = executor.run(workflow("save_and_preview"))
    by_type = {o.type: o for o in result.outputs}
    assert set(by_type) == {"output", "temp"}
    assert by_type["output"].filename == "kept_00001_.png"
    assert by_type["temp"].node_id == "3" and by_type["temp"].kind == IMAGE
    assert open_image(by_type["temp"].data).convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_animated_webp_is_an_animated_image_with_every_frame(executor):
    [out] = executor.run(workflow("animated_webp")).outputs
    assert (out.kind, out.mime_type, out.animated) == (IMAGE, "image/webp", True)
    im = open_image(out.data)
    assert im.n_frames == 2
    colours = []
    for frame in range(2):
        im.seek(frame)
        colours.append(im.convert("RGB").getpixel((16, 16)))
    assert colours == [(255, 0, 0), (0, 255, 0)]


@pytest.mark.parametrize("name, mime, frames", [("video_mp4", "video/mp4", 8), ("video_webm", "video/webm", 4)])
def test_videos_are_video_outputs_that_decode(executor, name, mime, frames):
    [out] = executor.run(workflow(name)).outputs
    assert (out.kind, out.mime_type, out.key) == (VIDEO, mime, "images")
    with av.open(io.BytesIO(out.data)) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == frames
    assert (decoded[0].width, decoded[0].height) == (64, 64)


def test_audio_is_an_audio_output_that_decodes(executor):
    [out] = executor.run(workflow("audio_tone")).outputs
    assert (out.kind, out.mime_type, out.subfolder, out.key) == (AUDIO, "audio/flac", "audio", "audio")
    with av.open(io.BytesIO(out.data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        assert stream.sample_rate == 16000
    assert samples == 8000


def test_text_outputs_carry_the_node_text(executor):
    [out] = executor.run(workflow("text_output")).outputs
    assert (out.kind, out.mime_type, out.node_id) == (TEXT, "text/plain", "1")
    assert out.text == "hello from a node"


def test_preview_any_reports_a_value_as_text(executor):
    [out] = executor.run(workflow("image_size_text")).outputs
    assert out.kind == TEXT and out.text == "320"


def test_timings_cover_every_phase(executor):
    t = executor.run(workflow("solid_red_image")).timings
    assert t.validate > 0 and t.execute > 0 and t.collect > 0 and t.wait >= 0
    assert t.total == pytest.approx(t.wait + t.validate + t.execute + t.collect)
