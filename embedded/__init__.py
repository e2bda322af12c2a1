"""Run ComfyUI workflows in-process.

    from embedded import execute
    result = execute(workflow, files={"in.png": png_bytes})  # bytes, a path or a URL
    for out in result.outputs:
        print(out.node_id, out.kind, out.filename, len(out.data))

Owns the public face: every name below (``__all__``) is what users import, and the layout behind
it is private. The package, one folder or module each (README, "Architecture"):

- front doors: ``api`` (``execute``, ``Executor``), ``cli`` (``python -m embedded``), ``worker/``
  (the RunPod worker; ``handler`` is its entry point), ``events`` (the event types' public home);
- ``job/``: the job model that crosses every line (jobs, results, outputs, events, errors, inputs);
- ``staging/``: what a job fetches first (the URL guard, downloads, the model cache);
- ``backends/``: the backend interface, what only the backends share, and the two implementations,
  ``backends/comfy/`` (in-process) and ``backends/server/`` (legacy server mode);
- ``config`` (every environment variable) and ``logs`` (logging without secrets), used throughout;
- ``tooling/``: apart from the runtime (the pin, the model generator, the self-test).

Front doors may import the job model, staging, ``config``, ``logs`` and ``embedded.backends``'s
face; never an implementation under ``backends/``, and nothing of the runtime imports
``tooling/``. ``tests/unit/test_layout.py`` holds these lines.
"""

from .api import Executor, default_executor, execute
from .config import Config
from .job.errors import (BootError, EmbeddedError, ExecutionError, InputError, JobInterrupted, JobTimeout, NodeError,
                         ServerCrashed, ServerError, ValidationError, WorkerLost, WorkerStuck,
                         WorkflowFormatError)
from .job.events import (CachedEvent, DownloadEvent, ErrorEvent, Event, ExecutedEvent, ExecutingEvent, InterruptedEvent,
                         MessageEvent, OutputEvent, PreviewEvent, ProgressEvent, ProgressStateEvent, ProgressTextEvent,
                         ResultEvent, StartEvent, SuccessEvent, to_frames)
from .staging.downloads import FetchError, S3Settings
from .staging.modelcache import ModelRef
from .job.types import Job, NodeTiming, Output, Result, Timings
from .staging.guard import FetchRefused

__all__ = ["execute", "Executor", "default_executor", "Config", "Job", "Output", "Result", "Timings", "NodeTiming",
           "Event", "StartEvent", "CachedEvent", "ExecutingEvent", "ProgressEvent", "ProgressStateEvent",
           "ProgressTextEvent", "ExecutedEvent", "SuccessEvent", "ErrorEvent", "InterruptedEvent", "OutputEvent",
           "PreviewEvent", "MessageEvent", "ResultEvent", "to_frames",
           "DownloadEvent", "ModelRef", "S3Settings", "FetchError", "FetchRefused",
           "EmbeddedError", "BootError", "WorkflowFormatError", "InputError", "ValidationError", "NodeError",
           "ExecutionError", "JobInterrupted", "JobTimeout", "WorkerStuck", "WorkerLost", "ServerError", "ServerCrashed"]
