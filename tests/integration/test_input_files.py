"""Input files through the handler: any kind of file, names as users write them, names that cannot
work refused with upstream's input error, and static input files every job sees beside its own."""

import base64
import dataclasses
import io
import json
import wave

import pytest

from embedded.worker.handler import Worker
from embedded.worker.request import IMAGES_FAILED

from ..helpers import handle, open_image, png_bytes, workflow


@pytest.fixture
def worker(executor, test_config):
    return Worker(dataclasses.replace(test_config), executor=executor)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wav_bytes(seconds=0.1, rate=8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x10" * int(seconds * rate))
    return buf.getvalue()


def invert_job(name, data):
    wf = workflow("load_and_invert_input")
    wf["1"]["inputs"]["image"] = name
    return {"workflow": wf, "images": [{"name": name, "image": b64(data)}]}


def test_an_audio_file_reaches_load_audio(worker):
    out = handle(worker, {"workflow": workflow("load_audio_input"),
                          "images": [{"name": "voice.wav", "image": "data:audio/wav;base64," + b64(wav_bytes())}]})
    assert out["status"] == "success_no_images"
    assert base64.b64decode(out["audio"][0]["data"])[:4] == b"fLaC"


@pytest.mark.parametrize("name", ["~draft.png", "my photo (1).png", "café/日本語.png"])
def test_names_with_tilde_spaces_and_non_ascii_work(worker, name):
    out = handle(worker, invert_job(name, png_bytes((3, 3), (10, 20, 30))))
    assert open_image(base64.b64decode(out["images"][0]["data"])).getpixel((0, 0)) == (245, 235, 225)


@pytest.mark.parametrize("names, expected", [
    (["a", "a/b.png"], "Input names 'a' and 'a/b.png' clash"),
    (["x" * 300 + ".png"], "is too long"),
    (["/etc/x.png"], "is an absolute path"),
    (["../x.png"], "contains '..'"),
])
def test_names_that_cannot_work_get_upstreams_input_error_and_no_local_path(worker, test_config, names, expected):
    out = handle(worker, {"workflow": workflow("solid_red_image"),
                          "images": [{"name": n, "image": b64(png_bytes())} for n in names]})
    assert out["error"] == f"{IMAGES_FAILED}: {'; '.join(out['details'])}"
    assert any(expected in d for d in out["details"]), out["details"]
    assert str(test_config.work_dir) not in json.dumps(out) and "unexpected" not in json.dumps(out)


def test_a_static_input_is_seen_and_the_jobs_own_file_wins_for_that_job_only(worker, static_input):
    (static_input / "static.png").write_bytes(png_bytes((2, 2), (0, 0, 0)))
    try:
        wf = workflow("load_and_invert_input")
        wf["1"]["inputs"]["image"] = "static.png"
        seen = handle(worker, {"workflow": wf})
        assert open_image(base64.b64decode(seen["images"][0]["data"])).getpixel((0, 0)) == (255, 255, 255)

        mine = handle(worker, invert_job("static.png", png_bytes((2, 2), (255, 255, 255))))
        assert open_image(base64.b64decode(mine["images"][0]["data"])).getpixel((0, 0)) == (0, 0, 0)

        again = handle(worker, {"workflow": wf})  # the static file is back, untouched
        assert open_image(base64.b64decode(again["images"][0]["data"])).getpixel((0, 0)) == (255, 255, 255)
        assert sorted(p.name for p in static_input.iterdir()) == ["static.png"]
    finally:
        (static_input / "static.png").unlink()


def test_a_jobs_file_is_not_seen_by_a_later_job(worker):
    assert "images" in handle(worker, invert_job("once.png", png_bytes()))
    wf = workflow("load_and_invert_input")
    wf["1"]["inputs"]["image"] = "once.png"
    out = handle(worker, {"workflow": wf})
    assert out["error"].startswith("Workflow validation failed")


@pytest.mark.parametrize("value", ["/etc/hostname", "../../../etc/hostname"])
def test_a_loader_cannot_read_outside_the_input_folders(worker, value):
    wf = workflow("load_and_invert_input")
    wf["1"]["inputs"]["image"] = value
    out = handle(worker, {"workflow": wf})
    assert out["error"].startswith("Workflow validation failed")
    assert out["details"][0].startswith("Node 1 (LoadImage), input 'image': File name")
