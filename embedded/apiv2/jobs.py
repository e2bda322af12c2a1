"""The jobs of the API: what a submission must be, how it runs on our executor, and what it tells
its event streams.

Owns ``Jobs`` (a job's own record is ``record.JobRecord``):
- **Submission** (``submit``): whether a job can be taken at all (``readiness``: booting is fine; a
  failed boot, a stuck runner or a shutdown is 503), the body (``workflow``, ``metadata`` of string
  labels, ``extra_data`` with ``api_key_comfy_org``; nothing else), the workflow's form (a UI
  export: 422 ``workflow_format_ui``; values ComfyUI cannot hash: 422 ``invalid_workflow``), its
  ``core/ASSET`` references replaced by the asset's file name (422 ``missing_asset``), the queue
  bound (429 ``queue_full`` with ``Retry-After`` when the runner is busy and ``max_queue`` jobs
  wait: 0 means none waits), and, when ComfyUI has booted and no job is queued or running,
  ComfyUI's validation: the job is handed to the executor at once and the submission is answered
  once it has started (a refusal is the submission's 422 ``invalid_workflow`` with the nodes'
  reasons and the runner's diagnosis, or 422 ``invalid_input`` for our input checks, and no job is
  made). While jobs run, ComfyUI's validation (which runs on the runner's thread) waits for its
  turn: a workflow it refuses then fails as a job, with the same code and details in ``job.error``.
- **Idempotency keys**, single use for ``IDEMPOTENCY_TTL_S``: a key seen again is 422
  ``idempotency_key_reuse``; a submission that definitely failed releases its key (the client
  retries a 429 with the same key), one whose fate is unknown (the server failed mid-way) keeps it.
- **The run**: every accepted job waits for the boot, then is handed to the executor
  (``Executor.run_async``, with ``JOB_TIMEOUT_S``; it runs one job at a time and queues the rest,
  so the next job's files are ready when the running one ends), with each output streamed as its
  node finishes and stored as an asset in a task of its own, in order (or, with a ``Bucket``,
  uploaded there; one that fails is kept here instead); the job ends once they are stored, and an
  output that cannot be stored fails it. The job's inputs stay in use (not deletable) until it
  ends. A job that leaves the runner stuck makes the server retire (``readiness``).
- **Events**: ``status`` at each transition, ``progress`` snapshots (``nodes_done``/``nodes_total``,
  ``current_node``, ``step``/``steps``), ``preview`` as the executor makes them, ``output`` as
  each output is stored, always before the terminal ``status``.
- **Cancels** (``cancel``, idempotent): ``canceling`` until the executor has stopped the job (and
  its uploads), then ``canceled``; a node that does not stop within ``JOB_STOP_GRACE_S`` is
  answered as our stop rules say (``canceled``, with the error saying the node still runs).

With a ``State`` (``--state FOLDER``) jobs and keys are written through and restored at start
(``_restore``: a job that was queued or running then is ``failed``, ``server_restarted``); without
one they live in memory; a state that cannot be written never fails a job. A shared state
(``shared.jobs.SharedJobs``) extends this class: the routes ask through the async methods (``find``,
``position``, ``page``, ``request_cancel``, ``counts``), which it answers from its database. Must
not import the backends or ComfyUI.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any

from ..api import Executor
from ..job.errors import (EmbeddedError, ExecutionError, InputError, JobInterrupted, JobTimeout, ValidationError,
                          WorkerLost, WorkerStuck, WorkflowFormatError)
from ..job.events import (CachedEvent, Event, ExecutedEvent, ExecutingEvent, OutputEvent, PreviewEvent, ProgressEvent,
                          ProgressStateEvent, StartEvent)
from ..job.inputs import UI_FORMAT_HINT, check_workflow
from ..job.types import Output
from ..staging.downloads import Cancelled
from .assets import AssetStore, blake3_of
from .bucket import MAX_URL_S, Bucket
from .readiness import BootFailed, Readiness
from .record import JOB_TTL_S, JobRecord
from .state import State
from .wire import OUTPUT_TYPES, ApiError, not_found, without_paths

log = logging.getLogger("embedded.apiv2")

IDEMPOTENCY_TTL_S = 24 * 3600
MAX_METADATA_PAIRS, MAX_LABEL_CHARS = 16, 256
ASSET_TYPE = "core/ASSET"


class Jobs:
    def __init__(self, executor: Executor, assets: AssetStore, max_queue: int, state: State | None = None,
                 bucket: Bucket | None = None):
        self.executor, self.assets, self.max_queue, self.state = executor, assets, max_queue, state
        #: jobs that run at once: one per device of the executor (``COMFY_DEVICES``)
        self.runners = executor.capacity if executor is not None else 1
        self.bucket = bucket
        #: an output the bucket refuses is kept here instead (one server); a shared state fails it
        self.keep_when_upload_fails = True
        #: each job's time limit (``JOB_TIMEOUT_S``; error code ``timeout``), as the worker's
        self.timeout = executor.config.job_timeout if executor is not None else None
        #: job id -> the task storing its latest output (each waits for the one before; the job
        #: ends when they are done)
        self._storing: dict[str, asyncio.Task] = {}
        self._jobs: dict[str, JobRecord] = {}
        #: the jobs that have not ended (what the queue, its bound and health count: never a scan of
        #: every job kept for a day)
        self._open: dict[str, JobRecord] = {}
        #: jobs handed to the executor whose submission waits for their validation (not listed yet)
        self._validating: dict[str, JobRecord] = {}
        #: idempotency key -> (the job it made, or None while its submission is under way; when)
        self._keys: dict[str, tuple[str | None, float]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._recent_run_s: list[float] = []
        #: booting, booted or not, stuck, shutting down: whether a job can run (``/health``)
        self.readiness = Readiness(lambda: executor is not None and executor.stuck)
        if state is not None:
            self._restore(state)

    # --- state across restarts -------------------------------------------------------------------
    def _restore(self, state: State) -> None:
        """The jobs and keys of the last run. A finished job is as it was; one that was queued or
        running is failed: its run ended with the process (resubmit it)."""
        now = time.time()
        self._keys = state.keys()
        for record in state.jobs():
            outputs = [a for a in (self._asset_or_none(i) for i in record.pop("outputs")) if a is not None]
            job = JobRecord(**{**record, "done": set(record["done"])}, outputs=outputs)
            if not job.terminal:
                job.status, job.completed_at = "failed", now
                job.error = {"code": "server_restarted", "message": "The server restarted while this job was "
                             + ("queued" if job.started_at is None else "running") + ": submit it again",
                             "node_id": None, "class_type": None, "traceback": None}
                self._save(job)
            self._jobs[job.id] = job

    def _asset_or_none(self, asset_id: str):
        try:
            return self.assets.get(asset_id)
        except ApiError:
            return None

    def _save(self, job: JobRecord) -> None:
        if self.state is None:
            return
        self.state.save_job(job.id, job.created_at, {
            "id": job.id, "workflow": job.workflow, "metadata": job.metadata, "created_at": job.created_at,
            "status": job.status, "started_at": job.started_at, "completed_at": job.completed_at,
            "outputs": [a.id for a in job.outputs], "error": job.error, "assets_used": job.assets_used,
            "cancel_requested": job.cancel_requested, "done": sorted(job.done), "outputs_reused": job.outputs_reused})

    def _save_key(self, key: str) -> None:
        if self.state is not None:
            if key in self._keys:
                self.state.save_key(key, *self._keys[key])
            else:
                self.state.delete_key(key)

    # --- reading ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None:
            raise not_found("job", job_id)
        return job

    def queue_position(self, job: JobRecord) -> int | None:
        if job.status != "queued":
            return None
        waiting = [j for j in self._open.values() if j.status == "queued"]
        return sorted(waiting, key=lambda j: j.created_at).index(job) + 1

    def listing(self, metadata: dict[str, str], limit: int, cursor: str | None) -> tuple[list[JobRecord], str | None]:
        """Newest first, those whose metadata holds every ``metadata`` pair; a page after ``cursor``."""
        jobs = sorted(self._jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
        jobs = [j for j in jobs if all(j.metadata.get(k) == v for k, v in metadata.items())]
        if cursor is not None:
            ids = [j.id for j in jobs]
            if cursor not in ids:
                raise ApiError(422, "invalid_cursor", "The cursor is not one this server gave (or its job expired)")
            jobs = jobs[ids.index(cursor) + 1:]
        page = jobs[:limit]
        return page, (page[-1].id if len(jobs) > limit else None)

    # --- what the routes ask (a shared state answers them from the database) -----------------------
    async def find(self, job_id: str) -> JobRecord:
        return self.get(job_id)

    async def position(self, job: JobRecord) -> int | None:
        return self.queue_position(job)

    async def page(self, metadata: dict[str, str], limit: int,
                   cursor: str | None) -> tuple[list[JobRecord], str | None]:
        return self.listing(metadata, limit, cursor)

    async def request_cancel(self, job_id: str) -> JobRecord:
        return self.cancel(job_id)

    async def counts(self) -> dict[str, Any]:
        """What ``/health`` says of the jobs: those waiting, those not ended, and how many run at once."""
        return {"jobs_waiting": self.waiting(), "jobs_unfinished": self.unfinished(), "jobs_at_once": self.runners}

    def status(self) -> str:
        """Whether a job can run now (``healthy``), or why not (``readiness``)."""
        return self.readiness.status()

    def state_error(self) -> str | None:
        return self.state.error if self.state is not None else None

    def waiting(self) -> int:
        return sum(1 for j in self._open.values() if j.status == "queued") + len(self._validating)

    def unfinished(self) -> int:
        return len(self._open) + len(self._validating)

    # --- submission ------------------------------------------------------------------------------
    async def submit(self, body: Any, idempotency_key: str | None) -> JobRecord:
        self.readiness.check_accepting()
        self._forget_old_keys()
        if idempotency_key is not None:
            if idempotency_key in self._keys:
                raise key_reused()
            self._keys[idempotency_key] = (None, time.time())
            self._save_key(idempotency_key)
        try:
            job = await self._accept(body)
        except ApiError:  # refused: nothing was made, the key may be used again
            if idempotency_key is not None:
                self._keys.pop(idempotency_key, None)
                self._save_key(idempotency_key)
            raise
        if idempotency_key is not None:
            self._keys[idempotency_key] = (job.id, time.time())
            self._save_key(idempotency_key)
        return job

    async def _accept(self, body: Any) -> JobRecord:
        workflow, metadata, extra_data = self._checked(body)
        found = await self.assets.lookup(_asset_ids(workflow))
        if self.unfinished() >= self.runners + self.max_queue:  # every device busy and max_queue jobs waiting
            raise self._queue_full(self.waiting())
        workflow, files, used = _resolve_assets(workflow, found)
        job = JobRecord(uuid.uuid4().hex, workflow, metadata, time.time(), assets_used=used)
        return await self._hand_over(job, files, extra_data)

    def _queue_full(self, waiting: int) -> ApiError:
        return ApiError(429, "queue_full", f"{waiting} job(s) wait beside the {self.runners} running: the "
                                           f"bound of this server (--max-queue {self.max_queue})",
                        headers={"Retry-After": str(self._retry_after())})

    def _checked(self, body: Any) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
        """The body's workflow, metadata and extra_data, each checked (422 otherwise)."""
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_request", "The request body must be a JSON object with a 'workflow'")
        unknown = sorted(set(body) - {"workflow", "metadata", "extra_data"})
        if unknown:
            raise ApiError(422, "invalid_request", f"Unsupported field(s): {', '.join(unknown)}")
        metadata = _metadata(body.get("metadata"))
        extra_data = _extra_data(body.get("extra_data"))
        workflow = body.get("workflow")
        if isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list) and "links" in workflow:
            raise ApiError(422, "workflow_format_ui", UI_FORMAT_HINT)
        try:
            check_workflow(workflow)
        except WorkflowFormatError as exc:
            raise ApiError(422, "invalid_workflow", str(exc), {"node_errors": {}}) from None
        except ValidationError as exc:  # values ComfyUI could not even hash: too deep, integers past 64 bits
            raise _invalid(exc, workflow) from None
        return workflow, metadata, extra_data

    async def _hand_over(self, job: JobRecord, files: dict[str, Any], extra_data: dict[str, Any]) -> JobRecord:
        """Start ``job``'s run; when a device is up and free, answer once ComfyUI has validated it
        (its refusal is this submission's 422 and no job is made)."""
        loop = asyncio.get_running_loop()
        if self.readiness.booted and self.unfinished() < self.executor.ready:
            job.validated = loop.create_future()  # a device is up and free: ComfyUI's validation answers now
        # else the job is validated when its turn comes (waiting for it would wait for the running
        # job: ComfyUI validates on the runner's thread): a refusal then fails it, invalid_workflow
        self.assets.use(job.assets_used)
        self._validating[job.id] = job
        task = loop.create_task(self._run(job, files, extra_data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        refused = False
        try:
            if job.validated is not None:
                await asyncio.shield(job.validated)
        except ApiError:
            refused = True
            raise
        finally:
            self._validating.pop(job.id, None)
            if not refused:  # accepted (or its fate unknown: this request was cancelled)
                self._jobs[job.id] = job
                if not job.terminal:
                    self._open[job.id] = job
                self._save(job)
        return job

    def _refuse(self, job: JobRecord, refusal: ApiError) -> bool:
        """Answer the submission waiting for ``job``'s validation with ``refusal`` (made from the
        validation in hand: never a second one, which would wait behind the next job); returns
        False when no submission waits (the job then fails)."""
        if job.validated is None or job.validated.done() or job.id in self._jobs:  # (in _jobs: its request left)
            return False
        self.assets.release(job.assets_used)
        job.validated.set_exception(refusal)
        return True

    # --- the run ---------------------------------------------------------------------------------
    async def _run(self, job: JobRecord, files: dict[str, Any], extra_data: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        stored: set[tuple[str, str, str, str]] = set()
        arrived: list[Event] = []  # a job's events come by the dozen: the loop is woken once per batch
        arrived_lock = threading.Lock()

        def take() -> None:
            with arrived_lock:
                batch = arrived[:]
                arrived.clear()
            for ev in batch:
                try:
                    self._on_event(job, ev, stored)
                except Exception:  # noqa: BLE001 - the next events still count
                    log.exception("embedded.apiv2: an event of job %s could not be handled", job.id)

        def on_event(ev: Event) -> None:  # from the executor's thread
            with arrived_lock:
                arrived.append(ev)
                first = len(arrived) == 1
            if first:
                loop.call_soon_threadsafe(take)

        try:
            await self._run_on_executor(job, files, extra_data, on_event, stored)
        finally:
            if job.validated is not None and not job.validated.done():
                job.validated.set_result(None)  # it ran or failed as a job: the submission is accepted

    async def _run_on_executor(self, job: JobRecord, files: dict[str, Any], extra_data: dict[str, Any],
                               on_event, stored: set) -> None:
        """Run the job and end it: whatever happened, its outputs are stored (or fail it) before its
        terminal status, which is published exactly once (a refused submission makes no job)."""
        ended: tuple[str, dict[str, Any] | None] | None = None
        try:
            ended = await self._outcome(job, files, extra_data, on_event, stored)
        except Exception as exc:  # noqa: BLE001 - the job fails, the server goes on
            log.exception("embedded.apiv2: job %s failed in the server", job.id)
            ended = ("failed", {"code": "server_error", "message": f"The server failed: {type(exc).__name__}",
                                "node_id": None, "class_type": None, "traceback": None})
        finally:
            if ended is not None and not job.terminal:
                try:
                    await self._stored(job)
                except Exception:  # noqa: BLE001 - what could not be stored is said by the job's error
                    log.exception("embedded.apiv2: storing the outputs of job %s failed", job.id)
                status, error = ended
                self._finish(job, "canceled" if status == "succeeded" and job.upload_stopped else status, error)
            self.readiness.notice_stuck()  # a node outlived its stop: no job can run here any more

    async def _outcome(self, job: JobRecord, files: dict[str, Any], extra_data: dict[str, Any], on_event,
                       stored: set) -> tuple[str, dict[str, Any] | None] | None:
        """How the job ended: ``(status, error)``, or None when its submission was refused instead."""
        try:
            await self._booted_unless_cancelled(job)  # a job submitted during the boot waits for it here
            try:
                paths = await self.assets.local_files(files, job.stop)
            except Cancelled:
                raise JobInterrupted("The job was cancelled before it started") from None
            result = await self.executor.run_async(job.workflow, paths, on_event=on_event, job_id=job.id,
                                                   stream_outputs=True, previews=True, extra_data=extra_data,
                                                   timeout=self.timeout)
            await asyncio.sleep(0)  # the events the executor queued before its answer come first
            for output in result.outputs:  # any the stream did not bring (none, normally)
                self._store_output(job, output, stored)
            return "succeeded", None
        except JobInterrupted as exc:
            if job.cancel_requested:
                return "canceled", ({"code": "node_still_running", "message": str(exc), "node_id": exc.node_id,
                                     "class_type": getattr(exc, "node_type", None), "traceback": None}
                                    if exc.refresh_worker else None)
            return "failed", _error("timeout" if isinstance(exc, JobTimeout) else "interrupted", exc)
        except ExecutionError as exc:
            for output in exc.outputs:
                self._store_output(job, output, stored)
            return "failed", {"code": "node_execution_error", "message": str(exc), "node_id": exc.node_id,
                              "class_type": exc.node_type, "traceback": "".join(exc.traceback) or None}
        except ValidationError as exc:
            refusal = _invalid(exc, job.workflow)
            if self._refuse(job, refusal):
                return None
            return "failed", {**_error("invalid_workflow", exc), "message": refusal.message,
                              "details": refusal.details}
        except InputError as exc:
            if self._refuse(job, ApiError(422, "invalid_input", str(exc))):
                return None
            return "failed", _error("invalid_input", exc)
        except BootFailed as exc:
            return "failed", {**_error("boot_failed", exc),
                              "message": f"ComfyUI failed to boot on this server: {without_paths(str(exc))}"}
        except WorkerStuck as exc:
            return "failed", _error("stuck", exc)
        except WorkerLost as exc:  # its device's process died under it; the others' jobs go on
            return "failed", _error("worker_lost", exc)
        except EmbeddedError as exc:
            return "failed", _error("execution_failed", exc)

    async def _booted_unless_cancelled(self, job: JobRecord) -> None:
        """Wait for the boot (raises ``BootFailed``); a cancel meanwhile ends the wait at once
        (``JobInterrupted``): the executor cannot be asked before it has booted."""
        if not self.readiness.booted:
            booting = asyncio.ensure_future(self.readiness.wait_booted())
            cancelled = asyncio.ensure_future(job.cancelled.wait())
            try:
                await asyncio.wait({booting, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                cancelled.cancel()
                booted = booting.done()
                if not booted:
                    booting.cancel()
            if booted:
                booting.result()  # raises BootFailed
        if job.cancel_requested:
            raise JobInterrupted("The job was cancelled before it started")

    def _on_event(self, job: JobRecord, ev: Event, stored: set) -> None:
        if job.terminal:
            return
        if isinstance(ev, StartEvent) and job.status == "queued":
            if job.validated is not None and not job.validated.done():
                job.validated.set_result(None)  # ComfyUI validated it: the submission is answered
            job.status, job.started_at = "running", time.time()
            self._save(job)
            job.publish("status", {"status": job.status, "queue_position": None})
        elif isinstance(ev, CachedEvent):
            job.done.update(ev.nodes)
            job.outputs_reused = job.outputs_reused or bool(ev.nodes)
        elif isinstance(ev, ExecutingEvent):
            job.current_node, job.step, job.steps = ev.node_id, None, None
        elif isinstance(ev, ProgressEvent):
            job.step, job.steps = int(ev.value), int(ev.max)
        elif isinstance(ev, ProgressStateEvent):
            job.see_progress_state(ev.nodes)
        elif isinstance(ev, ExecutedEvent):
            job.done.add(ev.node_id)
        elif isinstance(ev, OutputEvent):
            self._store_output(job, ev.output, stored)
            return
        elif isinstance(ev, PreviewEvent):  # at most PREVIEWS_PER_SECOND: the executor throttles them
            job.preview = {"node_id": ev.node_id or "", "content_type": "image/jpeg",
                           "data_base64": ev.image.split(",", 1)[-1]}
            job.preview_version += 1
            job.publish("preview", None)  # a wake-up: a stream sends the latest preview, never a backlog
            self._changed(job)
            return
        else:
            return
        job.progress_version += 1
        self._changed(job)

    def _changed(self, job: JobRecord) -> None:
        """``job``'s progress or preview changed (a shared state tells the other replicas)."""

    def _store_output(self, job: JobRecord, output: Output, stored: set) -> None:
        """Store ``output`` as an asset (here, or in the bucket) in a task of its own: the runner
        goes on meanwhile. Each output's task waits for the one before, so that they are listed
        and announced in the order the executor made them; the job ends once they are done."""
        key = (output.node_id, output.subfolder, output.filename, output.type)
        if key in stored:
            return
        stored.add(key)
        previous = self._storing.get(job.id)
        self._storing[job.id] = asyncio.get_running_loop().create_task(self._store(job, output, previous))

    async def _stored(self, job: JobRecord) -> None:
        """Wait until every output of ``job`` is stored (or could not be)."""
        last = self._storing.pop(job.id, None)
        if last is not None:
            await last

    async def _store(self, job: JobRecord, output: Output, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            asset = await (self._upload(job, output) if self.bucket is not None else self._keep(job, output))
        except Exception as exc:  # noqa: BLE001 - the job fails, saying why; nothing half-kept
            self._not_stored(job, output, exc)
            return
        if asset is None:  # the job was cancelled while its output was uploaded
            return
        job.outputs.append(asset)
        self._save(job)
        job.publish("output", asset.output_json(""))  # the stream fills in the base URL

    async def _upload(self, job: JobRecord, output: Output):
        """``output`` in the bucket; kept here instead when the upload fails (None: the job's
        cancel stopped it)."""
        name = "/".join(p for p in (output.subfolder, output.filename) if p)
        seconds = self.assets.ttl_s or 86400
        try:
            key = "/".join(p for p in (self.bucket.s3.prefix, job.id, name) if p)
            url = await asyncio.to_thread(self.bucket.put, key, output.data, output.mime_type,
                                          seconds, job.stop)
        except Cancelled:
            job.upload_stopped = True
            return None
        except Exception as exc:  # noqa: BLE001 - nothing lost: kept here instead, and said in the log
            log.warning("embedded.apiv2: output %s of job %s could not be uploaded to the bucket (%s)%s",
                        output.filename, job.id, _reason(exc),
                        "; served by this server instead" if self.keep_when_upload_fails else "")
            if not self.keep_when_upload_fails:
                raise ApiError(500, "server_error", f"the bucket did not take it ({_reason(exc)})") from None
            return await self._keep(job, output)
        return await self.assets.add_remote(blake3_of(output.data), len(output.data), output.filename, output.mime_type,
                                      url, time.time() + min(seconds, MAX_URL_S), job_id=job.id,
                                      node_id=output.node_id, type=_output_type(output))

    async def _keep(self, job: JobRecord, output: Output):
        return await self.assets.add_output(output.data, output.filename, output.mime_type, job_id=job.id,
                                            node_id=output.node_id, type=_output_type(output))

    @staticmethod
    def _not_stored(job: JobRecord, output: Output, exc: Exception) -> None:
        """An output that could not be stored fails its job (the first such error is the job's)."""
        if isinstance(exc, ApiError):
            code, why = ("storage_full" if exc.code == "storage_full" else "server_error"), exc.message
        else:
            code, why = "server_error", f"the server failed ({type(exc).__name__})"
        log.error("embedded.apiv2: output %s of job %s could not be stored: %s", output.filename, job.id, why,
                  exc_info=None if isinstance(exc, ApiError) else (type(exc), exc, exc.__traceback__))
        if job.error is None:
            job.error = {"code": code, "message": f"Output {output.filename} of node {output.node_id} could not be "
                                                  f"stored: {why}", "node_id": output.node_id, "class_type": None,
                         "traceback": None}

    def _finish(self, job: JobRecord, status: str, error: dict[str, Any] | None = None) -> None:
        if job.error is not None and status == "succeeded":
            status, error = "failed", job.error  # an output could not be kept
        job.status, job.completed_at = status, time.time()
        self._open.pop(job.id, None)
        job.error = error if error is not None else (job.error if status == "failed" else None)
        job.current_node, job.preview = None, None  # a preview is for a job that runs
        job.progress_version += 1
        if job.started_at:
            self._recent_run_s = (self._recent_run_s + [job.completed_at - job.started_at])[-20:]
        self.assets.release(job.assets_used)
        self._save(job)
        job.publish("status", {"status": job.status, "queue_position": None})

    # --- cancels ---------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        job = self.get(job_id)
        if job.terminal or job.status == "canceling":
            return job
        job.cancel_requested = True
        job.stop.set()  # its uploads stop too
        job.cancelled.set()  # and its wait for the boot
        job.status = "canceling"
        self._save(job)
        job.publish("status", {"status": job.status, "queue_position": None})
        self.executor.interrupt(job.id)
        return job

    # --- shutdown --------------------------------------------------------------------------------
    async def drain(self, grace_s: float) -> None:
        """Take no new job; wait up to ``grace_s`` for the unfinished ones, then cancel what is left."""
        self.readiness.shutting_down = True
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, left = await asyncio.wait(pending, timeout=grace_s)
            for job in list(self._open.values()):
                self.cancel(job.id)
            if left:
                await asyncio.wait(left, timeout=grace_s)

    async def settle(self) -> None:
        """Wait until every job has ended (a stuck runner answers them; no new one is taken)."""
        while any(not t.done() for t in self._tasks):
            await asyncio.wait([t for t in self._tasks if not t.done()])

    def sweep(self) -> int:
        """Forget the jobs that ended more than JOB_TTL_S ago (their ``expires_at``); returns how many."""
        old = time.time() - JOB_TTL_S
        gone = [j for j in self._jobs.values() if j.terminal and (j.completed_at or 0) < old]
        for job in gone:
            del self._jobs[job.id]
            if self.state is not None:
                self.state.delete_job(job.id)
        self._forget_old_keys()
        return len(gone)

    async def tidy(self) -> int:
        """What the sweeper runs every minute (a shared state sweeps the database)."""
        return self.sweep()

    async def close(self) -> None:
        """After ``drain``: what is left to do before the process ends (a shared state's last writes)."""

    def _retry_after(self) -> int:
        typical = sorted(self._recent_run_s)[len(self._recent_run_s) // 2] if self._recent_run_s else 1.0
        return max(1, round(typical))

    def _forget_old_keys(self) -> None:
        old = time.time() - IDEMPOTENCY_TTL_S
        for key in [k for k, (_, at) in self._keys.items() if at < old]:
            del self._keys[key]
            self._save_key(key)


def _asset_ids(workflow: Any) -> list[str]:
    """The ids of the assets a workflow's ``core/ASSET`` references name."""
    ids: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            info = value.get("info") if value.get("__type") == ASSET_TYPE else None
            if isinstance(info, dict) and isinstance(info.get("id"), str):
                ids.append(info["id"])
            elif info is None:
                for v in value.values():
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
    walk(workflow)
    return ids


def _resolve_assets(workflow: dict[str, Any], found: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The workflow with each ``core/ASSET`` reference replaced by the input name its file gets,
    the job's files by name (their ``Asset``), and the ids of the assets it uses; ``found``: the
    assets that exist, by id (422 ``missing_asset`` for any other)."""
    files: dict[str, Any] = {}
    used: list[str] = []
    missing: list[str] = []

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and value.get("__type") == ASSET_TYPE:
            info = value.get("info")
            asset_id = info.get("id") if isinstance(info, dict) else None
            asset = found.get(asset_id) if isinstance(asset_id, str) else None
            if asset is None:
                missing.append(str(asset_id))
                return value
            name = asset.file_path or asset.id
            if name in files and files[name].hash != asset.hash:
                name = f"{asset.id}/{name}"  # another file of the same name in this job
            files[name] = asset
            used.append(asset.id)
            return name
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    resolved = resolve(workflow)
    if missing:
        raise ApiError(422, "missing_asset", f"Asset(s) not found: {', '.join(missing)}", {"missing_ids": missing})
    return resolved, files, used


def key_reused() -> ApiError:
    """The refusal of an Idempotency-Key seen before (by this server, or by any replica)."""
    return ApiError(422, "idempotency_key_reuse", "This Idempotency-Key was used already: a key is good for one "
                                                  "submission")


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(422, "metadata_invalid", "metadata must be an object of string labels")
    if len(value) > MAX_METADATA_PAIRS:
        raise ApiError(422, "metadata_invalid", f"metadata holds {len(value)} labels; at most {MAX_METADATA_PAIRS}")
    for key, label in value.items():
        if not isinstance(label, str) or not key or len(key) > MAX_LABEL_CHARS or len(label) > MAX_LABEL_CHARS:
            raise ApiError(422, "metadata_invalid", f"metadata label {str(key)[:64]!r} must be a string of at most "
                                                    f"{MAX_LABEL_CHARS} characters under a key of at most as many")
    return dict(value)


def _extra_data(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"api_key_comfy_org"} or not isinstance(
            value.get("api_key_comfy_org", ""), str):
        raise ApiError(422, "invalid_request", "extra_data may hold only api_key_comfy_org, a string")
    return dict(value)


def _reasons(node_errors: Any) -> dict[str, list[dict[str, Any]]]:
    """ComfyUI's reasons (``NodeError``s), per node, as ``{node_id: [{"field", "reason", "type", "class_type"}]}``."""
    errors: dict[str, list[dict[str, Any]]] = {}
    for e in node_errors or []:
        reason = f"{e.message}: {e.details}" if e.details and e.details not in e.message else e.message
        errors.setdefault(e.node_id, []).append({"field": e.input_name, "reason": reason, "type": e.type,
                                                 "class_type": e.class_type})
    return errors


def _node_errors(report: Any, workflow: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A preflight's reasons per node: ComfyUI's, and each node of a type nobody knows."""
    errors = _reasons(getattr(getattr(report, "validation", None), "node_errors", None))
    for n in report.missing_nodes:
        for node_id in (k for k, node in workflow.items() if node.get("class_type") == n.class_type):
            errors.setdefault(node_id, []).append({"field": None, "reason": f"unknown node type {n.class_type}",
                                                   "type": "missing_node_type", "class_type": n.class_type})
    return errors


def _reason(exc: Exception) -> str:
    """Why an upload failed, in words that name no endpoint, bucket or key."""
    return getattr(exc, "message", None) or type(exc).__name__


def _invalid(exc: ValidationError, workflow: dict[str, Any]) -> ApiError:
    """The 422 ``invalid_workflow`` for a workflow ComfyUI refused: the nodes' reasons, and what the
    backend's diagnosis adds (every unknown node type, every missing model) when it made one."""
    report = getattr(exc, "diagnosis", None)
    if report is None or report.ok:
        return ApiError(422, "invalid_workflow", str(exc), {"node_errors": _reasons(exc.node_errors)})
    return ApiError(422, "invalid_workflow", "; ".join(report.errors) or str(exc),
                    {"node_errors": _node_errors(report, workflow),
                     "missing_nodes": [n.class_type for n in report.missing_nodes],
                     "missing_models": [{"node_id": m.node_id, "input": m.input, "value": m.value}
                                        for m in report.missing_models]})


def _output_type(output: Output) -> str:
    return output.kind if output.kind in OUTPUT_TYPES else "file"


def _error(code: str, exc: Exception) -> dict[str, Any]:
    return {"code": code, "message": str(exc), "node_id": getattr(exc, "node_id", None),
            "class_type": getattr(exc, "node_type", None), "traceback": None}
