"""Typed progress events, their translation from ComfyUI's messages, and websocket-compat frames.

Owns: the event dataclasses a job's ``on_event`` callback receives; ``from_comfy`` (ComfyUI's
``(event, data)`` message as its server would send it -> event); ``to_frames`` (event -> the JSON
frames ComfyUI's websocket sends, including the closing ``executing`` with ``node: null`` after a
terminal event); ``trace`` logging for ``WEBSOCKET_TRACE``.

Both backends use it: the embedded one feeds it what the server stand-in receives, the server one
what arrives on the websocket. Beyond ComfyUI's messages: ``OutputEvent`` (an output with its
bytes as soon as its node finished, for jobs that stream their outputs), ``MessageEvent`` (a
custom node's own message, with the frame ComfyUI's websocket sends for it), ``PreviewEvent`` (a
sampler preview as a small JPEG, for jobs that ask), ``DownloadEvent`` (a file fetched before the
workflow runs) and ``ResultEvent`` (the last item of
``Executor.stream``); they have no websocket frame. Must not import ComfyUI or the
backends.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Union

from .. import logs
from .types import Output, Result

log = logging.getLogger("embedded.job.events")


@dataclass(frozen=True)
class StartEvent:
    type: ClassVar[str] = "execution_start"
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True)
class CachedEvent:
    type: ClassVar[str] = "execution_cached"
    prompt_id: str
    nodes: tuple[str, ...] = ()
    timestamp: int | None = None


@dataclass(frozen=True)
class ExecutingEvent:
    """A node starts running (``node_id`` is never ``None`` here; see ``to_frames``)."""

    type: ClassVar[str] = "executing"
    prompt_id: str
    node_id: str
    display_node_id: str | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """A step inside a node (a sampler step, a ``comfy.utils.ProgressBar`` update)."""

    type: ClassVar[str] = "progress"
    prompt_id: str
    node_id: str | None
    value: float
    max: float


@dataclass(frozen=True)
class ProgressStateEvent:
    """ComfyUI's per-node progress table (state, value, max of every started node)."""

    type: ClassVar[str] = "progress_state"
    prompt_id: str
    nodes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class ProgressTextEvent:
    """Free text a node reports while it runs (``PromptServer.send_progress_text``)."""

    type: ClassVar[str] = "progress_text"
    prompt_id: str | None
    node_id: str | None
    text: str


@dataclass(frozen=True)
class ExecutedEvent:
    """A node finished; ``output`` is its UI output (file references, text), possibly cached."""

    type: ClassVar[str] = "executed"
    prompt_id: str
    node_id: str
    display_node_id: str | None = None
    output: dict[str, Any] | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True)
class SuccessEvent:
    type: ClassVar[str] = "execution_success"
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True)
class ErrorEvent:
    type: ClassVar[str] = "execution_error"
    prompt_id: str
    node_id: str
    node_type: str
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = ()
    executed: tuple[str, ...] = ()
    timestamp: int | None = None


@dataclass(frozen=True)
class InterruptedEvent:
    type: ClassVar[str] = "execution_interrupted"
    prompt_id: str
    node_id: str | None = None
    node_type: str | None = None
    executed: tuple[str, ...] = ()
    timestamp: int | None = None


@dataclass(frozen=True)
class OutputEvent:
    """One output, with its bytes, as soon as its node finished (jobs with ``stream_outputs``)."""

    type: ClassVar[str] = "output"
    prompt_id: str
    output: Output


@dataclass(frozen=True)
class PreviewEvent:
    """A sampler's preview of the image it is making (jobs with ``previews``): a JPEG data URI,
    longest side at most ``PREVIEW_MAX_SIDE`` pixels."""

    type: ClassVar[str] = "preview"
    prompt_id: str
    node_id: str | None
    image: str = field(repr=False)
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class MessageEvent:
    """A message a node sent through ComfyUI's server while the job ran (a custom node's own
    ``PromptServer.instance.send_sync(name, data)``: ``impact-node-feedback``, ``easyuse-toast``...),
    as ComfyUI's websocket delivers it to the job's client: its frame is ``{"type": name, "data"}``."""

    type: ClassVar[str] = "message"
    prompt_id: str
    name: str
    data: Any = None


#: ComfyUI's own message types (``from_comfy`` reads those that are job events) and server chatter
#: that is no job's: none of them is a ``MessageEvent``
_NOT_MESSAGES = frozenset({"status", "execution_start", "execution_cached", "executing", "executed", "progress",
                           "progress_state", "progress_text", "execution_success", "execution_error",
                           "execution_interrupted", "logs", "feature_flags", "embedded_preview"})


