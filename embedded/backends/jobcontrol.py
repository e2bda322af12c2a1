"""What both backends do the same way around a job: the queue of submitted jobs, the one running
job and why it should stop, cancels, the timeout timer, the stop grace period, and sync/async
entry points.

Owns: ``Ticket`` (a submitted job and the future its caller waits on), ``Running`` (the job on a
runner now, its prompt id, the node it is in, why it should stop) and ``JobControl``, the base of
``comfy.ComfyRunner`` and ``server.ServerRunner``. A subclass says how to queue a ticket
(``_enqueue``), how to ask a running job to stop (``_stop``: ComfyUI's interrupt flag in-process,
``POST /interrupt`` for the server) and what to do with a job that did not stop (``_abandon``).

Every job ends. A job asked to stop (its timeout, ``interrupt``, a cancel) that is still running
``stop_grace`` seconds later (a node that never checks ComfyUI's interrupt flag) is answered at
once with its stop error, marked with what happened to it: the server backend kills ComfyUI's
process (the next job starts a new one); in-process nothing can take a thread back, so the runner
is *stuck*: it refuses new jobs (``WorkerStuck``) and fails the queued ones until the node returns,
and the error says that the worker should be replaced (``refresh_worker``).

Cancels are kept only for jobs that are queued (each ticket carries its own); a cancel for a job
that is unknown or already ended is not remembered, so a later job with the same id runs.
No backend call (an HTTP request, a process kill) is made while the state lock is held.

Must not import ComfyUI or either backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Callable

from . import translate
from ..job.errors import ExecutionError, JobInterrupted, WorkerStuck
from ..job.events import (TERMINAL, CachedEvent, Dispatcher, Event, EventCallback, ExecutedEvent, ExecutingEvent,
                          InterruptedEvent, job_secrets)
from ..job.types import Job, NodeTiming, Output, Result

log = logging.getLogger("embedded.jobs")


class Ticket:
    """A submitted job: what it is, who listens to it, when it was submitted, and the future its
    caller waits on (answered by the job's end, a cancel while queued, or the stop grace period)."""

    def __init__(self, job: Job, on_event: EventCallback | None):
        self.job = job
        self.on_event = on_event
        self.submitted = time.perf_counter()
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        #: the stop grace period is over: the watchdog answers, not the run's own end
        self.abandoned = False
        #: it became the running job (a ticket answered while queued never does)
        self.started = False

    def answer(self, result: Result | None = None, error: BaseException | None = None) -> bool:
        """Resolve the caller's future unless it is already resolved; returns whether it was."""
        try:
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
            return True
        except concurrent.futures.InvalidStateError:
            return False


class Running:
    """The job a runner is running, the node it is in and how long each node took (from its
    events, as they arrive), and why it should stop (``"interrupt"``, ``"timeout"``, or None)."""

    def __init__(self, ticket: Ticket):
        self.ticket = ticket
        self.job = ticket.job
        self.prompt_id: str | None = None
        self.node_id: str | None = None
        self.stop_reason: str | None = None
        self.started = time.monotonic()
        self.timers: list[threading.Timer] = []
        self.task: asyncio.Task | None = None  # the embedded runner's task running it
        self.node_ms: dict[str, float] = {}
        self.cached: dict[str, None] = {}  # in the order ComfyUI reported them
        self._node_since = 0.0
        self.last_preview = 0.0  # when the job's last preview was sent (at most PREVIEWS_PER_SECOND)
        #: the server backend's ids of the cache keys of this prompt's cached nodes, once read
        self.cache_keys: dict | None = None

    def see(self, ev: Event, now: Callable[[], float] = time.perf_counter) -> None:
        """Track the running node: a node runs from its ``executing`` event until the next one,
        its ``executed`` event or the end of the prompt (repeated runs of one node add up)."""
        if isinstance(ev, CachedEvent):
            self.cached.update(dict.fromkeys(ev.nodes))
        elif isinstance(ev, ExecutingEvent):
            self._close(now())
            self.node_id, self._node_since = ev.node_id, now()
        elif isinstance(ev, ExecutedEvent) and ev.node_id == self.node_id:
            self._close(now())
            self.node_id = None
        elif isinstance(ev, TERMINAL):
            self._close(now())

    def _close(self, at: float) -> None:
        if self.node_id is not None and self._node_since:
            self.node_ms[self.node_id] = self.node_ms.get(self.node_id, 0.0) + (at - self._node_since) * 1000
            self._node_since = 0.0

    def node_timings(self) -> dict[str, NodeTiming]:
        def class_type(node_id: str) -> str:
            node = self.job.workflow.get(node_id)
            return str(node.get("class_type")) if isinstance(node, dict) else "?"
        timings = {n: NodeTiming(class_type(n), 0.0, True) for n in self.cached if n not in self.node_ms}
        timings.update({n: NodeTiming(class_type(n), round(ms, 3), False) for n, ms in self.node_ms.items()})
        return timings

    def stopped_error(self) -> JobInterrupted:
        node = self.job.workflow.get(self.node_id) if self.node_id else None
        node_type = node.get("class_type") if isinstance(node, dict) else None
        return translate.stopped(self.stop_reason, self.job.timeout, self.node_id if node_type else None, node_type)


class Submitting:
    """The entry points of a backend that answers jobs through ``Ticket``s: ``submit``, ``run`` and
    ``run_async`` over the subclass's ``_submit`` (queue a job, return its ticket) and ``_cancel``
    (stop a ticket's job: answered at once while it waits, else interrupted). Shared by
    ``JobControl`` and the device pool."""

    def _submit(self, job: Job, on_event: EventCallback | None) -> Ticket:
        raise NotImplementedError

    def _cancel(self, ticket: Ticket) -> None:
        raise NotImplementedError

    def submit(self, job: Job, on_event: EventCallback | None = None) -> concurrent.futures.Future:
        """Queue ``job``; the future resolves to a ``Result`` or raises an ``EmbeddedError``."""
        return self._submit(job, on_event).future

    def run(self, job: Job, on_event: EventCallback | None = None) -> Result:
        return self.submit(job, on_event).result()

    async def run_async(self, job: Job, on_event: EventCallback | None = None,
                        registered: Callable[[], None] | None = None) -> Result:
        """Await a job from any event loop (``registered`` is called once the job is queued, before
        anything is awaited: an ``interrupt`` of its id reaches it from then on).

        Cancelling the awaiting task interrupts the job and waits until it is answered (when it
        stops, or once the stop grace period is over) before the cancel goes on: nothing is
        cancelled inside ComfyUI. A job whose node did not stop raises its stop error instead
        (``refresh_worker`` says what it means).
        """
        ticket = self._submit(job, on_event)
        if registered is not None:
            registered()
        waiter = asyncio.wrap_future(ticket.future)
        try:
            return await asyncio.shield(waiter)
        except asyncio.CancelledError:
            await asyncio.to_thread(self._cancel, ticket)  # the server's /interrupt is a blocking call
            try:
                await waiter
            except JobInterrupted as exc:
                if exc.refresh_worker:
                    raise exc from None
            except BaseException:  # noqa: BLE001 - the job's own end does not matter to a cancel
                pass
            raise


class JobControl(Submitting):
    #: one job at a time
    capacity = 1

    def __init__(self, stop_grace: float):
        self.stop_grace = stop_grace
        self._state_lock = threading.Lock()
        self._running: Running | None = None
        self._queued: list[Ticket] = []
        self._stuck: Running | None = None

    # --- for subclasses ---------------------------------------------------------------------------
    def _enqueue(self, ticket: Ticket) -> concurrent.futures.Future:
        """Queue ``ticket`` on the backend's thread; the returned future ends when its run ends."""
        raise NotImplementedError

    def _stop(self, running: Running) -> None:
        """Ask the backend to stop ``running`` (never called with the state lock held)."""
        raise NotImplementedError

    def _abandon(self, running: Running) -> str | None:
        """``running`` did not stop within the grace period: free the backend if it can. Returns
        how it did (the end of the job's error message: "its task was cancelled"), or None."""
        return None

    def _begin(self, ticket: Ticket) -> Running:
        """Make ``ticket`` the running job (unless it was answered while queued) and arm its timeout."""
        with self._state_lock:
            if ticket in self._queued:
                self._queued.remove(ticket)
            if ticket.future.done():  # cancelled while queued, or failed behind a stuck job
                raise JobInterrupted("The job was cancelled before it started")
            running = self._running = Running(ticket)
            ticket.started = True
        if ticket.job.timeout is not None:
            self._arm(running, ticket.job.timeout, self._on_timeout)
        return running

    def _end(self, running: Running) -> None:
        with self._state_lock:
            for timer in running.timers:
                timer.cancel()
            if self._running is running:
                self._running = None
            if self._stuck is running:
                self._stuck = None
                log.warning("the stopped job's node returned after %.0f s; the runner takes jobs again",
                            time.monotonic() - running.started)

    def _dispatcher(self, running: Running, trace_frames: bool) -> Dispatcher:
        return Dispatcher(running.ticket.on_event, trace_frames=trace_frames, observer=running.see,
                          secrets=job_secrets(running.job.extra_data))

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
    def interrupt(self, job_id: str | None = None, reason: str = "interrupt") -> bool:
        """Stop the running job (or, with ``job_id``, that job, running or queued).

        Returns whether a job was targeted. A running job ends with ``JobInterrupted`` at its next
        interrupt check (between nodes, at every progress step) or, for a node that never checks,
        when the stop grace period is over; a queued one is answered at once. ``reason`` "timeout"
        (the device pool times a job itself) ends it with its ``JobTimeout`` instead.
        """
        with self._state_lock:
            running = self._running
            if running is not None and job_id is not None and running.job.job_id != job_id:
                running = None
            queued = [t for t in self._queued if job_id is not None and t.job.job_id == job_id]
        for ticket in queued:
            self._cancel(ticket, reason)
        if running is not None:
            self._request_stop(running, reason)
        return running is not None or bool(queued)

    @property
    def stuck(self) -> bool:
        """Whether a stopped job's node is still running in this process (no job can run)."""
        return self._stuck is not None

    @property
    def ready(self) -> int:
        """How many jobs can start now beside the queue: this one runner, unless it is stuck."""
        return 0 if self.stuck else 1

    # --- internals -------------------------------------------------------------------------------
    def _submit(self, job: Job, on_event: EventCallback | None) -> Ticket:
        ticket = Ticket(job, on_event)
        with self._state_lock:
            if self._stuck is not None:
                raise self._stuck_error()
            self._queued.append(ticket)
        try:
            inner = self._enqueue(ticket)
        except BaseException:
            with self._state_lock:
                if ticket in self._queued:
                    self._queued.remove(ticket)
            raise
        inner.add_done_callback(lambda f: self._settle(ticket, f))
        return ticket

    @staticmethod
    def _answer(ticket: Ticket, result: Result | None = None, error: BaseException | None = None) -> None:
        """Answer ``ticket``'s caller, unless the watchdog did (its answer stands). A backend may
        answer before its clean-up after the job; the end of the run then answers nothing more."""
        if not ticket.abandoned:
            ticket.answer(result, error)

    @staticmethod
    def _settle(ticket: Ticket, inner: concurrent.futures.Future) -> None:
        if inner.cancelled():
            JobControl._answer(ticket, error=JobInterrupted("The job was cancelled"))
        elif inner.exception() is not None:
            JobControl._answer(ticket, error=inner.exception())
        else:
            JobControl._answer(ticket, inner.result())

    def _cancel(self, ticket: Ticket, reason: str = "interrupt") -> None:
        """Stop ``ticket``'s job: answer it now if it is still queued, else interrupt it."""
        with self._state_lock:
            queued = ticket in self._queued
            if queued:
                self._queued.remove(ticket)
            running = self._running if self._running is not None and self._running.ticket is ticket else None
        if queued:
            ticket.answer(error=translate.stopped(reason, ticket.job.timeout) if reason == "timeout"
                          else JobInterrupted("The job was cancelled before it started"))
        elif running is not None:
            self._request_stop(running, reason)

    def _request_stop(self, running: Running, reason: str) -> None:
        with self._state_lock:
            if self._running is not running:
                return
            first = running.stop_reason is None
            if first:
                running.stop_reason = reason
        if first:
            self._arm(running, self.stop_grace, self._on_grace_over)
        self._stop(running)

    def _arm(self, running: Running, seconds: float, action: Callable[[Running], None]) -> None:
        timer = threading.Timer(seconds, action, args=(running,))
        timer.daemon = True
        with self._state_lock:
            if self._running is not running:
                return
            running.timers.append(timer)
        timer.start()

    def _on_timeout(self, running: Running) -> None:
        self._request_stop(running, "timeout")

    def _on_grace_over(self, running: Running) -> None:
        with self._state_lock:
            if self._running is not running:
                return  # it stopped in time
            running.ticket.abandoned = True
        log.error("job %s: node %s did not stop within %g s of being asked to", running.job.job_id,
                  running.node_id, self.stop_grace)
        freed = None
        try:
            freed = self._abandon(running)
        except Exception:  # noqa: BLE001 - the caller is answered whatever happens here
            log.exception("job %s: could not abandon its node", running.job.job_id)
        finally:
            with self._state_lock:
                stuck = freed is None and self._running is running
                if stuck:
                    self._stuck = running
            if stuck:
                self._fail_queued(self._stuck_error())
            running.ticket.answer(error=running.stopped_error().abandoned(self.stop_grace, None if stuck else
                                                                          freed or "it was answered late"))

    def _fail_queued(self, error: Exception) -> None:
        """Answer every queued job with ``error`` (they will not run)."""
        with self._state_lock:
            queued, self._queued = self._queued, []
        for ticket in queued:
            ticket.answer(error=error)

    def _stuck_error(self) -> WorkerStuck:
        return WorkerStuck("A stopped job's node is still running in this process (it never checks ComfyUI's "
                           "interrupt flag): this worker takes no new job until it returns")


__all__ = ["JobControl", "Running", "Submitting", "Ticket"]
