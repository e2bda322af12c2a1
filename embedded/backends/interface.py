"""The backend interface and the choice between the two implementations.

Owns: ``Backend``, what ``Executor`` needs of a backend (the embedded ``comfy.ComfyRunner`` and the
legacy ``server.ServerRunner`` both provide it: same job in, same ``Result`` out, same events and
errors), and ``create`` which picks one by ``EXECUTION_MODE``.
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable, Protocol

from ..config import Config
from ..job.events import EventCallback
from .preflight import Preflight
from ..job.types import BootInfo, Job, Result


class Backend(Protocol):
    booted: BootInfo | None
    #: a stopped job's node still holds the backend (see ``jobcontrol``)
    stuck: bool

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
    """An unstarted backend for ``config.execution_mode``."""
    if config.execution_mode == "server":
        from .server import ServerRunner
        return ServerRunner(config)
    from .comfy import ComfyRunner
    return ComfyRunner(config)
