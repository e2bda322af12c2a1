"""Loaded into ComfyUI's own server process (server mode only), as a custom-node pack with no nodes.

Owns one adaptation: an identical job runs its output nodes again, as in the embedded mode, without
touching the user's workflow (which ComfyUI writes into saved files when metadata is on).

ComfyUI caches every node's result by a key made of its class, its ``IS_CHANGED`` value and its
inputs; a cached output node writes no file, and server mode empties the output folder after each
job, so an identical second job would return nothing. ComfyUI's HTTP API cannot drop one node from
its cache, so here the ``IS_CHANGED`` value of output nodes (``OUTPUT_NODE = True``) is paired with
the prompt id: their key changes with every prompt, while every other node keeps ComfyUI's own key
(model loads and sampling stay cached). ComfyUI's files are not edited; ``IsChangedCache.get`` is
wrapped in this process only. Must not import ``embedded`` (it runs inside ComfyUI's process).
"""

import execution
import nodes

_comfy_get = execution.IsChangedCache.get


async def _get_with_prompt_for_output_nodes(self, node_id):
    value = await _comfy_get(self, node_id)
    class_def = nodes.NODE_CLASS_MAPPINGS.get(self.dynprompt.get_node(node_id)["class_type"])
    if class_def is not None and getattr(class_def, "OUTPUT_NODE", False) is True:
        return (value, self.prompt_id)
    return value


if getattr(execution.IsChangedCache.get, "__name__", "") != _get_with_prompt_for_output_nodes.__name__:
    execution.IsChangedCache.get = _get_with_prompt_for_output_nodes

NODE_CLASS_MAPPINGS: dict = {}