def message_event(prompt_id: str, name: Any, data: Any) -> MessageEvent | None:
    """A node's own message as a ``MessageEvent`` (None for ComfyUI's types, binary ones and
    system monitors' broadcasts, ``crystools.*``)."""
    if not isinstance(name, str) or name in _NOT_MESSAGES or name.startswith("crystools."):
        return None
    return MessageEvent(prompt_id, name, data)


#: previews: longest side in pixels, and at most this many a second per job
PREVIEW_MAX_SIDE, PREVIEWS_PER_SECOND = 256, 2


def preview_event(prompt_id: str, node_id: str | None, image: Any) -> PreviewEvent:
    """A ``PreviewEvent`` from a PIL image (ComfyUI's previewers make them)."""
    import base64
    import io

    small = image.convert("RGB")
    small.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return PreviewEvent(prompt_id, node_id, uri, small.width, small.height)


@dataclass(frozen=True)
class DownloadEvent:
    """A file a job fetches before its workflow runs (``kind``: "input" or "model"): bytes received
    so far, and the size when the server said it; ``done`` once it is in place."""

    type: ClassVar[str] = "download"
    kind: str
    name: str
    received: int
    total: int | None = None
    done: bool = False


@dataclass(frozen=True)
class ResultEvent:
    """The last item ``Executor.stream`` / ``astream`` yield: the job's whole ``Result``."""

    type: ClassVar[str] = "result"
    result: Result


Event = Union[StartEvent, CachedEvent, ExecutingEvent, ProgressEvent, ProgressStateEvent, ProgressTextEvent,
              ExecutedEvent, SuccessEvent, ErrorEvent, InterruptedEvent, OutputEvent, PreviewEvent, DownloadEvent,
              MessageEvent]
EventCallback = Callable[[Event], None]
TERMINAL = (SuccessEvent, ErrorEvent, InterruptedEvent)


def from_comfy(event: str, data: Any) -> Event | None:
    """Translate one ComfyUI message (``send_sync(event, data)``, a websocket JSON frame) to an event.

    Returns ``None`` for messages that carry no job event (``status``, the closing ``executing``
    with ``node: null``, binary previews, ``crystools.*`` and other custom-node chatter).
    """
    if not isinstance(event, str) or not isinstance(data, dict):
        return None
    pid = data.get("prompt_id")
    ts = data.get("timestamp")
    if event == "execution_start":
        return StartEvent(pid, ts)
    if event == "execution_cached":
        return CachedEvent(pid, tuple(data.get("nodes") or ()), ts)
    if event == "executing":
        node = data.get("node")
        return None if node is None else ExecutingEvent(pid, str(node), data.get("display_node"))
    if event == "progress":
        return ProgressEvent(pid, data.get("node"), data.get("value", 0), data.get("max", 0))
    if event == "progress_state":
        return ProgressStateEvent(pid, dict(data.get("nodes") or {}))
    if event == "progress_text":
        return ProgressTextEvent(pid, data.get("node_id"), str(data.get("text", "")))
    if event == "executed":
        return ExecutedEvent(pid, str(data.get("node")), data.get("display_node"), data.get("output"))
    if event == "execution_success":
        return SuccessEvent(pid, ts)
    if event == "execution_error":
        return ErrorEvent(pid, str(data.get("node_id")), str(data.get("node_type")),
                          str(data.get("exception_type", "")), str(data.get("exception_message", "")),
                          tuple(data.get("traceback") or ()), tuple(data.get("executed") or ()), ts)
    if event == "execution_interrupted":
        return InterruptedEvent(pid, data.get("node_id"), data.get("node_type"),
                                tuple(data.get("executed") or ()), ts)
    return None


def _stamp(data: dict, ts: int | None) -> dict:
    if ts is not None:
        data["timestamp"] = ts
    return data


