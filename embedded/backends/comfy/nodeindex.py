"""ComfyUI's own node packs imported on first use: the index from node class to the file that
defines it (``python -m embedded.backends.comfy.build_index`` builds it).

Owns: the index (``<COMFY_WORK_DIR>/node-index.json``: the files ComfyUI's
``init_builtin_extra_nodes`` and ``init_builtin_api_nodes`` import, in their order, for each class
the file that registered it in an eager import, and a fingerprint of the tree's node files, so
that another tree, or a changed one, is never served a stale index), and ``LazyPacks``, which
imports a job's files before it is validated, each once, through ComfyUI's own
``nodes.load_custom_node``, with the precedence of an eager import: a file registers only the
classes the index gives it, and never one registered before it (custom packs, imported at boot,
are kept off the built-in names as ComfyUI keeps them: ``builtin_names_kept``). The API nodes'
``canary.py`` goes first, and when it fails no API file is imported, as in ComfyUI. A class that
neither ComfyUI nor the index knows makes every remaining file import, in ComfyUI's order, before
it is called unknown (a file that failed when the index was built may import now).

Custom-node packs are always imported at boot (they may patch anything). ``EAGER_NODES=true``, a
missing index, or one for another tree means the full import at boot (which then writes the
index). Imports ComfyUI only inside the functions that run on the runner's thread after boot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

log = logging.getLogger("embedded.backends.comfy")

VERSION = 2
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
    #: every file ComfyUI imports, in its order (those that failed included)
    files: tuple[str, ...] = ()
    #: the files that did not import when it was built (file names, as ComfyUI reports them)
    failed: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: Path, tree: Path, api_nodes: bool) -> "NodeIndex | None":
        """The index at ``path`` if it was built from this tree (and with the API nodes, when
        they are wanted); ``None`` otherwise."""
        try:
            data = json.loads(path.read_text())
            index = cls(data["fingerprint"], dict(data["classes"]), bool(data["api_nodes"]), tuple(data["files"]),
                        tuple(data["failed"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if index.fingerprint != fingerprint(tree) or (api_nodes and not index.api_nodes):
            return None
        return index

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")  # workers may share the folder
        temporary.write_text(json.dumps({"fingerprint": self.fingerprint, "api_nodes": self.api_nodes,
                                         "files": list(self.files), "failed": list(self.failed),
                                         "classes": self.classes}, indent=0, sort_keys=True))
        os.replace(temporary, path)


@contextlib.contextmanager
def recording_files(nodes_module: Any) -> Iterator[list[str]]:
    """While the block runs, the files ComfyUI's own packs import (``load_custom_node`` calls
    with a ``comfy_extras``/``comfy_api_nodes`` parent), in order, relative to the tree."""
    original = nodes_module.load_custom_node
    files: list[str] = []

    async def recorded(module_path, ignore=set(), module_parent="custom_nodes"):
        if module_parent in PACKS:
            files.append(f"{module_parent}/{os.path.basename(module_path)}")
        return await original(module_path, ignore, module_parent)

    nodes_module.load_custom_node = recorded
    try:
        yield files
    finally:
        nodes_module.load_custom_node = original


def from_loaded(mappings: dict[str, Any], tree: Path, api_nodes: bool, files: Iterable[str],
                failed: Iterable[str]) -> NodeIndex:
    """The index of what an eager import of ``files`` registered (before custom packs: they are
    not indexed), ``failed`` naming those that did not import."""
    classes = {}
    for name, node_cls in mappings.items():
        module = getattr(node_cls, "RELATIVE_PYTHON_MODULE", "") or ""
        parent, _, stem = module.partition(".")
        if parent in PACKS and (tree / parent / f"{stem}.py").is_file():
            classes[name] = f"{parent}/{stem}.py"
    return NodeIndex(fingerprint(tree), classes, api_nodes, tuple(files), tuple(failed))


class LazyMappings(dict):
    """``nodes.NODE_CLASS_MAPPINGS`` while ComfyUI's own packs load on first use: the same dict,
    filled in place (packs that captured it at import see every class), whose lookups of a class
    not registered yet (``[name]``, ``.get``, ``in``) import its file first, from any thread and at
    any time (a node that expands into a class the workflow does not name, a pack that looks up a
    built-in class while it imports or runs). A name no file defines imports the remaining files
    once, as ``ensure`` does: afterwards every lookup answers as after an eager import."""

    def __init__(self, mappings: dict, lazy: "LazyPacks"):
        super().__init__(mappings)
        self._lazy = lazy

    def __missing__(self, key):
        self._lazy.ensure_now((key,))
        return dict.__getitem__(self, key)

    def __contains__(self, key) -> bool:
        if dict.__contains__(self, key):
            return True
        self._lazy.ensure_now((key,))
        return dict.__contains__(self, key)

    def get(self, key, default=None):
        if not dict.__contains__(self, key):
            self._lazy.ensure_now((key,))
        return dict.get(self, key, default)


class LazyPacks:
    """Imports the files of an index on first use (before a job is validated, and whenever a class
    is looked up: ``LazyMappings``)."""

    def __init__(self, index: NodeIndex, tree: Path, api_nodes: bool):
        self.index = index
        self.tree = tree
        self.api_nodes = api_nodes
        self._loaded: set[str] = set()
        self._lock = threading.RLock()  # lookups come from any thread (and again from an import)

    def install(self, nodes_module: Any) -> None:
        """Make ``nodes.NODE_CLASS_MAPPINGS`` a ``LazyMappings`` (before any node pack imports)."""
        if not isinstance(nodes_module.NODE_CLASS_MAPPINGS, LazyMappings):
            nodes_module.NODE_CLASS_MAPPINGS = LazyMappings(nodes_module.NODE_CLASS_MAPPINGS, self)

    def ensure_now(self, class_types: Iterable[Any]) -> list[str]:
        """``ensure`` from synchronous code. ComfyUI's loader is a coroutine that does not wait
        on anything for its own packs (a V3 entry point returns at once), so it is driven here
        to its end; one that would wait leaves the class unknown, with a warning."""
        coro = self.ensure(class_types)
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value or []
        coro.close()
        log.warning("embedded: importing the node files for %s had to wait on the event loop; not imported",
                    ", ".join(map(str, class_types)))
        return []

    @contextlib.contextmanager
    def builtin_names_kept(self, nodes_module: Any) -> Iterator[None]:
        """While the block runs (ComfyUI's ``init_external_custom_nodes``), custom packs do not
        register the classes of ComfyUI's own packs, as in an eager import where those are
        registered first and passed to every custom pack as names to ignore."""
        names = {c for c, f in self.index.classes.items() if self._wanted(f)}
        original = nodes_module.load_custom_node

        async def keeping(module_path, ignore=set(), module_parent="custom_nodes"):
            return await original(module_path, set(ignore) | names if module_parent == "custom_nodes" else ignore,
                                  module_parent)

        nodes_module.load_custom_node = keeping
        try:
            yield
        finally:
            nodes_module.load_custom_node = original

    def not_loaded(self) -> set[str]:
        """Indexed classes whose file has not been imported yet."""
        import nodes

        return {c for c, f in self.index.classes.items() if f not in self._loaded
                and not dict.__contains__(nodes.NODE_CLASS_MAPPINGS, c) and self._wanted(f)}

    async def ensure(self, class_types: Iterable[Any]) -> list[str]:
        """Import the files defining ``class_types`` that are not registered yet (all remaining
        files when one of them is known neither to ComfyUI nor to the index); returns the files."""
        with self._lock:
            return await self._ensure(class_types)

    async def _ensure(self, class_types: Iterable[Any]) -> list[str]:
        import nodes

        registered = nodes.NODE_CLASS_MAPPINGS
        wanted = {c for c in class_types if isinstance(c, str) and not dict.__contains__(registered, c)}
        if wanted - set(self.index.classes):  # unknown to the index: maybe a file that failed at build time
            files = [f for f in self.index.files if f not in self._loaded and self._wanted(f)]
        else:
            needed = {self.index.classes[c] for c in wanted}
            files = [f for f in self.index.files if f in needed and f not in self._loaded and self._wanted(f)]
        if not files:
            return []
        if any(f.startswith("comfy_api_nodes/") for f in files) and API_CANARY not in self._loaded:
            self._loaded.add(API_CANARY)
            if not await nodes.load_custom_node(str(self.tree / API_CANARY), module_parent="comfy_api_nodes"):
                log.warning("embedded: %s did not import: no API node is loaded, as in ComfyUI", API_CANARY)
                self.api_nodes = False
                files = [f for f in files if self._wanted(f)]
        import hook_breaker_ac10a0

        try:
            for rel in files:
                self._loaded.add(rel)
                parent = rel.split("/", 1)[0]
                # as eager: only the classes this file won, and nothing registered before
                others = {c for c, f in self.index.classes.items() if f != rel}
                if not await nodes.load_custom_node(str(self.tree / rel), ignore=set(nodes.NODE_CLASS_MAPPINGS) | others,
                                                    module_parent=parent):
                    log.warning("embedded: %s did not import (its nodes are unknown)", rel)
        finally:
            hook_breaker_ac10a0.restore_functions()  # as after ComfyUI's own node loading
        log.debug("embedded: imported %s on first use", ", ".join(files))
        return files

    def _wanted(self, rel: str) -> bool:
        return rel != API_CANARY and (self.api_nodes or not rel.startswith("comfy_api_nodes/"))
