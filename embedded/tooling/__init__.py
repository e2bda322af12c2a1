"""Tooling, apart from the runtime: what builds and checks an installation.

Owns: ``vendor`` (the ComfyUI pin: fetch into ``vendor/ComfyUI``, verify against the manifest,
another ref for an image), ``modelgen`` (model files with random weights, built with ComfyUI's own
model classes, for tests and benchmarks), and ``selftest/`` (our contract with a ComfyUI tree and
ComfyUI's own execution suite run against our executor).

May import anything of the package and ComfyUI (``modelgen`` and the contract checks need its
classes); nothing of the runtime imports it (``python -m embedded selftest`` starts it as a
process of its own).
"""
