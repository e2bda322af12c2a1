"""The worker started as the image starts it (its environment, ComfyUI's tree at a root of its own,
a network volume), run the way users customise worker-comfyui's image: a node pack in
``<tree>/custom_nodes``, one on the volume, a static file in ``<tree>/input``, a model on the volume
and one placed in ``<tree>/models`` by ``comfy model download`` from a (loopback) server."""

import base64
import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ..helpers import TESTS, open_image, png_bytes, workflow
from ..servers import LocalApiWorker

REPO = TESTS.parent
VENDOR_TREE = REPO / "vendor" / "ComfyUI"
#: the folders users fill in a derived image: real folders in the test tree, the rest links
USER_FOLDERS = {"models", "custom_nodes", "input", "output", "extra_model_paths.yaml"}


def text_pack(folder: Path, class_type: str, text: str) -> None:
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(
        f"class {class_type}:\n    CATEGORY = 'embedded_tests'\n    RETURN_TYPES = ()\n    FUNCTION = 'run'\n"
        f"    OUTPUT_NODE = True\n\n    @classmethod\n    def INPUT_TYPES(cls):\n        return {{'required': {{}}}}\n\n"
        f"    def run(self):\n        return {{'ui': {{'text': [{text!r}]}}}}\n\n\n"
        f"NODE_CLASS_MAPPINGS = {{{class_type!r}: {class_type}}}\n")


def image_env(root: Path) -> dict[str, str]:
    """The Dockerfile's ENV lines, with / moved to ``root``."""
    dockerfile = (REPO / "Dockerfile").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_", "COMFY"))}
    block = re.search(r"^ENV COMFYUI_PATH=.*?(?=^\s*$)", dockerfile, re.M | re.S).group(0)
    for name, value in re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")):
        env[name] = str(root) + value if value.startswith("/") else value
    env.update(COMFY_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1", RUNPOD_SKIP_GPU_CHECK="true",
               RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true", NETWORK_VOLUME_PATH=str(root / "runpod-volume"))
    return env


@pytest.fixture(scope="module")
def image_root(tmp_path_factory, models, test_config):
    root = tmp_path_factory.mktemp("image-root")
    tree, volume = root / "comfyui", root / "runpod-volume"
    tree.mkdir()
    for entry in VENDOR_TREE.iterdir():
        if entry.name not in USER_FOLDERS:
            (tree / entry.name).symlink_to(entry)
    # COPY examples/extra_model_paths.runpod.yaml /comfyui/extra_model_paths.yaml, pointing at the volume
    (tree / "extra_model_paths.yaml").write_text((REPO / "examples" / "extra_model_paths.runpod.yaml").read_text()
                                                 .replace("base_path: /runpod-volume", f"base_path: {volume}"))
    text_pack(tree / "custom_nodes" / "tree_pack", "EmbeddedTreePackNode", "from the tree's custom_nodes")
    text_pack(volume / "custom_nodes" / "volume_pack", "EmbeddedVolumePackNode", "from the volume's custom_nodes")
    (tree / "input").mkdir()
    (tree / "input" / "static.png").write_bytes(png_bytes((4, 4), (0, 0, 0)))
    source = (test_config.models / "checkpoints" / models["tiny-sd3"]["checkpoints"]).resolve()
    (volume / "models" / "checkpoints").mkdir(parents=True)
    (volume / "models" / "checkpoints" / "on-volume.safetensors").write_bytes(source.read_bytes())
    return root, source


def comfy_model_download(root: Path, source: Path) -> Path:
    """``RUN comfy model download --url ... --relative-path models/checkpoints --filename ...`` of a
    user's Dockerfile, against a file server on loopback."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(source.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = root / "home"
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    comfy = [str(Path(sys.executable).with_name("comfy")), "--skip-prompt"]
    try:
        subprocess.run(comfy + ["tracking", "disable"], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run(comfy + ["--workspace", str(root / "comfyui"), "model", "download", "--url",
                                f"http://127.0.0.1:{server.server_port}/{source.name}",
                                "--relative-path", "models/checkpoints", "--filename", "baked-in.safetensors"],
                       env=env, check=True, capture_output=True, timeout=120)
    finally:
        server.shutdown()
    return root / "comfyui" / "models" / "checkpoints" / "baked-in.safetensors"


@pytest.fixture(scope="module")
def image_worker(image_root):
    root, source = image_root
    baked = comfy_model_download(root, source)
    assert baked.read_bytes() == source.read_bytes()
    worker = LocalApiWorker(image_env(root), root / "worker.log").wait_ready(timeout=180)
    yield worker
    worker.stop()


@pytest.mark.parametrize("class_type, text", [("EmbeddedTreePackNode", "from the tree's custom_nodes"),
                                              ("EmbeddedVolumePackNode", "from the volume's custom_nodes")])
def test_node_packs_from_the_tree_and_the_volume_load(image_worker, class_type, text):
    body = image_worker.runsync({"workflow": {"1": {"class_type": class_type, "inputs": {}}}})
    assert body["status"] == "COMPLETED", body
    assert body["output"]["text"][0]["data"] == text


def test_a_static_input_baked_into_the_tree_is_seen_by_load_image(image_worker):
    wf = workflow("load_and_invert_input")
    wf["1"]["inputs"]["image"] = "static.png"
    body = image_worker.runsync({"workflow": wf})
    assert open_image(base64.b64decode(body["output"]["images"][0]["data"])).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("checkpoint", ["on-volume.safetensors", "baked-in.safetensors"])
def test_models_from_the_volume_and_baked_into_the_tree_load(image_worker, checkpoint):
    wf = workflow("txt2img_checkpoint")
    wf["1"]["inputs"]["ckpt_name"] = checkpoint
    body = image_worker.runsync({"workflow": wf})
    assert body["status"] == "COMPLETED", body
    png = base64.b64decode(body["output"]["images"][0]["data"])
    assert open_image(png).size == (64, 64)
    assert b"tEXtprompt" not in png  # the worker writes no workflow into outputs by default
