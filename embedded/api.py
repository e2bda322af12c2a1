"""The Python API: ``execute()`` and the ``Executor`` behind it.

Owns: turning a caller's arguments into a checked ``Job`` (workflow format, image names and bytes
are checked here, before any backend sees them; files given by URL and the job's ``models`` are
fetched first, through ``staging.stage``, and its download folder removed when the job is over), the
process-wide default executor that ``execute()`` uses, and sync/async entry points.

The backend (embedded, or the legacy server mode with ``EXECUTION_MODE=server``) is created on
``start``, so importing ``embedded`` stays cheap and never boots ComfyUI by itself.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import queue
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Mapping, Sequence

from . import backends
from .backends import Backend, Preflight, with_fetches
from .config import Config, parse_devices
from .job.errors import InputError, JobInterrupted
from .job.events import Event, EventCallback, ResultEvent
from .staging.downloads import Cancelled, Fetcher, S3Settings
from .job.inputs import check_inputs, check_output_ids, check_workflow
from .staging.modelcache import ModelCache, ModelRef
from .staging.stage import Staging, fetcher_for, model_cache_for
from .job.streams import Finished, pump
from .staging.guard import is_url
from .job.types import Job, Result, new_id

#: what ``files`` may map a name to: bytes, a local path, or an ``http(s)://`` / ``s3://`` URL
FileSource = Any


class Executor:
    """A persistent in-process ComfyUI executor: ``start()``, ``run()`` any number of jobs, ``close()``.

    One job runs at a time on each device; others wait their turn. Without ``devices`` (and
    ``COMFY_DEVICES``) there is one device: ComfyUI runs in this process. With several (``"all"``, CUDA
    indices such as ``[0, 1]`` or ``"0,1"``, or ``"cpu,cpu"``), each runs in a child process of its own
    and up to ``capacity`` jobs run at once (``submit``, ``run_async``, ``run`` from several threads).
    Usable as a context manager.
    """

    def __init__(self, config: Config | None = None, backend: Backend | None = None, *,
                 devices: str | Sequence[int | str] | None = None):
        config = config or Config.from_env()
        if devices is not None:
            spec = devices if isinstance(devices, str) else ",".join(str(d) for d in devices)
            config = dataclasses.replace(config, devices=parse_devices(spec))
        self.config = config
        self._runner: Backend | None = backend
        self._started = False
        self._lock = threading.Lock()
        self._fetching: tuple[Fetcher, ModelCache] | None = None
        #: job id -> its downloads, until the backend has the job (``interrupt`` reaches one or the other)
        self._fetches: dict[str, Staging] = {}
        self._handoff = threading.Lock()

    def prepare(self) -> "Executor":
        """What ``start`` must do on the caller's thread (see ``Backend.prepare``): call it first
        when ``start`` runs in another thread. Raises ``BootError``."""
        with self._lock:
            if self._runner is None:
                self._runner = backends.create(self.config)
            self._runner.prepare()
        return self

    def start(self) -> "Executor":
        """Start the backend: boot ComfyUI in this process (once per process), or start its server
        (``EXECUTION_MODE=server``). Raises ``BootError``."""
        with self._lock:
            if not self._started:
                runner = self._runner or backends.create(self.config)
                runner.start()
                self._runner, self._started = runner, True
        return self

    @property
    def capacity(self) -> int:
        """How many jobs run at once: one per device (``COMFY_DEVICES``)."""
        with self._lock:
            if self._runner is None:
                self._runner = backends.create(self.config)
            return self._runner.capacity

    @property
    def ready(self) -> int:
        """How many of ``capacity`` can run a job now (0 before the start; a device whose process is
        being replaced does not count)."""
        return self._runner.ready if self._runner and self._started else 0

    @property
    def mode(self) -> str:
        return self.config.execution_mode

    @property
    def boot_info(self):
        return self._runner.booted if self._runner and self._started else None

    def make_job(self, workflow: Any, files: Mapping[str, bytes | Path] | None = None, *, timeout: float | None = None,
                 job_id: str | None = None, extra_data: Mapping[str, Any] | None = None,
                 unload_models: bool = False, free_memory: bool = False, stream_outputs: bool = False,
                 previews: bool = False, outputs: Any = None) -> Job:
        """A checked ``Job`` whose input ``files`` are already here (bytes, or a local ``Path``; ``run``
        and ``submit`` fetch URLs first). ``unload_models`` / ``free_memory`` run after it, as ComfyUI's ``/free``;
        ``stream_outputs`` sends each output as an ``OutputEvent`` as soon as its node finished;
        ``previews`` sends sampler previews as ``PreviewEvent``s (embedded mode); ``outputs`` lists
        the output node ids to run (with what they need; ComfyUI's ``partial_execution_targets``):
        an empty list, or an id that is not an output node of the workflow, is a ``ValidationError``
        when the job is validated."""
        job = Job(workflow=check_workflow(workflow), images=check_inputs(files, self.config.input_limits),
                  extra_data=dict(extra_data or {}), timeout=timeout, unload_models=bool(unload_models),
                  free_memory=bool(free_memory), stream_outputs=bool(stream_outputs), previews=bool(previews),
                  outputs=check_output_ids(outputs))
        if job_id is not None:
            job.job_id = str(job_id)
        return job

    def submit(self, workflow: Any, files: Mapping[str, FileSource] | None = None, *,
               on_event: EventCallback | None = None, models: Any = None, s3: S3Settings | None = None, **job_options: Any) -> concurrent.futures.Future:
        """Fetch what the job needs (in this thread), then queue it; returns a future of its
        ``Result``. ``files`` maps input names (as ``LoadImage`` and the other loaders refer to
        them) to bytes, local paths or URLs (``http(s)://``, ``s3://``); ``models`` lists ``ModelRef``s (or ``{"url", "folder", "filename",
        "sha256"?}`` dicts) fetched into the model cache; ``s3`` is the bucket of ``s3://`` URLs
        (default: the ``BUCKET_*`` variables). ``job_options`` are ``make_job``'s."""
        future, staging = self._submit(workflow, files, on_event, models, s3, job_options)
        if staging:
            future.add_done_callback(lambda _: staging.close())
        return future

    def run(self, workflow: Any, files: Mapping[str, FileSource] | None = None, *,
            on_event: EventCallback | None = None, models: Any = None, s3: S3Settings | None = None, **job_options: Any) -> Result:
        """Run a workflow and return its ``Result``; raises an ``EmbeddedError`` subclass on failure.
        ``files``, ``models`` and ``s3`` are ``submit``'s, ``job_options`` ``make_job``'s
        (``timeout``, ``job_id``, ``free_memory``...)."""
        future, staging = self._submit(workflow, files, on_event, models, s3, job_options)
        try:
            return future.result()
        finally:
            if staging:  # the job's downloads go before this returns
                staging.close()

    def _submit(self, workflow: Any, files: Any, on_event: EventCallback | None, models: Any, s3: S3Settings | None,
                job_options: dict[str, Any]) -> tuple[concurrent.futures.Future, Staging | None]:
        check_workflow(workflow)
        self.start()
        job_options = _job_options(job_options)
        sources = _files(files)
        staging = self._staging(sources, models, job_options["job_id"])
        try:
            # the downloads get the job's timeout, and so does the run after them
            fetched = staging.fetch(sources, _models(models), _bucket(s3), on_event,
                                    job_options.get("timeout")) if staging else sources
            job = self.make_job(workflow, fetched, **job_options)
            _not_stopped(staging)
            future = self._runner.submit(job, on_event)
            self._handed_over(job.job_id, staging)
            return future, staging
        except BaseException as exc:
            if staging:
                staging.close()
            if isinstance(exc, Cancelled):
                raise _interrupted_while_fetching() from None
            raise
        finally:
            self._fetches.pop(job_options["job_id"], None)

    async def run_async(self, workflow: Any, files: Mapping[str, FileSource] | None = None, *,
                        on_event: EventCallback | None = None, models: Any = None, s3: S3Settings | None = None, **job_options: Any) -> Result:
        """Like ``run`` for async callers. Cancelling the awaiting task stops the downloads (and
        waits for them to stop), or interrupts the job and waits until it stops, or until
        ``JOB_STOP_GRACE_S`` has passed and it is answered anyway. The first call boots the
        backend in a thread: the caller's event loop goes on meanwhile."""
        check_workflow(workflow)
        if not self._started:
            await asyncio.to_thread(self.start)
        job_options = _job_options(job_options)
        sources = _files(files)
        staging = self._staging(sources, models, job_options["job_id"])
        try:
            fetched = await _fetch_async(staging, sources, _models(models), _bucket(s3), on_event,
                                         job_options.get("timeout")) if staging else sources
            job = self.make_job(workflow, fetched, **job_options)
            _not_stopped(staging)
            return await self._runner.run_async(job, on_event,
                                                registered=lambda: self._handed_over(job.job_id, staging))
        except Cancelled:
            raise _interrupted_while_fetching() from None
        finally:
            self._fetches.pop(job_options["job_id"], None)
            if staging:
                staging.close()

    def stream(self, workflow: Any, files: Mapping[str, FileSource] | None = None,
               **options: Any) -> Iterator[Event | ResultEvent]:
        """Run a workflow and yield its events as they happen: downloads, progress, each output
        (an ``OutputEvent`` with its bytes) as soon as its node finished, and last a
        ``ResultEvent``. The job's error is raised at the end instead. Closing the iterator early
        (leaving a ``with contextlib.closing(ex.stream(...))`` block) stops its downloads or
        interrupts the job. ``options`` are ``run``'s."""
        items: queue.Queue = queue.Queue()
        job_id = str(options.pop("job_id", None) or new_id())
        outcome: concurrent.futures.Future = concurrent.futures.Future()

        def work() -> None:  # downloads, then the job: in a thread, so that their events flow now
            try:
                outcome.set_result(self.run(workflow, files, on_event=items.put, job_id=job_id,
                                            **{**options, "stream_outputs": True}))
            except BaseException as exc:
                outcome.set_exception(exc)
            finally:
                items.put(_END)

        threading.Thread(target=work, name="embedded-stream", daemon=True).start()
        try:
            while (item := items.get()) is not _END:
                yield item
            yield ResultEvent(outcome.result())
        finally:
            if not outcome.done():
                self.interrupt(job_id)

    async def astream(self, workflow: Any, files: Mapping[str, FileSource] | None = None,
                      **options: Any) -> AsyncIterator[Event | ResultEvent]:
        """``stream`` for async callers. Cancelling the consuming task, or closing the iterator
        early (``async with contextlib.aclosing(ex.astream(...))``), interrupts the job and waits for
        it to stop, as ``run_async``."""
        async for item in pump(lambda push: self.run_async(workflow, files, on_event=push,
                                                             **{**options, "stream_outputs": True})):
            yield ResultEvent(item.value) if isinstance(item, Finished) else item

    def check(self, workflow: Any, files: Mapping[str, FileSource] | None = None, *,
              models: Any = None, outputs: Any = None) -> Preflight:
        """Preflight: validate ``workflow`` (with its input files; only the output nodes listed in
        ``outputs``, when given) as a run would, without running a node or fetching anything;
        unknown node types, ComfyUI's validation errors, missing models and what the job would
        download are reported in a ``Preflight`` (``ok``, ``errors``, ``missing_models``,
        ``missing_nodes``, ``inputs_to_fetch``)."""
        check_workflow(workflow)
        sources, refs = _files(files), _models(models)
        local = {name: value for name, value in sources.items() if not is_url(value)}
        fetcher, cache = self._fetch_tools()
        planned = Staging(self.config, fetcher, cache).plan(sources, refs)
        job = self.make_job(workflow, {n: v if isinstance(v, bytes) else _path(v) for n, v in local.items()},
                            outputs=outputs)
        # Inputs to be fetched are there for validation (empty: no node runs in a preflight).
        job.images.update({p.name: b"" for p in planned if p.kind == "input"})
        found = self.start()._runner.check(job)
        return with_fetches(found, [p.to_dict() for p in planned],
                                      [(str(cache.root / r.folder), r.filename) for r in refs])

    # --- downloads ------------------------------------------------------------------------------
    def _fetch_tools(self) -> tuple[Fetcher, ModelCache]:
        with self._lock:
            if self._fetching is None:
                fetcher = fetcher_for(self.config)
                self._fetching = fetcher, model_cache_for(self.config, fetcher)
            return self._fetching

    def _staging(self, sources: dict[str, Any], models: Any, job_id: str) -> Staging | None:
        """A job's downloads, where it has any (a URL or local path among its files, or models),
        known by its job id until they are done (``interrupt`` stops them)."""
        if not models and all(isinstance(v, (bytes, bytearray)) for v in sources.values()):
            return None
        staging = self._fetches[job_id] = Staging(self.config, *self._fetch_tools())
        return staging

    def interrupt(self, job_id: str | None = None) -> bool:
        """Interrupt the running job (or the job ``job_id``, in whatever phase it is: fetching its
        files, being handed to the backend, queued, validating, running)."""
        with self._handoff:
            fetching = self._fetches.get(job_id) if job_id is not None else None
            if fetching is not None:
                fetching.cancel.set()
                return True
        return self._runner.interrupt(job_id) if self._runner and self._started else False

    def _handed_over(self, job_id: str, staging: Staging | None) -> None:
        """The backend has the job now (it is queued there): from here ``interrupt`` reaches it
        there, and one that came after its downloads ended, while it was handed over, is passed on."""
        with self._handoff:
            self._fetches.pop(job_id, None)
            cancelled = staging is not None and staging.cancel.is_set()
        if cancelled:
            self._runner.interrupt(job_id)

    @property
    def stuck(self) -> bool:
        """Whether a stopped job's node still holds the process (no job can run; see ``WorkerStuck``)."""
        return bool(self._runner and self._started and self._runner.stuck)

    def close(self) -> None:
        with self._lock:
            if self._runner is not None and self._started:
                self._runner.close()
            self._runner, self._started = None, False

    def __enter__(self) -> "Executor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


