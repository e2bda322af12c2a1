"""Loaded into ComfyUI's own server process (server mode only), as a custom-node pack with no nodes.

Owns nothing of its own: it installs ``embedded/backends/comfy/ui_strings.py`` (a node's UI value that is one
string stays one item), loaded by its path, so that both backends read the same UI outputs. Must not
import ``embedded`` (it runs inside ComfyUI's process).
"""

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[3] / "comfy" / "ui_strings.py"
_spec = importlib.util.spec_from_file_location("embedded_server_ui_strings", _path)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_module.install()

NODE_CLASS_MAPPINGS: dict = {}
