"""Per-job figures for one mode, in one process: ``python bench/jobs.py embedded|server OUT.json``.

Runs, after a warm-up job each: the model-free 512 px workflow, tiny txt2img at 64 px and 512 px
(every job a new colour or seed, so nothing is served from ComfyUI's cache), then the resident
memory before and after 500 small jobs, and the preflight (dry run) of the model-free workflow. The embedded run also times ``/runsync`` through runpod's
real local API against direct ``execute()`` calls.
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, WORK, model_free_64, model_free_512, rss_mb, summary, txt2img  # noqa: E402

JOBS = int(os.environ.get("BENCH_JOBS", "100"))
RSS_JOBS = int(os.environ.get("BENCH_RSS_JOBS", "500"))
RECIPE = os.environ.get("BENCH_RECIPE", "tiny-sd3")  # bench/gpu.sh: sd15 (the full architecture)
SIZES = [int(s) for s in os.environ.get("BENCH_TXT2IMG_SIZES", "64,512").split(",")]
STEPS = int(os.environ.get("BENCH_STEPS", "2"))


def timed_jobs(executor, make, n):
    """Wall time per job and its overhead: wall minus ComfyUI's own execution (from its
    execution_start / execution_success timestamps, the same events in both modes)."""
    from embedded.job.events import StartEvent, SuccessEvent
    walls, overheads = [], []
    executor.run(make(n + 1))  # warm-up: loads, first-call costs (an input no timed job uses)
    for i in range(n):
        stamps = {}

        def on_event(ev, stamps=stamps):
            if isinstance(ev, (StartEvent, SuccessEvent)):
                stamps[type(ev).__name__] = ev.timestamp

        started = time.perf_counter()
        result = executor.run(make(i), on_event=on_event)
        wall = (time.perf_counter() - started) * 1000
        assert result.outputs
        walls.append(wall)
        overheads.append(wall - (stamps["SuccessEvent"] - stamps["StartEvent"]))
    return {"wall_ms": summary(walls), "overhead_ms": summary(overheads)}


def timed_checks(executor, n):
    """Preflight (``Executor.check``: validation without running a node) of the model-free workflow."""
    times = []
    executor.check(model_free_512(n + 1))
    for i in range(n):
        started = time.perf_counter()
        assert executor.check(model_free_512(i)).ok
        times.append((time.perf_counter() - started) * 1000)
    return summary(times)


def runsync_vs_direct(executor, config_env):
    """/runsync through the real runpod local API (the worker as a subprocess) vs execute()."""
    import requests
    sys.path.insert(0, str(REPO / "tests"))
    from servers import LocalApiWorker
    env = dict(os.environ, **config_env, COMFY_WORK_DIR=str(WORK / "runsync"), RUNPOD_LOG_LEVEL="ERROR")
    worker = LocalApiWorker(env, WORK / "runsync.log").wait_ready()
    try:
        def call(i):
            body = requests.post(f"{worker.url}/runsync", json={"input": {"workflow": model_free_512(i)}},
                                 timeout=120).json()
            assert body["status"] == "COMPLETED", body
        call(JOBS + 1)
        runsync = []
        for i in range(JOBS):
            started = time.perf_counter()
            call(i)
            runsync.append((time.perf_counter() - started) * 1000)
    finally:
        worker.stop()
    direct = []
    for i in range(JOBS):
        started = time.perf_counter()
        executor.run(model_free_512(10_000 + i))
        direct.append((time.perf_counter() - started) * 1000)
    return {"runsync_ms": summary(runsync), "direct_ms": summary(direct)}


def main(mode: str, out: Path) -> None:
    from embedded import Config, Executor
    env = {"EXECUTION_MODE": mode, "COMFY_WORK_DIR": str(WORK / mode), "COMFY_MODELS_DIR": str(WORK / "models"),
           "COMFY_LOG_LEVEL": "WARNING", "COMFY_DISABLE_METADATA": "true"}
    executor = Executor(Config.from_env(env)).start()
    figures = {"boot_s": executor.boot_info.seconds}
    # Memory first, on a fresh worker: after boot and one job, then after RSS_JOBS small jobs.
    # Server mode counts both processes a worker-comfyui worker runs: the client and ComfyUI's server.
    pids = [os.getpid()] + ([executor._runner.server.proc.pid] if mode == "server" else [])
    executor.run(model_free_64(0))
    figures["rss_start_mb"] = rss_mb(pids)
    for i in range(RSS_JOBS):
        executor.run(model_free_64(i + 1))
    figures["rss_after_jobs_mb"] = rss_mb(pids)
    figures["rss_jobs"] = RSS_JOBS

    from embedded.tooling import modelgen
    ckpt = modelgen.RECIPES[RECIPE][0].filename
    if mode == "embedded":  # the embedded process has ComfyUI's model classes: write the models once
        modelgen.install(RECIPE, WORK / "models", modelgen.default_cache_dir())
    figures["txt2img_model"] = {"recipe": RECIPE, "checkpoint": ckpt, "steps": STEPS}
    figures["model_free_512"] = timed_jobs(executor, model_free_512, JOBS)
    figures["preflight_ms"] = timed_checks(executor, JOBS)
    for size in SIZES:
        figures[f"txt2img_{size}"] = timed_jobs(executor, lambda i, size=size: txt2img(size * 10 + i, size, ckpt, STEPS),
                                                JOBS)
    if mode == "embedded":
        figures["runsync"] = runsync_vs_direct(executor, {k: v for k, v in env.items() if k != "COMFY_WORK_DIR"})
    executor.close()
    out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
