"""The exception family of this package.

Owns: every error a caller of ``execute()`` / ``Executor`` / the CLI can see, each carrying the
details a user needs to fix the workflow. One base class, ``EmbeddedError``.

Must not import ComfyUI or any other module of this package: the backends translate ComfyUI's
own error dictionaries into these types.
"""

from __future__ import annotations

from dataclasses import dataclass


class EmbeddedError(Exception):
    """Base class of every error raised by this package."""

    #: short machine-readable kind, stable across releases
    kind = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def details(self) -> list[str]:
        """Extra lines that explain the error (one per node error, say); may be empty."""
        return []

    def __reduce__(self):
        """Pickled as its attributes, not its constructor's arguments (which differ by subclass):
        a device's process sends its job's error to the caller's process this way."""
        return _rebuilt, (type(self), self.args, dict(self.__dict__))


def _rebuilt(cls: type, args: tuple, state: dict) -> EmbeddedError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class BootError(EmbeddedError):
    """ComfyUI could not be started (missing tree, import failure, bad configuration)."""

    kind = "boot"


class ServerError(EmbeddedError):
    """Server mode: talking to ComfyUI's server failed (an HTTP error, a websocket that stayed lost)."""

    kind = "server"


class ServerCrashed(ServerError):
    """Server mode: ComfyUI's server process exited or stopped answering (the next job restarts it)."""

    kind = "server_crashed"


class WorkflowFormatError(EmbeddedError):
    """The workflow is not a ComfyUI API-format workflow (UI format, not an object, empty...)."""

    kind = "workflow_format"


class InputError(EmbeddedError):
    """An input image is unusable: a name that escapes the input folder, bytes that are no image."""

    kind = "input"


@dataclass(frozen=True)
class NodeError:
    """One reason why one node failed validation, as ComfyUI reports it."""

    node_id: str
    class_type: str
    type: str
    message: str
    details: str = ""
    input_name: str | None = None
    #: for a value that is not in the allowed list (a model name that does not exist, say): the
    #: allowed values, e.g. the model files of that kind
    options: tuple[str, ...] | None = None

    def line(self) -> str:
        where = f"Node {self.node_id} ({self.class_type})"
        if self.input_name:
            where += f", input '{self.input_name}'"
        text = f"{where}: {self.message}"
        if self.details and self.details not in self.message:
            text += f": {self.details}"
        return text

    def options_line(self) -> str | None:
        """``Available values for 'ckpt_name': a, b`` (or that there are none), when known."""
        if self.options is None:
            return None
        if not self.options:
            return f"No values available for '{self.input_name}' (node {self.node_id}): the folder is empty"
        return f"Available values for '{self.input_name}' (node {self.node_id}): {', '.join(self.options)}"


class ValidationError(EmbeddedError):
    """ComfyUI refused the workflow before running it.

    ``type`` is ComfyUI's error type (``prompt_no_outputs``, ``invalid_prompt``,
    ``prompt_outputs_failed_validation``...); ``node_errors`` holds one entry per node reason.
    """

    kind = "validation"

    def __init__(self, message: str, type: str, node_errors: list[NodeError] | None = None, extra: str = ""):
        self.type = type
        self.node_errors = list(node_errors or [])
        self.extra = extra
        #: what a preflight finds of this workflow (unknown node types, missing models: a backend's
        #: ``Preflight``), when the backend found it as it refused the job; None otherwise
        self.diagnosis = None
        summary = message
        if self.node_errors:
            summary += ": " + "; ".join(e.line() for e in self.node_errors)
        elif extra:
            summary += f": {extra}"
        super().__init__(summary)
        self.message = message

    def details(self) -> list[str]:
        if self.node_errors:
            return [e.line() for e in self.node_errors]
        return [self.extra] if self.extra else []


class ExecutionError(EmbeddedError):
    """A node raised while the workflow ran.

    ``outputs`` holds what the output nodes that finished before the failure produced (``Output``
    objects, as a ``Result`` has them), and ``warnings`` the problems met reading them.
    """

    kind = "execution"

    def __init__(self, node_id: str, node_type: str, exception_type: str, exception_message: str,
                 traceback: list[str] | None = None):
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        #: the message exactly as ComfyUI reports it (it appends a newline and, for OOM, tips)
        self.comfy_message = exception_message
        self.exception_message = exception_message.strip()
        self.traceback = list(traceback or [])
        self.outputs: list = []
        self.warnings: list[str] = []
        super().__init__(f"Node {node_id} ({node_type}) failed: {exception_type}: {self.exception_message}")

    def details(self) -> list[str]:
        return [f"{self.exception_type}: {self.exception_message}"]


class JobInterrupted(EmbeddedError):
    """The job was interrupted (``interrupt()``, a RunPod cancel) before it finished."""

    kind = "interrupted"

    def __init__(self, message: str = "The job was interrupted", node_id: str | None = None,
                 node_type: str | None = None):
        self.node_id = node_id
        self.node_type = node_type
        #: the node did not stop and still holds this process: the worker should be replaced
        self.refresh_worker = False
        if node_id is not None:
            message += f" at node {node_id} ({node_type})"
        super().__init__(message)

    def abandoned(self, grace: float, freed: str | None) -> "JobInterrupted":
        """Say that the job's node did not stop within ``grace`` seconds of being asked to, and
        what became of it: ``freed`` says how the backend got free of it, or None (it still runs)."""
        if freed:
            self.message += f"; its node did not stop within {grace:g} s, so {freed}"
        else:
            self.message += (f"; its node did not stop within {grace:g} s and still runs, so this worker takes "
                             f"no new job and asks to be replaced")
            self.refresh_worker = True
        self.args = (self.message,)
        return self


class JobTimeout(JobInterrupted):
    """The job ran longer than its timeout and was interrupted."""

    kind = "timeout"

    def __init__(self, timeout: float, node_id: str | None = None, node_type: str | None = None):
        self.timeout = timeout
        super().__init__(f"The job exceeded its timeout of {timeout:g} s and was stopped", node_id, node_type)

    def fetching(self) -> "JobTimeout":
        """Say that the job was still fetching its files (no node ran)."""
        self.message += " while its files were being fetched"
        self.args = (self.message,)
        return self


class WorkerLost(EmbeddedError):
    """The process that ran the job on one of several devices (``COMFY_DEVICES``) died under it: killed,
    out of memory, or a node that ended the process. Only that job fails; the device's process is
    replaced and takes the next jobs."""

    kind = "worker_lost"

    def __init__(self, message: str, device: str):
        #: the device whose process was lost: ``cuda:1``, ``cpu:0``
        self.device = device
        super().__init__(message)


class WorkerStuck(EmbeddedError):
    """A stopped job's node never returned and holds this process: no job can run here now."""

    kind = "stuck"
