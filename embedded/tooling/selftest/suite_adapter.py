"""A pytest plugin that runs ComfyUI's own execution suite (``tests/execution/`` of the pinned tree,
unchanged) against our public ``Executor`` API instead of ComfyUI's HTTP server.

Loaded with ``-p embedded.tooling.selftest.suite_adapter`` into a pytest process whose root is a copy of
the tree's ``tests/`` (``suite.run_suite`` makes it). Two seams, nothing else:

- **Their server fixture** starts ``python main.py ...`` with ``subprocess.Popen``: that call (and
  only that one: every other ``Popen`` goes through, such as the server mode's own ComfyUI) starts
  an ``Executor`` instead, in the mode of ``EMBEDDED_SUITE_MODE`` (``embedded`` or ``server``),
  with the cache flags of its arguments (``--cache-lru N``, ``--cache-none``...) given through our
  documented configuration (``COMFY_ARGS``) and the suite's testing-pack as a custom-node folder
  (``COMFY_EXTRA_MODEL_PATHS``). Its ``kill()`` closes the executor.
- **Their ``ComfyClient``** keeps its own ``run`` (the suite's logic is untouched); its transport is
  replaced: ``connect`` opens a frame socket for the client id, ``queue_prompt`` submits the job
  (``outputs`` for ``partial_execution_targets``) and returns once it has started (a refusal,
  ``ValidationError``/``InputError``, is raised as the ``HTTPError`` 400 their client sees),
  the socket receives the job's events as ComfyUI's websocket frames (``events.to_frames``: runs
  from ``ExecutingEvent``s, cached nodes from ``CachedEvent``s), and ``get_history``/``get_image``
  answer from the job's ``Result.outputs``.

The tests of ComfyUI's HTTP history paging (``get_all_history``) are reported as skipped, not
applicable: an in-process executor has no history to page.

Must not import ComfyUI itself: it reaches ComfyUI through ``embedded`` only.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import queue
import subprocess
import threading
import urllib.error
import uuid
from pathlib import Path

import pytest
import websocket

from embedded import Config, Executor, InputError, ValidationError, WorkflowFormatError
from embedded.job.events import StartEvent, to_frames

#: the reason the history-paging tests are skipped with (the outer test checks it)
NOT_APPLICABLE = "not applicable in-process: ComfyUI's HTTP history paging (GET /history?max_items&offset)"
#: the in-process stand-in for ComfyUI's server of the running test class
_current: "_SuiteServer | None" = None
_real_popen = subprocess.Popen


# --- their server fixture -------------------------------------------------------------------------
class _SuiteServer:
    """What their fixture's ``subprocess.Popen(['python', 'main.py', ...])`` returns here."""

    def __init__(self, args: list[str]):
        global _current
        mode = os.environ.get("EMBEDDED_SUITE_MODE", "embedded")
        root = Path.cwd()
        work = root / "work" / f"{mode}-{uuid.uuid4().hex[:8]}"
        paths = work / "extra_model_paths.yaml"
        paths.parent.mkdir(parents=True, exist_ok=True)
        paths.write_text(f"testing:\n  custom_nodes: {root / 'tests' / 'execution' / 'testing_nodes'}\n")
        config = Config.from_env({**os.environ, "EXECUTION_MODE": mode, "COMFY_WORK_DIR": str(work),
                                  "COMFY_EXTRA_MODEL_PATHS": str(paths), "COMFY_ARGS": " ".join(_cache_flags(args)),
                                  "COMFY_LOG_LEVEL": os.environ.get("COMFY_LOG_LEVEL", "WARNING")})
        self.executor = Executor(config).start()
        self.returncode = None
        _current = self

    def kill(self) -> None:
        global _current
        self.executor.close()
        self.returncode = -9
        if _current is self:
            _current = None

    terminate = kill

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        return self.returncode


def _cache_flags(args: list[str]) -> list[str]:
    """The cache flags of ComfyUI's command line (the only arguments their fixtures vary)."""
    flags, i = [], 0
    while i < len(args):
        if args[i] == "--cache-lru":
            flags += [args[i], args[i + 1]]
            i += 1
        elif args[i] in ("--cache-none", "--cache-classic", "--cache-ram"):
            flags.append(args[i])
        i += 1
    return flags


def _popen(args, *rest, **kwargs):
    if isinstance(args, (list, tuple)) and [str(a) for a in args[:2]] == ["python", "main.py"]:
        return _SuiteServer([str(a) for a in args])
    return _real_popen(args, *rest, **kwargs)