def to_frames(ev: Event) -> list[dict[str, Any]]:
    """The websocket JSON frames ComfyUI's server sends for this event, in order."""
    if isinstance(ev, StartEvent):
        data = _stamp({"prompt_id": ev.prompt_id}, ev.timestamp)
    elif isinstance(ev, CachedEvent):
        data = _stamp({"nodes": list(ev.nodes), "prompt_id": ev.prompt_id}, ev.timestamp)
    elif isinstance(ev, ExecutingEvent):
        data = {"node": ev.node_id, "display_node": ev.display_node_id, "prompt_id": ev.prompt_id}
    elif isinstance(ev, ProgressEvent):
        data = {"value": ev.value, "max": ev.max, "prompt_id": ev.prompt_id, "node": ev.node_id}
    elif isinstance(ev, ProgressStateEvent):
        data = {"prompt_id": ev.prompt_id, "nodes": ev.nodes}
    elif isinstance(ev, ProgressTextEvent):
        data = {"node_id": ev.node_id, "text": ev.text, "prompt_id": ev.prompt_id}
    elif isinstance(ev, ExecutedEvent):
        data = {"node": ev.node_id, "display_node": ev.display_node_id, "output": ev.output,
                "prompt_id": ev.prompt_id}
    elif isinstance(ev, SuccessEvent):
        data = _stamp({"prompt_id": ev.prompt_id}, ev.timestamp)
    elif isinstance(ev, ErrorEvent):
        data = _stamp({"prompt_id": ev.prompt_id, "node_id": ev.node_id, "node_type": ev.node_type,
                       "executed": list(ev.executed), "exception_message": ev.exception_message,
                       "exception_type": ev.exception_type, "traceback": list(ev.traceback)}, ev.timestamp)
    elif isinstance(ev, InterruptedEvent):
        data = _stamp({"prompt_id": ev.prompt_id, "node_id": ev.node_id, "node_type": ev.node_type,
                       "executed": list(ev.executed)}, ev.timestamp)
    elif isinstance(ev, MessageEvent):
        return [{"type": ev.name, "data": ev.data}]
    elif isinstance(ev, (OutputEvent, PreviewEvent, DownloadEvent, ResultEvent)):
        return []  # ours: ComfyUI's websocket has no such frame
    else:  # pragma: no cover - exhaustive over Event
        raise TypeError(f"not an event: {ev!r}")
    frames = [{"type": ev.type, "data": data}]
    if isinstance(ev, TERMINAL):
        # ComfyUI's server loop closes every prompt, whatever its outcome, with this frame.
        frames.append({"type": "executing", "data": {"node": None, "prompt_id": ev.prompt_id}})
    return frames


#: ComfyUI's ``SENSITIVE_EXTRA_DATA_KEYS``: what a job's hidden API-key inputs receive
SENSITIVE_EXTRA_DATA = ("api_key_comfy_org", "auth_token_comfy_org")


def job_secrets(extra_data: dict[str, Any]) -> tuple[str, ...]:
    """The values of a job's ``extra_data`` that must never be logged."""
    return tuple(str(extra_data[k]) for k in SENSITIVE_EXTRA_DATA if extra_data.get(k))


def trace(frame: dict[str, Any], source: str = "embedded", secrets: tuple[str, ...] = ()) -> None:
    """Log one frame (``WEBSOCKET_TRACE=true``); large outputs are shortened, and the job's
    secrets (its API key, which ComfyUI puts in an error's ``current_inputs``) redacted."""
    text = json.dumps(logs.redact(frame, secrets), default=str)
    if len(text) > 2000:
        text = text[:2000] + f"... ({len(text)} chars)"
    log.info("websocket trace [%s] %s", source, text)


class NodesDone:
    """Which nodes of a job have finished, from its events: the cached ones, each node once the
    next one starts (ComfyUI runs one node at a time), and those that report ``executed``."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.current: str | None = None

    def update(self, ev: Event) -> int:
        """Take one event; returns how many nodes it finished."""
        if isinstance(ev, CachedEvent):
            finished = set(ev.nodes)
        elif isinstance(ev, ExecutingEvent):
            finished = {self.current} if self.current is not None else set()
            self.current = ev.node_id
        elif isinstance(ev, ExecutedEvent):
            finished = {ev.node_id}
        else:
            return 0
        new = finished - self.done
        self.done |= new
        return len(new)


class Dispatcher:
    """Delivers a job's events to its callback (errors in the callback are logged, never raised
    into ComfyUI) and traces their compat frames when asked to."""

    def __init__(self, callback: EventCallback | None, trace_frames: bool = False,
                 observer: EventCallback | None = None, secrets: tuple[str, ...] = ()):
        self.callback = callback
        self.trace_frames = trace_frames
        self.secrets = secrets
        self.observer = observer  # the job's own bookkeeping (which node runs), before the callback

    def __call__(self, ev: Event) -> None:
        if self.observer is not None:
            self.observer(ev)
        if self.trace_frames:
            for frame in to_frames(ev):
                trace(frame, secrets=self.secrets)
        if self.callback is not None:
            try:
                self.callback(ev)
            except Exception:  # a broken callback must not break the job
                log.exception("on_event callback raised for %s; ignored", type(ev).__name__)