#: marks the end of a stream's items
_END = object()


def _files(files: Mapping[str, Any] | None) -> dict[str, Any]:
    """A job's input files: one mapping of names to bytes, local paths or URLs."""
    if files is not None and not isinstance(files, Mapping):
        raise InputError(f"files must map input names to bytes, paths or URLs, got {type(files).__name__}")
    return dict(files or {})


def _job_options(options: dict[str, Any]) -> dict[str, Any]:
    """``make_job``'s options with the job's id (a new one unless given)."""
    if "images" in options:
        raise TypeError("input files are given as files= (names to bytes, local paths or URLs); images= is no more")
    return {**options, "job_id": str(options.get("job_id") or new_id())}


def _models(models: Any) -> list[ModelRef]:
    if models is None:
        return []
    if not isinstance(models, (list, tuple)):
        raise InputError(f"models must be a list, got {type(models).__name__}")
    return [m if isinstance(m, ModelRef) else ModelRef.from_request(m) for m in models]


def _not_stopped(staging: Staging | None) -> None:
    """Raise ``JobInterrupted`` when ``interrupt`` reached the job after its downloads, before it is
    handed to the backend: it is not queued at all (one that comes later is passed on there)."""
    if staging is not None and staging.cancel.is_set():
        raise JobInterrupted("The job was interrupted before it was queued (its files had been fetched)")


