"""The legacy server backend: ComfyUI's ``main.py`` as a subprocess, driven over HTTP and a
websocket, as worker-comfyui does. A fallback for users, and the reference for the parity tests.

Must not import ComfyUI or the embedded backend (``embedded.backends.comfy``): the two are siblings.
"""

from .runner import ServerRunner

__all__ = ["ServerRunner"]
