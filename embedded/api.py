"""The Python API: ``execute()`` and the ``Executor`` behind it.

Owns: turning a caller's arguments into a checked ``Job`` (workflow format, image names and bytes
are checked here, before any backend sees them), the process-wide default executor that
``execute()`` uses, and sync/async entry points.

The backend (embedded, or the legacy server mode with ``EXECUTION_MODE=server``) is created on
``start``, so importing ``embedded`` stays cheap and never boots ComfyUI by itself.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import queue
import threading
from typing import Any, AsyncIterator, Iterator, Mapping

from . import backend
from .backend import Backend
from .config import Config
from .events import Event, EventCallback, ResultEvent
from .inputs import check_inputs, check_workflow
from .preflight import Preflight
from .types import Job, Result


class Executor:
    """A persistent in-process ComfyUI executor: ``start()``, ``run()`` any number of jobs, ``close()``.

    One job runs at a time; others wait their turn. Usable as a context manager.
    """

    def __init__(self, config: Config | None = None, backend: Backend | None = None):
        self.config = config or Config.from_env()
        self._runner: Backend | None = backend
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> "Executor":
        """Start the backend: boot ComfyUI in this process (once per process), or start its server
        (``EXECUTION_MODE=server``). Raises ``BootError``."""
        with self._lock:
            if not self._started:
                runner = self._runner or backend.create(self.config)
                runner.start()
                self._runner, self._started = runner, True
        return self

    @property
    def mode(self) -> str:
        return self.config.execution_mode

    @property
    def boot_info(self):
        return self._runner.booted if self._runner and self._started else None

    def make_job(self, workflow: Any, images: Mapping[str, bytes] | None = None, *, timeout: float | None = None,
                 job_id: str | None = None, extra_data: Mapping[str, Any] | None = None,
                 unload_models: bool = False, free_memory: bool = False, stream_outputs: bool = False,
                 previews: bool = False) -> Job:
        """A checked ``Job``. ``unload_models`` / ``free_memory`` run after it, as ComfyUI's ``/free``;
        ``stream_outputs`` sends each output as an ``OutputEvent`` as soon as its node finished;
        ``previews`` sends sampler previews as ``PreviewEvent``s (embedded mode)."""
        job = Job(workflow=check_workflow(workflow), images=check_inputs(images, self.config.input_limits),
                  extra_data=dict(extra_data or {}), timeout=timeout, unload_models=bool(unload_models),
                  free_memory=bool(free_memory), stream_outputs=bool(stream_outputs), previews=bool(previews))
        if job_id is not None:
            job.job_id = str(job_id)
        return job

    def submit(self, workflow: Any, images: Mapping[str, bytes] | None = None, *,
               on_event: EventCallback | None = None, **job_options: Any) -> concurrent.futures.Future:
        """Queue a job; returns a future of its ``Result``. ``job_options`` are ``make_job``'s."""
        job = self.make_job(workflow, images, **job_options)
        return self.start()._runner.submit(job, on_event)

    def run(self, workflow: Any, images: Mapping[str, bytes] | None = None, *,
            on_event: EventCallback | None = None, **job_options: Any) -> Result:
        """Run a workflow and return its ``Result``; raises an ``EmbeddedError`` subclass on failure.
        ``job_options`` are ``make_job``'s (``timeout``, ``job_id``, ``free_memory``...)."""
        return self.submit(workflow, images, on_event=on_event, **job_options).result()

    async def run_async(self, workflow: Any, images: Mapping[str, bytes] | None = None, *,
                        on_event: EventCallback | None = None, **job_options: Any) -> Result:
        """Like ``run`` for async callers. Cancelling the awaiting task interrupts the job and waits
        until it stops, or until ``JOB_STOP_GRACE_S`` has passed and it is answered anyway."""
        job = self.make_job(workflow, images, **job_options)
        return await self.start()._runner.run_async(job, on_event)

    def stream(self, workflow: Any, images: Mapping[str, bytes] | None = None,
               **job_options: Any) -> Iterator[Event | ResultEvent]:
        """Run a workflow and yield its events as they happen: progress, each output (an
        ``OutputEvent`` with its bytes) as soon as its node finished, and last a ``ResultEvent``.
        The job's error is raised at the end instead. Closing the iterator early (leaving a
        ``with contextlib.closing(ex.stream(...))`` block) interrupts the job."""
        items: queue.Queue = queue.Queue()
        job = self.make_job(workflow, images, **{**job_options, "stream_outputs": True})
        future = self.start()._runner.submit(job, items.put)
        future.add_done_callback(lambda _: items.put(_END))
        try:
            while (item := items.get()) is not _END:
                yield item
            yield ResultEvent(future.result())
        finally:
            if not future.done():
                self.interrupt(job.job_id)

    async def astream(self, workflow: Any, images: Mapping[str, bytes] | None = None,
                      **job_options: Any) -> AsyncIterator[Event | ResultEvent]:
        """``stream`` for async callers. Cancelling the consuming task, or closing the iterator
        early (``async with contextlib.aclosing(ex.astream(...))``), interrupts the job and waits for
        it to stop, as ``run_async``."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        job = self.make_job(workflow, images, **{**job_options, "stream_outputs": True})
        run = asyncio.ensure_future(self.start()._runner.run_async(
            job, lambda item: loop.call_soon_threadsafe(items.put_nowait, item)))
        run.add_done_callback(lambda _: items.put_nowait(_END))
        try:
            while (item := await items.get()) is not _END:
                yield item
            yield ResultEvent(await run)
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run

    def check(self, workflow: Any, images: Mapping[str, bytes] | None = None) -> Preflight:
        """Preflight: validate ``workflow`` (with its input files) as a run would, without running a
        node; unknown node types, ComfyUI's validation errors and missing models are reported in a
        ``Preflight`` (``ok``, ``errors``, ``missing_models``, ``missing_nodes``)."""
        return self.start()._runner.check(self.make_job(workflow, images))

    def interrupt(self, job_id: str | None = None) -> bool:
        """Interrupt the running job (or the job ``job_id``, running or queued)."""
        return self._runner.interrupt(job_id) if self._runner and self._started else False

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


def execute(workflow: Any, images: Mapping[str, bytes] | None = None, *, on_event: EventCallback | None = None,
            timeout: float | None = None) -> Result:
    """Run an API-format ComfyUI workflow in this process and return its outputs with their bytes.

    ``images`` maps input names (as ``LoadImage`` refers to them) to image bytes. Raises
    ``ValidationError``, ``ExecutionError``, ``JobInterrupted``/``JobTimeout``, ``WorkflowFormatError``,
    ``InputError`` or ``BootError``, all subclasses of ``EmbeddedError``.
    """
    return default_executor().run(workflow, images, on_event=on_event, timeout=timeout)
