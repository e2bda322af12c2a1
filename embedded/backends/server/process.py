"""ComfyUI's own ``main.py`` as a supervised subprocess on ``127.0.0.1`` and a free port.

Owns: starting it with the same folders and arguments as the embedded boot (``launch.comfy_args``)
plus our server-side custom-node packs (``comfy_nodes/``) and ``--listen 127.0.0.1 --port <free>``
(never all interfaces), waiting until it answers while
watching the process (if it exits, fail at once with its last log lines), knowing whether it is
alive, and stopping it. Its output goes to ``<work>/server/comfyui.log``.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from .. import packs
from ...config import Config
from ...job.errors import BootError, ServerCrashed
from ..launch import comfy_args, use_cpu
from ...job.types import FailedPack

#: custom-node packs loaded into the server process only (see their docstrings)
COMFY_NODES = Path(__file__).resolve().parent / "comfy_nodes"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, config: Config):
        self.config = config
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.cpu: bool | None = None
        self.started_at: float | None = None
        self.ready_seconds: float | None = None
        self.args: list[str] = []
        self.log_path = config.work_dir / "server" / "comfyui.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answers(self, timeout: float = 2.0) -> bool:
        if not self.alive():
            return False
        try:
            return requests.get(f"{self.url}/system_stats", timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return "".join(collections.deque(fh, maxlen=lines)).rstrip()
        except OSError:
            return "(no log)"

    def failed_packs(self) -> tuple[FailedPack, ...]:
        """The custom-node packs the server's log says failed to import."""
        try:
            with open(self.log_path, errors="replace") as fh:
                return packs.parse_lines(fh)
        except OSError:
            return ()

    def crashed(self, during: str) -> ServerCrashed:
        code = None
        if self.proc is not None:
            try:  # a process that was just killed may still be exiting
                code = self.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
        state = f"exited with code {code}" if code is not None else "stopped answering"
        return ServerCrashed(f"ComfyUI's server {state} {during}. Last log lines:\n{self.log_tail()}")

    def start(self) -> "ComfyServer":
        """Start ``main.py`` and wait until it answers; raises ``BootError`` / ``ServerCrashed``."""
        if self.alive():
            return self
        tree = self.config.comfyui_path
        if not (tree / "main.py").is_file():
            raise BootError(f"No ComfyUI tree at {tree}: run `python -m embedded.tooling.vendor` (or `make demo`) first, "
                            f"or set COMFYUI_PATH")
        self._make_custom_node_folders()
        self.cpu = use_cpu(self.config, import_torch=False)  # this process needs no torch
        self.port = free_port(self.host)
        self.args = [*comfy_args(self.config, self.cpu), "--extra-model-paths-config", str(self._plugin_paths()),
                     "--listen", self.host, "--port", str(self.port), "--disable-auto-launch", "--dont-print-server"]
        args = [sys.executable, "-u", str(tree / "main.py"), *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.started_at = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=self.config.work_dir, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + self.config.server_start_timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.crashed("while starting")
            if self.answers(timeout=1.0):
                self.ready_seconds = time.perf_counter() - self.started_at
                return self
            time.sleep(0.1)
        self.stop()
        raise BootError(f"ComfyUI's server did not answer within {self.config.server_start_timeout_s:g} s. "
                        f"Last log lines:\n{self.log_tail()}")

    def _make_custom_node_folders(self) -> None:
        """main.py fails to start when a ``custom_nodes`` folder of a model-paths file does not exist
        (a network volume's, on a worker without one; the embedded boot skips those): create them."""
        files = [self.config.comfyui_path / "extra_model_paths.yaml", *self.config.extra_model_paths]
        for file in (f for f in files if f.is_file()):
            for conf in (yaml.safe_load(file.read_text()) or {}).values():
                if not isinstance(conf, dict) or not conf.get("custom_nodes"):
                    continue
                base = Path(os.path.expandvars(os.path.expanduser(str(conf.get("base_path") or file.parent))))
                for entry in str(conf["custom_nodes"]).splitlines():
                    if entry.strip():
                        (file.parent / base / entry.strip()).mkdir(parents=True, exist_ok=True)

    def _plugin_paths(self) -> Path:
        """A model-paths file whose ``custom_nodes`` is our folder of server-side adaptations."""
        path = self.config.work_dir / "server" / "extra_model_paths.server.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"embedded_server": {"custom_nodes": str(COMFY_NODES)}}))
        return path

    def kill(self, wait: bool = True) -> None:
        """End the process at once (a node that does not stop; tests simulate a crash with it)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            if wait:
                self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
