"""The backends: what runs a checked job on ComfyUI, and what only they share.

Owns: ``interface`` (``Backend``, what ``Executor`` needs of a backend, and ``create``, the choice
by ``EXECUTION_MODE``), ``jobcontrol`` (the queue, the running job, cancels, timeouts and the stop
grace period), ``launch`` (ComfyUI's arguments and model-paths file), ``translate`` (ComfyUI's
error dictionaries to our exceptions), ``packs`` (custom-node packs that failed to import),
``kept`` (files of cached output nodes), ``preflight`` (the report of what a workflow needs), and
the two implementations: ``comfy/`` (in-process, the only part of our process that imports
ComfyUI) and ``server/`` (ComfyUI's ``main.py`` as a subprocess).

May import the job model, staging, ``embedded.config`` and ``embedded.logs``. The front doors
import this package's face only (the names below); only ``interface.create`` reaches an
implementation, and the two implementations never import each other.
"""

from .interface import Backend, create
from .launch import nvidia_devices
from .preflight import Preflight, with_fetches

__all__ = ["Backend", "create", "Preflight", "with_fetches", "nvidia_devices"]
