"""Tooling, not the runtime: ``python -m embedded selftest`` checks our executor's contract with a
ComfyUI tree (the pinned one, or another one an image is built on: ``COMFYUI_REF``).

Owns: ``suite`` (ComfyUI's own execution suite, ``tests/execution/`` of the tree, copied to a
temporary folder and run unchanged by pytest through ``suite_adapter``, a pytest plugin that gives
their fixtures and client our public API, in either mode) and ``main`` (the command: the contract
checks of ``comfy.contract``, run in a process of their own, then the suite; exit status 1 and a
report of what broke when anything did).

May import the public API, ``config`` and, in a subprocess, ``comfy.contract``; nothing of the
runtime imports this package.
"""
