"""Run ComfyUI workflows in-process.

    from embedded import execute
    result = execute(workflow, images={"in.png": png_bytes})
    for out in result.outputs:
        print(out.node_id, out.kind, out.filename, len(out.data))
"""

from .api import Executor, default_executor, execute
from .config import Config
from .errors import (BootError, EmbeddedError, ExecutionError, InputError, JobInterrupted, JobTimeout, NodeError,
                     ServerCrashed, ServerError, ValidationError, WorkerStuck, WorkflowFormatError)
from .events import DownloadEvent, Event
from .fetching import FetchError, S3Settings
from .modelcache import ModelRef
from .types import Job, NodeTiming, Output, Result, Timings
from .urlguard import FetchRefused

__all__ = ["execute", "Executor", "default_executor", "Config", "Job", "Output", "Result", "Timings", "NodeTiming",
           "Event",
           "DownloadEvent", "ModelRef", "S3Settings", "FetchError", "FetchRefused",
           "EmbeddedError", "BootError", "WorkflowFormatError", "InputError", "ValidationError", "NodeError",
           "ExecutionError", "JobInterrupted", "JobTimeout", "WorkerStuck", "ServerError", "ServerCrashed"]
