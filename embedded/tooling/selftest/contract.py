"""Our executor's contract with ComfyUI: every internal both backends rely on, checked against the
tree that is booted (``python -m embedded.tooling.selftest.contract`` boots one and prints a JSON report;
``python -m embedded selftest`` and the image build run it, ``tests/integration/test_contract.py``
checks the pinned tree).

Owns: ``CHECKS``, one function per thing we read or wrap of ComfyUI's (its name says which), each
returning None or what is wrong. A ComfyUI whose internals moved fails here with a line per
broken piece, instead of failing a user's job later.

Imports ComfyUI inside the checks only (after boot); run by the self-test, never by a job.
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
import traceback
from typing import Callable


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def _expect(ok: bool, problem: str) -> str | None:
    return None if ok else problem


def prompt_executor() -> str | None:
    """comfy/executor.py: PromptExecutor(server, cache_type=, cache_args=), execute_async, history_result."""
    import execution
    init, run = _params(execution.PromptExecutor.__init__), execution.PromptExecutor.execute_async
    return (_expect(init[:2] == ["self", "server"] and {"cache_type", "cache_args"} <= set(init),
                    f"PromptExecutor.__init__{tuple(init)}")
            or _expect(inspect.iscoroutinefunction(run) and _params(run) == [
                "self", "prompt", "prompt_id", "extra_data", "execute_outputs"],
                f"PromptExecutor.execute_async{tuple(_params(run))}")
            or _expect("history_result" in inspect.getsource(execution.PromptExecutor),
                       "PromptExecutor no longer keeps history_result"))


def validate_prompt() -> str | None:
    """Validation with partial_execution_targets (both modes), its 4-tuple answer."""
    import execution
    fn = execution.validate_prompt
    return _expect(inspect.iscoroutinefunction(fn) and _params(fn) == ["prompt_id", "prompt", "partial_execution_list"],
                   f"validate_prompt{tuple(_params(fn))}")


def cache_internals() -> str | None:
    """kept.py's cache keys: CacheType, CacheSet(...).outputs with initialized, cache, cache_key_set."""
    import execution
    from comfy_execution import caching
    names = {t.name for t in execution.CacheType}
    if not {"CLASSIC", "LRU", "NONE", "RAM_PRESSURE"} <= names:
        return f"CacheType has {sorted(names)}"
    for kind in (execution.CacheType.CLASSIC, execution.CacheType.LRU, execution.CacheType.RAM_PRESSURE):
        outputs = execution.CacheSet(kind, {"lru": 10, "ram": 4.0}).outputs
        if getattr(outputs, "initialized", None) is not False or getattr(outputs, "cache", None) != {}:
            return f"the {kind.name} output cache has no initialized/cache attributes"
    if "cache_key_set" not in inspect.getsource(caching.BasicCache.set_prompt):
        return "BasicCache.set_prompt no longer sets cache_key_set"
    return _expect(hasattr(caching.CacheKeySet, "get_data_key"), "CacheKeySet.get_data_key is gone")


def ui_merge() -> str | None:
    """ui_strings.py wraps execution.get_output_from_returns(return_values, obj)."""
    import execution
    fn = execution.get_output_from_returns
    return _expect(_params(fn)[:2] == ["return_values", "obj"] or fn.__name__ == "_ui_strings_kept",
                   f"get_output_from_returns{tuple(_params(fn))}")


def prompt_queue() -> str | None:
    """The stand-in's prompt_queue: execution.PromptQueue(server), mutex, queue, currently_running."""
    import execution
    queue = execution.PromptQueue(type("Server", (), {"queue_updated": lambda self: None})())
    missing = [a for a in ("mutex", "queue", "currently_running", "put", "get_current_queue") if not hasattr(queue, a)]
    return _expect(not missing, f"PromptQueue lacks {missing}")


def node_loading() -> str | None:
    """boot.py and nodeindex.py: load_custom_node(module_path, ignore, module_parent) and the init steps."""
    import nodes
    missing = [n for n in ("init_public_apis", "init_builtin_extra_nodes", "init_builtin_api_nodes",
                           "init_external_custom_nodes") if not inspect.iscoroutinefunction(getattr(nodes, n, None))]
    if missing:
        return f"nodes lacks the coroutines {missing}"
    return _expect(inspect.iscoroutinefunction(nodes.load_custom_node) and _params(nodes.load_custom_node) == [
        "module_path", "ignore", "module_parent"], f"load_custom_node{tuple(_params(nodes.load_custom_node))}")


