"""Tooling, not the runtime: ``python -m embedded selftest`` checks our executor's contract with a
ComfyUI tree (the pinned one, or another one an image is built on: ``COMFYUI_REF``).

Owns: ``contract`` (the internals of ComfyUI we read or wrap, checked in a booted process),
``suite`` (ComfyUI's own execution suite, ``tests/execution/`` of the tree, copied to a
temporary folder and run unchanged by pytest through ``suite_adapter``, a pytest plugin that gives
their fixtures and client our public API, in either mode) and ``main`` (the command: the contract
checks of ``contract``, run in a process of their own, then the suite; exit status 1 and a
report of what broke when anything did).

May import the public API, ``config`` and ComfyUI (``contract``, in a process of its own booted
from the tree); nothing of the runtime imports this package.
"""
