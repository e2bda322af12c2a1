"""Boot the vendored ComfyUI inside this process, once.

Owns the start-up order that works on the pinned tree (see the rules in ``embedded/backends/comfy``):
``sys.path`` -> arguments parsed by ComfyUI's parser from our list -> logging -> ``utils.extra_config``
before ``nodes`` -> folders (the tree's own ``extra_model_paths.yaml`` first, as main.py) -> custom
nodes' prestartup scripts -> ComfyUI's core (``torch._dynamo``, ``scipy.stats``/``integrate``
deferred, see ``deferred``) with our
``PromptServer.instance`` -> node modules, in the order of
ComfyUI's ``init_extra_nodes`` (built-in; then ComfyUI's own packs, extras and API nodes, either
imported now, when there is no index of them or ``EAGER_NODES`` asks, or left to ``LazyPacks``;
then custom packs, always now; packs that fail are recorded) -> progress hook -> ``gc.freeze()``.
Each step's time is kept in ``BootInfo.phases``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from pathlib import Path

from ...config import Config
from ...job.errors import BootError
from ... import logs
from .. import packs
from ..launch import comfy_args, use_cpu
from ...job.types import BootInfo, FailedPack
from . import deferred, nodeindex
from .nodeindex import LazyPacks

log = logging.getLogger("embedded.backends.comfy")


_lock = threading.Lock()
_booted: BootInfo | None = None
_shim = None
_lazy: LazyPacks | None = None


def shim():
    """The installed ``PromptServer.instance`` stand-in (after boot)."""
    return _shim


def lazy_packs() -> LazyPacks | None:
    """ComfyUI's own packs left to be imported on first use (``None``: all imported at boot)."""
    return _lazy


@contextlib.contextmanager
def _argv(argv: list[str]):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def parse_arguments(config: Config) -> None:
    """Step 1 of the boot, on the caller's thread: ComfyUI's parser reads ``sys.argv`` while it is
    swapped for our list, and the runpod SDK also reads (and rewrites) ``sys.argv`` when it starts;
    a worker that boots in the background does this first. Idempotent."""
    with _lock:
        _parse_arguments(config)


def boot(config: Config, loop: asyncio.AbstractEventLoop) -> BootInfo:
    """Boot ComfyUI with ``config`` (node set-up runs on ``loop``, which must not be running).

    Idempotent: a second call returns the first boot; a second call for another tree raises.
    """
    global _booted, _shim, _lazy
    with _lock:
        if _booted is not None:
            if _booted.tree != config.comfyui_path:
                raise BootError(f"ComfyUI is already booted from {_booted.tree}; one tree per process")
            return _booted
        started = time.perf_counter()
        tree = config.comfyui_path
        if not (tree / "execution.py").is_file() or not (tree / "nodes.py").is_file():
            raise BootError(f"No ComfyUI tree at {tree}: run `python -m embedded.tooling.vendor` (or `make demo`) first, "
                            f"or set COMFYUI_PATH")
        try:
            _booted, _shim, _lazy = _boot(config, loop, tree, started)
        except BootError:
            raise
        except Exception as exc:
            raise BootError(f"ComfyUI failed to boot: {type(exc).__name__}: {exc}") from exc
        log.info("embedded: ComfyUI booted in %.2f s (%d node classes, %s)", _booted.seconds,
                 _booted.node_classes, "CPU" if _booted.cpu else "GPU")
        return _booted


_arguments: tuple[Path, list[str], object] | None = None


def _parse_arguments(config: Config) -> tuple[list[str], object]:
    """ComfyUI's own parser reads our list (without ``--cpu``, decided after torch is imported),
    never the process's ``sys.argv``."""
    global _arguments
    tree = config.comfyui_path
    if _arguments is not None:
        if _arguments[0] != tree:
            raise BootError(f"ComfyUI's arguments were parsed for {_arguments[0]}; one tree per process")
        return _arguments[1], _arguments[2]
    if str(tree) not in sys.path:
        sys.path.insert(0, str(tree))
    try:  # --cpu now when COMFY_FORCE_CPU says so; otherwise after torch's CUDA check
        args = comfy_args(config, cpu=bool(config.force_cpu))
    except OSError as exc:
        raise BootError(f"Could not prepare ComfyUI's folders: {exc.strerror or type(exc).__name__} "
                        f"(COMFY_WORK_DIR, COMFY_MODELS_DIR?)") from None
    try:
        import comfy.options
    except ImportError:
        raise BootError(f"No ComfyUI tree at {tree}: run `python -m embedded.tooling.vendor` (or `make demo`) first, "
                        f"or set COMFYUI_PATH") from None
    comfy.options.enable_args_parsing(True)
    with _argv(["comfyui"] + args):
        try:
            cli_args = importlib.import_module("comfy.cli_args")
        except SystemExit as exc:
            raise BootError(f"ComfyUI rejected its arguments {args} (COMFY_ARGS?): exit {exc.code}") from None
        finally:
            comfy.options.enable_args_parsing(False)
    _arguments = (tree, args, cli_args.args)
    return args, cli_args.args


