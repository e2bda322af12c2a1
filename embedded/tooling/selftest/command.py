"""``python -m embedded selftest [--tree DIR] [--mode embedded|server|both] [--no-suite]``.

Owns the command: the contract checks (``contract``, in a process of their own booted from
the tree), then ComfyUI's own execution suite of that tree in each mode asked for (``suite``);
prints one line per result and, when something broke, what; exits 1 then. A tree without the
suite (some packaged trees leave ``tests/execution`` out) is said so, and only the contract is
checked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ...config import Config
from .suite import has_suite, run_suite


def contract(tree: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "embedded.tooling.selftest.contract"], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "COMFYUI_PATH": str(tree)})
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"booted": False, "problems": [f"the contract check did not report (exit {proc.returncode}): "
                                              f"{proc.stderr.strip()[-1500:]}"]}


def main(tree: Path | None = None, modes: tuple[str, ...] = ("embedded", "server"), suite: bool = True) -> int:
    tree = (tree or Config.from_env().comfyui_path).resolve()
    print(f"selftest: ComfyUI tree {tree}")
    broken = 0
    report = contract(tree)
    print(f"selftest: contract: {'booted' if report['booted'] else 'did not boot'}, "
          f"{len(report['problems'])} problem(s)")
    for problem in report["problems"]:
        print(f"  - {problem}")
        broken += 1
    if suite and not has_suite(tree):
        print("selftest: this tree has no tests/execution: ComfyUI's execution suite not run")
    elif suite and report["booted"]:
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix=f"embedded-suite-{mode}-") as root:
                result = run_suite(tree, mode, Path(root))
            print(f"selftest: {result.line()}")
            for name, message in sorted(result.failed.items()):
                print(f"  - {name}: {message[:300]}")
            broken += len(result.failed) + len(result.skipped_otherwise)
            if len(result.outcomes) < 50:
                print(f"  - the suite did not run in full ({len(result.outcomes)} tests):\n{result.output[-3000:]}")
                broken += 1
    print("selftest: " + ("OK" if not broken else f"FAILED ({broken} problem(s))"))
    return 0 if not broken else 1


def cli(argv: list[str] | None = None) -> int:
    """``python -m embedded.tooling.selftest`` (also ``python -m embedded selftest``)."""
    parser = argparse.ArgumentParser(prog="python -m embedded selftest",
                                     description="Check this package's contract with a ComfyUI tree (on the CPU): "
                                                 "our contract checks and ComfyUI's own execution suite.")
    parser.add_argument("--tree", type=Path, default=None, help="the ComfyUI tree (default: COMFYUI_PATH or the pin)")
    parser.add_argument("--mode", choices=("embedded", "server", "both"), default="both",
                        help="which backend runs ComfyUI's suite (default: both)")
    parser.add_argument("--no-suite", action="store_true", help="only the contract checks")
    args = parser.parse_args(argv)
    modes = ("embedded", "server") if args.mode == "both" else (args.mode,)
    return main(args.tree, modes, suite=not args.no_suite)
