"""The progress hook installed with ``comfy.utils.set_progress_bar_global_hook``.

Owns: what happens on every ``comfy.utils.ProgressBar`` update (sampler steps, custom nodes):
ComfyUI's interrupt check (so ``interrupt()`` and timeouts stop long nodes), ComfyUI's per-node
progress state, and the ``progress`` message to the server stand-in. It mirrors ``main.py``'s
``hijack_progress`` for the pinned tree; a sampler's preview goes with the progress state, whose
handler sends it to the server stand-in for a job that asked for previews.
"""

from __future__ import annotations

import comfy.model_management
import comfy.utils
from comfy_execution.progress import get_progress_state
from comfy_execution.utils import get_executing_context

from .shim import ServerShim


def install(shim: ServerShim) -> None:
    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        context = get_executing_context()
        if prompt_id is None and context is not None:
            prompt_id = context.prompt_id
        if node_id is None and context is not None:
            node_id = context.node_id
        comfy.model_management.throw_exception_if_processing_interrupted()
        if prompt_id is None:
            prompt_id = shim.last_prompt_id
        if node_id is None:
            node_id = shim.last_node_id
        get_progress_state().update_progress(node_id, value, total, preview_image)
        shim.send_sync("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id},
                       shim.client_id)

    comfy.utils.set_progress_bar_global_hook(hook)
