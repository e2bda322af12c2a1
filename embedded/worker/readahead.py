"""Reading the warm-up workflow's model files into the page cache while ComfyUI imports.

Owns: finding the model files a workflow names (string inputs ending in a model file extension,
looked up under the model folders this worker knows: ``COMFY_MODELS_DIR``, the tree's
``models``, the network volume's ``models``, the model cache) and reading them once, in a
background thread, so that the warm-up's loaders find them in memory. On a GPU worker with a
network volume that read is the largest part of a cold start; here it overlaps with the imports.

Must not import ComfyUI or RunPod.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from ..config import Config

log = logging.getLogger("embedded.worker")

MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx")
CHUNK = 8 * 1024 * 1024


def model_names(workflow: Any) -> set[str]:
    """The workflow's string inputs that name a model file."""
    names = set()
    for node in workflow.values() if isinstance(workflow, dict) else ():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in (inputs or {}).values() if isinstance(inputs, dict) else ():
            if isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS):
                names.add(value.replace("\\", "/"))
    return names


def model_roots(config: Config) -> list[Path]:
    return [config.models, config.comfyui_path / "models", config.network_volume / "models", config.model_cache]


def find(names: set[str], roots: Iterable[Path]) -> list[Path]:
    """Files ``<root>/<kind>/<name>`` for each of ``names`` (a name may hold sub-folders, as
    ComfyUI lists them), under each of ``roots``; links are followed, each folder once."""
    found: dict[Path, None] = {}
    for root in roots:
        if not root.is_dir():
            continue
        seen: set[str] = set()
        for folder, dirs, files in os.walk(root, followlinks=True):
            real = os.path.realpath(folder)
            if real in seen:  # a link back up the tree
                dirs[:] = []
                continue
            seen.add(real)
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                path = Path(folder) / file
                kind_and_name = path.relative_to(root).as_posix().split("/", 1)
                if len(kind_and_name) == 2 and kind_and_name[1] in names:
                    found[path] = None
    return list(found)


def read(paths: Iterable[Path]) -> int:
    """Read ``paths`` through once (into the page cache); returns the bytes read."""
    total = 0
    for path in paths:
        try:
            with open(path, "rb", buffering=0) as f:
                while chunk := f.read(CHUNK):
                    total += len(chunk)
        except OSError as exc:
            log.debug("read-ahead of %s failed: %s", path.name, exc.strerror)
    return total


def start(config: Config, workflow: Any) -> threading.Thread | None:
    """Read the model files ``workflow`` names in a background thread; ``None`` when it names none."""
    names = model_names(workflow)
    if not names:
        return None

    def run() -> None:
        started = time.perf_counter()
        paths = find(names, model_roots(config))
        size = read(paths)
        log.info("worker: read %d model file(s), %.0f MB, ahead of the warm-up in %.1f s", len(paths), size / 1e6,
                 time.perf_counter() - started)

    thread = threading.Thread(target=run, name="embedded-read-ahead", daemon=True)
    thread.start()
    return thread
