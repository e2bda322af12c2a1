"""The fork server (``python -m embedded.backends.pool.zygote FD``; ``forkserver.ForkServer`` starts
it): imports torch and the in-process backend's modules once, then forks a device's process for each
request of the pool (its environment and its end of the pipe come with the request), reaps them
and reports each one's exit status.

One thread only, and no CUDA initialised (``import torch`` does neither): what is forked is sound.
A forked process drops the server's ends and becomes ``child.main``. SIGINT is the pool's to handle;
the server leaves when the pool says so or its pipe closes (the forked processes end with theirs).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import sys
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle


def main(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool's to handle
    conn = Connection(fd)
    import torch  # noqa: F401  (the import every device's process shares; no CUDA is initialised)

    from . import child

    child.preload()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(conn.fileno(), selectors.EVENT_READ, "pool")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                _reap(conn)
                continue
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the pool's process died: the forked ones end with their pipes
                os._exit(0)
            if message[0] == "close":
                _reap(conn)
                os._exit(0)
            _, ref, env = message
            child_fd = recv_handle(conn)
            pid = os.fork()
            if pid == 0:
                _become(child_fd, env, conn, selector, (wake_r, wake_w))
            os.close(child_fd)
            try:
                conn.send(("forked", ref, pid))
            except OSError:
                os._exit(0)


def _become(fd: int, env: dict[str, str], conn: Connection, selector, wake: tuple[int, int]) -> None:
    """In the forked process: drop the server's ends, take ``env``, and be a device's process."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        selector.close()
        conn.close()
        for end in wake:
            os.close(end)
        os.environ.clear()
        os.environ.update(env)
        from .child import main as child_main

        child_main(fd)
    finally:
        os._exit(1)


def _reap(conn: Connection) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        try:
            conn.send(("exited", pid, os.waitstatus_to_exitcode(status)))
        except OSError:
            os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]))
