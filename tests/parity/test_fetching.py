"""Files and models by URL behave the same in both modes: the server mode receives the fetched
input through its upload route and finds the model cache through its model-paths file."""

from __future__ import annotations

import hashlib

import pytest

from ..helpers import png_bytes, workflow

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_an_input_by_url_gives_the_same_output_in_both_modes(backends, file_server, mode):
    file_server.files["/parity/in.png"] = png_bytes((7, 5), (10, 200, 30))
    result = backends[mode].run(workflow("load_and_invert_input"), files={"in.png": file_server.url("/parity/in.png")})
    reference = backends["embedded"].run(workflow("load_and_invert_input"), {"in.png": png_bytes((7, 5), (10, 200, 30))})
    assert result.outputs[0].data == reference.outputs[0].data


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_a_model_fetched_by_url_is_found_by_the_loader_in_both_modes(backends, models, file_server, mode):
    import folder_paths

    data = open(folder_paths.get_full_path_or_raise("checkpoints", "tiny-sd3.safetensors"), "rb").read()
    name = f"parity-{mode}.safetensors"
    file_server.files[f"/parity/{name}"] = data
    wf = workflow("txt2img_checkpoint")
    wf["1"]["inputs"]["ckpt_name"] = name
    wf["4"]["inputs"].update(width=64, height=64)
    report = backends[mode].check(wf, models=[{"url": file_server.url(f"/parity/{name}"), "folder": "checkpoints",
                                               "filename": name}])
    assert report.ok and report.inputs_to_fetch[0]["cached"] is False, report
    result = backends[mode].run(wf, models=[{"url": file_server.url(f"/parity/{name}"), "folder": "checkpoints",
                                             "filename": name, "sha256": hashlib.sha256(data).hexdigest()}])
    assert result.outputs[0].kind == "image"
    assert file_server.hits(f"/parity/{name}") == 1
