"""Preflight: what a workflow would need, found without running a node (``"dry_run": true``,
``Executor.check``, ``python -m embedded check``).

Owns: the report (``Preflight``: ``ok``, ``errors``, ``missing_models``, ``missing_nodes``,
``inputs_to_fetch``) built from what a backend knows: the node types it does not know (every one,
where ComfyUI's own validation stops at the first) and the pack that failed to import for each,
every model input whose file is not in its folders (with the folders searched), and ComfyUI's
validation errors; then ``with_fetches``: what the job would download, and no complaint about a
model the job brings in its ``models``.

Must not import ComfyUI or the backends: they pass in what they know.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from . import packs
from ..job.errors import ValidationError
from ..job.types import FailedPack

#: (input name, options of that list input) -> the model folders holding exactly those files, or
#: None when the input picks no model
FoldersOf = Callable[[str, "tuple[str, ...]"], "tuple[str, ...] | None"]

#: model inputs whose name does not say their folder kind
_KIND_OF_INPUT = {"ckpt_name": "checkpoints", "unet_name": "diffusion_models", "model_name": "upscale_models",
                  "clip_name": "text_encoders"}


@dataclass(frozen=True)
class MissingModel:
    node_id: str
    input: str
    value: Any
    #: the folders of that model kind that were searched
    folders_searched: tuple[str, ...]


@dataclass(frozen=True)
class MissingNode:
    class_type: str
    #: the custom-node pack that defines it and failed to import at boot, if one does
    pack_failed: str | None = None


@dataclass
class Preflight:
    ok: bool
    errors: list[str] = field(default_factory=list)
    missing_models: list[MissingModel] = field(default_factory=list)
    missing_nodes: list[MissingNode] = field(default_factory=list)
    #: what the job would download before it runs (``staging.ToFetch.to_dict()`` items)
    inputs_to_fetch: list[dict[str, Any]] = field(default_factory=list)
    #: what the report was made of (for ``with_fetches``); not part of the answer
    validation: ValidationError | None = field(default=None, repr=False, compare=False)
    warnings: list[str] = field(default_factory=list, repr=False, compare=False)

    def models_missing_besides(self, models: set[tuple[str, str]]) -> list[MissingModel]:
        """The missing models but those ``models`` (``(folder path, filename)``) will provide."""
        return [m for m in self.missing_models
                if not any(m.value == name and folder in m.folders_searched for folder, name in models)]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": list(self.errors),
                "missing_models": [dict(asdict(m), folders_searched=list(m.folders_searched))
                                   for m in self.missing_models],
                "missing_nodes": [{k: v for k, v in asdict(n).items() if v is not None} for n in self.missing_nodes],
                "inputs_to_fetch": list(self.inputs_to_fetch)}


def unknown_nodes(workflow: dict[str, Any], known: Callable[[str], bool],
                  failed_packs: Iterable[FailedPack] = ()) -> list[MissingNode]:
    """Every node type of ``workflow`` the backend does not know, once, in workflow order."""
    failed = list(failed_packs)
    missing: dict[str, MissingNode] = {}
    for node in workflow.values():
        class_type = str(node.get("class_type")) if isinstance(node, dict) else "?"
        if class_type not in missing and not known(class_type):
            owners = [p.name for p in failed if packs.defines(p, class_type)]
            missing[class_type] = MissingNode(class_type, owners[0] if owners else None)
    return list(missing.values())


def missing_models(workflow: dict[str, Any], known: Callable[[str], bool],
                   options_of: Callable[[str, str], "tuple[str, ...] | None"], folders_of: FoldersOf,
                   file_inputs_of: Callable[[str], frozenset[str]]) -> list[MissingModel]:
    """Every model input of a known node whose file is not among its options (found for the whole
    workflow, where ComfyUI's own validation stops at an unknown node type). Inputs that pick a
    file of the input folder (``file_inputs_of``) are no model inputs."""
    found = []
    for node_id, node in workflow.items():
        class_type = str(node.get("class_type")) if isinstance(node, dict) else "?"
        inputs = node.get("inputs") if isinstance(node, dict) and isinstance(node.get("inputs"), dict) else {}
        if not known(class_type):
            continue
        for name, value in inputs.items():
            if not isinstance(value, str) or name in file_inputs_of(class_type):
                continue
            options = options_of(class_type, name)
            if options is None or value in options:
                continue
            folders = folders_of(name, options)
            if folders is not None:
                found.append(MissingModel(str(node_id), name, value, folders))
    return found


def report(missing_nodes: list[MissingNode], models: list[MissingModel], error: ValidationError | None,
           warnings: Iterable[str] = ()) -> Preflight:
    """The preflight: unknown node types, missing models, and ComfyUI's validation ``error`` (None:
    valid, or not validated because node types are unknown). ``warnings`` are node errors of
    outputs that would be skipped while others run (still ``ok``)."""
    errors = [f"Node type {n.class_type} does not exist"
              + (f" (node pack '{n.pack_failed}', which defines it, failed to import at boot)" if n.pack_failed else "")
              for n in missing_nodes]
    if error is not None:
        errors += error.details() or [error.message]
    ok = not missing_nodes and error is None
    warnings = list(warnings)
    return Preflight(ok, errors if not ok else warnings, models, missing_nodes, validation=error, warnings=warnings)


def with_fetches(found: Preflight, to_fetch: list[dict[str, Any]],
                 models: Iterable[tuple[str, str]]) -> Preflight:
    """``found`` for a job that fetches ``to_fetch`` first: listed under ``inputs_to_fetch``, and
    a model input naming a file of ``models`` (``(folder path, filename)``: it will be in that
    folder, one of the input's) is neither missing nor a validation error."""
    models = set(models)
    kept = found.models_missing_besides(models)
    brought = {(m.node_id, m.input) for m in found.missing_models if m not in kept}
    error = found.validation
    if error is not None and brought:
        remaining = [e for e in error.node_errors
                     if not (e.type == "value_not_in_list" and (e.node_id, e.input_name) in brought)]
        if len(remaining) < len(error.node_errors):
            error = ValidationError(error.message, error.type, remaining, error.extra) if remaining else None
    result = report(found.missing_nodes, kept, error, found.warnings)
    result.inputs_to_fetch = list(to_fetch)
    return result


def model_folders(kinds: Callable[[], dict[str, tuple[Iterable[str], Iterable[str]]]]) -> FoldersOf:
    """A ``FoldersOf`` from ComfyUI's model kinds (``kinds()``: kind -> (its files, its folders),
    read once, on the first missing model): the kind whose files are exactly the input's options;
    among several (empty folders look alike), the one the input's name points at (``lora_name`` ->
    ``loras``, ``ckpt_name`` -> ``checkpoints``)."""
    kind_of = model_kinds(kinds)

    def folders_of(input_name: str, options: tuple[str, ...]) -> tuple[str, ...] | None:
        kind = kind_of(input_name, options)
        return None if kind is None else kind_of.table[kind][1]

    return folders_of


def model_kinds(kinds: Callable[[], dict[str, tuple[Iterable[str], Iterable[str]]]]):
    """Which model kind (``checkpoints``, ``loras``...) a model input's options are the files of
    (see ``model_folders``), or None; ``.table`` holds each kind's files and folders once read."""
    loaded: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {}

    def kind_of(input_name: str, options: tuple[str, ...]) -> str | None:
        if not loaded:
            loaded.update({kind: (frozenset(files), tuple(str(f) for f in folders))
                           for kind, (files, folders) in kinds().items() if kind not in ("custom_nodes", "configs")})
        matching = [kind for kind, (files, _) in loaded.items() if files == frozenset(options)]
        if len(matching) > 1:
            stem = input_name.rsplit("_name", 1)[0].rstrip("0123456789_")
            named = _KIND_OF_INPUT.get(re.sub(r"\d+$", "", input_name))
            matching = [named] if named in matching else [k for k in matching if stem and k.startswith(stem)]
        return matching[0] if len(matching) == 1 else None

    kind_of.table = loaded
    return kind_of
