"""Run ComfyUI workflows in-process.

    from embedded import execute
    result = execute(workflow, images={"in.png": png_bytes})
    for out in result.outputs:
        print(out.node_id, out.kind, out.filename, len(out.data))
"""

from .api import Executor, default_executor, execute
from .config import Config
from .job.errors import (BootError, EmbeddedError, ExecutionError, InputError, JobInterrupted, JobTimeout, NodeError,
                         ServerCrashed, ServerError, ValidationError, WorkerStuck, WorkflowFormatError)
from .job.events import DownloadEvent, Event
from .staging.downloads import FetchError, S3Settings
from .staging.modelcache import ModelRef
from .job.types import Job, NodeTiming, Output, Result, Timings
from .staging.guard import FetchRefused

__all__ = ["execute", "Executor", "default_executor", "Config", "Job", "Output", "Result", "Timings", "NodeTiming",
           "Event",
           "DownloadEvent", "ModelRef", "S3Settings", "FetchError", "FetchRefused",
           "EmbeddedError", "BootError", "WorkflowFormatError", "InputError", "ValidationError", "NodeError",
           "ExecutionError", "JobInterrupted", "JobTimeout", "WorkerStuck", "ServerError", "ServerCrashed"]
