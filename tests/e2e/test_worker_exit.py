"""A worker stopped with SIGTERM (as RunPod stops one) leaves nothing running: in server mode
ComfyUI's server, which runs in its own session, goes with it."""

import psutil
import pytest

from ..helpers import workflow
from ..servers import LocalApiWorker, wait_until, worker_env

pytestmark = pytest.mark.timeout(300)


def test_a_server_mode_worker_stopped_with_sigterm_stops_comfyuis_server(tmp_path, extra_paths):
    worker = LocalApiWorker(worker_env(tmp_path / "work", extra_paths, EXECUTION_MODE="server"),
                            tmp_path / "worker.log")
    try:
        worker.wait_ready()

        def comfyui_server():
            found = [p for p in psutil.Process(worker.proc.pid).children() if "main.py" in " ".join(p.cmdline())]
            return found[0] if found else None
        server = wait_until(comfyui_server, 120, "ComfyUI's server process")
        assert worker.runsync({"workflow": workflow("solid_red_image")}, timeout=240)["status"] == "COMPLETED"
    finally:
        worker.stop()
    assert worker.proc.returncode == 143  # it left through Python (SystemExit), not by the signal's default
    wait_until(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, 30, "the server to stop")