def _boot(config: Config, loop, tree: Path, started: float):
    phases = _Phases(started)
    collecting = gc.isenabled()
    gc.disable()  # imports make objects by the million, almost none garbage: no cyclic collection meanwhile
    try:
        return _boot_steps(config, loop, tree, phases)
    finally:
        if collecting:
            gc.enable()


def _boot_steps(config: Config, loop, tree: Path, phases: "_Phases"):

    # 1. Arguments (already parsed when the worker booted in the background).
    args, parsed = _parse_arguments(config)
    phases.end("arguments")

    # 2. Logging (ComfyUI's setup_logger would replace sys.stdout/sys.stderr).
    logs.setup(config.log_level)

    # 3. utils.extra_config before nodes (nodes.py shadows top-level "utils"), then folders.
    import utils.extra_config
    import folder_paths
    own_paths = tree / "extra_model_paths.yaml"  # main.py reads the tree's own file first
    if own_paths.is_file():
        utils.extra_config.load_extra_path_config(str(own_paths))
    for path in parsed.extra_model_paths_config or []:
        for item in (path if isinstance(path, list) else [path]):
            utils.extra_config.load_extra_path_config(item)
    folder_paths.set_output_directory(str(Path(parsed.output_directory).resolve()))
    folder_paths.set_input_directory(str(Path(parsed.input_directory).resolve()))
    folder_paths.set_user_directory(str(Path(parsed.user_directory).resolve()))
    folder_paths.set_temp_directory(str(Path(parsed.temp_directory).resolve() / "temp"))

    # A custom_nodes folder that does not exist (a network volume's, on a worker without one) is
    # left out: ComfyUI would fail to list it.
    node_dirs, extensions = folder_paths.folder_names_and_paths["custom_nodes"]
    folder_paths.folder_names_and_paths["custom_nodes"] = ([d for d in node_dirs if os.path.isdir(d)], extensions)
    phases.end("folders")

    # 4. Custom nodes' prestartup scripts, as main.py runs them: before torch and the nodes.
    _run_prestartup_scripts(parsed, folder_paths.get_folder_paths("custom_nodes"))
    phases.end("prestartup scripts")

    # torch, and --cpu when CUDA is absent (before comfy.model_management reads it).
    cpu = use_cpu(config) or bool(parsed.cpu)
    if cpu and not parsed.cpu:
        parsed.cpu = True
        args = [*args, "--cpu"]
    phases.end("torch (and the CUDA check)")

    # 5. ComfyUI's core, with torch._dynamo and scipy.stats/integrate left for later (``deferred``,
    # unless EAGER_NODES), and our PromptServer.instance set before any node module is imported.
    with deferred.core_deferred(not config.eager_nodes):
        import server
        from .shim import ServerShim
        stand_in = ServerShim(loop)
        server.PromptServer.instance = stand_in
        import execution  # imports comfy.model_management with the parsed arguments
        stand_in.install_queue(execution.PromptQueue)
        from . import ui_strings
        ui_strings.install()
        import hook_breaker_ac10a0
        import nodes
    phases.end("ComfyUI core (comfy, nodes)")

    # 6. Node modules (a pack that fails to import is recorded with ComfyUI's reason).
    api_nodes = not parsed.disable_api_nodes
    index = None if config.eager_nodes else nodeindex.NodeIndex.read(config.node_index, tree, api_nodes)
    hook_breaker_ac10a0.save_functions()
    failed_packs = _FailedPackRecorder()
    logging.getLogger().addHandler(failed_packs)
    failures: list[str] = []
    try:  # what nodes.init_extra_nodes does, step by step
        loop.run_until_complete(nodes.init_public_apis())
        if index is None:
            with nodeindex.recording_files(nodes) as files:
                failures += loop.run_until_complete(nodes.init_builtin_extra_nodes()) or []
                phases.end("comfy_extras")
                if api_nodes:
                    failures += loop.run_until_complete(nodes.init_builtin_api_nodes()) or []
                    phases.end("comfy_api_nodes")
            _write_index(nodeindex.from_loaded(nodes.NODE_CLASS_MAPPINGS, tree, api_nodes, files, failures),
                         config.node_index)
            lazy = None
        else:
            lazy = nodeindex.LazyPacks(index, tree, api_nodes)
            lazy.install(nodes)  # any lookup of a class not imported yet imports it
            failures += index.failed  # what the eager import that built the index saw
            phases.end("ComfyUI's own packs: on first use")
        if (not parsed.disable_all_custom_nodes) or len(parsed.whitelist_custom_nodes) > 0:
            with lazy.builtin_names_kept(nodes) if lazy else contextlib.nullcontext():
                loop.run_until_complete(nodes.init_external_custom_nodes())
            phases.end("custom node packs")
    finally:
        logging.getLogger().removeHandler(failed_packs)
        hook_breaker_ac10a0.restore_functions()
    for name in failures:
        log.warning("embedded: ComfyUI's node file %s did not import%s (its nodes are unknown)", name,
                    " when the node index was built" if lazy else "")
    for pack in failed_packs.packs.values():
        log.warning("embedded: custom-node pack %s failed to import: %s", pack.name, pack.reason)

    # 7. Progress hook, then freeze what boot allocated.
    from . import progress
    progress.install(stand_in)
    gc.freeze()  # what boot made stays out of every later collection (a few thousand objects of it
    # are garbage: not worth a full collection of half a million)
    phases.end("progress hook, gc.freeze")
    unloaded = len(lazy.not_loaded()) if lazy is not None else 0
    booted = BootInfo(mode="embedded", tree=tree, args=tuple(args), cpu=cpu,
                      node_classes=len(nodes.NODE_CLASS_MAPPINGS) + unloaded, seconds=time.perf_counter() - phases.started,
                      import_failures=tuple(failures), failed_packs=tuple(failed_packs.packs.values()),
                      phases=phases.done)
    return booted, stand_in, lazy


