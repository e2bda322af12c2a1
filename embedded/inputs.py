"""What a job brings in: the workflow's format and the input images.

Owns: the checks that run before ComfyUI sees anything: the workflow is an API-format object (a
UI-format export gets a "use Export (API)" error), image names stay inside the job's input folder,
image bytes decode as an image. Writes the images into a job's input folder.

Must not import ComfyUI or the backends.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from PIL import Image, UnidentifiedImageError

from .errors import InputError, NodeError, ValidationError, WorkflowFormatError

UI_FORMAT_HINT = ("This workflow is in ComfyUI's UI format (it has 'nodes' and 'links'). "
                  "Export it in API format instead: in ComfyUI, use 'Export (API)' "
                  "(Workflow menu > Export (API)) and send that file.")


def check_workflow(workflow: Any) -> dict[str, Any]:
    """Return the workflow if it looks like API format; raise ``WorkflowFormatError`` otherwise.

    A link to a node that is not in the workflow is reported here (ComfyUI's own validation only
    says ``Exception when validating node: '99'``); other node-level problems (unknown class,
    missing inputs, values out of range) are left to ComfyUI so that its messages reach the user
    unchanged.
    """
    if not isinstance(workflow, dict):
        raise WorkflowFormatError(
            f"The workflow must be a JSON object in ComfyUI's API format, not {type(workflow).__name__}")
    if isinstance(workflow.get("nodes"), list) and "links" in workflow:
        raise WorkflowFormatError(UI_FORMAT_HINT)
    if not workflow:
        raise WorkflowFormatError("The workflow is empty: it has no nodes")
    bad = [str(k) for k, v in workflow.items() if not isinstance(v, dict)]
    if bad:
        raise WorkflowFormatError(
            f"Node {bad[0]} is not an object with 'class_type' and 'inputs'; is this an API-format workflow?"
            + (f" ({len(bad)} such entries)" if len(bad) > 1 else ""))
    dangling = [
        NodeError(str(node_id), str(node.get("class_type", "?")), "missing_link_target",
                  f"Input links to node {value[0]}, which is not in the workflow", input_name=str(name))
        for node_id, node in workflow.items()
        for name, value in (node["inputs"] if isinstance(node.get("inputs"), dict) else {}).items()
        if _is_link(value) and value[0] not in workflow
    ]
    if dangling:
        raise ValidationError("Prompt outputs failed validation", "prompt_outputs_failed_validation", dangling)
    return workflow


def _is_link(value: Any) -> bool:
    """ComfyUI's ``is_link``: ``["<node id>", <output index>]``."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def check_image_name(name: Any) -> str:
    """A relative POSIX path inside the input folder: no absolute path, ``..``, NUL or backslash."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"Image name must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise InputError(f"Image name {name!r} contains a NUL character")
    if "\\" in name:
        raise InputError(f"Image name {name!r} contains a backslash; use '/' for sub-folders")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("~"):
        raise InputError(f"Image name {name!r} is an absolute path; give a name relative to the input folder")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise InputError(f"Image name {name!r} contains '..', '.' or '//'; give a plain relative name")
    return name


def check_image_bytes(name: str, data: Any) -> bytes:
    if not isinstance(data, (bytes, bytearray)):
        raise InputError(f"Image {name!r}: expected bytes, got {type(data).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"Image {name!r} is not a readable image: {exc}") from None
    return bytes(data)


def check_images(images: Mapping[str, Any] | None) -> dict[str, bytes]:
    if images is None:
        return {}
    if not isinstance(images, Mapping):
        raise InputError(f"images must map names to bytes, got {type(images).__name__}")
    return {check_image_name(n): check_image_bytes(n, d) for n, d in images.items()}


def write_images(images: Mapping[str, bytes], folder: Path) -> list[Path]:
    """Write checked images under ``folder`` (created); returns the paths written."""
    written = []
    root = folder.resolve()
    for name, data in images.items():
        target = (root / check_image_name(name)).resolve()
        if root not in target.parents:
            raise InputError(f"Image name {name!r} escapes the input folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    return written
