"""A test-only pack that uses ComfyUI's server the way popular packs do (their code is not copied):
at import it reads ``PromptServer.instance.prompt_queue`` (as VideoHelperSuite), ``supports`` (as
Custom-Scripts), registers stacked routes and a static route on ``app`` (as KJNodes), and adds
on-prompt handlers (as the wildcard and global-seed handlers of Impact, Inspire and Easy-Use):
one rewrites ``__colour__`` in the prompt, one raises. At run time ``EmbeddedServerProbe`` reads
``client_id``, ``last_node_id``, ``number`` and the running job in ``prompt_queue.currently_running``,
and sends a message of its own and a progress text; ``EmbeddedUiText`` returns a UI ``text`` of
each shape nodes return (a string, a list of strings, a list of dicts)."""

from pathlib import Path

from aiohttp import web

from server import PromptServer

import nodes

_queue_at_import = PromptServer.instance.prompt_queue  # VHS keeps this object
#: a built-in class looked up by name while the pack imports (a class of comfy_extras)
_BUILTIN_AT_IMPORT = nodes.NODE_CLASS_MAPPINGS.get("ImageCompositeMasked") is not None
assert _queue_at_import is not None, "PromptServer.instance.prompt_queue exists when packs import"
assert "custom_nodes_from_web" in PromptServer.instance.supports

routes = PromptServer.instance.routes


@routes.get("/embedded_probe/a")
@routes.get("/embedded_probe/b")
async def _probe_route(request):
    return web.json_response({"ok": True})


if not PromptServer.instance.app.router.frozen:
    PromptServer.instance.app.add_routes([web.static("/embedded_probe_static", str(Path(__file__).parent))])

#: what the on-prompt handlers saw (a route of the server mode would be needed to read it there:
#: the tests read the effect, the rewritten prompt, instead)
WILDCARD = "__colour__"


def _rewrite_wildcards(json_data):
    for node in json_data.get("prompt", {}).values():
        for name, value in list(node.get("inputs", {}).items()):
            if isinstance(value, str) and WILDCARD in value:
                node["inputs"][name] = value.replace(WILDCARD, "teal")
    return json_data


def _raises(json_data):
    if any(isinstance(n, dict) and n.get("class_type") == "EmbeddedServerProbe" for n in json_data["prompt"].values()):
        raise RuntimeError("an on-prompt handler that fails (ComfyUI logs it and goes on)")
    return json_data


PromptServer.instance.add_on_prompt_handler(_raises)
PromptServer.instance.add_on_prompt_handler(_rewrite_wildcards)


class EmbeddedServerProbe:
    """Reports what a node sees of ComfyUI's server while it runs, as a UI text (JSON)."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"label": ("STRING", {"default": ""})},
                "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # runs every time

    def run(self, label, unique_id=None, prompt=None):
        server = PromptServer.instance
        queue = server.prompt_queue
        running = list(queue.currently_running.values())
        seen = {"label": label, "client_id_set": server.client_id is not None,
                "last_node_id": server.last_node_id, "unique_id": unique_id,
                "same_queue_as_at_import": queue is _queue_at_import, "running": len(running),
                "running_prompt_is_this_one": bool(running) and set(running[0][2]) == set(prompt or ()),
                "number_is_int": isinstance(server.number, int), "builtin_seen_at_import": _BUILTIN_AT_IMPORT}
        if running and label == "queue item":  # its shape, as packs read it (item 3: extra data, item 5: secrets)
            item = running[0]
            seen["item"] = {"length": len(item), "extra_data": sorted(item[3]), "sensitive": sorted(item[5]),
                            "create_time_ms": isinstance(item[3].get("create_time"), int)
                            and item[3]["create_time"] > 10 ** 12}
        server.send_sync("embedded-probe-feedback", {"node_id": unique_id, "value": label}, server.client_id)
        server.send_sync("embedded-probe-broadcast", {"node_id": unique_id})
        server.send_progress_text(f"probe {label}", unique_id)
        import json
        return {"ui": {"text": [json.dumps(seen, sort_keys=True)]}}


class EmbeddedUiText:
    """A UI ``text`` in the shape asked for."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"shape": (["string", "strings", "dicts"],), "text": ("STRING", {"default": "hello"})}}

    def run(self, shape, text):
        value = {"string": text, "strings": [text, text.upper()], "dicts": [{"text": text}]}[shape]
        return {"ui": {"text": value}}


class EmbeddedLooksUpBuiltins:
    """Looks up built-in node classes by name while it runs, as packs do (``nodes.NODE_CLASS_MAPPINGS[...]``,
    ``.get``, ``in``): classes of ``comfy_extras`` the workflow does not name; raises if one is missing."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        import nodes
        found = ["Morphology" in nodes.NODE_CLASS_MAPPINGS,
                 nodes.NODE_CLASS_MAPPINGS.get("SplitImageWithAlpha") is not None,
                 nodes.NODE_CLASS_MAPPINGS["ImageFlip"] is not None]
        if not all(found):
            raise RuntimeError(f"built-in classes not found by name: {found}")
        return (image,)


class EmbeddedExpandsToBuiltin:
    """Expands (GraphBuilder) into a class of ``comfy_extras`` the workflow does not name."""

    CATEGORY = "embedded_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        from comfy_execution.graph_utils import GraphBuilder
        graph = GraphBuilder()
        blur = graph.node("ImageBlur", image=image, blur_radius=1, sigma=1.0)
        return {"result": (blur.out(0),), "expand": graph.finalize()}


NODE_CLASS_MAPPINGS = {"EmbeddedServerProbe": EmbeddedServerProbe, "EmbeddedUiText": EmbeddedUiText,
                       "EmbeddedLooksUpBuiltins": EmbeddedLooksUpBuiltins,
                       "EmbeddedExpandsToBuiltin": EmbeddedExpandsToBuiltin}
