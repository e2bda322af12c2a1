"""Soak one mode in one process: ``python bench/soak.py embedded|server single|mixed OUT.json``.

The memory reading is built to decide (three runs agree within a point, see ``run.py``):

- **Readings after a collection.** A reading is the anonymous resident memory of the process tree
  (resident memory no file backs: model files mapped from disk come and go with the page cache, a
  leak does not; server mode: the client and ComfyUI's server, also reported apart) after
  ``gc.collect()`` and glibc's ``malloc_trim(0)`` in this process (in server mode ComfyUI's server
  collects on its own, every 10 s while jobs run), taken after every BLOCK jobs: the median of the
  readings after the block's last job and after SAMPLES - 1 more txt2img jobs of the same kind, so
  that one odd reading does not count. The whole resident set is reported too.
- **A warm-up that lasts until readings settle**: blocks of the same mix run for at least
  WARMUP_MIN jobs and until the last three readings lie within SETTLED_PCT of their mean (at most
  BENCH_SOAK_WARMUP_MAX jobs; whether it settled is reported). Some growth comes in steps (the
  allocator's high-water mark), the longest of them within the first 150 jobs here.
- **Growth from a fit, not from two readings**: the least-squares line through the soak's readings
  (one after each block of BENCH_SOAK_JOBS jobs), as a percentage of its value at the start.
- **One checkpoint size for the growth figure** (``single``: one random-weight checkpoint, so the
  reading does not swing with which model is loaded); ``mixed`` alternates two checkpoints of very
  different sizes (models loaded and unloaded all along) and is reported apart.

Failing jobs are spread among the txt2img jobs (two in a block of 11; half a node that raises,
half a node that leaves an asyncio task behind and then fails). After the soak the between-jobs clean-up
runs while idle, and files left in the work folder, threads, and asyncio tasks on the runner's loop
(embedded mode) are compared with the state after the warm-up.
"""

import asyncio
import ctypes
import gc
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

JOBS = int(os.environ.get("BENCH_SOAK_JOBS", "200"))
WARMUP_MAX = int(os.environ.get("BENCH_SOAK_WARMUP_MAX", "300"))
BLOCK = 11  # odd: the last job of a block is always the first checkpoint
SAMPLES = 3  # readings after the block's last job and SAMPLES - 1 more of the same kind: their median
FAIL_EVERY = 5
WARMUP_MIN = 150
SETTLED_PCT = 0.5
MIXES = {"single": ("tiny-sd15.safetensors",), "mixed": ("tiny-sd3.safetensors", "tiny-sd15.safetensors")}


def failing(i: int, checkpoint: str) -> dict:
    """A job that fails in a node: every other one first starts a task that outlives the node. The
    checkpoint's loader is in it, unconnected: ComfyUI's cache keeps the loaded model across the
    failing job, as across the txt2img jobs (it would drop what the prompt does not name)."""
    wf = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
          "11": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": i}},
          "13": {"class_type": "EmbeddedTestRaise", "inputs": {"image": ["12", 0], "message": "soak failure"}},
          "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "soak"}}}
    wf["12"] = ({"class_type": "EmbeddedTestAsyncWriter", "inputs": {"image": ["11", 0], "delay": 0.5,
                                                                    "name": f"late-{i}.txt"}} if i % 2 else
                {"class_type": "ImageInvert", "inputs": {"image": ["11", 0]}})
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


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the collection alone
        pass


def _anon(proc) -> int:
    """Resident memory that no file backs (a leak is there; mapped model files come and go)."""
    info = proc.memory_info()
    return info.rss - info.shared


def reading(executor) -> dict:
    """Memory (MiB) after a collection: the process tree's anonymous resident memory (what growth
    is measured on), its whole resident set, and ComfyUI's server apart in server mode."""
    import psutil
    gc.collect()
    _trim()
    me = psutil.Process()
    tree = [me, *me.children(recursive=True)]
    server = server_process(executor)
    return {"anon_mb": round(sum(_anon(p) for p in tree) / 2 ** 20, 1),
            "rss_mb": round(sum(p.memory_info().rss for p in tree) / 2 ** 20, 1),
            "server_anon_mb": round(_anon(server) / 2 ** 20, 1) if server else None}


def leaks_state(executor, work: Path) -> dict:
    server = server_process(executor)
    return {"files": files_left(work), "threads": threading.active_count(),
            "server_threads": server.num_threads() if server else None, "loop_tasks": loop_tasks(executor)}


def run(executor, wf) -> bool:
    from embedded import EmbeddedError
    try:
        executor.run(wf)
        return True
    except EmbeddedError:
        return False