def failed_pack_message() -> str | None:
    """packs.py reads ComfyUI's words for a pack that did not import."""
    import nodes
    return _expect('f"Cannot import {module_path} module for custom nodes: {e}"' in inspect.getsource(
        nodes.load_custom_node), "load_custom_node words a failed import differently")


def arguments_and_folders() -> str | None:
    """boot.py and housekeeping.py: comfy.cli_args.parser (cache flags), folder_paths setters."""
    import comfy.cli_args
    import folder_paths
    parsed, _ = comfy.cli_args.parser.parse_known_args(["--cache-lru", "3"])
    missing = [n for n in ("set_input_directory", "set_output_directory", "set_temp_directory", "set_user_directory",
                           "get_filename_list", "get_folder_paths", "folder_names_and_paths")
               if not hasattr(folder_paths, n)]
    return (_expect(parsed.cache_lru == 3 and hasattr(parsed, "cache_none") and hasattr(parsed, "cache_ram"),
                    "the parser's cache flags changed")
            or _expect(not missing, f"folder_paths lacks {missing}"))


def progress_and_interrupt() -> str | None:
    """progress.py, the runner: the progress hook, the interrupt flag, binary event types."""
    import comfy.model_management
    import comfy.utils
    import protocol
    missing = [n for n in ("interrupt_current_processing", "processing_interrupted", "throw_exception_if_processing_interrupted")
               if not hasattr(comfy.model_management, n)]
    return (_expect(hasattr(comfy.utils, "set_progress_bar_global_hook"), "set_progress_bar_global_hook is gone")
            or _expect(not missing, f"comfy.model_management lacks {missing}")
            or _expect(all(hasattr(protocol.BinaryEventTypes, n) for n in ("TEXT", "PREVIEW_IMAGE_WITH_METADATA")),
                       "protocol.BinaryEventTypes changed"))


def server_members() -> str | None:
    """What packs read of the server: the real class beside our instance, the hook breaker."""
    import hook_breaker_ac10a0
    import server
    from comfy_execution.graph_utils import GraphBuilder  # noqa: F401 (expansions, their suite)
    return (_expect(hasattr(server.PromptServer, "trigger_on_prompt"), "PromptServer.trigger_on_prompt is gone")
            or _expect(all(hasattr(hook_breaker_ac10a0, n) for n in ("save_functions", "restore_functions")),
                       "hook_breaker_ac10a0 changed"))


CHECKS: tuple[Callable[[], str | None], ...] = (prompt_executor, validate_prompt, cache_internals, ui_merge,
                                                 prompt_queue, node_loading, failed_pack_message,
                                                 arguments_and_folders, progress_and_interrupt, server_members)


def problems() -> list[str]:
    """Every broken piece, one line each (ComfyUI must be booted)."""
    found = []
    for check in CHECKS:
        try:
            problem = check()
        except Exception as exc:  # noqa: BLE001 - a check that cannot even run is a broken piece
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            found.append(f"{check.__name__} ({check.__doc__.split(':')[0]}): {problem}")
    return found


def main() -> int:
    """Boot the configured tree (``COMFYUI_PATH``) in a throw-away work folder, run a job twice (the
    second from ComfyUI's cache) and the checks; print ``{"booted", "problems"}`` as JSON."""
    import os

    from ...api import Executor
    from ...config import Config

    report: dict = {"booted": False, "problems": []}
    with tempfile.TemporaryDirectory(prefix="embedded-contract-") as work:
        config = Config.from_env({**os.environ, "COMFY_WORK_DIR": work, "COMFY_LOG_LEVEL": "ERROR",
                                  "EXECUTION_MODE": "embedded"})
        try:
            with Executor(config) as executor:
                report["booted"] = True
                job = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                    "color": 1}},
                       "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "contract"}}}
                first, second = executor.run(job), executor.run(job)
                if not (first.outputs and [o.data for o in second.outputs] == [o.data for o in first.outputs]):
                    report["problems"].append("a job and its cache hit did not return the same outputs")
                report["problems"] += problems()
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the self-test says what broke
            report["problems"].append(f"boot or first job: {type(exc).__name__}: {exc}")
            report["traceback"] = traceback.format_exc()[-4000:]
    print(json.dumps(report))
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
