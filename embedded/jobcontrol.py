"""What both backends do the same way around a job: one running job, its stop reason, cancels of
queued jobs, the timeout timer, and sync/async entry points.

Owns: ``Running`` (the job on a runner now, its prompt id, why it should stop) and ``JobControl``,
the base of ``comfy.ComfyRunner`` and ``server.ServerRunner``. A subclass says how to queue a job
(``submit``) and how to stop a running one (``_stop``: ComfyUI's interrupt flag in-process,
``POST /interrupt`` for the server).

Must not import ComfyUI or either backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Callable

from . import translate
from .errors import ExecutionError, JobInterrupted
from .events import Dispatcher, EventCallback, InterruptedEvent
from .types import Job, Output, Result


class Running:
    """The job a runner is running, and why it should stop (``"interrupt"``, ``"timeout"``, or None)."""

    def __init__(self, job: Job):
        self.job = job
        self.prompt_id: str | None = None
        self.stop_reason: str | None = None


class JobControl:
    def __init__(self) -> None:
        self._state_lock = threading.Lock()
        self._running: Running | None = None
        self._pending_cancel: set[str] = set()

    # --- for subclasses ---------------------------------------------------------------------------
    def submit(self, job: Job, on_event: EventCallback | None = None) -> concurrent.futures.Future:
        raise NotImplementedError

    def _stop(self, running: Running) -> None:
        """Ask the backend to stop ``running`` (called with the state lock held)."""
        raise NotImplementedError

    def _begin(self, job: Job) -> tuple[Running, threading.Timer | None]:
        """Make ``job`` the running one (unless it was cancelled while queued) and arm its timeout."""
        running = Running(job)
        with self._state_lock:
            if job.job_id in self._pending_cancel:
                self._pending_cancel.discard(job.job_id)
                raise JobInterrupted("The job was cancelled before it started")
            self._running = running
        timer = None
        if job.timeout is not None:
            timer = threading.Timer(job.timeout, self._on_timeout, args=(running,))
            timer.daemon = True
            timer.start()
        return running, timer

    def _end(self, timer: threading.Timer | None) -> None:
        if timer is not None:
            timer.cancel()
        with self._state_lock:
            self._running = None

    @staticmethod
    def _finish(running: Running, messages, dispatch: Dispatcher,
                collect_outputs: Callable[[], tuple[list[Output], list[str]]]) -> tuple[list[Output], list[str]]:
        """A finished prompt's outputs and warnings, or the error its status messages call for.

        A node that raised ends the job with an ``ExecutionError`` that carries the outputs of
        the output nodes that finished before it. A stop asked for after the last interrupt check
        (the work is done, but the caller asked to stop) also ends it.
        """
        error = translate.status_error(messages, running.stop_reason, running.job.timeout)
        if isinstance(error, ExecutionError):
            error.outputs, error.warnings = collect_outputs()
        if error is not None:
            raise error
        if running.stop_reason is not None:
            dispatch(InterruptedEvent(running.prompt_id))
            raise translate.stopped(running.stop_reason, running.job.timeout)
        return collect_outputs()

    # --- public ----------------------------------------------------------------------------------
    def run(self, job: Job, on_event: EventCallback | None = None) -> Result:
        return self.submit(job, on_event).result()

    async def run_async(self, job: Job, on_event: EventCallback | None = None) -> Result:
        """Await a job from any event loop. Cancelling the awaiting task interrupts the job."""
        future = self.submit(job, on_event)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.interrupt(job.job_id)
            raise

    def interrupt(self, job_id: str | None = None) -> bool:
        """Stop the running job (or, with ``job_id``, that job, running or queued).

        Returns whether a job was targeted. The job ends with ``JobInterrupted`` at its next
        interrupt check (between nodes, at every progress step).
        """
        with self._state_lock:
            running = self._running
            if running is not None and (job_id is None or running.job.job_id == job_id):
                if running.stop_reason is None:
                    running.stop_reason = "interrupt"
                self._stop(running)
                return True
            if job_id is not None:
                self._pending_cancel.add(job_id)
                return True
        return False

    def _on_timeout(self, running: Running) -> None:
        with self._state_lock:
            if self._running is running and running.stop_reason is None:
                running.stop_reason = "timeout"
                self._stop(running)
