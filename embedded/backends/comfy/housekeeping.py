"""Between jobs, what ComfyUI's own ``prompt_worker`` (main.py) does between prompts.

Owns: the cache type chosen from the runner's arguments (``--cache-lru N``, ``--cache-ram [GB]``,
``--cache-none``, else classic), the per-job ``unload_models`` / ``free_memory`` requests (as
ComfyUI's ``POST /free``: unload every model; also drop every cached result), and the throttled
clean-up after jobs: ``gc.collect()``, ``soft_empty_cache()`` and the restore of functions custom
nodes may have hooked, at most every 10 s, and when that is not due yet, as soon as the runner has
been idle long enough (``prompt_worker`` waits on its queue with that timeout); and, once idle
after a job, the imports the boot deferred (``deferred.run_deferred``).

Runs on the runner thread only (its event loop schedules the idle clean-up).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger("embedded.backends.comfy")

#: seconds between two collections, as prompt_worker's ``gc_collect_interval``
GC_INTERVAL = 10.0
#: seconds of idleness after a job before the imports the boot deferred are run
DEFERRED_AFTER_S = 2.0


def runner_cache_settings(cli_args: Any, extra_args: tuple[str, ...], cache_types: Any) -> tuple[Any, dict[str, float]]:
    """The cache of one runner's ``PromptExecutor``, from the cache flags of its own ``COMFY_ARGS``
    (``--cache-lru N``, ``--cache-ram [GB]``, ``--cache-none``, ``--cache-classic``), read by
    ComfyUI's own parser: the rest of ComfyUI's arguments are parsed once per process, but
    executors with different cache settings can share a process (each has its own caches)."""
    try:
        parsed, _ = cli_args.parser.parse_known_args(list(extra_args))
    except SystemExit as exc:
        from ...job.errors import BootError
        raise BootError(f"ComfyUI rejected the cache flags of {list(extra_args)} (COMFY_ARGS?): exit {exc.code}") from None
    return cache_settings(parsed, cache_types)


def cache_settings(args: Any, cache_types: Any) -> tuple[Any, dict[str, float]]:
    """``(CacheType, cache_args)`` for ``PromptExecutor``, chosen from ComfyUI's parsed arguments
    exactly as ``prompt_worker`` chooses them."""
    cache_type = cache_types.CLASSIC
    if args.cache_lru > 0:
        cache_type = cache_types.LRU
    elif getattr(args, "cache_ram", 0) > 0:  # --cache-ram is newer than some trees
        cache_type = cache_types.RAM_PRESSURE
    elif args.cache_none:
        cache_type = cache_types.NONE
    return cache_type, {"lru": args.cache_lru, "ram": getattr(args, "cache_ram", 0)}


class Housekeeping:
    def __init__(self, prompt_executor: Any, loop: asyncio.AbstractEventLoop, idle: Callable[[], bool],
                 process_lock: threading.Lock):
        self.prompt_executor = prompt_executor
        self.loop = loop
        self.idle = idle  # no job of this runner is running or queued
        self.process_lock = process_lock  # held by whichever runner of the process runs a job
        self.need_gc = False
        self.last_gc = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._deferred_timer: asyncio.TimerHandle | None = None

    def after_job(self, unload_models: bool = False, free_memory: bool = False) -> None:
        import comfy.model_management

        self._run_deferred_when_idle()
        self.need_gc = True
        if unload_models or free_memory:
            comfy.model_management.unload_all_models()
            self.last_gc = 0.0
        if free_memory:
            self.prompt_executor.reset()
            self.last_gc = 0.0
        self.collect_when_due()

    def collect_when_due(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.need_gc:
            return
        waited = time.perf_counter() - self.last_gc
        if waited > GC_INTERVAL:
            self._collect()
        else:
            self._timer = self.loop.call_later(GC_INTERVAL - waited + 0.01, self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        self._timer = None
        if not self.idle() or not self.process_lock.acquire(blocking=False):
            return  # a running job collects when it ends
        try:
            self.collect_when_due()
        finally:
            self.process_lock.release()

    def _run_deferred_when_idle(self) -> None:
        """The imports the boot deferred (``deferred``), run once this runner has been idle for
        DEFERRED_AFTER_S, never during a job."""
        from . import deferred

        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        if deferred.still_deferred():
            self._deferred_timer = self.loop.call_later(DEFERRED_AFTER_S, self._on_deferred_timer)

    def _on_deferred_timer(self) -> None:
        from . import deferred

        self._deferred_timer = None
        if not self.idle() or not self.process_lock.acquire(blocking=False):
            return  # the job running now schedules it again when it ends
        try:
            deferred.run_deferred()
            log.debug("between jobs: ran the imports the boot deferred")
        except Exception:  # noqa: BLE001 - a first use would meet the same error and report it
            log.warning("between jobs: a deferred import failed", exc_info=True)
        finally:
            self.process_lock.release()

    def _collect(self) -> None:
        import comfy.model_management
        import hook_breaker_ac10a0

        gc.collect()
        comfy.model_management.soft_empty_cache()
        hook_breaker_ac10a0.restore_functions()
        self.last_gc = time.perf_counter()
        self.need_gc = False
        log.debug("between jobs: collected garbage, emptied the device cache, restored hooked functions")
