"""ComfyUI's own error dictionaries -> this package's exceptions, the same way for both backends.

Owns: the mapping of ``validate_prompt``'s result (also what ``POST /prompt`` answers with HTTP 400)
to ``ValidationError`` with one ``NodeError`` per reason, and of a finished prompt's status
messages (``execution_error`` / ``execution_interrupted``, as ``PromptExecutor.status_messages``
and ``/history`` hold them) to ``ExecutionError`` / ``JobInterrupted`` / ``JobTimeout``.

Must not import ComfyUI or the backends: the embedded backend passes ComfyUI's values in, the
server backend what its HTTP API returned. ``options_for(class_type, input_name)`` supplies the
allowed values of a list input (model files), which ComfyUI leaves out of long lists.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Iterable

from . import packs
from ..job.errors import ExecutionError, JobInterrupted, JobTimeout, NodeError, ValidationError
from ..job.types import FailedPack

OptionsLookup = Callable[[str, str], "tuple[str, ...] | None"]


def node_errors(raw: dict[str, Any] | None, prompt: dict[str, Any],
                options_for: OptionsLookup | None = None,
                kind_of: Callable[[str, tuple[str, ...]], "str | None"] | None = None) -> list[NodeError]:
    """ComfyUI's node errors as ours; a model file that is not there names the model folders it is
    in none of (``kind_of``: the same in both modes; a preflight lists their paths), a loader's
    missing input file the ways to give it."""
    found = []
    for node_id, entry in (raw or {}).items():
        node = prompt.get(node_id)
        class_type = entry.get("class_type") or (node.get("class_type") if isinstance(node, dict) else None) or "?"
        for reason in entry.get("errors", []):
            dangling = _dangling_links(reason, prompt)
            if dangling:  # each output that needs the missing node reports it: once is enough
                found.extend(e for e in dangling if e not in found)
                continue
            extra = reason.get("extra_info") or {}
            input_name = extra.get("input_name")
            options = None
            if reason.get("type") == "value_not_in_list" and input_name and options_for is not None:
                options = options_for(str(class_type), str(input_name))
            details = str(reason.get("details", ""))
            kind = kind_of(str(input_name), options) if options is not None and kind_of else None
            if kind:
                details += (f" (it is in none of the {kind!r} model folders, which a preflight lists: put the "
                            f"file there, or give its URL in the job's models to fetch it)")
            missing = _MISSING_INPUT_FILE.search(details)
            if missing:
                details += f" ({missing_input_hint(missing['name'].strip())})"
            found.append(NodeError(str(node_id), str(class_type), str(reason.get("type", "")),
                                   str(reason.get("message", "")), details, input_name, options))
    return found


#: what ComfyUI's loaders (LoadImage, LoadImageMask, LoadAudio, LoadVideo...) say of a file the job lacks
_MISSING_INPUT_FILE = re.compile(r"Invalid (?:image |audio |video )?file(?: path)?: (?P<name>.+)$")


def missing_input_hint(name: str) -> str:
    """How to give a job the input file ``name`` it lacks, in each front door."""
    return (f"the job has no input file {name!r}: give it with files={{{name!r}: ...}} in Python, "
            f"--image {name}=PATH on the command line, or \"images\": [{{\"name\": \"{name}\", \"image\": ...}}] "
            f"in a worker request")


def _dangling_links(reason: dict[str, Any], prompt: dict[str, Any]) -> list[NodeError]:
    """ComfyUI meets a link to a node that is not in the prompt as a ``KeyError`` while validating
    an output that needs it (``Exception when validating node: '99'`` on the output node, or
    ``... inner node`` on a node between them, named with the downstream node's input): said
    instead as the links that point at the missing node, with their node and input."""
    if reason.get("type") not in ("exception_during_validation", "exception_during_inner_validation") or \
            (reason.get("extra_info") or {}).get("exception_type") not in ("KeyError", "builtins.KeyError"):
        return []
    missing = str(reason.get("details", "")).strip("'\"")
    if not missing or missing in prompt:
        return []
    return [NodeError(str(node_id), str(node.get("class_type", "?")), "missing_link_target",
                      f"Input links to node {missing}, which is not in the workflow", input_name=str(name))
            for node_id, node in prompt.items() if isinstance(node, dict)
            for name, value in (node.get("inputs") if isinstance(node.get("inputs"), dict) else {}).items()
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == missing]


def validation_error(error: dict[str, Any] | None, raw_node_errors: dict[str, Any] | None,
                     prompt: dict[str, Any], options_for: OptionsLookup | None = None,
                     failed_packs: Iterable[FailedPack] = (),
                     known_classes: Callable[[], Iterable[str]] | None = None,
                     kind_of: Callable[[str, tuple[str, ...]], "str | None"] | None = None) -> ValidationError:
    """``failed_packs``: a node type that does not exist is explained by the pack that failed; else
    the closest of ``known_classes`` are suggested, and a missing pack named as the likely cause."""
    error = error or {}
    message = str(error.get("message") or "Workflow validation failed")
    extra = str(error.get("details") or "")
    missing = _MISSING_NODE.match(message)
    why = ""
    if missing:
        failed_packs = list(failed_packs)
        why = packs.hint(missing["class_type"], failed_packs)
        if not any(packs.defines(p, missing["class_type"]) for p in failed_packs):  # no pack of ours owns it
            suggestion = unknown_class_hint(missing["class_type"], known_classes() if known_classes else ())
            why = f"{suggestion}; {why}" if why else suggestion
    if why:
        extra = f"{extra}; {why}" if extra else why
    return ValidationError(message, str(error.get("type") or "invalid_prompt"),
                           node_errors(raw_node_errors, prompt, options_for, kind_of), extra=extra)


def unknown_class_hint(class_type: str, known: Iterable[str]) -> str:
    """What to do about a node type nobody defines: the closest registered names, and the pack."""
    close = difflib.get_close_matches(class_type, list(known), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return (f"{hint}If '{class_type}' comes from a custom-node pack, that pack is not installed: put it in a "
            f"custom_nodes folder (COMFYUI_PATH's, or $COMFY_WORK_DIR/custom_nodes) with its requirements")


#: ComfyUI's message for a node type it does not know
_MISSING_NODE = re.compile(r"Cannot execute because node (?P<class_type>.+) does not exist\.$")


def options_from_input_spec(spec: Any, input_name: str) -> tuple[str, ...] | None:
    """The allowed values of ``input_name`` in a node's ``INPUT_TYPES()`` / ``/object_info`` entry."""
    if not isinstance(spec, dict):
        return None
    for section in ("required", "optional"):
        info = (spec.get(section) or {}).get(input_name)
        if not info:
            continue
        first = info[0]
        if isinstance(first, (list, tuple)):
            return tuple(str(v) for v in first)
        if first == "COMBO" and len(info) > 1 and isinstance(info[1], dict):
            return tuple(str(v) for v in info[1].get("options", ()))
    return None


def status_error(messages: Iterable[Any], stop_reason: str | None, timeout: float | None) -> Exception | None:
    """The exception a finished prompt's status messages call for (``None``: it succeeded).

    ``stop_reason`` is why we asked it to stop (``"interrupt"``, ``"timeout"`` or ``None``): an
    interrupted prompt is a ``JobTimeout`` when the timeout asked for it.
    """
    for item in messages:
        event, data = item[0], item[1]
        if event == "execution_error":
            return ExecutionError(str(data.get("node_id")), str(data.get("node_type")),
                                  str(data.get("exception_type")), str(data.get("exception_message")),
                                  data.get("traceback"))
        if event == "execution_interrupted":
            return stopped(stop_reason, timeout, data.get("node_id"), data.get("node_type"))
    return None


def stopped(stop_reason: str | None, timeout: float | None, node_id=None, node_type=None) -> JobInterrupted:
    if stop_reason == "timeout" and timeout is not None:
        return JobTimeout(timeout, node_id, node_type)
    return JobInterrupted(node_id=node_id, node_type=node_type)
