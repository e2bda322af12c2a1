"""The handler's response, in worker-comfyui's shape (plus the output kinds it drops).

Owns: success (``images`` exactly as upstream: ``{"filename", "type": "base64"|"s3_url", "data"}``,
temp outputs skipped; beyond upstream ``videos``, ``audio``, ``text`` and ``files`` with ``node_id``
and ``mime_type`` too; ``errors`` for non-fatal problems; ``status: "success_no_images"``) and
failure (``{"error", "details"}``) for every error this package raises.

Must not import ComfyUI or the backends.
"""

from __future__ import annotations

from typing import Any

from .delivery import Delivery
from ..errors import EmbeddedError, ExecutionError, ValidationError
from .request import RequestError
from ..types import AUDIO, FILE, IMAGE, TEXT, VIDEO, Result

_KEYS = {VIDEO: "videos", AUDIO: "audio", FILE: "files"}


def success(result: Result, delivery: Delivery) -> dict[str, Any]:
    errors = list(result.warnings)
    images: list[dict[str, Any]] = []
    extra: dict[str, list[dict[str, Any]]] = {}
    for out in result.outputs:
        if out.type == "temp":  # PreviewImage and friends: not results (as upstream)
            continue
        if out.kind == TEXT:
            extra.setdefault("text", []).append({"node_id": out.node_id, "filename": out.filename, "type": "text",
                                                 "mime_type": out.mime_type, "data": out.text})
            continue
        sent = delivery.deliver(result.job_id, out, errors)
        if out.kind == IMAGE:
            images.append({"filename": out.filename, "type": sent.type, "data": sent.data})
        else:
            extra.setdefault(_KEYS[out.kind], []).append({"node_id": out.node_id, "filename": out.filename,
                                                           "mime_type": out.mime_type, "type": sent.type,
                                                           "data": sent.data})
    if not images and not extra and errors:
        return {"error": "Job processing failed", "details": errors}
    response: dict[str, Any] = {"images": images, **extra}
    if errors:
        response["errors"] = errors
    if not images and not errors:
        response["status"] = "success_no_images"
    return response


def failure(exc: BaseException) -> dict[str, Any]:
    """``{"error": message}`` or ``{"error": message, "details": [...]}`` for an exception."""
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
    if isinstance(exc, ExecutionError):
        return _shape(f"Workflow execution error: Node Type: {exc.node_type}, Node ID: {exc.node_id}, "
                      f"Message: {exc.exception_message}", [f"{exc.exception_type}: {exc.exception_message}"])
    if isinstance(exc, EmbeddedError):
        return _shape(str(exc), exc.details())
    return _shape(f"An unexpected error occurred: {type(exc).__name__}: {exc}", [])


def _shape(message: str, details: list[str]) -> dict[str, Any]:
    return {"error": message, "details": list(details)} if details else {"error": message}