class Blocks:
    """Runs the mix in blocks of BLOCK jobs, a reading after each; counts what succeeded and failed.

    Every block is the same sequence: job k of the block fails when k % FAIL_EVERY is FAIL_EVERY - 1,
    the others alternate the checkpoints by k, and the last job is txt2img with the first
    checkpoint, so that every reading is taken in the same state."""

    def __init__(self, executor, checkpoints: tuple[str, ...]):
        self.executor, self.checkpoints = executor, checkpoints
        self.i = self.ok = self.failed = 0

    def block(self) -> dict:
        for k in range(BLOCK):
            self.i += 1
            if k % FAIL_EVERY == FAIL_EVERY - 1 and k != BLOCK - 1:
                self.failed += not run(self.executor, failing(self.i, self.checkpoints[k % len(self.checkpoints)]))
            else:
                self.ok += run(self.executor, txt2img(self.i, 64, self.checkpoints[k % len(self.checkpoints)]))
        samples = [reading(self.executor)]
        for _ in range(SAMPLES - 1):  # the same job again: the reading is the median of SAMPLES
            self.i += 1
            self.ok += run(self.executor, txt2img(self.i, 64, self.checkpoints[0]))
            samples.append(reading(self.executor))
        return {key: (statistics.median(s[key] for s in samples) if samples[0][key] is not None else None)
                for key in samples[0]}


def settled(readings: list[dict]) -> bool:
    last = [r["anon_mb"] for r in readings[-3:]]
    return len(last) == 3 and (max(last) - min(last)) <= SETTLED_PCT / 100 * statistics.mean(last)


def fit_growth(readings: list[float], jobs_per_reading: int) -> float:
    """Growth over the readings' span, in percent of the fitted start: the Theil-Sen line (the
    median of the slopes between every two readings, so one odd reading does not tilt it)."""
    if len(readings) < 2:
        return 0.0
    slopes = [(readings[b] - readings[a]) / ((b - a) * jobs_per_reading)
              for a in range(len(readings)) for b in range(a + 1, len(readings))]
    slope = statistics.median(slopes)
    start = statistics.median(r - slope * k * jobs_per_reading for k, r in enumerate(readings))
    return 100 * slope * (len(readings) - 1) * jobs_per_reading / start


def main(mode: str, mix: str, out: Path) -> None:
    from embedded import Config, Executor
    from embedded.backends.comfy.housekeeping import GC_INTERVAL

    work = WORK / f"soak-{mode}-{mix}"
    shutil.rmtree(work, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    nodes = WORK / "soak-nodes.yaml"
    nodes.write_text(f"tests:\n  custom_nodes: {REPO / 'tests' / 'custom_nodes'}\n")
    env = {"EXECUTION_MODE": mode, "COMFY_WORK_DIR": str(work), "COMFY_MODELS_DIR": str(WORK / "models"),
           "COMFY_EXTRA_MODEL_PATHS": str(nodes), "COMFY_LOG_LEVEL": "ERROR", "COMFY_DISABLE_METADATA": "true"}
    executor = Executor(Config.from_env(env)).start()
    if mode == "embedded":  # the booted process has ComfyUI's model classes: write the models (once, cached)
        from embedded.tooling import modelgen
        for recipe in ("tiny-sd3", "tiny-sd15"):
            modelgen.install(recipe, WORK / "models", modelgen.default_cache_dir())
    blocks = Blocks(executor, MIXES[mix])
    warmup: list[dict] = []
    while blocks.i < WARMUP_MIN or (blocks.i < WARMUP_MAX and not settled(warmup)):
        warmup.append(blocks.block())
    warm_ok, warm_failed = blocks.ok, blocks.failed
    assert warm_ok >= 2 and warm_failed >= 2, "the warm-up runs txt2img and fails as meant"
    time.sleep(GC_INTERVAL + 1)  # the idle clean-up, as after the soak
    before = leaks_state(executor, work)
    start = reading(executor)
    started = time.perf_counter()
    soak = [start]
    while blocks.i - (warm_ok + warm_failed) < JOBS:
        soak.append(blocks.block())
    seconds = time.perf_counter() - started
    time.sleep(GC_INTERVAL + 1)
    after = leaks_state(executor, work)
    executor.close()
    growth = fit_growth([r["anon_mb"] for r in soak], BLOCK)
    server = [r["server_anon_mb"] for r in soak]
    out.write_text(json.dumps({
        "mode": mode, "mix": mix, "checkpoints": MIXES[mix], "jobs": blocks.ok - warm_ok,
        "failing_jobs": blocks.failed - warm_failed, "warmup_jobs": warm_ok + warm_failed,
        "warmup_settled": settled(warmup), "seconds": round(seconds, 1),
        "warmup_readings_mb": [r["anon_mb"] for r in warmup], "readings_mb": [r["anon_mb"] for r in soak],
        "server_readings_mb": server if server[0] is not None else None,
        "start_mb": soak[0]["anon_mb"], "end_mb": soak[-1]["anon_mb"], "growth_pct": round(growth, 2),
        "rss_start_mb": soak[0]["rss_mb"], "rss_end_mb": soak[-1]["rss_mb"],
        "server_growth_pct": round(fit_growth(server, BLOCK), 2) if server[0] is not None else None,
        "leaked_files": after["files"] - before["files"], "leaked_threads": after["threads"] - before["threads"],
        "leaked_server_threads": (after["server_threads"] - before["server_threads"]
                                  if after["server_threads"] is not None else None),
        "leaked_loop_tasks": (after["loop_tasks"] - before["loop_tasks"]
                              if after["loop_tasks"] is not None else None)}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
