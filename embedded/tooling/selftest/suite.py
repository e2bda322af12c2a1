"""ComfyUI's own execution suite, run through our API: the copy, the pytest run, the outcomes.

Owns: ``copy_suite`` (``pytest.ini``, ``tests/__init__.py``, ``tests/conftest.py`` and
``tests/execution/`` of a tree into a folder of their own: pytest's caches and their samples folder
never land in the tree), ``run_suite`` (pytest in a subprocess, with ``suite_adapter`` and
``--skip-timing-checks``: no duration is asserted) and ``SuiteReport`` (test id -> outcome, and
the history-paging tests reported as not applicable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .suite_adapter import NOT_APPLICABLE

SUITE = "tests/execution"


@dataclass
class SuiteReport:
    mode: str
    #: test id -> (outcome, message); outcome is "passed", "failure", "error" or "skipped"
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)
    output: str = ""

    @property
    def failed(self) -> dict[str, str]:
        return {name: msg for name, (outcome, msg) in self.outcomes.items() if outcome in ("failure", "error")}

    @property
    def not_applicable(self) -> list[str]:
        return [name for name, (outcome, msg) in self.outcomes.items()
                if outcome == "skipped" and msg.endswith(NOT_APPLICABLE)]

    @property
    def skipped_otherwise(self) -> list[str]:
        return [name for name, (outcome, msg) in self.outcomes.items()
                if outcome == "skipped" and not msg.endswith(NOT_APPLICABLE)]

    @property
    def passed(self) -> int:
        return sum(1 for outcome, _ in self.outcomes.values() if outcome == "passed")

    def line(self) -> str:
        return (f"ComfyUI's execution suite, {self.mode} mode: {self.passed} passed, {len(self.failed)} failed, "
                f"{len(self.not_applicable)} not applicable (HTTP history paging)")


def has_suite(tree: Path) -> bool:
    return (tree / SUITE / "test_execution.py").is_file() and (tree / "tests" / "conftest.py").is_file()


def copy_suite(tree: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    if (tree / "pytest.ini").is_file():
        shutil.copy2(tree / "pytest.ini", dest / "pytest.ini")
    (dest / "tests").mkdir(exist_ok=True)
    for name in ("__init__.py", "conftest.py"):
        shutil.copy2(tree / "tests" / name, dest / "tests" / name)
    shutil.copytree(tree / SUITE, dest / SUITE, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return dest


def run_suite(tree: Path, mode: str, root: Path, timeout: float = 1800) -> SuiteReport:
    """Run the suite of ``tree`` (copied into ``root``) in ``mode`` ("embedded" or "server")."""
    copy_suite(tree, root)
    report = root / f"report-{mode}.xml"
    report.unlink(missing_ok=True)
    env = {**os.environ, "EMBEDDED_SUITE_MODE": mode, "COMFYUI_PATH": str(tree),
           "COMFY_LOG_LEVEL": os.environ.get("EMBEDDED_SUITE_LOG_LEVEL", "WARNING"),
           "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("EXECUTION_MODE", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", SUITE, "-p", "embedded.tooling.selftest.suite_adapter",
                           "-p", "no:cacheprovider", "--skip-timing-checks", "-q", "-o", "addopts=",
                           f"--junitxml={report}", "--output_dir", str(root / "samples")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    result = SuiteReport(mode, output=(proc.stdout + proc.stderr)[-8000:])
    if not report.is_file():
        result.outcomes["<the suite did not run>"] = ("error", result.output[-2000:])
        return result
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, (child.get("message") or "")
        result.outcomes[f"{case.get('classname')}::{case.get('name')}"] = (outcome, message)
    return result
