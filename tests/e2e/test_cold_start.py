"""A cold worker: the runpod SDK answers while ComfyUI boots, a job sent then waits for the boot,
and the warm-up workflow's model files are read ahead while ComfyUI imports."""

import json

import pytest
import requests

from ..helpers import workflow
from ..servers import LocalApiWorker, wait_until, worker_env

pytestmark = pytest.mark.timeout(300)


def test_the_api_answers_during_boot_and_a_job_waits_for_it(tmp_path, extra_paths, test_config, models):
    warmup = tmp_path / "warmup.json"
    wf = workflow("txt2img_checkpoint")
    wf["4"]["inputs"].update(width=64, height=64)
    warmup.write_text(json.dumps(wf))
    env = worker_env(tmp_path / "work", extra_paths, EMBEDDED_TEST_SLOW_BOOT_S="4", WARMUP_WORKFLOW=str(warmup),
                     COMFY_MODELS_DIR=str(test_config.models), COMFY_LOG_LEVEL="INFO")
    worker = LocalApiWorker(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        assert "ComfyUI ready" not in worker.log()  # the SDK is up; ComfyUI still boots
        reply = requests.post(f"{worker.url}/runsync", json={"input": {"workflow": workflow("solid_red_image")}},
                              timeout=240).json()
        assert reply["status"] == "COMPLETED" and reply["output"]["images"], reply
        # the job waited for ComfyUI's start, not for the warm-up, which may still be running
        log = wait_until(lambda: "warm-up workflow" in worker.log() and worker.log(), 120, "the warm-up")
        assert log.index("ComfyUI ready") < log.index("warm-up workflow")
        assert "read 1 model file(s)" in log  # tiny-sd3.safetensors, ahead of the warm-up
    finally:
        worker.stop()




@pytest.mark.skipif(__import__("embedded.backends.launch").backends.launch.nvidia_devices(), reason="this machine has a GPU")
def test_the_image_gpu_check_exits_at_once_without_a_gpu(tmp_path, extra_paths):
    """``docker/start.sh`` passes --require-gpu unless COMFY_FORCE_CPU=true; this machine has no GPU."""
    import subprocess
    import sys

    from ..servers import REPO

    proc = subprocess.run([sys.executable, "-m", "embedded.handler", "--require-gpu"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=worker_env(tmp_path / "work", extra_paths))
    assert proc.returncode == 1
    assert "no usable CUDA GPU" in proc.stderr and "COMFY_FORCE_CPU=true" in proc.stderr
