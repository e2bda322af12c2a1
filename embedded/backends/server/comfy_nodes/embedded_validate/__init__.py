"""Loaded into ComfyUI's own server process (server mode only), as a custom-node pack with no nodes.

Owns one route, ``POST /embedded/validate`` with ``{"prompt": {...}, "partial_execution_targets"?: [...]}``: ComfyUI's own
``validate_prompt`` on the workflow (after the custom nodes' on-prompt handlers, as ``/prompt``)
without queueing it (``POST /prompt`` would run it), answered
as ``{"ok", "error", "node_errors"}``, the parts of ``/prompt``'s answer a preflight reads. Routes
of custom-node packs are the server's own extension point. Must not import ``embedded``.
"""

import uuid

from aiohttp import web

import execution
import server


@server.PromptServer.instance.routes.post("/embedded/validate")
async def _validate(request):
    body = server.PromptServer.instance.trigger_on_prompt(await request.json())  # as POST /prompt does
    ok, error, _, node_errors = await execution.validate_prompt(str(uuid.uuid4()), body.get("prompt") or {},
                                                                 body.get("partial_execution_targets"))
    return web.json_response({"ok": ok, "error": error, "node_errors": node_errors})
