"""Live progress reports of a job, for RunPod's ``progress_update``.

Owns: turning a job's events into progress reports (node id and class type, step value/max,
nodes done/total, an overall percentage) and throttling them: a new node is always reported,
step updates at most every ``interval`` seconds (and at a node's last step); a sampler preview
(already throttled by the runner) is a report with ``preview``, a JPEG data URI; a download
before the run (already throttled) is ``{"download": {"kind", "name", "received_bytes",
"total_bytes", "done"}}``.

Must not import ComfyUI, the backends or RunPod (the handler passes the sending function).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..job.events import DownloadEvent, Event, ExecutingEvent, NodesDone, PreviewEvent, ProgressEvent


class ProgressReporter:
    def __init__(self, workflow: dict[str, Any], send: Callable[[dict[str, Any]], None], interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        self.workflow = workflow
        self.total = len(workflow)
        self.send = send
        self.interval = interval
        self.clock = clock
        self.nodes = NodesDone()
        self.last_step_sent = float("-inf")

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, DownloadEvent):
            self.send({"download": {"kind": ev.kind, "name": ev.name, "received_bytes": ev.received,
                                    "total_bytes": ev.total, "done": ev.done}})
            return
        self.nodes.update(ev)
        if isinstance(ev, ExecutingEvent):
            self._report(ev.node_id, None, None)
        elif isinstance(ev, PreviewEvent):
            self._report(ev.node_id or self.nodes.current, None, None, preview=ev.image)
        elif isinstance(ev, ProgressEvent):
            now = self.clock()
            last_step = ev.max and ev.value >= ev.max
            if now - self.last_step_sent >= self.interval or last_step:
                self.last_step_sent = now
                self._report(ev.node_id or self.nodes.current, ev.value, ev.max)

    def _report(self, node_id: str | None, value: float | None, maximum: float | None,
                preview: str | None = None) -> None:
        done = len(self.nodes.done & set(self.workflow)) if self.workflow else len(self.nodes.done)
        fraction = (value / maximum) if value is not None and maximum else 0.0
        percent = 100.0 * (done + fraction) / self.total if self.total else 0.0
        node = self.workflow.get(node_id, {}) if node_id else {}
        self.send({
            "node_id": node_id,
            "class_type": node.get("class_type") if isinstance(node, dict) else None,
            "step": value,
            "max_steps": maximum,
            "nodes_done": done,
            "nodes_total": self.total,
            "percent": round(min(percent, 100.0), 1),
            **({"preview": preview} if preview else {}),
        })
