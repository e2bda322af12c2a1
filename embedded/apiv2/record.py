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
    #: a cancel stopped the upload of one of its outputs: it ends ``canceled``, whatever its run did
    upload_stopped: bool = False
    #: progress
    done: set[str] = field(default_factory=set)
    current_node: str | None = None
    step: int | None = None
    steps: int | None = None
    progress_version: int = 0
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
        part = (self.step / self.steps) if self.steps and self.step is not None and self.status == "running" else 0.0
        node = self.workflow.get(self.current_node or "", {})
        return {"value": min(1.0, (done + min(part, 1.0)) / total) if total else 1.0, "nodes_done": done,
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
                "metrics": {"queue_ms": queue_ms, "execution_ms": execution_ms},
                "urls": {"self": links, "events": f"{links}/events", "cancel": f"{links}/cancel",
                         "logs": f"{links}/logs"},
                "metadata": dict(self.metadata)}

    def publish(self, event: str, data: dict[str, Any]) -> None:
        for queue in list(self.listeners):
            queue.put_nowait((event, data))
