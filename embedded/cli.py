"""``python -m embedded run WORKFLOW.json [--image NAME=PATH|URL ...] [--model URL:folder/filename[:sha256] ...]
[--output ID ...] [--out DIR] [--timeout S]`` and ``python -m embedded check WORKFLOW.json [--image ...] [--model ...]
[--output ID ...]``.

Owns: the command line: arguments, a progress bar (downloads, then nodes done / total, and the
steps of the node that reports them), writing outputs into DIR, the preflight report as JSON,
and a one-line reason with a non-zero exit status on failure. Uses the public API (and
``staging.guard.is_url`` to tell a URL from a path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import DownloadEvent, EmbeddedError, Executor, ModelRef
from .config import parse_devices
from .job.events import ExecutingEvent, NodesDone, ProgressEvent
from .job.inputs import check_workflow
from .staging.guard import is_url

EXIT_FAILED, EXIT_USAGE = 1, 2


class ProgressBar:
    """One bar over the workflow's nodes; the running node's steps show in its postfix."""

    def __init__(self, total_nodes: int, enabled: bool):
        self.bar = tqdm(total=total_nodes, unit="node", disable=not enabled, file=sys.stderr,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} nodes [{elapsed}] {postfix}")
        self.nodes = NodesDone()

    def __call__(self, ev) -> None:
        if isinstance(ev, DownloadEvent):
            total = f"/{ev.total // 1024 ** 2} MiB" if ev.total else " MiB"
            self.bar.set_description(f"fetching {ev.name}")
            self.bar.set_postfix_str(f"{ev.received // 1024 ** 2}{total}")
            return
        finished = self.nodes.update(ev)
        if finished:
            self.bar.update(finished)
        if isinstance(ev, ExecutingEvent):
            self.bar.set_description(f"node {ev.node_id}")
            self.bar.set_postfix_str("")
        elif isinstance(ev, ProgressEvent):
            self.bar.set_postfix_str(f"step {int(ev.value)}/{int(ev.max)}")

    def close(self) -> None:
        self.bar.n = self.bar.total
        self.bar.refresh()
        self.bar.close()


def _parse_images(pairs: list[str]) -> dict[str, str | Path]:
    """``NAME=PATH`` or ``NAME=URL`` (fetched by the executor, through the URL guard)."""
    images: dict[str, str | Path] = {}
    for pair in pairs:
        name, sep, source = pair.partition("=")
        if not sep or not name or not source:
            raise ValueError(f"--image expects NAME=PATH or NAME=URL, got {pair!r}")
        if is_url(source):
            images[name] = source
        elif not Path(source).is_file():
            raise ValueError(f"--image {name}: cannot read {source}: no such file")
        else:
            images[name] = Path(source)
    return images


def _parse_models(specs: list[str]) -> list[ModelRef]:
    try:
        return [ModelRef.parse(spec) for spec in specs]
    except EmbeddedError as exc:
        raise ValueError(exc.message) from None


def _write(result, out_dir: Path) -> list[Path]:
    """Each output under ``out_dir`` (in its sub-folder); a name that would leave ``out_dir`` (a
    custom node's ``../`` sub-folder, say) is written there under a flattened name instead."""
    written = []
    root = out_dir.resolve()
    for output in result.outputs:
        path = (root / output.subfolder / output.filename).resolve()
        if root not in path.parents:
            path = root / re.sub(r"[^\w.-]", "_", f"{output.subfolder}_{output.filename}").lstrip("._")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(output.data)
        written.append(path)
    return written


def _read_arguments(args: argparse.Namespace) -> tuple[object, dict[str, str | Path], list[ModelRef]]:
    """The workflow, input files and models named on the command line; raises ValueError (usage
    errors)."""
    try:
        workflow = json.loads(Path(args.workflow).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {args.workflow}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{args.workflow} is not JSON: {exc}") from None
    parse_devices(args.devices)  # a ValueError that says what is expected
    check_workflow(workflow)  # a UI-format export is refused now, before ComfyUI boots (WorkflowFormatError)
    return workflow, _parse_images(args.image), _parse_models(args.model)


def cmd_check(args: argparse.Namespace) -> int:
    """Preflight: prints the report as JSON; exits 0 when the workflow would run, 1 otherwise."""
    try:
        workflow, files, models = _read_arguments(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with Executor(devices=args.devices) as executor:
        report = executor.check(workflow, files=files, models=models, outputs=args.output or None)
    print(json.dumps(report.to_dict(), indent=1))
    return 0 if report.ok else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    try:
        workflow, files, models = _read_arguments(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out_dir = Path(args.out)
    show = not args.quiet and sys.stderr.isatty() or args.progress
    with Executor(devices=args.devices) as executor:
        started = time.perf_counter()
        boot = executor.boot_info
        if not args.quiet:
            on = ", ".join(boot.devices) if boot.devices else ("CPU" if boot.cpu else "GPU")
            print(f"ComfyUI ready in {boot.seconds:.1f} s ({boot.node_classes} node classes, {on})", file=sys.stderr)
        total = len(workflow) if isinstance(workflow, dict) else 0
        bar = ProgressBar(total, show)
        try:
            result = executor.run(workflow, files=files, models=models, on_event=bar, timeout=args.timeout,
                                  outputs=args.output or None)
        finally:
            bar.close()
        written = _write(result, out_dir)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for path in written:
        print(path)
    if not args.quiet:
        print(f"{len(written)} output(s) written to {out_dir}/ in {time.perf_counter() - started:.2f} s "
              f"(job {result.timings.total * 1000:.0f} ms)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m embedded", description="Run ComfyUI workflows in-process.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an API-format workflow and write its outputs")
    run.add_argument("workflow", help="workflow JSON in ComfyUI's API format (Export (API))")
    run.add_argument("--image", action="append", default=[], metavar="NAME=PATH|URL",
                     help="an input file (a path, or an http(s):// or s3:// URL to fetch), referred to as NAME "
                          "by LoadImage and friends (repeatable)")
    run.add_argument("--model", action="append", default=[], metavar="URL:FOLDER/FILENAME[:SHA256]",
                     help="a model to fetch into the model cache first, e.g. "
                          "https://host/x.safetensors:loras/x.safetensors (repeatable)")
    run.add_argument("--output", action="append", default=[], metavar="ID",
                     help="run only this output node (and what it needs); repeat for more (default: every output)")
    run.add_argument("--out", default="out", metavar="DIR", help="folder for the outputs (default: out)")
    run.add_argument("--timeout", type=float, default=None, metavar="S", help="stop the job after S seconds")
    run.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    run.add_argument("--devices", default=None, metavar="all|0,1|cpu",
                     help="the device(s) to run on (COMFY_DEVICES; default: one, in this process); a job uses one")
    run.add_argument("-q", "--quiet", action="store_true", help="print only the paths written")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate a workflow without running it (preflight), as JSON")
    check.add_argument("workflow", help="workflow JSON in ComfyUI's API format (Export (API))")
    check.add_argument("--image", action="append", default=[], metavar="NAME=PATH|URL",
                       help="an input file the workflow loads, as NAME (repeatable; URLs are listed, not fetched)")
    check.add_argument("--model", action="append", default=[], metavar="URL:FOLDER/FILENAME[:SHA256]",
                       help="a model the job would fetch (repeatable; listed, not fetched)")
    check.add_argument("--output", action="append", default=[], metavar="ID",
                       help="check only this output node (and what it needs), as run --output would run it")
    check.add_argument("--devices", default=None, metavar="all|0,1|cpu", help="as run --devices (COMFY_DEVICES)")
    check.add_argument("-q", "--quiet", action="store_true", help="less logging")
    check.set_defaults(func=cmd_check)
    # listed here; main() hands their arguments to their own command lines
    sub.add_parser("serve", add_help=False,
                   help="serve Comfy API v2 (the official comfy-sdk client works against it) on in-process ComfyUI "
                        "(options: serve --help)")
    sub.add_parser("selftest", add_help=False,
                   help="check this package's contract with a ComfyUI tree (on the CPU): our contract checks and "
                        "ComfyUI's own execution suite (options: selftest --help)")
    return parser


def selftest(argv: list[str]) -> int:
    """The self-test is tooling, apart from the runtime: it runs as its own command."""
    import subprocess

    return subprocess.call([sys.executable, "-m", "embedded.tooling.selftest", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["selftest"]:
        return selftest(argv[1:])
    if argv[:1] == ["serve"]:
        from .apiv2.command import main as serve
        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        os.environ.setdefault("COMFY_LOG_LEVEL", "WARNING")
    try:
        return args.func(args)
    except EmbeddedError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
