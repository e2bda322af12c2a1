"""A device's child process: one ``comfy.ComfyRunner`` driven over a pipe by the pool
(``python -m embedded.backends.pool.child FD``; ``FD`` is its end of the pipe).

Owns the child's life: read its ``wire.Boot``, boot ComfyUI (its device was pinned by the
environment the pool gave it, before torch loads), answer ``Booted`` or ``BootFailed``, then run
each ``Run`` (its events and its end sent back as they come), pass on ``Interrupt``s, answer
``Check``s, and leave on ``Close`` or as soon as the pool's end of the pipe closes (the pool's
process died: nothing is left behind). SIGINT is the pool's to handle (a Ctrl-C reaches the whole
process group); this process ends when the pool says so.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
from multiprocessing.connection import Connection

from ... import logs
from ...job.errors import BootError, EmbeddedError
from . import wire

log = logging.getLogger("embedded.pool")


class Link:
    """The child's end of the pipe: ``send`` from any thread; what cannot be pickled is replaced by
    what can (a job's answer always arrives); a pool that went away ends the process."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an event or error a node made that does not pickle
            data = _stand_in(message, exc)
            if data is None:
                return
        with self._lock:
            try:
                self.conn.send_bytes(data)
            except OSError:  # the pool's process is gone
                os._exit(0)


def _stand_in(message: object, exc: Exception) -> bytes | None:
    """What is sent for a ``message`` that does not pickle: an error that says why for a job's end or
    a preflight (its caller is always answered), nothing for an event."""
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(message, wire.Done):
        error = message.error if message.error is not None else exc
        return pickle.dumps(wire.Done(message.job_id, error=EmbeddedError(
            f"The job's end could not be sent from its device's process ({what}): {type(error).__name__}: {error}")))
    if isinstance(message, wire.Checked):
        return pickle.dumps(wire.Checked(message.ref, error=EmbeddedError(
            f"The preflight could not be sent from its device's process ({what})")))
    log.warning("pool child: a %s could not be sent to the pool (%s); dropped", type(message).__name__, exc)
    return None


def preload() -> None:
    """Import what every device's process imports before it boots (the fork server calls it once)."""
    from ..comfy import ComfyRunner  # noqa: F401


def main(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.set_inheritable(fd, False)  # a process a node starts must not keep the pool's pipe open
    conn = Connection(fd)
    link = Link(conn)
    try:
        boot = conn.recv()
    except (EOFError, OSError):
        os._exit(0)
    config = boot.config
    logs.setup(config.log_level, prefix=f"[{boot.label}] " if boot.label else "")
    from ..comfy import ComfyRunner  # after the pin: ComfyUI (and torch) load here

    runner = ComfyRunner(config)
    try:
        runner.start()
    except BaseException as exc:  # noqa: BLE001 - BootError, or what a broken install raises
        link.send(wire.BootFailed(exc if isinstance(exc, BootError) else BootError(f"{type(exc).__name__}: {exc}")))
        _leave(1)
    link.send(wire.Booted(runner.booted))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the pool's process died
            break
        if isinstance(message, wire.Run):
            _run(runner, link, message.job)
        elif isinstance(message, wire.Interrupt):
            runner.interrupt(message.job_id, message.reason)
        elif isinstance(message, wire.Check):
            threading.Thread(target=_check, args=(runner, link, message), name="pool-check", daemon=True).start()
        elif isinstance(message, wire.Close):
            break
    runner.close()
    _leave(0)


def _run(runner, link: Link, job) -> None:
    job_id = job.job_id

    def answered(future) -> None:
        error = future.exception()
        if error is not None and not isinstance(error, EmbeddedError):  # a class the pool may not know
            error = EmbeddedError(f"{type(error).__name__}: {error}")
        link.send(wire.Done(job_id, error=error) if error is not None else wire.Done(job_id, result=future.result()))

    try:
        future = runner.submit(job, on_event=lambda ev: link.send(wire.JobEvent(job_id, ev)))
    except BaseException as exc:  # noqa: BLE001 - refused (WorkerStuck): the pool is told
        link.send(wire.Done(job_id, error=exc))
        return
    future.add_done_callback(answered)


def _check(runner, link: Link, message: wire.Check) -> None:
    try:
        link.send(wire.Checked(message.ref, preflight=runner.check(message.job)))
    except BaseException as exc:  # noqa: BLE001 - the caller gets it
        link.send(wire.Checked(message.ref, error=exc))


def _leave(code: int) -> None:
    """Exit now: ComfyUI's threads and atexit hooks have nothing to save, and a node may still hold one."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main(int(sys.argv[1]))
