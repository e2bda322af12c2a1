"""The package's layout holds: its imports form no cycle, and no import crosses the lines the
README's architecture draws (``embedded/__init__.py`` and each folder's docstring state them).

Reads every module's imports (also those inside functions) with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "embedded"
COMFYUI = REPO / "vendor" / "ComfyUI"

FRONT_DOORS = ("embedded", "embedded.__main__", "embedded.api", "embedded.apiv2", "embedded.cli", "embedded.events",
               "embedded.handler", "embedded.worker")
#: for each part of the runtime, the parts of this package it may import (besides itself)
MAY_IMPORT = {
    "embedded.logs": (),
    "embedded.job": ("embedded.logs",),
    "embedded.config": ("embedded.job", "embedded.staging.guard"),  # the types of its fields
    "embedded.staging": ("embedded.job", "embedded.config", "embedded.logs"),
    "embedded.backends": ("embedded.job", "embedded.staging", "embedded.config", "embedded.logs"),
    **{door: FRONT_DOORS + ("embedded.job", "embedded.staging", "embedded.config", "embedded.logs")
       for door in FRONT_DOORS},
}
#: the backends' implementations: the shared part of ``backends/`` reaches them only through the
#: interface's choice, front doors never; only the pool's child process runs another one (the
#: in-process backend, one per device)
IMPLEMENTATIONS = ("embedded.backends.comfy", "embedded.backends.server", "embedded.backends.pool")
RUNS_AN_IMPLEMENTATION = {"embedded.backends.pool.child": "embedded.backends.comfy"}
#: where ComfyUI's own modules may be imported: the in-process backend, the packs our server mode
#: loads into ComfyUI's server process, and the tooling (the model generator, the self-test)
COMFYUI_ALLOWED = ("embedded.backends.comfy", "embedded.backends.server.comfy_nodes", "embedded.tooling")


def _name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports: ours resolved to the module (``from pkg import mod`` is
    ``pkg.mod``), others by their top-level name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _part(name: str) -> str | None:
    """The longest MAY_IMPORT key ``name`` falls in (front doors are matched exactly, but the
    worker's package)."""
    best = None
    for key in MAY_IMPORT:
        exact_only = key in FRONT_DOORS and key not in ("embedded.worker", "embedded.apiv2")
        if (name == key) if exact_only else _within(name, key):
            best = key if best is None or len(key) > len(best) else best
    return best


def comfyui_top_level() -> set[str]:
    if not COMFYUI.is_dir():
        pytest.skip("no vendored ComfyUI tree")
    return {p.stem for p in COMFYUI.glob("*.py")} | {p.parent.name for p in COMFYUI.glob("*/__init__.py")}


def test_the_package_has_no_import_cycle():
    ours = {name: {t for t in targets if t in MODULES} for name, targets in GRAPH.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(ours[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(ours):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_of_the_runtime_imports_only_what_its_part_may():
    crossing = []
    for name, targets in sorted(GRAPH.items()):
        if _within(name, "embedded.tooling"):
            continue
        part = _part(name)
        assert part is not None, f"{name} belongs to no part of the layout: add it to the README and to MAY_IMPORT"
        for target in sorted(t for t in targets if _within(t, "embedded")):
            if _part(target) == part or any(_within(target, allowed) for allowed in MAY_IMPORT[part]):
                continue
            if target == "embedded.backends" and part in FRONT_DOORS:
                continue  # the backend interface (the package's face), never what is behind it
            crossing.append(f"{name} -> {target}")
    assert not crossing, "imports across the layout's lines:\n" + "\n".join(crossing)


def test_only_the_interface_reaches_a_backend_implementation_and_they_never_meet_but_in_a_device_process():
    crossing = []
    for name, targets in sorted(GRAPH.items()):
        for target in targets:
            impl = next((i for i in IMPLEMENTATIONS if _within(target, i)), None)
            if impl is None or _within(name, impl) or _within(name, "embedded.tooling"):
                continue
            if name == "embedded.backends.interface":
                continue  # the choice between them
            if _within(target, RUNS_AN_IMPLEMENTATION.get(name, "-")):
                continue
            crossing.append(f"{name} -> {target}")
    assert not crossing, "\n".join(crossing)


def test_nothing_of_the_runtime_imports_the_tooling():
    crossing = [f"{name} -> {t}" for name, targets in sorted(GRAPH.items()) if not _within(name, "embedded.tooling")
                for t in targets if _within(t, "embedded.tooling")]
    assert not crossing, "\n".join(crossing)


def test_only_the_in_process_backend_imports_comfyui_in_our_process():
    comfyui = comfyui_top_level()
    crossing = [f"{name} -> {t}" for name, targets in sorted(GRAPH.items())
                if not any(_within(name, allowed) for allowed in COMFYUI_ALLOWED)
                for t in targets if t.split(".")[0] in comfyui]
    assert not crossing, "\n".join(crossing)


def test_every_folder_says_what_it_owns_and_what_it_may_import():
    for init in PACKAGE.rglob("__init__.py"):
        if "comfy_nodes" in init.parts:
            continue  # ComfyUI custom-node packs for the server process, each with its own docstring
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "Owns" in doc and "import" in doc, f"{init.relative_to(REPO)}: say what it owns and may import"


@pytest.mark.parametrize("rule", ["cycle", "crossing"])
def test_the_checks_see_a_violation(rule, monkeypatch):
    """The checks above can fail: a planted import makes each of them fire."""
    if rule == "cycle":
        monkeypatch.setitem(GRAPH, "embedded.job.types", GRAPH["embedded.job.types"] | {"embedded.job.events"})
        monkeypatch.setitem(GRAPH, "embedded.job.events", GRAPH["embedded.job.events"] | {"embedded.job.types"})
        with pytest.raises(AssertionError, match="import cycles"):
            test_the_package_has_no_import_cycle()
    else:
        monkeypatch.setitem(GRAPH, "embedded.job.types", GRAPH["embedded.job.types"] | {"embedded.api"})
        with pytest.raises(AssertionError, match="embedded.job.types -> embedded.api"):
            test_every_module_of_the_runtime_imports_only_what_its_part_may()
