"""One job of the API as the server keeps it, and its JSON.

Owns ``JobRecord``: what a job is (its workflow, labels, times, outputs, error), its progress
snapshot, its JSON as the spec and ``comfy-sdk`` read it, and the queues of the event streams that
follow it (``publish``). Must not import the executor, the backends or ComfyUI.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from .wire import TERMINAL, iso

#: how long a finished job stays readable (its ``expires_at``)
JOB_TTL_S = 24 * 3600


@dataclass
class JobRecord:
    id: str
    workflow: dict[str, Any]
    metadata: dict[str, str]
    created_at: float
    status: str = "queued"
    started_at: float | None = None
    completed_at: float | None = None
    outputs: list = field(default_factory=list)
    error: dict[str, Any] | None = None
    assets_used: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    #: set by a cancel: stops what the server does for the job in threads (its uploads)
    stop: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    #: set by a cancel, for what waits on the event loop (the boot)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)
    #: a cancel stopped the upload of one of its outputs: it ends ``canceled``, whatever its run did
    upload_stopped: bool = False
    #: ComfyUI served some of its nodes from its cache (``execution_cached`` named nodes)
    outputs_reused: bool = False
    #: progress: the nodes of the workflow that finished (ran or cached), the running one and its
    #: steps, and ComfyUI's per-node progress state (``progress_state``: running nodes' value/max)
    done: set[str] = field(default_factory=set)
    current_node: str | None = None
    step: int | None = None
    steps: int | None = None
    running: dict[str, float] = field(default_factory=dict, repr=False)
    progress_version: int = 0
    #: the latest preview (the spec's ``preview`` event), sent to a stream when it connects, and
    #: how many it had (a stream sends the latest one, never a backlog)
    preview: dict[str, Any] | None = field(default=None, repr=False)
    preview_version: int = 0
    listeners: set[asyncio.Queue] = field(default_factory=set)
    #: while its submission waits for ComfyUI's validation: set when the job starts (or fails
    #: otherwise), or to the ``ApiError`` refusing it
    validated: asyncio.Future | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def progress(self) -> dict[str, Any] | None:
        if self.status == "queued":
            return None
        total = len(self.workflow)
        done = total if self.status == "succeeded" else min(len(self.done), total)
        part = sum(self.running.values()) if self.status == "running" else 0.0
        node = self.workflow.get(self.current_node or "", {})
        return {"value": min(1.0, (done + part) / total) if total else 1.0, "nodes_done": done,
                "nodes_total": total, "current_node": self.current_node if not self.terminal else None,
                "current_node_class": node.get("class_type") if not self.terminal else None,
                "step": self.step, "steps": self.steps, "message": None}

    def to_json(self, base_url: str, queue_position: int | None) -> dict[str, Any]:
        queue_ms = (round(1000 * (self.started_at - self.created_at)) if self.started_at else None)
        execution_ms = (round(1000 * (self.completed_at - self.started_at))
                        if self.started_at and self.completed_at else None)
        links = f"/api/v2/jobs/{self.id}"
        return {"id": self.id, "status": self.status, "created_at": iso(self.created_at),
                "started_at": iso(self.started_at), "completed_at": iso(self.completed_at),
                "expires_at": iso((self.completed_at or self.created_at) + JOB_TTL_S),
                "queue_position": queue_position, "progress": self.progress(),
                "outputs": [a.output_json(base_url) for a in self.outputs], "error": self.error,
                "outputs_reused": self.outputs_reused,
                "metrics": {"queue_ms": queue_ms, "execution_ms": execution_ms},
                "urls": {"self": links, "events": f"{links}/events", "cancel": f"{links}/cancel",
                         "logs": f"{links}/logs"},
                "metadata": dict(self.metadata)}

    def see_progress_state(self, nodes: dict[str, Any]) -> None:
        """ComfyUI's per-node progress table: its finished nodes count as done, a running node as
        the share of its steps (``value``/``max``). Nodes a node expanded into are its own business."""
        self.running = {}
        for node_id, state in nodes.items():
            if node_id not in self.workflow or not isinstance(state, dict):
                continue
            if state.get("state") == "finished":
                self.done.add(node_id)
            elif state.get("state") == "running":
                try:
                    self.running[node_id] = min(1.0, max(0.0, float(state["value"]) / float(state["max"])))
                except (KeyError, TypeError, ValueError, ZeroDivisionError):
                    self.running[node_id] = 0.0

    def publish(self, event: str, data: dict[str, Any]) -> None:
        for queue in list(self.listeners):
            queue.put_nowait((event, data))
