"""The event types a job's ``on_event`` callback receives, where users import them from
(``from embedded.events import ProgressEvent``; also exported by ``embedded``), and ``to_frames``,
which turns an event into the websocket frames ComfyUI's server sends (for relaying a job to
ComfyUI's own websocket clients).

Owns nothing: the events are defined in ``embedded.job.events``. Imports only that module.
"""

from .job.events import (CachedEvent, DownloadEvent, ErrorEvent, Event, EventCallback, ExecutedEvent, ExecutingEvent,
                         InterruptedEvent, MessageEvent, OutputEvent, PreviewEvent, ProgressEvent, ProgressStateEvent,
                         ProgressTextEvent, ResultEvent, StartEvent, SuccessEvent, to_frames)

__all__ = ["Event", "EventCallback", "StartEvent", "CachedEvent", "ExecutingEvent", "ProgressEvent", "ProgressStateEvent",
           "ProgressTextEvent", "ExecutedEvent", "SuccessEvent", "ErrorEvent", "InterruptedEvent", "OutputEvent",
           "PreviewEvent", "MessageEvent", "DownloadEvent", "ResultEvent", "to_frames"]