def _interrupted_while_fetching() -> JobInterrupted:
    return JobInterrupted("The job was interrupted while its files were being fetched")


def _bucket(s3: S3Settings | None) -> S3Settings | None:
    return s3 if s3 is not None else S3Settings.from_env()


def _path(value: Any) -> Any:
    return Path(value).expanduser() if isinstance(value, str) else value


async def _fetch_async(staging: Staging, *args: Any) -> dict[str, Any]:
    """``staging.fetch`` in a thread; a cancel stops the downloads and waits for them to stop."""
    task = asyncio.ensure_future(asyncio.to_thread(staging.fetch, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        staging.cancel.set()
        with contextlib.suppress(BaseException):
            await task
        raise

_default: Executor | None = None
_default_lock = threading.Lock()


def default_executor() -> Executor:
    """The process-wide executor ``execute()`` uses (configured from the environment, started lazily)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Executor()
            atexit.register(_default.close)
        return _default


def execute(workflow: Any, files: Mapping[str, FileSource] | None = None, *, on_event: EventCallback | None = None,
            timeout: float | None = None, models: Any = None, outputs: Any = None) -> Result:
    """Run an API-format ComfyUI workflow in this process and return its outputs with their bytes.

    ``files`` maps input names (as ``LoadImage`` and the other loaders refer to them) to bytes,
    local paths or URLs (``https://...``, ``s3://bucket/key``, fetched before the workflow runs); ``models`` lists models fetched into the model cache first
    (``{"url", "folder", "filename", "sha256"?}`` or ``ModelRef``); ``outputs`` lists the output
    node ids to run (default: all). Raises
    ``ValidationError``, ``ExecutionError``, ``JobInterrupted``/``JobTimeout``, ``WorkflowFormatError``,
    ``InputError`` or ``BootError``, all subclasses of ``EmbeddedError``.
    """
    return default_executor().run(workflow, files, on_event=on_event, timeout=timeout, models=models,
                                  outputs=outputs)
