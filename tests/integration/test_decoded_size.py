"""Inputs bounded by what they decode to (issue 18, item 2), through the worker: an animated image
whose frames each fit INPUT_MAX_PIXELS but not together is refused from its header with upstream's
error shape, and the worker answers the next job."""

import base64

from ..helpers import animated_gif, handle, png_bytes, workflow


def test_a_gif_bomb_is_refused_before_it_is_decoded_and_the_next_job_runs(make_worker):
    worker = make_worker(input_max_pixels=300 * 300 * 10)
    bomb = base64.b64encode(animated_gif((300, 300), 12)).decode()
    answer = handle(worker, {"workflow": workflow("load_and_invert_input"),
                             "images": [{"name": "in.gif", "image": bomb}]}, "gif-bomb")
    assert answer["error"].startswith("Failed to upload one or more input images: Input 'in.gif' ")
    assert any("12 frames of 300x300 pixels" in d and "INPUT_MAX_PIXELS" in d for d in answer["details"])
    ok = handle(worker, {"workflow": workflow("load_and_invert_input"),
                         "images": [{"name": "in.png", "image": base64.b64encode(png_bytes()).decode()}]}, "after")
    assert [image["filename"] for image in ok["images"]] == ["inverted_00001_.png"]