class _Phases:
    """The boot's time, phase by phase."""

    def __init__(self, started: float):
        self.started = self.last = started
        self.done: tuple[tuple[str, float], ...] = ()

    def end(self, name: str) -> None:
        now = time.perf_counter()
        self.done += ((name, round(now - self.last, 4)),)
        self.last = now


def _write_index(index: nodeindex.NodeIndex, path: Path) -> None:
    try:
        index.write(path)
    except OSError as exc:  # a read-only work folder: the next boot imports everything again
        log.warning("embedded: could not write the node index (%s); boots stay eager", exc.strerror)


class _FailedPackRecorder(logging.Handler):
    """Collects ComfyUI's "Cannot import <pack> module for custom nodes" messages during node loading."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.packs: dict[Path, FailedPack] = {}

    def emit(self, record: logging.LogRecord) -> None:
        pack = packs.parse(record.getMessage())
        if pack is not None:
            self.packs.setdefault(pack.path, pack)


def _run_prestartup_scripts(parsed, custom_node_dirs: list[str]) -> None:
    """Run each custom-node pack's ``prestartup_script.py`` as ComfyUI's main.py does (same order,
    same skips: files, ``.disabled``, ``__pycache__``, packs left out by ``--disable-all-custom-nodes``
    unless whitelisted); a failing script is logged, not fatal."""
    if parsed.disable_all_custom_nodes and not parsed.whitelist_custom_nodes:
        return
    for folder in custom_node_dirs:
        try:
            entries = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        except OSError:
            continue
        for entry in entries:
            pack = os.path.join(folder, entry)
            script = os.path.join(pack, "prestartup_script.py")
            if os.path.isfile(pack) or entry.endswith(".disabled") or entry == "__pycache__" \
                    or not os.path.exists(script):
                continue
            if parsed.disable_all_custom_nodes and entry not in parsed.whitelist_custom_nodes:
                continue
            try:
                spec = importlib.util.spec_from_file_location(os.path.splitext(script)[0], script)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                log.info("embedded: ran the prestartup script of %s", entry)
            except Exception as exc:  # as main.py: a broken script is reported, boot goes on
                log.error("embedded: the prestartup script of %s failed: %s: %s", entry, type(exc).__name__, exc)
