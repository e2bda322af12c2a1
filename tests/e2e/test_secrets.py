"""No secret reaches a log line, at the most verbose settings a user can choose: a worker at
COMFY_LOG_LEVEL=DEBUG with WEBSOCKET_TRACE, delivering to S3, running an API node that fails
with its key among ComfyUI's reported inputs. Every line it and its ComfyUI server wrote is read."""

import re

import pytest

from ..helpers import workflow
from ..servers import LocalApiWorker, worker_env

API_KEY = "comfyui-test-key-5f1e2d3c4b"


@pytest.fixture(scope="module")
def verbose_worker(tmp_path_factory, extra_paths, s3):
    work = tmp_path_factory.mktemp("secrets-work")
    env = worker_env(work, extra_paths, COMFY_LOG_LEVEL="DEBUG", WEBSOCKET_TRACE="true", EXECUTION_MODE="server",
                     BUCKET_ENDPOINT_URL=f"{s3.endpoint}/outputs", BUCKET_ACCESS_KEY_ID=s3.ACCESS_KEY,
                     BUCKET_SECRET_ACCESS_KEY=s3.SECRET_KEY)
    worker = LocalApiWorker(env, work.parent / "secrets-worker.log").wait_ready(timeout=180)
    worker.work_dir = work
    yield worker
    worker.stop()


def test_a_debug_s3_job_and_a_failing_api_node_log_no_secret(verbose_worker, s3):
    uploaded = verbose_worker.runsync({"workflow": workflow("solid_red_image")})
    assert uploaded["output"]["images"][0]["type"] == "s3_url"
    failing = workflow("api_key_probe")
    failing["1"]["inputs"]["fail"] = True
    failed = verbose_worker.runsync({"workflow": failing, "comfy_org_api_key": API_KEY})
    assert failed["status"] == "FAILED"

    logs = verbose_worker.log() + (verbose_worker.work_dir / "server" / "comfyui.log").read_text()
    assert "websocket trace [server]" in logs and '"execution_error"' in logs, "the trace was on"
    assert "<redacted>" in logs, "the failing node's key input was traced, redacted"
    for secret in (s3.ACCESS_KEY, s3.SECRET_KEY, API_KEY):
        assert secret not in logs
    assert not re.search(r"(?i)x-amz-signature|signature=|authorization", logs)
