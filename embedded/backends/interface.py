"""The backend interface and the choice between the two implementations.

Owns: ``Backend``, what ``Executor`` needs of a backend (the embedded ``comfy.ComfyRunner`` and the
legacy ``server.ServerRunner`` both provide it: same job in, same ``Result`` out, same events and
errors), and ``create`` which picks one by ``EXECUTION_MODE``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Callable, Protocol

from ..config import Config
from ..job.errors import BootError
from ..job.events import EventCallback
from .preflight import Preflight
from ..job.types import BootInfo, Job, Result


class Backend(Protocol):
    booted: BootInfo | None
    #: a stopped job's node still holds the backend (see ``jobcontrol``)
    stuck: bool
    #: how many jobs it runs at once (one per device)
    capacity: int
    #: how many of those can run now (devices booted, not being replaced)
    ready: int

    def prepare(self) -> "Backend":
        """The part of ``start`` that must run on the caller's thread (the embedded backend parses
        ComfyUI's arguments from a swapped ``sys.argv``, which the runpod SDK reads too): call it
        before ``start`` runs on another thread. ``start`` calls it too."""
        ...

    def start(self) -> "Backend": ...

    def submit(self, job: Job, on_event: EventCallback | None = None) -> concurrent.futures.Future: ...

    def run(self, job: Job, on_event: EventCallback | None = None) -> Result: ...

    async def run_async(self, job: Job, on_event: EventCallback | None = None,
                        registered: Callable[[], None] | None = None) -> Result: ...

    def interrupt(self, job_id: str | None = None) -> bool: ...

    def check(self, job: Job) -> Preflight: ...

    def close(self) -> None: ...


def create(config: Config) -> Backend:
    """An unstarted backend for ``config.execution_mode`` and ``config.devices``. Raises ``BootError``
    for devices that cannot be had."""
    if config.devices is not None:
        from .pool.devices import resolve
        try:
            devices = resolve(config.devices)
        except ValueError as exc:
            raise BootError(str(exc)) from None
        if config.execution_mode == "server":
            if len(devices) > 1:
                raise BootError(f"COMFY_DEVICES={','.join(config.devices)}: the legacy server mode "
                                f"(EXECUTION_MODE=server) runs one ComfyUI server on one device; use the embedded "
                                f"mode for several devices, or name one")
            if devices[0].kind == "cuda" and config.devices != ("all",):  # main.py pins it before torch loads
                from .pool.devices import child_env
                pinned = child_env(devices[0], os.environ)["CUDA_VISIBLE_DEVICES"]
                config = dataclasses.replace(config, extra_args=(*config.extra_args, "--cuda-device", pinned))
        elif len(devices) > 1 or (devices[0].kind == "cuda" and config.devices != ("all",)):
            from .pool import DevicePool
            return DevicePool(config, devices)
        if devices[0].kind == "cpu":
            config = dataclasses.replace(config, force_cpu=True)
    if config.execution_mode == "server":
        from .server import ServerRunner
        return ServerRunner(config)
    from .comfy import ComfyRunner
    return ComfyRunner(config)
