"""The legacy server backend: jobs run on ComfyUI's own server, driven over HTTP and a websocket.

Owns the job flow worker-comfyui uses, made robust: inputs uploaded with ``/upload/image``;
``POST /prompt`` with a ``client_id`` (validation errors, HTTP 400, map to the same errors as the
embedded backend); the websocket (``websocket-client``) followed to the closing ``executing`` with
``node: null``; ``/history/<id>`` read and each file downloaded with ``/view``; ``POST /interrupt``
for interrupts and timeouts; reconnects when the websocket drops (``WEBSOCKET_RECONNECT_ATTEMPTS``,
``WEBSOCKET_RECONNECT_DELAY_S``, only while the server still answers, and without missing a
completion that happened while disconnected); ``WEBSOCKET_TRACE`` logs every frame; a server
that died fails the job at once, and the next job restarts it.

Jobs stay apart as in the embedded backend: one at a time; the server's input, output and temp
folders (ours: we started it with them) are emptied after each job, so every job numbers its files
from 1; the workflow is sent as the user wrote it. An identical job runs no node again, as
ComfyUI's server caches it; a cached output node's files (removed with the folders) come from the
files kept for its cache key (``kept.KeptOutputs``; the keys from ``comfy_nodes/embedded_cache_keys``,
loaded into the server process).

Must not import ComfyUI (it runs in the other process) or the embedded backend.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import io
import json
import logging
import shutil
import struct
import threading
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import requests
import websocket
from PIL import Image
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ...job import events
from .. import preflight, translate
from ...config import Config
from ...job.errors import BootError, EmbeddedError, ServerCrashed, ServerError
from ...job.events import Dispatcher, ProgressTextEvent
from ...job.inputs import check_file_inputs, check_output_targets, check_workflow, file_inputs, prepare_input_folder
from ..jobcontrol import JobControl, Running, Ticket
from ..kept import KeptOutputs
from ...job.outputs import collect
from ...job.types import BootInfo, Job, Result, Timings
from .process import ComfyServer

log = logging.getLogger("embedded.backends.server")

_BINARY_TEXT = 3  # protocol.BinaryEventTypes.TEXT: 4-byte node-id length, node id, UTF-8 text
_BINARY_PREVIEW = 4  # PREVIEW_IMAGE_WITH_METADATA: 4-byte metadata length, metadata JSON, image bytes


class ServerRunner(JobControl):
    """Same interface as ``comfy.ComfyRunner``: ``start``, ``submit``, ``run``, ``run_async``,
    ``interrupt``, ``close``, ``booted``.

    ``address`` (host, port) makes the client connect somewhere other than the server it started
    (the reconnect tests put a TCP proxy there). ``on_frame`` receives every websocket frame as it
    arrives (JSON frames as dicts, binary ones as ``{"type": "binary", "event": n}``).
    """

    def __init__(self, config: Config | None = None, address: tuple[str, int] | None = None):
        self.config = config or Config.from_env()
        super().__init__(self.config.job_stop_grace_s)
        self.server = ComfyServer(self.config)
        self.address = address
        self.on_frame: Callable[[dict[str, Any]], None] | None = None
        self.booted: BootInfo | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._http = threading.local()
        self._file_inputs: dict[str, frozenset[str]] = {}
        self._output_classes: set[str] = set()
        self._kept = KeptOutputs()  # files of cached output nodes (see the module doc)

    # --- lifecycle ------------------------------------------------------------------------------
    def prepare(self) -> "ServerRunner":
        """Nothing to do on the caller's thread: ComfyUI parses its arguments in its own process."""
        return self

    def start(self) -> "ServerRunner":
        if self._pool is not None:
            return self
        self._start_server()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="comfy-server-client")
        return self

    def _start_server(self) -> None:
        self.server.start()
        t = time.perf_counter()
        info = self._get("/object_info").json()
        object_info = time.perf_counter() - t
        self._kept.clear()  # a new server process: its cache starts empty, its key ids anew
        self._file_inputs = {name: file_inputs(spec.get("input")) for name, spec in info.items()}
        self._output_classes = {name for name, spec in info.items() if spec.get("output_node") is True}
        self._clean_folders()
        self.booted = BootInfo(mode="server", tree=self.config.comfyui_path, args=tuple(self.server.args),
                               cpu=bool(self.server.cpu),
                               node_classes=len(info), seconds=self.server.ready_seconds or 0.0,
                               failed_packs=self.server.failed_packs(),
                               phases=(("ComfyUI's server: spawn to its first HTTP answer",
                                         self.server.ready_seconds or 0.0), ("/object_info", round(object_info, 4))))
        for pack in self.booted.failed_packs:
            log.warning("server: custom-node pack %s failed to import: %s", pack.name, pack.reason)
        log.info("server: ComfyUI's server answers on %s after %.1f s", self.server.url, self.booted.seconds)

    def close(self) -> None:
        self.interrupt()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.server.stop()

    @property
    def started(self) -> bool:
        return self._pool is not None

    @property
    def url(self) -> str:
        host, port = self.address or (self.server.host, self.server.port)
        return f"http://{host}:{port}"

    # --- jobs -----------------------------------------------------------------------------------
    def _enqueue(self, ticket: Ticket) -> concurrent.futures.Future:
        if self._pool is None:
            raise BootError("The runner is not started (call start() first)")
        return self._pool.submit(self._run, ticket)

    def _stop(self, running: Running) -> None:
        if running.prompt_id is None:
            return  # sent as soon as the prompt is queued
        try:  # a fresh connection: this runs on the caller's or the timer's thread
            requests.post(f"{self.url}/interrupt", json={"prompt_id": running.prompt_id}, timeout=5)
        except requests.RequestException as exc:
            log.warning("server: interrupt request failed: %s", exc)

    def check(self, job: Job) -> preflight.Preflight:
        """Validate ``job`` on the server as a run would (its input files uploaded), without
        queueing it (``comfy_nodes/embedded_validate``)."""
        if self._pool is None:
            raise BootError("The runner is not started (call start() first)")
        return self._pool.submit(self._check, job).result()

    def _check(self, job: Job) -> preflight.Preflight:
        if not self.server.alive():
            self._start_server()
        known = self._file_inputs.__contains__  # every node type /object_info lists
        missing = preflight.unknown_nodes(check_workflow(job.workflow), known, self.booted.failed_packs)
        info = self._get("/object_info").json()  # once: the options of every list input

        def options_of(class_type: str, input_name: str) -> tuple[str, ...] | None:
            return translate.options_from_input_spec((info.get(class_type) or {}).get("input"), input_name)

        models = preflight.missing_models(job.workflow, known, options_of, preflight.model_folders(self._kinds), lambda class_type: self._file_inputs.get(class_type, frozenset()))
        if missing:  # ComfyUI's validation would stop at the first
            return preflight.report(missing, models, None)
        prompt = copy.deepcopy(job.workflow)
        check_file_inputs(prompt, lambda class_type: self._file_inputs.get(class_type, frozenset()))
        check_output_targets(prompt, job.outputs, self._is_output_node)
        try:
            prepare_input_folder(self.config.idle_dir / "input", self.config.static_inputs, job.images)
            for name, data in job.images.items():
                self._upload(name, data)
            body = self._post("/embedded/validate", {"prompt": prompt, **_targets(job)}).json()
        finally:
            self._clean_folders()
        if body.get("ok"):
            warnings = [e.line() for e in translate.node_errors(body.get("node_errors"), prompt, self._options)]
            return preflight.report([], models, None, warnings)
        error = translate.validation_error(body.get("error"), body.get("node_errors"), prompt, self._options,
                                           self.booted.failed_packs, known_classes=self._known_classes,
                                           kind_of=self._model_kinds())
        return preflight.report([], models, error)

    def _is_output_node(self, class_type: str) -> bool | None:
        return class_type in self._output_classes if class_type in self._file_inputs else None

    def _abandon(self, running: Running) -> str | None:
        """Kill ComfyUI's server: its stuck node goes with it; the next job starts a new one."""
        with self._state_lock:  # never the server a later job already uses
            if self._running is not running:
                return None
            log.warning("server: killing ComfyUI's server, whose node did not stop; the next job restarts it")
            self.server.kill(wait=False)
        self.server.proc.wait(10)
        return "ComfyUI's server was stopped (the next job starts it again)"

    def _run(self, ticket: Ticket) -> Result:
        timings = Timings(wait=time.perf_counter() - ticket.submitted)
        running = self._begin(ticket)
        try:
            return self._run_job(running, timings, self._dispatcher(running, trace_frames=False))
        finally:
            self._end(running)
            if self.server.alive():
                self._clean_folders()
                self._free(running.job)

    def _free(self, job: Job) -> None:
        """A job's ``unload_models`` / ``free_memory``, as ComfyUI's ``POST /free``."""
        if job.free_memory:  # every cached result goes: so do the files kept for them
            self._kept.clear()
        if job.unload_models or job.free_memory:
            try:
                self._post("/free", {"unload_models": job.unload_models or job.free_memory,
                                     "free_memory": job.free_memory})
            except EmbeddedError as exc:
                log.warning("server: POST /free failed: %s", exc)

    def _run_job(self, running: Running, timings: Timings, dispatch: Dispatcher) -> Result:
        job = running.job
        t = time.perf_counter()
        if not self.server.alive():
            log.warning("server: ComfyUI's server is not running; starting it again")
            self._start_server()
        prompt = copy.deepcopy(check_workflow(job.workflow))
        check_file_inputs(prompt, lambda class_type: self._file_inputs.get(class_type, frozenset()))
        check_output_targets(prompt, job.outputs, self._is_output_node)
        prompt_id = str(uuid.uuid4())
        # The server's input folder is ours: static files linked in, room made for the job's own
        # (an upload over a link would write into the static folder).
        prepare_input_folder(self.config.idle_dir / "input", self.config.static_inputs, job.images)
        for name, data in job.images.items():
            self._upload(name, data)
        ws = self._connect(job)
        try:
            response = self._post("/prompt", {"prompt": prompt, "client_id": job.client_id, "prompt_id": prompt_id,
                                              "extra_data": dict(job.extra_data), **_targets(job)}, ok=(200, 400))
            body = response.json()
            if response.status_code == 400:
                raise translate.validation_error(body.get("error"), body.get("node_errors"), prompt, self._options,
                                                 self.booted.failed_packs, known_classes=self._known_classes,
                                                 kind_of=self._model_kinds())
            warnings = [e.line() for e in translate.node_errors(body.get("node_errors"), prompt, self._options)]
            with self._state_lock:
                running.prompt_id = prompt_id
                stop = running.stop_reason is not None
            if stop:  # asked before the prompt had an id
                self._stop(running)
            timings.validate = time.perf_counter() - t

            t = time.perf_counter()
            ws = self._follow(ws, running, dispatch)
            timings.execute = time.perf_counter() - t
        finally:
            if ws is not None:
                ws.close()

        t = time.perf_counter()
        entry = self._history(prompt_id)
        if entry is None:
            raise ServerError(f"ComfyUI's history has no entry for prompt {prompt_id}")
        try:
            keys = self._cache_keys(running)
            outputs, problems = self._finish(running, (entry.get("status") or {}).get("messages") or [], dispatch,
                                             lambda: self._collect(running, entry.get("outputs") or {}, prompt, keys))
            if keys.get("live") is not None:
                self._kept.retain(set(keys["live"]).__contains__)
        finally:
            self._post("/history", {"delete": [prompt_id]})
        timings.collect = time.perf_counter() - t
        return Result(job.job_id, prompt_id, outputs, timings, warnings + problems, running.node_timings())

    # --- cache hits ------------------------------------------------------------------------------
    def _collect(self, running: Running, ui_outputs: dict[str, Any], prompt: dict[str, Any],
                 keys: dict[str, Any]) -> tuple[list, list[str]]:
        """The job's outputs with their bytes (a cached output node's from the kept files); the files
        of the output nodes that ran are kept while ComfyUI caches their results."""
        outputs, problems = collect(ui_outputs, self._view, order=prompt, kept=self._kept_for(running, lambda: keys))
        self._kept.remember(outputs, set(running.node_ms) - set(running.cached), keys["nodes"].get)
        return outputs, problems

    def _kept_for(self, running: Running, keys: Callable[[], dict[str, Any]]) -> Callable[[str], Any]:
        """The kept files of a node this job got from ComfyUI's cache (None for one that ran)."""
        return lambda node_id: self._kept.files_of(keys()["nodes"].get(node_id)) if node_id in running.cached else None

    def _cache_keys(self, running: Running, final: bool = True) -> dict[str, Any]:
        """The cache key ids of the prompt's cached nodes (``comfy_nodes/embedded_cache_keys``):
        once the prompt ended (read once), or while it runs (``final=False``)."""
        if final or running.cache_keys is None:
            try:
                body = self._get(f"/embedded/cache_keys/{running.prompt_id}").json()
            except (EmbeddedError, ValueError) as exc:
                log.warning("server: could not read the cache keys of prompt %s: %s", running.prompt_id, exc)
                body = {}
            running.cache_keys = {"nodes": dict(body.get("nodes") or {}), "live": body.get("live")}
        return running.cache_keys

    # --- the websocket ----------------------------------------------------------------------------
    def _ws_url(self, client_id: str) -> str:
        return self.url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}"

    def _open(self, job: Job) -> websocket.WebSocket:
        """A websocket for ``job``; a job with previews first says it reads preview metadata (the
        server sends previews only to such a client)."""
        ws = websocket.create_connection(self._ws_url(job.client_id), timeout=10)
        if job.previews:
            ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        return ws

    def _connect(self, job: Job) -> websocket.WebSocket:
        ws_url = self._ws_url(job.client_id)
        try:
            return self._open(job)
        except (websocket.WebSocketException, OSError) as exc:
            if not self.server.alive():
                raise self.server.crashed("before the job started") from None
            raise ServerError(f"Could not open ComfyUI's websocket at {ws_url}: {exc}") from None

    def _follow(self, ws: websocket.WebSocket, running: Running, dispatch: Dispatcher) -> websocket.WebSocket | None:
        """Relay frames until the closing ``executing``/``null`` of our prompt; returns the socket
        (``None`` when a reconnect found the prompt already finished)."""
        prompt_id = running.prompt_id
        ws.settimeout(1.0)
        while True:
            try:
                message = ws.recv()
            except websocket.WebSocketTimeoutException:
                if not self.server.alive():
                    raise self.server.crashed("during the job") from None
                continue
            except (websocket.WebSocketException, OSError) as exc:
                ws.close()
                ws = self._reconnect(running, exc)
                if ws is None:
                    return None
                ws.settimeout(1.0)
                continue
            if isinstance(message, (bytes, bytearray)):
                self._binary(bytes(message), running, dispatch)
                continue
            if not message:
                continue
            frame = json.loads(message)
            if self.config.websocket_trace:
                events.trace(frame, source="server", secrets=events.job_secrets(running.job.extra_data))
            if self.on_frame is not None:
                self.on_frame(frame)
            kind, data = frame.get("type"), frame.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                message = events.message_event(prompt_id, kind, data) if "prompt_id" not in data else None
                if message is not None:  # a node's own message, while this job runs (one job at a time)
                    dispatch(message)
                continue  # status frames, other clients' prompts, the reconnect "executing" replay
            if kind == "execution_start" and running.stop_reason is not None:
                self._stop(running)
            ev = events.from_comfy(kind, data)
            if ev is not None:
                dispatch(ev)
            if isinstance(ev, events.ExecutedEvent) and running.job.stream_outputs:
                early, _ = collect({ev.node_id: ev.output or {}}, self._view,
                                   kept=self._kept_for(running, lambda: self._cache_keys(running, final=False)))
                for output in early:
                    dispatch(events.OutputEvent(prompt_id, output))
            if kind == "executing" and data.get("node") is None:
                return ws

    def _binary(self, message: bytes, running: Running, dispatch: Dispatcher) -> None:
        prompt_id = running.prompt_id
        event = struct.unpack(">I", message[:4])[0] if len(message) >= 4 else None
        if self.config.websocket_trace:
            events.trace({"type": "binary", "event": event, "bytes": len(message)}, source="server")
        if self.on_frame is not None:
            self.on_frame({"type": "binary", "event": event})
        if event == _BINARY_TEXT and len(message) >= 8:
            (length,) = struct.unpack(">I", message[4:8])
            node_id = message[8:8 + length].decode("utf-8", "replace")
            text = message[8 + length:].decode("utf-8", "replace")
            dispatch(ProgressTextEvent(prompt_id, node_id, text))
        elif event == _BINARY_PREVIEW and running.job.previews and len(message) >= 8:
            (length,) = struct.unpack(">I", message[4:8])
            try:
                metadata = json.loads(message[8:8 + length] or b"{}")
            except ValueError:
                return
            now = time.monotonic()
            if metadata.get("prompt_id") == prompt_id and now - running.last_preview >= 1 / events.PREVIEWS_PER_SECOND:
                running.last_preview = now
                try:
                    with Image.open(io.BytesIO(message[8 + length:])) as image:
                        preview = events.preview_event(prompt_id, metadata.get("node_id"), image)
                except (OSError, ValueError) as exc:  # a preview must never fail the job
                    log.debug("server: unreadable preview dropped: %s", exc)
                    return
                dispatch(preview)

    def _reconnect(self, running: Running, cause: Exception) -> websocket.WebSocket | None:
        attempts, delay = self.config.websocket_reconnect_attempts, self.config.websocket_reconnect_delay_s
        log.warning("server: websocket dropped during prompt %s (%s); reconnecting (%d attempts, %g s apart)",
                    running.prompt_id, cause, attempts, delay)
        self._reset_session()  # its pooled connections went down with the websocket
        for attempt in range(1, attempts + 1):
            if not self._answers():
                raise self.server.crashed(f"during the job (the websocket dropped: {cause})")
            time.sleep(delay)
            try:
                ws = self._open(running.job)
            except (websocket.WebSocketException, OSError) as exc:
                log.warning("server: reconnect attempt %d/%d failed: %s", attempt, attempts, exc)
                continue
            # Connected again: did the prompt finish while we were away?
            if self._history(running.prompt_id) is not None:
                ws.close()
                return None
            log.info("server: websocket reconnected on attempt %d/%d", attempt, attempts)
            return ws
        if not self._answers():
            raise self.server.crashed(f"during the job (the websocket dropped: {cause})")
        raise ServerError(f"Lost the websocket to ComfyUI ({cause}) and could not reconnect in {attempts} attempts")

    # --- HTTP ----------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        """This thread's keep-alive session; GETs are retried on a dropped connection (a pooled
        connection may be dead after a network cut), other requests are not."""
        session = getattr(self._http, "session", None)
        if session is None:
            session = self._http.session = requests.Session()
            retry = Retry(total=2, connect=2, read=2, status=0, backoff_factor=0.1, allowed_methods={"GET"},
                          raise_on_status=False)
            session.mount("http://", HTTPAdapter(max_retries=retry))
        return session

    def _reset_session(self) -> None:
        session = getattr(self._http, "session", None)
        if session is not None:
            session.close()
            self._http.session = None

    def _answers(self) -> bool:
        """Whether ComfyUI's HTTP port still answers (on a fresh connection)."""
        if not self.server.alive():
            return False
        try:
            return requests.get(f"{self.url}/system_stats", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def _request(self, method: str, path: str, ok=(200,), **kwargs) -> requests.Response:
        try:
            response = self._session().request(method, f"{self.url}{path}", timeout=60, **kwargs)
        except requests.RequestException as exc:
            if not self.server.alive():
                raise self.server.crashed(f"during {method} {path}") from None
            raise ServerError(f"{method} {path} failed: {exc}") from None
        if response.status_code not in ok:
            raise ServerError(f"{method} {path} answered HTTP {response.status_code}: {response.text[:300]}")
        return response

    def _get(self, path: str, **kwargs) -> requests.Response:
        return self._request("GET", path, **kwargs)

    def _post(self, path: str, payload: Any, ok=(200,)) -> requests.Response:
        return self._request("POST", path, ok=ok, json=payload)

    def _upload(self, name: str, data: bytes | Path) -> None:
        path = PurePosixPath(name)
        subfolder = str(path.parent) if str(path.parent) != "." else ""
        with contextlib.ExitStack() as stack:  # a downloaded input is streamed from its file
            body = stack.enter_context(open(data, "rb")) if isinstance(data, Path) else data
            self._request("POST", "/upload/image", files={"image": (path.name, body)},
                          data={"type": "input", "subfolder": subfolder, "overwrite": "true"})

    def _history(self, prompt_id: str) -> dict[str, Any] | None:
        return self._get(f"/history/{prompt_id}").json().get(prompt_id)

    def _view(self, ftype: str, subfolder: str, filename: str) -> bytes:
        response = self._session().get(f"{self.url}/view", timeout=60,
                                       params={"filename": filename, "subfolder": subfolder, "type": ftype})
        if response.status_code != 200:
            raise OSError(f"/view answered HTTP {response.status_code}")
        return response.content

    def _kinds(self) -> dict[str, tuple[list[str], list[str]]]:
        """Each model kind's files and folders, as ComfyUI's server says."""
        return {kind: (self._get(f"/models/{kind}").json(), paths)
                for kind, paths in self._get("/internal/folder_paths").json().items()
                if kind not in ("custom_nodes", "configs")}

    def _model_kinds(self):
        """Which model kind a model input's files are of (read from the server on first use)."""
        return preflight.model_kinds(self._kinds)

    def _known_classes(self) -> list[str]:
        """Every node class ComfyUI's server knows (its ``/object_info``)."""
        try:
            return list(self._get("/object_info").json())
        except (EmbeddedError, ValueError):
            return []

    def _options(self, class_type: str, input_name: str) -> tuple[str, ...] | None:
        try:
            info = self._get(f"/object_info/{class_type}").json().get(class_type) or {}
        except (EmbeddedError, ValueError):
            return None
        return translate.options_from_input_spec(info.get("input"), input_name)

    # --- job hygiene -------------------------------------------------------------------------------
    def _clean_folders(self) -> None:
        """Empty the server's input, output and temp folders (ours; one job at a time)."""
        for sub in ("input", "output", "temp"):
            folder = self.config.idle_dir / sub
            if not folder.is_dir():
                continue
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def _targets(job: Job) -> dict[str, Any]:
    """The part of a ``/prompt`` body that runs only the job's chosen outputs (all: nothing)."""
    return {} if job.outputs is None else {"partial_execution_targets": list(job.outputs)}


__all__ = ["ServerRunner", "ServerError", "ServerCrashed"]
