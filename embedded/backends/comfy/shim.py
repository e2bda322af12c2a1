"""Our stand-in for ``server.PromptServer.instance``: ComfyUI's messages -> the running job's sink.

Owns: the attributes and methods that ComfyUI's executor, its nodes and custom nodes use on the
server instance, as popular packs use them (rgthree, Impact, Inspire, KJNodes, Custom-Scripts,
VideoHelperSuite, Easy-Use...): ``send_sync`` (thread-safe; a node's own message reaches the
running job as a ``MessageEvent``), ``send``, ``send_json``, ``send_progress_text``, ``client_id``,
``last_node_id``, ``last_prompt_id``, ``number``, ``sockets_metadata``, ``supports``, ``loop``,
``routes`` and ``app`` (routes are collected and never served: there is no HTTP server),
``prompt_queue`` (ComfyUI's own ``PromptQueue``; its ``currently_running`` holds the running job as
ComfyUI's queue item; a prompt a node puts there is never run, and a warning says so),
``queue_updated``, ``get_queue_info``, ``add_on_prompt_handler`` and ``trigger_on_prompt`` (run by
the executor before validation, as ``POST /prompt`` does).

Imports aiohttp and ComfyUI's ``protocol`` only; ``boot.py`` installs it.
"""

from __future__ import annotations

import logging
import struct
import threading
from typing import Any, Callable

from aiohttp import web

log = logging.getLogger("embedded.backends.comfy")

#: receives (event, data) for every JSON message of the running job
Sink = Callable[[str, Any], None]


class ServerShim:
    def __init__(self, loop=None):
        self.loop = loop
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.sockets_metadata: dict[str, Any] = {}
        self.sockets: dict[str, Any] = {}
        self.routes = web.RouteTableDef()
        self.app = web.Application()
        self.on_prompt_handlers: list[Callable] = []
        self.supports = ["custom_nodes_from_web"]
        self.number = 0
        #: ComfyUI's ``PromptQueue``, made once ``execution`` is imported (``install_queue``)
        self.prompt_queue = None
        self._sink: Sink | None = None
        self._lock = threading.Lock()

    # --- our side -----------------------------------------------------------------------------
    def attach(self, sink: Sink | None) -> None:
        with self._lock:
            self._sink = sink

    def install_queue(self, prompt_queue_class) -> None:
        """ComfyUI's ``execution.PromptQueue`` on this instance (packs read it when imported)."""
        self.prompt_queue = prompt_queue_class(self)

    def running(self, item: tuple | None) -> None:
        """The job that runs now, as ComfyUI's queue item ``(number, prompt_id, prompt,
        extra_data, outputs_to_execute, sensitive)``, in ``prompt_queue.currently_running``
        (None: no job runs)."""
        queue = self.prompt_queue
        if queue is None:
            return
        with queue.mutex:
            queue.currently_running.clear()
            if item is not None:
                queue.currently_running[0] = item
                self.number += 1

    # --- ComfyUI's side -------------------------------------------------------------------------
    def send_sync(self, event, data, sid=None) -> None:
        if not isinstance(event, str):
            # Binary messages: previews (tuples/bytes) and progress text, packed as the server does.
            event, data = _unpack_binary(event, data)
            if event is None:
                return
        with self._lock:
            sink = self._sink
        if sink is not None:
            sink(event, data)

    async def send(self, event, data, sid=None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event, data, sid=None) -> None:
        self.send_sync(event, data, sid)

    def send_progress_text(self, text, node_id, sid=None) -> None:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        self.send_sync("progress_text", {"node_id": str(node_id), "text": text,
                                         "prompt_id": self.last_prompt_id}, sid)

    def queue_updated(self) -> None:
        queue = self.prompt_queue
        if queue is not None and queue.queue:
            with queue.mutex:
                dropped, queue.queue = len(queue.queue), []
            log.warning("a node queued %d prompt(s) on ComfyUI's queue; in-process there is no server queue: "
                        "not run (submit a job instead)", dropped)

    def get_queue_info(self) -> dict:
        queue = self.prompt_queue
        running = len(queue.currently_running) if queue is not None else 0
        return {"exec_info": {"queue_remaining": running}}

    def add_on_prompt_handler(self, handler) -> None:
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data):
        for handler in self.on_prompt_handlers:
            try:
                json_data = handler(json_data)
            except Exception:  # as ComfyUI: logged, and the next handler gets the same JSON
                log.warning("an on_prompt handler of a custom node failed", exc_info=True)
        return json_data


def _unpack_binary(event, data) -> tuple[str | None, Any]:
    """ComfyUI's binary events: progress text becomes a ``progress_text`` message, a sampler
    preview (sent only to a client that says it reads preview metadata: a job with previews) our
    own ``embedded_preview`` message with the PIL image."""
    from protocol import BinaryEventTypes  # ComfyUI's module; imported only after boot

    if event == BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA and isinstance(data, tuple) and len(data) == 2:
        (_, image, _), metadata = data  # (("JPEG", PIL image, max size), metadata)
        return "embedded_preview", {"image": image, "node": metadata.get("node_id"),
                                    "prompt_id": metadata.get("prompt_id")}
    if event == BinaryEventTypes.TEXT and isinstance(data, (bytes, bytearray)) and len(data) >= 4:
        (length,) = struct.unpack(">I", data[:4])
        node_id = bytes(data[4:4 + length]).decode("utf-8", "replace")
        text = bytes(data[4 + length:]).decode("utf-8", "replace")
        return "progress_text", {"node_id": node_id, "text": text, "prompt_id": None}
    return None, None