# --- their client's transport -----------------------------------------------------------------------
class _FrameSocket:
    """The client's websocket: the JSON frames of its jobs, as ComfyUI's server sends them."""

    def __init__(self):
        self.frames: queue.Queue[str] = queue.Queue()
        self.timeout: float | None = None

    def put(self, frame: dict) -> None:
        self.frames.put(json.dumps(frame))

    def recv(self) -> str:
        try:
            return self.frames.get(timeout=self.timeout)
        except queue.Empty:
            raise websocket.WebSocketTimeoutException("no frame within the timeout") from None

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def close(self) -> None:
        pass


def _server() -> _SuiteServer:
    if _current is None:
        raise ConnectionRefusedError("no executor is running (their server fixture did not start one)")
    return _current


def connect(self, listen: str = "127.0.0.1", port=8188, client_id: str | None = None) -> None:
    _server()
    self.client_id = client_id or str(uuid.uuid4())
    self.server_address = f"{listen}:{port}"
    self.ws = _FrameSocket()
    self._embedded_history = {}
    self._embedded_files = {}


def queue_prompt(self, prompt, partial_execution_targets=None):
    executor = _server().executor
    job_id = str(uuid.uuid4())
    started = threading.Event()
    socket = self.ws

    def on_event(ev) -> None:
        if isinstance(ev, StartEvent):
            started.set()
        for frame in to_frames(ev):
            data = frame.get("data")
            if isinstance(data, dict) and "prompt_id" in data:  # the job's id is its prompt id here
                frame = {**frame, "data": {**data, "prompt_id": job_id}}
            socket.put(frame)

    future = executor.submit(prompt, on_event=on_event, job_id=job_id,
                             outputs=None if partial_execution_targets is None else list(partial_execution_targets))
    self._embedded_history[job_id] = future
    while not started.wait(0.05):
        if future.done():
            break
    if future.done() and not started.is_set():
        error = future.exception()
        if isinstance(error, (ValidationError, InputError, WorkflowFormatError)):
            body = json.dumps({"error": {"type": getattr(error, "type", "invalid_prompt"), "message": str(error)},
                               "node_errors": {}}).encode()
            raise urllib.error.HTTPError(f"http://{self.server_address}/prompt", 400, str(error), None,
                                         io.BytesIO(body))
        if error is not None:
            raise RuntimeError(f"the job could not start: {error!r}")
    return {"prompt_id": job_id, "number": 0, "node_errors": {}}


def get_history(self, prompt_id):
    future: concurrent.futures.Future | None = self._embedded_history.get(prompt_id)
    if future is None:
        return {}
    try:  # their client reads the history once the closing frame came: the result follows it
        result_outputs = future.result(timeout=300).outputs
    except Exception as exc:  # noqa: BLE001 - a failed job: ComfyUI's history has what ran before
        result_outputs = getattr(exc, "outputs", None) or []
    outputs: dict[str, dict] = {}
    for out in result_outputs:
        ui = outputs.setdefault(out.node_id, {})
        if out.kind == "text" and out.key == "text":
            ui.setdefault("text", []).append(out.text)
            continue
        ui.setdefault(out.key or "images", []).append(
            {"filename": out.filename, "subfolder": out.subfolder, "type": out.type})
        self._embedded_files[(out.filename, out.subfolder, out.type)] = out.data
    return {prompt_id: {"outputs": outputs, "status": {"status_str": "success", "completed": True}}}


def get_image(self, filename, subfolder, folder_type):
    try:
        return self._embedded_files[(filename, subfolder, folder_type)]
    except KeyError:
        raise urllib.error.HTTPError(f"http://{self.server_address}/view", 404, "Not Found", None, None) from None


def get_all_history(self, max_items=None, offset=None):
    pytest.skip(NOT_APPLICABLE)


# --- wiring ---------------------------------------------------------------------------------------
def pytest_configure(config):
    subprocess.Popen = _popen


def pytest_collection_modifyitems(session, config, items):
    """Their client gets our transport; the history-paging tests are not applicable."""
    patched = set()
    for item in items:
        client = getattr(item.module, "ComfyClient", None)
        if client is not None and client not in patched:
            for name, fn in (("connect", connect), ("queue_prompt", queue_prompt), ("get_history", get_history),
                             ("get_image", get_image), ("get_all_history", get_all_history)):
                setattr(client, name, fn)
            patched.add(client)
        if item.originalname.startswith("test_offset_"):
            item.add_marker(pytest.mark.skip(reason=NOT_APPLICABLE))
