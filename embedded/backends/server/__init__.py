"""The legacy server backend: ComfyUI's ``main.py`` as a subprocess, driven over HTTP and a
websocket, as worker-comfyui does. A fallback for users, and the reference for the parity tests.

Owns ``ServerRunner`` (``runner``), the server process (``process``) and the packs loaded into
ComfyUI's server process only (``comfy_nodes/``, which import ComfyUI there).

May import the job model, staging, ``config``, ``logs`` and the shared part of ``embedded.backends``;
must not import ComfyUI or the embedded backend (``embedded.backends.comfy``): the two are siblings.
"""

from .runner import ServerRunner

__all__ = ["ServerRunner"]
