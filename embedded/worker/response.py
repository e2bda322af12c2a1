"""The handler's response, in worker-comfyui's shape (plus the output kinds it drops).

Owns: success (``images`` exactly as upstream: ``{"filename", "type": "base64"|"s3_url", "data"}``,
temp outputs skipped; beyond upstream ``videos``, ``audio``, ``text`` and ``files`` with ``node_id``
and ``mime_type`` too; ``errors`` for non-fatal problems; ``status: "success_no_images"``),
outputs too large to return inline with no bucket to upload to (``too_large``), and failure
(``{"error", "details"}``) for every error this package raises.

Must not import ComfyUI or the backends.
"""

from __future__ import annotations

import re
from typing import Any

from .delivery import Delivery, NotDelivered, inline_size
from ..job.errors import EmbeddedError, ExecutionError, ValidationError
from .request import RequestError
from ..job.types import AUDIO, FILE, IMAGE, TEXT, VIDEO, Output, Result

_KEYS = {VIDEO: "videos", AUDIO: "audio", FILE: "files"}

#: upstream's ``error`` when a job produced no image but has errors (a node that raised, say)
JOB_FAILED = "Job processing failed"


def success(result: Result, delivery: Delivery, timings: bool = False) -> dict[str, Any]:
    body = _with_outputs(result.job_id, result.outputs, list(result.warnings), delivery, failed=False)
    if timings:
        body["timings"] = timings_of(result)
    return body


def timings_of(result: Result) -> dict[str, Any]:
    """``{"queued_ms", "total_ms", "nodes": {id: {"class_type", "ms", "cached"}}}`` (a request's
    ``"timings": true``)."""
    return {"queued_ms": round(result.timings.wait * 1000, 3), "total_ms": round(result.timings.total * 1000, 3),
            "nodes": {node_id: {"class_type": t.class_type, "ms": t.ms, "cached": t.cached}
                      for node_id, t in result.node_timings.items()}}


def execution_failure(job_id: str, exc: ExecutionError, delivery: Delivery) -> dict[str, Any]:
    """A node raised: upstream's line under ``errors`` beside the outputs that output nodes made
    before the failure, or ``{"error": "Job processing failed", "details": [line]}`` when there is
    no image. ``execution_error`` (a key upstream lacks) names the node and the exception type."""
    line = (f"Workflow execution error: Node Type: {exc.node_type}, Node ID: {exc.node_id}, "
            f"Message: {exc.comfy_message}")
    body = _with_outputs(job_id, exc.outputs, [line, *exc.warnings], delivery, failed=True)
    body["execution_error"] = {"node_id": exc.node_id, "node_type": exc.node_type,
                               "exception_type": exc.exception_type,
                               "exception_message": scrub_paths(exc.exception_message)}
    return body


def _with_outputs(job_id: str, outputs: list[Output], errors: list[str], delivery: Delivery,
                  failed: bool) -> dict[str, Any]:
    """Upstream's shape: ``images`` (temp outputs skipped) and ``errors`` for problems; with no
    image, ``status: "success_no_images"``, or ``{"error": "Job processing failed", "details":
    errors}`` when the job failed or nothing at all came back. Other kinds go under keys upstream
    lacks, in either shape."""
    oversize = too_large(outputs, delivery)
    if oversize is not None and failed:  # the node's failure first, then why nothing came back
        return {"error": JOB_FAILED, "details": [scrub_paths(e) for e in errors] + [oversize["error"]]}
    if oversize is not None:
        return oversize
    images: list[dict[str, Any]] = []
    extra: dict[str, list[dict[str, Any]]] = {}
    for out in outputs:
        if out.type == "temp":  # PreviewImage and friends: not results (as upstream)
            continue
        try:
            item = output_item(job_id, out, delivery, errors)
        except NotDelivered as exc:
            errors.append(str(exc))
            continue
        key = item.pop("key")
        if key == "images":
            images.append({k: item[k] for k in ("filename", "type", "data")})
        else:
            extra.setdefault(key, []).append(item)
    errors = [scrub_paths(e) for e in errors]
    if not images and errors and (failed or not extra):
        return {"error": JOB_FAILED, "details": errors, **extra}
    response: dict[str, Any] = {"images": images, **extra}
    if errors:
        response["errors"] = errors
    if not images:
        response["status"] = "success_no_images"
    return response


def too_large(outputs: list[Output], delivery: Delivery) -> dict[str, Any] | None:
    """With no bucket to upload to, the error for outputs over ``OUTPUT_MAX_INLINE_BYTES``
    together (RunPod would refuse the response), naming each output's size; else ``None``."""
    if delivery.s3_enabled or delivery.max_inline is None:
        return None
    sizes = [(o.filename, len(o.data) if o.kind == TEXT else inline_size(o.data)) for o in outputs if o.type != "temp"]
    total = sum(size for _, size in sizes)
    if total <= delivery.max_inline:
        return None
    return {"error": f"The job's outputs are {total} bytes inline (base64), over OUTPUT_MAX_INLINE_BYTES "
                     f"({delivery.max_inline}): RunPod would refuse the response. Configure S3 (BUCKET_ENDPOINT_URL, "
                     "BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY) or send an 's3' block with the job to have "
                     "them uploaded",
            "details": [f"{name}: {size} bytes" for name, size in sizes]}


def output_item(job_id: str, out: Output, delivery: Delivery, errors: list[str]) -> dict[str, Any]:
    """One output as the response lists it (``key`` says under which key: ``images``, ``videos``,
    ``audio``, ``text``, ``files``): text inline, anything else delivered (base64 or S3 URL);
    raises ``NotDelivered``."""
    if out.kind == TEXT:
        return {"key": "text", "node_id": out.node_id, "filename": out.filename, "type": "text",
                "mime_type": out.mime_type, "data": out.text}
    sent = delivery.deliver(job_id, out, errors)
    key = "images" if out.kind == IMAGE else _KEYS[out.kind]
    return {"key": key, "node_id": out.node_id, "filename": out.filename, "mime_type": out.mime_type,
            "type": sent.type, "data": sent.data}


def failure(exc: BaseException) -> dict[str, Any]:
    """``{"error": message}`` or ``{"error": message, "details": [...]}`` for an exception (an
    ``ExecutionError`` has outputs to deliver: ``execution_failure``)."""
    if isinstance(exc, RequestError):
        return _shape(exc.message, exc.details)
    if isinstance(exc, ValidationError):
        details = []
        for node_error in exc.node_errors:
            details.append(node_error.line())
            options = node_error.options_line()
            if options:
                details.append(options)
        if not details:
            details = [exc.message + (f": {exc.extra}" if exc.extra else "")]
        return _shape("Workflow validation failed:\n" + "\n".join(f"• {d}" for d in details), details)
    if isinstance(exc, EmbeddedError):
        return _shape(str(exc), exc.details())
    return _shape(f"An unexpected error occurred: {type(exc).__name__}: {exc}", [])


def _shape(message: str, details: list[str]) -> dict[str, Any]:
    message, details = scrub_paths(message), [scrub_paths(d) for d in details]
    return {"error": message, "details": details} if details else {"error": message}


#: an absolute POSIX path (not the path part of a URL): starts with "/" after a space, quote or
#: line start
_LOCAL_PATH = re.compile(r"(?<![\w:/.])/[^\s'\":,;)]+")


def scrub_paths(text: str) -> str:
    """``text`` with every absolute local path replaced by ``<path>``: a client never sees one."""
    return _LOCAL_PATH.sub("<path>", text)
