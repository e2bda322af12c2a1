"""ComfyUI's own node packs imported on first use: the index from node class to the file that
defines it (``python -m embedded.comfy.nodeindex`` builds it).

Owns: the index (``<COMFY_WORK_DIR>/node-index.json``: for each class of ``comfy_extras`` and
``comfy_api_nodes``, the file that registered it in an eager import, and a fingerprint of the
tree's node files, so that another tree, or a changed one, is never served a stale index), and
``LazyPacks``, which imports a job's files before it is validated, each once, through ComfyUI's
own ``nodes.load_custom_node`` (as its ``init_builtin_extra_nodes`` does; a file's class that
another pack registered first is left alone, as in an eager import where custom packs come
last). The Comfy.org API nodes' ``canary.py`` goes first, as in ComfyUI.

Custom-node packs are always imported at boot (they may patch anything). ``EAGER_NODES=true``, a
missing index, or one for another tree means the full import at boot (which then writes the
index). Imports ComfyUI only inside the functions that run on the runner's thread after boot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("embedded.comfy")

VERSION = 1
#: ComfyUI's node packs that are imported lazily, with the file the API nodes need first
PACKS = ("comfy_extras", "comfy_api_nodes")
API_CANARY = "comfy_api_nodes/canary.py"


def fingerprint(tree: Path) -> str:
    """A hash of ``nodes.py`` and every Python file of the lazily imported packs."""
    digest = hashlib.sha256(f"v{VERSION}".encode())
    files = [tree / "nodes.py"] + sorted(p for pack in PACKS for p in (tree / pack).rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(tree)).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"<unreadable>")
    return digest.hexdigest()


@dataclass(frozen=True)
class NodeIndex:
    fingerprint: str
    #: node class -> the file (relative to the tree) that defines it
    classes: dict[str, str] = field(default_factory=dict)
    #: whether the API nodes were imported when it was built (``--disable-api-nodes`` leaves them out)
    api_nodes: bool = True

    @classmethod
    def read(cls, path: Path, tree: Path, api_nodes: bool) -> "NodeIndex | None":
        """The index at ``path`` if it was built from this tree (and with the API nodes, when
        they are wanted); ``None`` otherwise."""
        try:
            data = json.loads(path.read_text())
            index = cls(data["fingerprint"], dict(data["classes"]), bool(data["api_nodes"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if index.fingerprint != fingerprint(tree) or (api_nodes and not index.api_nodes):
            return None
        return index

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"fingerprint": self.fingerprint, "api_nodes": self.api_nodes,
                                         "classes": self.classes}, indent=0, sort_keys=True))
        os.replace(temporary, path)


def from_loaded(mappings: dict[str, Any], tree: Path, api_nodes: bool) -> NodeIndex:
    """The index of what an eager import registered (before custom packs: they are not indexed)."""
    classes = {}
    for name, node_cls in mappings.items():
        module = getattr(node_cls, "RELATIVE_PYTHON_MODULE", "") or ""
        parent, _, stem = module.partition(".")
        if parent in PACKS and (tree / parent / f"{stem}.py").is_file():
            classes[name] = f"{parent}/{stem}.py"
    return NodeIndex(fingerprint(tree), classes, api_nodes)


class LazyPacks:
    """Imports the files of an index on first use (on the runner's thread, after boot)."""

    def __init__(self, index: NodeIndex, tree: Path, api_nodes: bool):
        self.index = index
        self.tree = tree
        self.api_nodes = api_nodes
        self._loaded: set[str] = set()

    def not_loaded(self) -> set[str]:
        """Indexed classes whose file has not been imported yet."""
        import nodes

        return {c for c, f in self.index.classes.items() if f not in self._loaded and c not in nodes.NODE_CLASS_MAPPINGS
                and self._wanted(f)}

    async def ensure(self, class_types: Iterable[Any]) -> list[str]:
        """Import the files defining ``class_types`` that are not registered yet; returns those files."""
        import hook_breaker_ac10a0
        import nodes

        files = sorted({self.index.classes[c] for c in class_types if isinstance(c, str)
                        and c not in nodes.NODE_CLASS_MAPPINGS and c in self.index.classes} - self._loaded)
        files = [f for f in files if self._wanted(f)]
        if not files:
            return []
        if any(f.startswith("comfy_api_nodes/") for f in files) and API_CANARY not in self._loaded:
            files.insert(0, API_CANARY)
        hook_breaker_ac10a0.save_functions()
        try:
            for rel in files:
                self._loaded.add(rel)
                parent = rel.split("/", 1)[0]
                if not await nodes.load_custom_node(str(self.tree / rel), ignore=set(nodes.NODE_CLASS_MAPPINGS),
                                                    module_parent=parent):
                    log.warning("embedded: %s did not import (its nodes are unknown)", rel)
        finally:
            hook_breaker_ac10a0.restore_functions()
        log.debug("embedded: imported %s on first use", ", ".join(files))
        return files

    def _wanted(self, rel: str) -> bool:
        return self.api_nodes or not rel.startswith("comfy_api_nodes/")


def main() -> int:
    """Build the index for the configured tree and work folder (an eager boot)."""
    import asyncio
    import dataclasses

    from ..config import Config
    from . import boot

    config = dataclasses.replace(Config.from_env(), eager_nodes=True)
    loop = asyncio.new_event_loop()
    try:
        info = boot.boot(config, loop)
    finally:
        loop.close()
    print(f"node index: {info.node_classes} node classes, written to {config.node_index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
