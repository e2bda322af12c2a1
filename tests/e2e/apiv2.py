"""``python -m embedded serve`` as the end-to-end tests start it, and what they do with the official
client (``comfy-sdk``) against it."""

from __future__ import annotations

import re
import sys

import requests

from ..helpers import workflow
from ..servers import Process, wait_until

TOKEN = "t0ken-for-tests"


class ApiServer(Process):
    def __init__(self, env: dict[str, str], log_path, *args: str):
        super().__init__([sys.executable, "-m", "embedded", "serve", "--port", "0", *args], env, log_path)
        try:
            self.url = wait_until(self._url, 60, "the server's address")
        except BaseException:
            self.stop()  # never left running by a start that failed
            raise
        self.api = f"{self.url}/api/v2"

    def _url(self):
        assert self.alive(), self.log()
        match = re.search(r"serving Comfy API v2 on (http://\S+)/api/v2", self.log())
        return match.group(1) if match else None

    def wait_healthy(self, timeout: float = 120) -> "ApiServer":
        """Wait until ComfyUI has booted (``/health`` says a job can run now); a server that exits
        meanwhile fails the wait with its log."""
        def healthy() -> bool:
            assert self.alive(), self.log()
            return self.raw("GET", "/health", token=None).status_code == 200
        wait_until(healthy, timeout, "the server's boot")
        return self

    def raw(self, method: str, path: str, token: str | None = TOKEN, **kwargs) -> requests.Response:
        headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        return requests.request(method, self.api + path, headers=headers, **{"timeout": 60, **kwargs})


def sdk_workflow(client, name: str, inputs: dict | None = None):
    wf = client.workflows.from_json(workflow(name))
    for (node, key), value in (inputs or {}).items():
        wf.set_input(node, key, value)
    return wf


def wait_status(client, job, *statuses: str, timeout: float = 60):
    return wait_until(lambda: client.jobs.get(job.id).status in statuses and client.jobs.get(job.id), timeout,
                      f"job {job.id} to be {' or '.join(statuses)}")
