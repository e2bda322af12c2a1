"""The pool's end of the fork server (``zygote``): one process imports torch once, then forks each
device's process from there.

Owns ``ForkServer`` (starts the server, asks it for a device's process, learns when each one exits
and with what status) and ``Forked`` (a forked process as the pool sees it: pid, kill, wait, as
``subprocess.Popen``).

Why: importing torch is most of a device process's start, and several processes importing it at
once slow each other down (on this project's 2-core test machine two imports at once take twice as
long as one, although pure computation runs side by side); forked after the import, the processes
boot ComfyUI side by side in the time one takes. Forking is safe there: ``import torch`` starts no
thread and initialises no CUDA (CUDA reads ``CUDA_VISIBLE_DEVICES`` when it initialises, which
ComfyUI's core does in each forked process, after its pin), and the server runs one thread. A
server that cannot start leaves the pool to start processes the plain way.

Must not import torch or ComfyUI: only the server does, in its own process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Pipe
from multiprocessing.reduction import send_handle
from pathlib import Path
from typing import Mapping

log = logging.getLogger("embedded.pool")

#: how long the pool waits for a forked process's pid (the server imports torch first)
FORK_TIMEOUT_S = 300.0


class Forked:
    """A device's process forked by the server (not a child of the pool's process): its exit
    status comes from the server, which reaps it."""

    def __init__(self, pid: int, server: "ForkServer"):
        self.pid = pid
        self._server = server

    def kill(self) -> None:
        if self.poll() is not None:
            return  # reaped already: the pid may be another process's now
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def poll(self) -> int | None:
        return self._server.exit_code(self.pid, timeout=0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._server.exit_code(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
        return code


class ForkServer:
    """The pool's end of the fork server."""

    def __init__(self, env: Mapping[str, str]):
        ours, theirs = Pipe(duplex=True)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "embedded.backends.pool.zygote",
                                          str(theirs.fileno())], pass_fds=(theirs.fileno(),), env=dict(env),
                                         stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._conn = ours
        self._send_lock = threading.Lock()
        self._state = threading.Condition()
        self._refs = itertools.count()
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._codes: dict[int, int] = {}
        self.alive = True
        threading.Thread(target=self._read, name="pool-forkserver", daemon=True).start()

    def fork(self, env: Mapping[str, str], fd: int) -> Forked:
        """A new process with ``env`` that runs ``child.main`` on the pipe end ``fd`` (passed to the
        server, then closed here by the caller). Raises ``OSError`` when the server is gone."""
        ref = next(self._refs)
        answer: concurrent.futures.Future = concurrent.futures.Future()
        with self._state:
            if not self.alive:
                raise OSError("the fork server is gone")
            self._pending[ref] = answer
        try:
            with self._send_lock:
                self._conn.send(("fork", ref, dict(env)))
                send_handle(self._conn, fd, self.proc.pid)
            return Forked(answer.result(timeout=FORK_TIMEOUT_S), self)
        except (OSError, ValueError, concurrent.futures.TimeoutError) as exc:
            with self._state:
                self._pending.pop(ref, None)
            self.proc.kill()  # it may still fork late, on a pipe given to another process then: no more
            raise OSError(f"the fork server did not fork: {exc or type(exc).__name__}") from None

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """``pid``'s exit status once it has exited (as ``Popen.returncode``), waiting up to
        ``timeout``; None if not by then. With the server gone, a process that is no more is
        reported killed (its status is lost)."""
        with self._state:
            self._state.wait_for(lambda: pid in self._codes or not self.alive, timeout)
            if pid in self._codes:
                return self._codes[pid]
            if self.alive:
                return None
        return -signal.SIGKILL if _no_more(pid, timeout) else None

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            with self._send_lock:
                self._conn.send(("close",))
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self._conn.close()

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "forked":
                with self._state:
                    answer = self._pending.pop(message[1], None)
                if answer is not None:
                    answer.set_result(message[2])
            elif message[0] == "exited":
                with self._state:
                    self._codes[message[1]] = message[2]
                    self._state.notify_all()
        with self._state:
            self.alive = False
            pending, self._pending = list(self._pending.values()), {}
            self._state.notify_all()
        for answer in pending:
            answer.set_exception(OSError("the fork server exited"))
        if self.proc.poll() is None:
            self.proc.wait()


def _no_more(pid: int, timeout: float | None) -> bool:
    """Whether ``pid`` is gone or a zombie (its parent, the server, died), waiting up to ``timeout``."""
    deadline = None if timeout is None else timeout + time.monotonic()
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
