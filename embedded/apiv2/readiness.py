"""Whether the server can run jobs now, and why not: what ``/health`` says and what a submission
meets.

Owns ``Readiness``: the boot (started once in a thread: the event loop never waits for it; jobs
submitted meanwhile are accepted and wait for it), its failure (remembered, never retried per
job: submissions then get 503 ``boot_failed`` at once and health says why), a stuck runner (a
stopped job's node that never returned holds ComfyUI's thread: 503 ``stuck``, and the process
retires, see ``command``) and shutting down (503 ``shutting_down``). ``status`` is ``healthy``
only when a job can run now. Must not import the executor's modules, the backends or ComfyUI:
the boot is a callable it is given.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Callable

from .wire import ApiError

log = logging.getLogger("embedded.apiv2")

#: the exit status of a server that retired because its runner got stuck (sysexits' EX_TEMPFAIL:
#: an orchestrator should start a new one)
EXIT_STUCK = 75


class Readiness:
    def __init__(self, runner_stuck: Callable[[], bool] = lambda: False) -> None:
        self._booted: asyncio.Future | None = None
        self.boot_error: str | None = None
        #: whether the executor's runner is held by a node that outlived its stop (``Executor.stuck``)
        self._runner_stuck = runner_stuck
        self.stuck = False
        self.shutting_down = False
        #: set when the runner got stuck: the process retires once its jobs are answered
        self.retire = asyncio.Event()

    # --- the boot --------------------------------------------------------------------------------
    def start_boot(self, boot: Callable[[], object]) -> asyncio.Future:
        """Run ``boot`` (blocking) in a daemon thread of its own (a boot that hangs never holds the
        process's exit, as a thread of the loop's executor would); returns the future of its end."""
        loop = asyncio.get_running_loop()
        self._booted = loop.create_future()
        running: asyncio.Future = loop.create_future()
        running.add_done_callback(self._boot_done)

        def settle(error: BaseException | None) -> None:
            if not running.done():
                running.set_exception(error) if error is not None else running.set_result(None)

        def main() -> None:
            error = None
            try:
                boot()
            except BaseException as exc:  # noqa: BLE001 - said by health, and to the waiting jobs
                error = exc
            try:
                loop.call_soon_threadsafe(settle, error)
            except RuntimeError:  # the server has stopped meanwhile
                pass

        threading.Thread(target=main, name="embedded-boot", daemon=True).start()
        return running

    def _boot_done(self, running: asyncio.Future) -> None:
        error = running.exception() if not running.cancelled() else asyncio.CancelledError()
        if error is not None:
            self.boot_error = str(error) or type(error).__name__
            log.error("embedded.apiv2: ComfyUI failed to boot: %s; this server takes no job (replace it)",
                      self.boot_error)
        if self._booted is not None and not self._booted.done():
            self._booted.set_result(error is None)

    @property
    def booted(self) -> bool:
        return self._booted is not None and self._booted.done() and self._booted.result()

    async def wait_booted(self) -> None:
        """Return once ComfyUI has booted; raise ``BootFailed`` when it failed."""
        if self._booted is None:
            raise BootFailed("the server was not started")
        if not await asyncio.shield(self._booted):
            raise BootFailed(self.boot_error or "the boot failed")

    # --- the rest --------------------------------------------------------------------------------
    def set_stuck(self) -> None:
        if not self.stuck:
            self.stuck = True
            log.error("embedded.apiv2: a stopped job's node still holds ComfyUI (it never checks the interrupt "
                      "flag): this server takes no new job and exits (status %d) once its jobs are answered",
                      EXIT_STUCK)
            self.retire.set()

    def notice_stuck(self) -> None:
        """Retire once the runner is stuck (asked after each job, and by every status)."""
        if not self.stuck and self._runner_stuck():
            self.set_stuck()

    def status(self) -> str:
        self.notice_stuck()
        if self.shutting_down:
            return "shutting_down"
        if self.stuck:
            return "stuck"
        if self.boot_error is not None:
            return "boot_failed"
        if not self.booted:
            return "booting"
        return "healthy"

    def check_accepting(self) -> None:
        """Raise the 503 a submission gets when no job can be accepted (a boot under way accepts)."""
        status = self.status()
        if status == "shutting_down":
            raise ApiError(503, "shutting_down", "The server is shutting down and takes no new job",
                           headers={"Retry-After": "5"})
        if status == "stuck":
            raise ApiError(503, "stuck", "A stopped job's node still holds this server's ComfyUI: it takes no new "
                                         "job and is being replaced; submit to another one")
        if status == "boot_failed":
            raise ApiError(503, "boot_failed", f"ComfyUI failed to boot on this server: {self.boot_error}")


class BootFailed(Exception):
    """ComfyUI failed to boot: no job can run on this server."""
