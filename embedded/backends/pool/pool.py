"""``DevicePool``: the ``Backend`` of several devices, one child process (one executor) per device.

Owns: the pool's queue (jobs wait here until a child is idle: the first idle child takes the oldest
job), the children (spawned at once, so that they boot in parallel), relaying each job's events and
answer from its child to its caller, routing an interrupt to the child that runs the job, the job
timeout's stop grace period, and replacing a child:

- a child that dies (killed, out of memory, a node that ends the process) fails the job it ran
  with ``WorkerLost`` naming the device, and a new child starts for that device;
- a job asked to stop (its timeout, an interrupt) whose child has not answered ``stop_grace``
  seconds later (a node deaf to ComfyUI's interrupt flag) is answered with its stop error, and its
  child is killed and replaced: the pool never gets stuck; the other children's jobs go on.

The pool times each job (its timeout is sent to the child as a stop, so that a job waiting in the
child behind a preflight is timed as the caller sees it) and each stop's grace; a child's own stop
grace is set further away, so that the pool's comes first. A child whose process ended is noticed by
its pipe, and by its pid (a process a node started may hold the pipe open). Must not import ComfyUI:
only the children do.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import shutil
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ...config import Config
from ...job.errors import BootError, InputError, JobInterrupted, WorkerLost
from ...job.events import EventCallback
from ...job.types import BootInfo, Job
from ..jobcontrol import Running, Submitting, Ticket
from ..preflight import Preflight
from . import wire
from .devices import Device, child_env
from .forkserver import ForkServer, Forked

log = logging.getLogger("embedded.pool")

#: the package's folder, put first on a child's ``sys.path`` (it imports the same ``embedded``)
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
#: the time an answer may take through the pipe, added to the stop grace before a child is killed
_PIPE_SLACK_S = 0.5


def _child_grace(grace: float) -> float:
    """A child's own stop grace: after the pool's (which kills it first), still bounded (the child also
    waits that long for a node's leftover asyncio tasks)."""
    return 2 * grace + 5


class Child:
    """One device's process, the pipe to it, and the job it runs."""

    def __init__(self, device: Device, proc: subprocess.Popen | Forked, conn, jobs_folder: Path):
        self.device = device
        #: its job folders (``Config.jobs_folder``), removed once it has ended
        self.jobs_folder = jobs_folder
        self.proc = proc
        self.conn = conn
        self._send_lock = threading.Lock()
        #: "booting", "idle", "busy", "gone" (dead, killed or closed)
        self.state = "booting"
        self.running: Running | None = None
        self.info: BootInfo | None = None
        self.booted: concurrent.futures.Future = concurrent.futures.Future()
        self.checks: dict[int, concurrent.futures.Future] = {}
        #: the pool ended it (stop grace over, close): its end is not a loss to report
        self.ended_by_pool = False
        #: its reader saw the pipe close (after which the pipe is closed here)
        self.reader_done = False

    def send(self, message: object) -> bool:
        return self.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def send_bytes(self, data: bytes) -> bool:
        with self._send_lock:
            try:
                self.conn.send_bytes(data)
                return True
            except (OSError, ValueError):  # it died: its reader reports it
                return False

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class DevicePool(Submitting):
    """Runs jobs on several devices at once, one child process each; ``capacity`` jobs at a time."""

    #: a child process per device: a stopped job's node never holds this process
    def __init__(self, config: Config, devices: list[Device]):
        self.config = config
        self.devices = list(devices)
        self.stop_grace = config.job_stop_grace_s
        self.booted: BootInfo | None = None
        self._lock = threading.Lock()
        self._queue: collections.deque[Ticket] = collections.deque()
        self._children: list[Child] = []
        self._started = False
        self._closed = False
        self._refs = itertools.count()
        self._spawned = itertools.count()
        self._forks: ForkServer | None = None
        #: why no child can run a job (every device's process failed to start again), or None
        self._dead: BaseException | None = None

    @property
    def capacity(self) -> int:
        return len(self.devices)

    @property
    def ready(self) -> int:
        """How many devices' processes take jobs now (booted, not being replaced)."""
        with self._lock:
            return sum(1 for c in self._children if c.state in ("idle", "busy"))

    @property
    def stuck(self) -> bool:
        """Whether no job can run: every device's process failed to start again."""
        return self._dead is not None

    # --- lifecycle ------------------------------------------------------------------------------
    def prepare(self) -> "DevicePool":
        return self  # each child parses ComfyUI's arguments itself

    def start(self) -> "DevicePool":
        """Start a child per device (they boot in parallel) and wait for them. Raises ``BootError``
        when none booted; a device whose child failed is logged and left out."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        try:
            return self._start()
        except BaseException as exc:
            self.close()
            with self._lock:  # closed and emptied: start may be called again
                self._started = self._closed = False
                self._children, self._forks = [], None
            if isinstance(exc, (BootError, KeyboardInterrupt, SystemExit)):
                raise
            raise BootError(f"{type(exc).__name__}: {exc}") from exc

    def _start(self) -> "DevicePool":
        began = time.perf_counter()
        for device in self.devices:  # a device this process cannot see is refused before anything starts
            try:
                child_env(device, os.environ)
            except ValueError as exc:
                raise BootError(str(exc)) from None
        try:  # torch imported once, the devices' processes forked from there (see ``forkserver``)
            self._forks = ForkServer(self._env())
        except OSError as exc:
            log.warning("pool: no fork server (%s); each device's process starts on its own", exc)
        children = [self._spawn(device) for device in self.devices]
        deadline = time.monotonic() + self.config.server_start_timeout_s
        errors: list[BaseException] = []
        for child in children:
            try:
                child.booted.result(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                self._end(child)
                errors.append(BootError(f"ComfyUI did not start on {child.device.label} within "
                                        f"{self.config.server_start_timeout_s:g} s (COMFY_SERVER_START_TIMEOUT_S)"))
            except BaseException as exc:  # noqa: BLE001 - a BootError from the child
                errors.append(exc)
        up = [c for c in children if c.info is not None and c.state != "gone"]
        if not up and not errors:
            errors.append(BootError("Every device's process ended as it started"))
        if not up:
            raise errors[0] if isinstance(errors[0], BootError) else BootError(str(errors[0]))
        for error in errors:
            log.error("pool: a device's executor failed to start; jobs run on the others: %s", error)
        self.booted = dataclasses.replace(up[0].info, seconds=round(time.perf_counter() - began, 3),
                                          devices=tuple(c.device.label for c in up))
        log.info("pool: %d executor(s) ready in %.1f s (%s)", len(up), self.booted.seconds, ", ".join(self.booted.devices))
        return self

    @staticmethod
    def _env() -> dict[str, str]:
        """This process's environment, with this package first on the path of the processes it starts."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"  # what a child printed is not lost when it is killed
        return env

    def _jobs_folder(self, device: Device) -> Path:
        """The folder of ``device``'s job folders: its own, so that what a process that died left
        there is removed with it (the pid and a count keep pools and replacements apart)."""
        name = f"{os.getpid()}-{device.kind}-{device.index}-{next(self._spawned)}"
        return self.config.work_dir / "devices" / name / "jobs"

    def _spawn(self, device: Device) -> Child:
        """Start ``device``'s child; its reader thread takes its messages from now on."""
        env = child_env(device, self._env())
        proc: subprocess.Popen | Forked | None = None
        ours, theirs = multiprocessing.Pipe(duplex=True)
        try:
            if self._forks is not None and self._forks.alive:
                try:
                    proc = self._forks.fork(env, theirs.fileno())
                except OSError as exc:
                    log.warning("pool: %s; %s's process starts on its own", exc, device.label)
                    for end in (ours, theirs):  # the server may still hold that pipe: a new one
                        end.close()
                    ours, theirs = multiprocessing.Pipe(duplex=True)
            if proc is None:
                proc = subprocess.Popen([sys.executable, "-m", "embedded.backends.pool.child", str(theirs.fileno())],
                                        pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        child = Child(device, proc, ours, self._jobs_folder(device))
        config = dataclasses.replace(self.config, devices=None, job_stop_grace_s=_child_grace(self.stop_grace),
                                     force_cpu=True if device.kind == "cpu" else self.config.force_cpu,
                                     jobs_folder=child.jobs_folder)
        with self._lock:
            closed = self._closed
            if not closed:
                self._children.append(child)
        if closed:  # the pool closed while this one started: it goes at once
            child.ended_by_pool, child.state = True, "gone"
            child.kill()
        else:
            child.send(wire.Boot(config, device.label))
        threading.Thread(target=self._read, args=(child,), name=f"pool-{device.label}", daemon=True).start()
        threading.Thread(target=self._watch, args=(child,), name=f"pool-{device.label}-pid", daemon=True).start()
        return child

    def close(self) -> None:
        """Answer the waiting jobs, ask every child to leave (a running job is interrupted) and wait
        for them; one that does not leave in time is killed."""
        with self._lock:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            children = list(self._children)
        for ticket in queued:
            ticket.answer(error=JobInterrupted("The executor was closed before the job started"))
        for child in children:
            if child.state == "booting":  # nothing to lose: not waited for
                self._end(child)
            else:
                child.send(wire.Close())
        deadline = time.monotonic() + self.stop_grace + 5
        for child in children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.ended_by_pool = True
                child.kill()
                child.proc.wait()
            self._close_pipe(child)
            _remove(child.jobs_folder.parent)
        if self._forks is not None:
            self._forks.close()

    # --- jobs -----------------------------------------------------------------------------------
    def _submit(self, job: Job, on_event: EventCallback | None) -> Ticket:
        ticket = Ticket(job, on_event)
        with self._lock:
            if self._closed:
                raise BootError("The executor is closed")
            if self._dead is not None:
                raise self._dead
            self._queue.append(ticket)
        self._dispatch()
        return ticket

    def _dispatch(self) -> None:
        """Give the oldest waiting jobs to idle children."""
        while True:
            with self._lock:
                if self._closed:
                    return
                child = next((c for c in self._children if c.state == "idle"), None)
                while self._queue and self._queue[0].future.done():
                    self._queue.popleft()  # answered while it waited
                if child is None or not self._queue:
                    return
                ticket = self._queue.popleft()
                ticket.started = True
                running = child.running = Running(ticket)
                child.state = "busy"
            try:
                data = pickle.dumps(wire.Run(ticket.job), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - a value of the job (extra_data) that cannot travel
                with self._lock:
                    if child.running is running:
                        child.running, child.state = None, "idle"
                ticket.answer(error=InputError(f"The job cannot be sent to a device's process: {type(exc).__name__}: "
                                               f"{exc} (its extra_data must be plain data)"))
                continue
            if ticket.job.timeout is not None:  # the pool times the job: the child is told to stop
                self._arm(child, running, ticket.job.timeout,
                          lambda c=child, r=running: self._stopping(c, r, "timeout"))
            if not child.send_bytes(data):
                log.warning("pool: %s was gone as it got job %s", child.device.label, ticket.job.job_id)
            elif running.stop_reason is not None:  # a stop that went ahead of the job: again, now that it is there
                child.send(wire.Interrupt(ticket.job.job_id, running.stop_reason))

    def interrupt(self, job_id: str | None = None) -> bool:
        """Stop the job ``job_id`` (queued: answered at once; running: its child is asked), or with
        None every running job. Returns whether a job was targeted."""
        with self._lock:
            queued = [t for t in self._queue if job_id is not None and t.job.job_id == job_id]
            for ticket in queued:
                self._queue.remove(ticket)
            targets = [(c, c.running) for c in self._children
                       if c.running is not None and (job_id is None or c.running.job.job_id == job_id)]
        for ticket in queued:
            ticket.answer(error=JobInterrupted("The job was cancelled before it started"))
        for child, running in targets:
            self._stopping(child, running, "interrupt")
        return bool(queued or targets)

    def _cancel(self, ticket: Ticket) -> None:
        with self._lock:
            queued = ticket in self._queue
            if queued:
                self._queue.remove(ticket)
            target = next(((c, c.running) for c in self._children
                           if c.running is not None and c.running.ticket is ticket), None)
        if queued:
            ticket.answer(error=JobInterrupted("The job was cancelled before it started"))
        elif target is not None:
            self._stopping(*target, "interrupt")

    def _stopping(self, child: Child, running: Running, reason: str) -> None:
        """``running`` is to stop (``reason``: "interrupt" or "timeout"); if its child has not answered
        when the stop grace period is over, the child is replaced."""
        with self._lock:
            if child.running is not running:
                return
            first = running.stop_reason is None
            if first:
                running.stop_reason = reason
        if first:
            self._arm(child, running, self.stop_grace + _PIPE_SLACK_S, lambda: self._grace_over(child, running))
        child.send(wire.Interrupt(running.job.job_id, reason))

    def _arm(self, child: Child, running: Running, seconds: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        with self._lock:
            if child.running is not running:
                return
            running.timers.append(timer)
        timer.start()

    def _grace_over(self, child: Child, running: Running) -> None:
        with self._lock:
            if child.running is not running:
                return  # it stopped in time
            running.ticket.abandoned = True
            child.running = None
        self._end(child)
        log.error("job %s: node %s did not stop within %g s of being asked to; the process of %s is replaced",
                  running.job.job_id, running.node_id, self.stop_grace, child.device.label)
        _bury(child)  # its job's folders go before its caller is answered
        running.ticket.answer(error=running.stopped_error().abandoned(
            self.stop_grace, f"the process of {child.device.label} was ended (a new one takes its next jobs)"))
        self._replace(child)

    # --- preflight ------------------------------------------------------------------------------
    def check(self, job: Job) -> Preflight:
        """A preflight on an idle child (else any started one; else the first to finish its boot)."""
        while True:
            with self._lock:
                ready = [c for c in self._children if c.state in ("idle", "busy")]
                booting = [c.booted for c in self._children if c.state == "booting" and not c.booted.done()]
                if ready:
                    child = next((c for c in ready if c.state == "idle"), ready[0])
                    ref = next(self._refs)
                    answer = child.checks[ref] = concurrent.futures.Future()
                    break
                if self._closed or self._dead is not None or not booting:
                    raise self._dead or BootError("No device's executor is running")
            concurrent.futures.wait(booting, timeout=self.config.server_start_timeout_s,
                                    return_when=concurrent.futures.FIRST_COMPLETED)
        child.send(wire.Check(ref, job))
        return answer.result()

    # --- a child's messages ---------------------------------------------------------------------
    def _read(self, child: Child) -> None:
        """The messages of ``child`` until its pipe closes (it left or died)."""
        while True:
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - a message that does not unpickle here: its job is lost
                log.exception("pool: a message of %s could not be read", child.device.label)
                continue
            try:
                self._take(child, message)
            except Exception:  # noqa: BLE001 - the next messages still count
                log.exception("pool: a message of %s could not be handled", child.device.label)
        self._gone(child)

    def _take(self, child: Child, message: object) -> None:
        if isinstance(message, wire.JobEvent):
            running = child.running
            if running is not None and running.job.job_id == message.job_id:
                running.see(message.event)
                if running.ticket.on_event is not None:
                    try:
                        running.ticket.on_event(message.event)
                    except Exception:  # noqa: BLE001 - a broken callback must not break the job
                        log.exception("on_event callback raised for %s; ignored", type(message.event).__name__)
        elif isinstance(message, wire.Done):
            with self._lock:
                running = child.running
                if running is None or running.job.job_id != message.job_id:
                    return  # answered already (its stop grace was over)
                child.running, child.state = None, "idle"
                for timer in running.timers:
                    timer.cancel()
            if not running.ticket.abandoned:
                running.ticket.answer(message.result, message.error)
            self._dispatch()
        elif isinstance(message, wire.Checked):
            with self._lock:
                answer = child.checks.pop(message.ref, None)
            if answer is not None:
                if message.error is not None:
                    answer.set_exception(message.error)
                else:
                    answer.set_result(message.preflight)
        elif isinstance(message, wire.Booted):
            with self._lock:
                child.info = message.info
                if child.state == "booting":
                    child.state = "idle"
            child.booted.set_result(message.info)
            self._dispatch()
        elif isinstance(message, wire.BootFailed):
            child.booted.set_exception(message.error)

    def _end(self, child: Child) -> None:
        """The pool ends ``child`` (its stop grace is over, its boot took too long, the pool closes):
        no job is given to it any more, and its end is no loss to report."""
        with self._lock:
            child.ended_by_pool, child.state = True, "gone"
        child.kill()

    def _watch(self, child: Child) -> None:
        """Once ``child``'s process has ended, make sure its reader sees it: a process a node started
        may hold the pipe open."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait()
        with self._lock:
            if child.reader_done:
                return
            with contextlib.suppress(OSError):  # the reader's recv ends now
                with socket.fromfd(child.conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.shutdown(socket.SHUT_RDWR)

    def _close_pipe(self, child: Child) -> None:
        """Close ``child``'s pipe, once: the reader's thread and ``close`` may both get here, and a
        second close of the same descriptor number, reused meanwhile by another open file (a folder
        being removed), would close that one."""
        with self._lock, contextlib.suppress(OSError):
            child.conn.close()

    def _gone(self, child: Child) -> None:
        """``child``'s pipe closed: fail what it held and, unless the pool ended it, replace it."""
        code = child.proc.wait()
        with self._lock:
            child.reader_done = True
            running, child.running = child.running, None
            was_up = child.state in ("idle", "busy")
            child.state = "gone"
            checks, child.checks = list(child.checks.values()), {}
            expected = child.ended_by_pool or self._closed
        self._close_pipe(child)
        how = _ending(code)
        if not child.booted.done():
            child.booted.set_exception(BootError(f"The process of {child.device.label} {how} while ComfyUI started"))
        _bury(child)
        lost = WorkerLost(f"The process running this job on {child.device.label} {how}{_hint(code)}; "
                          f"only this job failed, and a new process takes the device's next jobs", child.device.label)
        if running is not None:
            for timer in running.timers:
                timer.cancel()
            if not running.ticket.abandoned:
                running.ticket.answer(error=JobInterrupted("The executor was closed while the job ran")
                                      if self._closed else lost)
        for answer in checks:
            answer.set_exception(lost)
        if not expected and was_up:
            log.error("pool: the process of %s %s; starting a new one", child.device.label, how)
            self._replace(child)

    def _replace(self, child: Child) -> None:
        """A new child for ``child``'s device (the old one buried); a replacement that fails to start
        leaves the device out (and when no device is left, every job is refused
        with why)."""
        with self._lock:
            if self._closed:
                return
            if child in self._children:
                self._children.remove(child)
        try:
            new = self._spawn(child.device)
        except Exception as exc:  # noqa: BLE001 - no process could be started (out of memory, say)
            self._replaced(child, exc)
            return
        # a boot that hangs is ended like one that failed
        timer = threading.Timer(self.config.server_start_timeout_s, lambda: new.booted.done() or self._end(new))
        timer.daemon = True
        timer.start()
        new.booted.add_done_callback(lambda f: (timer.cancel(), self._replaced(new, f.exception())))

    def _replaced(self, child: Child, error: BaseException | None) -> None:
        if error is None:
            log.info("pool: %s takes jobs again", child.device.label)
            return
        log.error("pool: the new process of %s failed to start: %s", child.device.label, error)
        with self._lock:
            if child in self._children:
                self._children.remove(child)
            if any(c.state != "gone" for c in self._children):
                return
            self._dead = BootError(f"No device can run jobs: the last device's process failed to start again: {error}")
            queued = list(self._queue)
            self._queue.clear()
        for ticket in queued:
            ticket.answer(error=self._dead)


def _bury(child: Child) -> None:
    """Once ``child`` has ended (it was killed or died), remove its job folders: nothing writes there
    any more."""
    try:
        child.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.error("pool: the process of %s outlived its kill by 10 s; its job folders are left", child.device.label)
        threading.Thread(target=child.proc.wait, daemon=True).start()  # reaped once the kill lands
        return
    _remove(child.jobs_folder.parent)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _ending(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed ({name})"
    return f"exited with code {code}"


def _hint(code: int) -> str:
    if code == -signal.SIGKILL:
        return " (out of memory, or killed from outside)"
    return ""
