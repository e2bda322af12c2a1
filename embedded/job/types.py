"""The data that crosses module lines: jobs, outputs, timings, results.

Owns: ``Job`` (what a caller asks for), ``Output`` (one file or text a workflow produced),
``Timings`` and ``Result``. Events live in ``events.py``.

Must not import ComfyUI or any other module of this package except ``errors``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Output kinds. ``image`` covers still and animated images; ``video`` covers what SaveVideo /
# SaveWEBM report (under ComfyUI's ``images`` key with ``animated``); ``file`` is anything else.
IMAGE, VIDEO, AUDIO, TEXT, FILE = "image", "video", "audio", "text", "file"


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Job:
    """One workflow run. ``images`` maps input names (as LoadImage refers to them) to bytes."""

    workflow: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)
    job_id: str = field(default_factory=new_id)
    client_id: str = field(default_factory=new_id)
    #: merged into ComfyUI's ``extra_data`` (e.g. ``api_key_comfy_org``); never logged
    extra_data: dict[str, Any] = field(default_factory=dict, repr=False)
    #: seconds from the start of validation; ``None`` means no limit
    timeout: float | None = None
    #: after the job, unload every model (as ComfyUI's ``POST /free`` with ``unload_models``)
    unload_models: bool = False
    #: after the job, unload every model and drop every cached result (``/free`` with ``free_memory``)
    free_memory: bool = False
    #: send each output (with its bytes) as an ``OutputEvent`` as soon as its node finished
    stream_outputs: bool = False
    #: send sampler previews as ``PreviewEvent``s (small JPEGs, at most 2 a second)
    previews: bool = False
    #: run only these output nodes and what they need (ComfyUI's ``partial_execution_targets``);
    #: ``None`` runs every output node
    outputs: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Output:
    """One output of a workflow, with its bytes (text outputs: UTF-8)."""

    node_id: str
    kind: str
    filename: str
    subfolder: str
    type: str  # "output" or "temp" (ComfyUI's folder type)
    mime_type: str
    data: bytes = field(repr=False)
    animated: bool = False
    #: the key of ComfyUI's UI output it came from ("images", "audio", "text", ...)
    key: str = ""

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")

    def __repr__(self) -> str:
        return (f"Output(node_id={self.node_id!r}, kind={self.kind!r}, filename={self.filename!r}, "
                f"subfolder={self.subfolder!r}, type={self.type!r}, mime_type={self.mime_type!r}, "
                f"bytes={len(self.data)}, animated={self.animated})")


@dataclass
class Timings:
    """Seconds spent in each phase of a job."""

    wait: float = 0.0      # queued behind another job
    validate: float = 0.0  # input preparation and ComfyUI's validate_prompt
    execute: float = 0.0   # ComfyUI's execute_async
    collect: float = 0.0   # reading the outputs and cleaning the job's folders

    @property
    def total(self) -> float:
        return self.wait + self.validate + self.execute + self.collect


@dataclass(frozen=True)
class NodeTiming:
    """How long one node of a job ran (0 when its result came from ComfyUI's cache)."""

    class_type: str
    ms: float
    cached: bool


@dataclass
class Result:
    job_id: str
    prompt_id: str
    outputs: list[Output]
    timings: Timings
    #: non-fatal problems: outputs that failed validation while others ran, unreadable files
    warnings: list[str] = field(default_factory=list)
    #: node id -> its run time, in the order the nodes ran (cached ones first, as ComfyUI says)
    node_timings: dict[str, NodeTiming] = field(default_factory=dict)

    def by_kind(self, kind: str) -> list[Output]:
        return [o for o in self.outputs if o.kind == kind]

    @property
    def images(self) -> list[Output]:
        return self.by_kind(IMAGE)


@dataclass(frozen=True)
class FailedPack:
    """A custom-node pack that did not import at boot, and why (ComfyUI's own words)."""

    name: str
    path: Path
    reason: str


@dataclass(frozen=True)
class BootInfo:
    """How a backend started: which tree, with which ComfyUI arguments, on what, how fast."""

    mode: str  # "embedded" or "server"
    tree: Path
    args: tuple[str, ...]
    cpu: bool
    node_classes: int
    seconds: float
    import_failures: tuple[str, ...] = ()
    #: custom-node packs that failed to import (a job using one of their nodes is told)
    failed_packs: tuple[FailedPack, ...] = ()
    #: where the boot's time went: (phase, seconds), in order
    phases: tuple[tuple[str, float], ...] = ()
    #: the devices jobs run on, one executor each (``COMFY_DEVICES``: ``cuda:0``, ``cpu:1``...); empty:
    #: one executor in this process
    devices: tuple[str, ...] = ()
