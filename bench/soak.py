"""Soak one mode in one process: ``python bench/soak.py embedded|server OUT.json``.

After a warm-up (BENCH_SOAK_WARMUP jobs of the same mix: caches, pools and the allocator settle),
runs BENCH_SOAK_JOBS txt2img jobs alternating two random-weight checkpoints (so models are loaded and unloaded all along) with
BENCH_SOAK_FAILING failing jobs spread among them (half a node that raises, half a node that leaves
an asyncio task behind and then fails), then waits until the between-jobs clean-up has run while
idle, and compares with the state after the warm-up: resident memory of the process tree (server
mode: the client and ComfyUI's server, also reported apart), files left in the work folder, threads,
and asyncio tasks on the runner's loop (embedded mode). Memory is the median of samples taken after
each of the last SAMPLES jobs of the warm-up and of the soak: one reading swings by tens of MiB with
the model loaded at that moment (two checkpoints of very different sizes alternate).
"""

import asyncio
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, WORK, txt2img  # noqa: E402

JOBS = int(os.environ.get("BENCH_SOAK_JOBS", "300"))
FAILING = int(os.environ.get("BENCH_SOAK_FAILING", "50"))
WARMUP = int(os.environ.get("BENCH_SOAK_WARMUP", "50"))
SAMPLES = 25
CHECKPOINTS = ("tiny-sd3.safetensors", "tiny-sd15.safetensors")


def failing(i: int) -> dict:
    """A job that fails in a node: every other one first starts a task that outlives the node."""
    wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": i}},
          "3": {"class_type": "EmbeddedTestRaise", "inputs": {"image": ["2", 0], "message": "soak failure"}},
          "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "soak"}}}
    wf["2"] = ({"class_type": "EmbeddedTestAsyncWriter", "inputs": {"image": ["1", 0], "delay": 0.5,
                                                                   "name": f"late-{i}.txt"}} if i % 2 else
               {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}})
    return wf


def files_left(work: Path) -> int:
    folders = [work / "jobs", *(work / "idle" / k for k in ("input", "output", "temp"))]
    return sum(1 for folder in folders if folder.is_dir() for _ in folder.rglob("*"))


def loop_tasks(executor) -> int | None:
    loop = getattr(executor._runner, "_loop", None)
    if loop is None:
        return None

    async def count():
        return len(asyncio.all_tasks()) - 1  # not this one

    return asyncio.run_coroutine_threadsafe(count(), loop).result(10)


def server_process(executor):
    server = getattr(executor._runner, "server", None)
    if server is None or server.proc is None:
        return None
    import psutil
    return psutil.Process(server.proc.pid)


def state(executor, work: Path, rss_samples: list[float]) -> dict:
    server = server_process(executor)
    return {"rss_mb": round(statistics.median(rss_samples), 1), "files": files_left(work),
            "threads": threading.active_count(),
            "server_rss_mb": round(server.memory_info().rss / 2 ** 20, 1) if server else None,
            "server_threads": server.num_threads() if server else None, "loop_tasks": loop_tasks(executor)}


def mixed(executor, jobs: int, failing_jobs: int, offset: int = 0) -> tuple[int, int, list[float]]:
    """``jobs`` txt2img jobs alternating the checkpoints, ``failing_jobs`` failing ones spread among
    them; returns how many succeeded, how many failed, and the memory (MiB) after each of the last
    SAMPLES jobs."""
    from embedded.worker.recycling import tree_rss
    every = max(1, (jobs + failing_jobs) // max(failing_jobs, 1))
    ok = failed = n_failing = 0
    samples: list[float] = []
    end = offset + jobs + failing_jobs
    for i in range(offset, end):
        if n_failing < failing_jobs and (i - offset) % every == every - 1:
            n_failing += 1
            failed += not run(executor, failing(i))
        else:
            ok += run(executor, txt2img(i, 64, CHECKPOINTS[i % 2]))
        if i >= end - SAMPLES:
            samples.append(tree_rss() / 2 ** 20)
    return ok, failed, samples


def run(executor, wf) -> bool:
    from embedded import EmbeddedError
    try:
        executor.run(wf)
        return True
    except EmbeddedError:
        return False


def main(mode: str, out: Path) -> None:
    from embedded import Config, Executor
    from embedded.comfy.housekeeping import GC_INTERVAL

    work = WORK / f"soak-{mode}"
    shutil.rmtree(work, ignore_errors=True)
    nodes = WORK / "soak-nodes.yaml"
    nodes.write_text(f"tests:\n  custom_nodes: {REPO / 'tests' / 'custom_nodes'}\n")
    env = {"EXECUTION_MODE": mode, "COMFY_WORK_DIR": str(work), "COMFY_MODELS_DIR": str(WORK / "models"),
           "COMFY_EXTRA_MODEL_PATHS": str(nodes), "COMFY_LOG_LEVEL": "ERROR", "COMFY_DISABLE_METADATA": "true"}
    executor = Executor(Config.from_env(env)).start()
    if mode == "embedded":  # the embedded process has ComfyUI's model classes: write the models once
        from embedded.comfy import modelgen
        for recipe in ("tiny-sd3", "tiny-sd15"):
            modelgen.install(recipe, WORK / "models", modelgen.default_cache_dir())
    warm_ok, warm_failed, warm_samples = mixed(executor, max(WARMUP, 2), max(WARMUP // 7, 2))
    assert warm_ok >= 2 and warm_failed >= 2, "the warm-up runs both checkpoints and fails as meant"
    time.sleep(GC_INTERVAL + 1)  # the idle clean-up, as after the soak
    before = state(executor, work, warm_samples)
    started = time.perf_counter()
    ok, failed, samples = mixed(executor, JOBS, FAILING, offset=10_000)
    seconds = time.perf_counter() - started
    time.sleep(GC_INTERVAL + 1)
    after = state(executor, work, samples)
    executor.close()
    growth = 100 * (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"]
    out.write_text(json.dumps({"jobs": ok, "failing_jobs": failed, "warmup_jobs": warm_ok + warm_failed,
                               "seconds": round(seconds, 1),
                               "before": before, "after": after, "rss_growth_pct": round(growth, 2),
                               "leaked_files": after["files"] - before["files"],
                               "leaked_threads": after["threads"] - before["threads"],
                               "leaked_server_threads": (after["server_threads"] - before["server_threads"]
                                                         if after["server_threads"] is not None else None),
                               "leaked_loop_tasks": (after["loop_tasks"] - before["loop_tasks"]
                                                     if after["loop_tasks"] is not None else None)}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
