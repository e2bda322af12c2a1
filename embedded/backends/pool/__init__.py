"""Every device of a machine: one in-process executor per device, each in a child process of its own.

Owns: ``devices`` (what ``COMFY_DEVICES`` names, resolved to devices and the environment that pins a
child to one before torch loads), ``wire`` (the messages between the pool and a child), ``child``
(a child's main: a ``comfy.ComfyRunner`` driven over a pipe), ``forkserver`` and ``zygote`` (one
process imports torch once and forks the children from there: they boot side by side) and ``pool`` (``DevicePool``, the
``Backend`` that queues jobs, gives each to an idle child, relays its events and answer, and
replaces a child that died or holds a node that never stops).

ComfyUI's state is process-global (see ``comfy``), so one process drives one device. The pool's own
process never imports ComfyUI (nor torch): only ``child`` and ``zygote`` do, in their processes. May import the job model,
``config``, ``logs``, ``jobcontrol`` (its ``Running``, which tracks a job's node), ``translate`` and,
in the child only, ``comfy``; must not import the server backend or a front door.
"""

from .pool import DevicePool

__all__ = ["DevicePool"]
