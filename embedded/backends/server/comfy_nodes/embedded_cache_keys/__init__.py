"""Loaded into ComfyUI's own server process (server mode only), as a custom-node pack with no nodes.

Owns one route, ``GET /embedded/cache_keys/{prompt_id}``: which of the prompt's nodes have their
result in ComfyUI's output cache, each with a small id of the key it is cached under (``nodes``:
node id -> id), and the ids of every such key the cache still holds (``live``). The server
backend keeps the files of an output node under that id (``embedded.backends.kept``): ComfyUI serves an
identical job's output node from its cache and lists the files it wrote back then, which the
backend removed from the output folder after that job. Ids are this process's own (a restarted
server starts again from 1: the backend forgets what it kept).

``PromptExecutor.execute_async`` is wrapped in this process only, to see the executor's caches
(ComfyUI's files are not edited): the keys are read when a prompt ends, and while it runs for a
request about the running prompt (a streamed output of a cached node). Must not import
``embedded``.
"""

import itertools
import threading

from aiohttp import web

import execution
import server

#: cache key -> its id; only keys of nodes of recent prompts, dropped when the cache drops them
_ids = {}
_next_id = itertools.count(1)
#: prompt id -> its answer, for the last few prompts (the backend reads each once)
_ended = {}
_KEEP = 16
#: (executor, prompt, prompt id) of the prompt that runs now
_running = None
#: the route (the server's loop) and the prompt's end (ComfyUI's worker thread) both read keys
_lock = threading.Lock()


def _keys(executor, prompt):
    with _lock:
        return _keys_locked(executor, prompt)


def _keys_locked(executor, prompt):
    cache = executor.caches.outputs
    if not getattr(cache, "initialized", False):  # --cache-none: nothing is cached
        return {"nodes": {}, "live": []}
    held = cache.cache
    for key in [k for k in _ids if k not in held]:
        del _ids[key]
    nodes = {}
    for node_id in prompt:
        key = cache.cache_key_set.get_data_key(node_id)
        if key is not None and key in held:
            if key not in _ids:
                _ids[key] = next(_next_id)
            nodes[node_id] = _ids[key]
    return {"nodes": nodes, "live": sorted(_ids.values())}


_comfy_execute_async = execution.PromptExecutor.execute_async


async def _execute_async_seen(self, prompt, prompt_id, extra_data={}, execute_outputs=[]):
    global _running
    _running = (self, prompt, prompt_id)
    try:
        return await _comfy_execute_async(self, prompt, prompt_id, extra_data, execute_outputs)
    finally:
        _running = None
        _ended[prompt_id] = _keys(self, prompt)
        while len(_ended) > _KEEP:
            _ended.pop(next(iter(_ended)))


if getattr(execution.PromptExecutor.execute_async, "__name__", "") != _execute_async_seen.__name__:
    execution.PromptExecutor.execute_async = _execute_async_seen


@server.PromptServer.instance.routes.get("/embedded/cache_keys/{prompt_id}")
async def _cache_keys(request):
    prompt_id = request.match_info["prompt_id"]
    if prompt_id in _ended:
        return web.json_response(_ended.pop(prompt_id))
    running = _running
    if running is not None and running[2] == prompt_id:
        return web.json_response(_keys(running[0], running[1]))
    return web.json_response({"nodes": {}, "live": None})


NODE_CLASS_MAPPINGS: dict = {}
