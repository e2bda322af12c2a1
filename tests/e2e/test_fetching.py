"""Files by URL end to end, through the worker's real local API and the CLI: a loopback server is
refused by default (it records no request), allowed with ``FETCH_ALLOW=127.0.0.1:<port>``, and a
redirect from that port to another loopback port is refused."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from ..helpers import EXAMPLES, open_image, png_bytes, workflow
from ..servers import REPO, FileServer, LocalApiWorker, worker_env

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def files():
    server = FileServer()
    server.files["/black.png"] = png_bytes((5, 4), (0, 0, 0))
    yield server
    server.close()


@pytest.fixture(scope="module")
def allowed_worker(tmp_path_factory, extra_paths, files):
    work = tmp_path_factory.mktemp("fetch-allow-work")
    worker = LocalApiWorker(worker_env(work, extra_paths, FETCH_ALLOW=files.allow),
                            work.parent / "fetch-allow.log").wait_ready()
    yield worker
    worker.stop()


def invert(url: str) -> dict:
    return {"workflow": workflow("load_and_invert_input"), "images": [{"name": "in.png", "image": url}]}


def test_by_default_a_loopback_url_is_refused_and_the_server_sees_no_request(local_api, files):
    before = len(files.requests)
    reply = local_api.runsync(invert(files.url("/black.png")))
    assert reply["status"] == "FAILED"
    assert reply["error"].startswith(f"Input 'in.png': Refused to fetch from 127.0.0.1:{files.port}")
    assert len(files.requests) == before


def test_fetch_allow_lets_the_worker_fetch_from_that_port(allowed_worker, files):
    reply = allowed_worker.runsync(invert(files.url("/black.png")))
    [image] = reply["output"]["images"]
    assert open_image(base64.b64decode(image["data"])).convert("RGB").getpixel((0, 0)) == (255, 255, 255)


def test_a_redirect_to_another_loopback_port_is_refused(allowed_worker, files):
    other = FileServer()
    try:
        other.files["/internal.png"] = png_bytes()
        files.redirects["/jump.png"] = other.url("/internal.png")
        reply = allowed_worker.runsync(invert(files.url("/jump.png")))
        assert reply["status"] == "FAILED"
        assert f"Refused to fetch from 127.0.0.1:{other.port}" in reply["error"]
        assert files.hits("/jump.png") == 1 and other.requests == []
    finally:
        other.close()


def test_two_cli_jobs_sharing_a_model_cache_download_the_model_once_and_both_succeed(files, tmp_path):
    files.files["/input.png"] = (EXAMPLES / "input.png").read_bytes()
    files.files["/m/upscaler.safetensors"] = b"not a real model: fetched, cached, not loaded" * 30000
    files.delay["/m/upscaler.safetensors"] = 0.3  # long enough for both to want it at once
    procs = []
    for n in range(2):
        env = dict(os.environ, COMFY_WORK_DIR=str(tmp_path / f"work{n}"), COMFY_LOG_LEVEL="WARNING",
                   FETCH_ALLOW=files.allow, MODEL_CACHE_DIR=str(tmp_path / "cache"))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "embedded", "run", str(EXAMPLES / "image_ops.json"),
             "--image", f"input.png={files.url('/input.png')}",
             "--model", f"{files.url('/m/upscaler.safetensors')}:upscale_models/up.safetensors",
             "--out", str(tmp_path / f"out{n}"), "-q"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for n in range(2):
        assert open_image((tmp_path / f"out{n}" / "image_ops_00001_.png").read_bytes()).size == (512, 512)
    assert (tmp_path / "cache" / "upscale_models" / "up.safetensors").read_bytes() == \
        files.files["/m/upscaler.safetensors"]
    assert files.hits("/m/upscaler.safetensors") == 1 and files.hits("/input.png") == 2


def test_the_cli_refuses_a_malformed_model_spec_as_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "embedded", "run", str(EXAMPLES / "image_ops.json"),
                           "--model", "https://example.com/x.safetensors"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, COMFY_WORK_DIR=str(tmp_path / "w")))
    assert proc.returncode == 2 and "expected URL:folder/filename[:sha256]" in proc.stderr
