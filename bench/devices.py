"""Several devices against one executor, side by side in one run (``make bench-devices``; a part of
``make bench``): ``python bench/devices.py OUT.json``.

The pool runs on ``BENCH_DEVICES`` (default ``cpu,cpu``; ``bench/gpu.sh`` sets ``all`` on a machine
with several GPUs); the peer is one executor in this process, as without ``COMFY_DEVICES``.

- **throughput**: ``BENCH_DEVICE_JOBS`` jobs (default 8) of a node that sleeps
  ``BENCH_SLEEP_S`` (1 s: the stand-in for GPU time, since CPU cores are not GPUs), all submitted at
  once; jobs per second of the pool against one executor (goal: at least 1.8x with two devices).
- **per-job overhead**: ``BENCH_OVERHEAD_JOBS`` (default 60) small jobs (an 8 px image saved), one
  after another, the two executors taking turns job by job; the pool's median wall time minus the
  single executor's (goal: at most +2 ms).
- **cold start**: a fresh process until its first result, ``BENCH_COLD_RUNS`` times each, taking
  turns: two devices against one executor in the process (goal: at most 1.2x).
- **front doors**: ``BENCH_FRONT_JOBS`` (default 4) jobs sleeping ``BENCH_FRONT_SLEEP_S`` (3 s),
  submitted at once to the Comfy API v2 server (``serve``) and to the RunPod worker's production loop
  (the runpod SDK against the tests' job API on loopback), with and without the devices: the time
  from the first submission to the last answer (goal: at most 0.6 of one executor's). 0 leaves it out.

The sleeping node is written into the work folder's ``custom_nodes`` (no test code is loaded).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, WORK, summary  # noqa: E402

FOLDER = WORK / "devices"
JOBS = int(os.environ.get("BENCH_DEVICE_JOBS", "8"))
SLEEP_S = float(os.environ.get("BENCH_SLEEP_S", "1.0"))
OVERHEAD_JOBS = int(os.environ.get("BENCH_OVERHEAD_JOBS", "60"))
COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "3"))
FRONT_JOBS = int(os.environ.get("BENCH_FRONT_JOBS", "4"))
FRONT_SLEEP_S = float(os.environ.get("BENCH_FRONT_SLEEP_S", "3.0"))

SLEEP_NODE = '''
import time

import comfy.model_management


class BenchSleep:
    """Sleeps, checking ComfyUI's interrupt flag: the stand-in for a job's GPU time."""

    CATEGORY = "bench"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seconds": ("FLOAT", {"default": 1.0}), "job": ("INT", {"default": 0})}}

    def run(self, seconds, job):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(0.01)
        return {"ui": {"text": [str(job)]}}


NODE_CLASS_MAPPINGS = {"BenchSleep": BenchSleep}
'''


def devices() -> str:
    return os.environ.get("BENCH_DEVICES", "cpu,cpu")


def env() -> dict[str, str]:
    """The environment both sides share (the work folder holds the sleeping node); the devices are
    given to each side explicitly."""
    (FOLDER / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (FOLDER / "custom_nodes" / "bench_sleep.py").write_text(SLEEP_NODE)
    return {**{k: v for k, v in os.environ.items() if k != "COMFY_DEVICES"},
            "COMFY_WORK_DIR": str(FOLDER), "COMFY_LOG_LEVEL": "WARNING", "COMFY_DISABLE_METADATA": "true"}


def sleeping(job: int) -> dict:
    return {"1": {"class_type": "BenchSleep", "inputs": {"seconds": SLEEP_S, "job": job}}}


def small(job: int) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": job}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "small"}}}


def throughput(executor, first: int) -> float:
    """Jobs per second, ``JOBS`` jobs submitted at once."""
    started = time.perf_counter()
    futures = [executor.submit(sleeping(first + i)) for i in range(JOBS)]
    wait(futures)
    for future in futures:
        future.result()
    return JOBS / (time.perf_counter() - started)


def cold(spec: str) -> float:
    """Seconds from a fresh process's start to its first result."""
    code = ("import sys, time; from embedded import Config, Executor; "
            "ex = Executor(Config.from_env(), devices=sys.argv[1] or None).start(); "
            "ex.run({'1': {'class_type': 'EmptyImage', 'inputs': {'width': 8, 'height': 8, 'batch_size': 1, "
            "'color': 1}}, '2': {'class_type': 'PreviewImage', 'inputs': {'images': ['1', 0]}}}); "
            "print('FIRST_RESULT', flush=True); ex.close()")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, spec], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("FIRST_RESULT"):
            elapsed = time.perf_counter() - started
            proc.wait(120)
            return elapsed
    raise RuntimeError(f"cold start with devices {spec!r} produced no result (exit {proc.wait()})")


def front_doors(spec: str) -> dict:
    """Seconds from submitting ``FRONT_JOBS`` sleeping jobs at once to the last answer, through the API v2
    server and the worker's production loop, on ``spec``'s devices and on one executor (taking turns)."""
    sys.path.insert(0, str(REPO))
    from tests.e2e.apiv2 import ApiServer
    from tests.servers import FakeJobApi, Process, wait_until

    def workflow(i: int) -> dict:
        return {"1": {"class_type": "BenchSleep", "inputs": {"seconds": FRONT_SLEEP_S, "job": 50_000 + i}}}

    def api_v2(devices: str | None) -> float:
        import requests

        server = ApiServer(env(), FOLDER / f"serve-{devices or 'one'}.log",
                           *(["--devices", devices] if devices else []))
        try:
            server.wait_healthy(300)
            url = server.api
            started = time.perf_counter()
            ids = [requests.post(f"{url}/jobs", json={"workflow": workflow(i)}, timeout=30).json()["id"]
                   for i in range(FRONT_JOBS)]
            for job_id in ids:
                wait_until(lambda: requests.get(f"{url}/jobs/{job_id}", timeout=5).json()["status"]
                           in ("succeeded", "failed", "canceled"), 600, f"job {job_id}", interval=0.05)
            return time.perf_counter() - started
        finally:
            server.stop()

    def worker(devices: str | None) -> float:
        api = FakeJobApi()
        extra = {"COMFY_DEVICES": devices} if devices else {}
        loop = Process([sys.executable, "-m", "embedded.handler"],
                       {**env(), **api.env(), "RUNPOD_SKIP_GPU_CHECK": "true",
                        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", **extra},
                       FOLDER / f"worker-{devices or 'one'}.log")
        try:
            api.submit("warm", {"workflow": workflow(-1)})
            api.result("warm", timeout=300)
            started = time.perf_counter()
            for i in range(FRONT_JOBS):
                api.submit(f"job-{i}", {"workflow": workflow(i)})
            for i in range(FRONT_JOBS):
                api.result(f"job-{i}", timeout=600)
            return time.perf_counter() - started
        finally:
            loop.stop()
            api.close()

    seconds = {"api_v2": {"pool": api_v2(spec), "single": api_v2(None)},
               "worker": {"pool": worker(spec), "single": worker(None)}}
    for door, pair in seconds.items():
        pair["ratio"] = round(pair["pool"] / pair["single"], 3)
        print(f"bench devices: {door}: {FRONT_JOBS} jobs of {FRONT_SLEEP_S:g} s in {pair['pool']:.2f} s on {spec}, "
              f"{pair['single']:.2f} s on one ({pair['ratio']:.2f})", flush=True)
    return seconds


def main(out: Path) -> None:
    from embedded import Config, Executor

    spec = devices()
    config = Config.from_env(env())
    single = Executor(config).start()
    pool = Executor(config, devices=spec).start()
    n = pool.capacity
    # warm both: the first job of each process imports the nodes it uses
    wait([pool.submit(small(i)) for i in range(n)] + [pool.submit(sleeping(-1 - i)) for i in range(n)])
    single.run(small(0)), single.run(sleeping(-1))

    rates = {"single": [], "pool": []}
    for k in range(2):  # taking turns, so that a noisy minute hits both
        rates["single"].append(throughput(single, 1000 * (2 * k + 1)))
        rates["pool"].append(throughput(pool, 1000 * (2 * k + 2)))
        print(f"bench devices: {rates['pool'][-1]:.2f} jobs/s on {n} devices, {rates['single'][-1]:.2f} on one",
              flush=True)

    walls = {"single": [], "pool": []}
    for i in range(OVERHEAD_JOBS):
        for name, executor in (("single", single), ("pool", pool)) if i % 2 else (("pool", pool), ("single", single)):
            t = time.perf_counter()
            executor.run(small(10_000 + 2 * i + (name == "pool")))
            walls[name].append((time.perf_counter() - t) * 1000)
    pool.close()
    single.close()

    colds = {"single": [], "pool": []}
    for _ in range(COLD_RUNS):
        colds["single"].append(cold(""))
        colds["pool"].append(cold(spec))
        print(f"bench devices: cold start {colds['pool'][-1]:.2f} s on {n} devices, {colds['single'][-1]:.2f} s on one",
              flush=True)

    front = front_doors(spec) if FRONT_JOBS else None
    rate = {k: statistics.median(v) for k, v in rates.items()}
    wall = {k: summary(v) for k, v in walls.items()}
    start = {k: statistics.median(v) for k, v in colds.items()}
    out.write_text(json.dumps({
        "devices": spec, "capacity": n, "jobs": JOBS, "sleep_s": SLEEP_S, "overhead_jobs": OVERHEAD_JOBS,
        "cold_runs": COLD_RUNS,
        "jobs_per_s": {"pool": round(rate["pool"], 3), "single": round(rate["single"], 3),
                       "ratio": round(rate["pool"] / rate["single"], 3), "runs": rates},
        "per_job_ms": {k: {q: round(v[q], 3) for q in ("median", "p95", "p99")} for k, v in wall.items()},
        "overhead_ms_median": round(wall["pool"]["median"] - wall["single"]["median"], 3),
        "cold_start_s": {"pool": round(start["pool"], 3), "single": round(start["single"], 3),
                         "ratio": round(start["pool"] / start["single"], 3), "runs": colds},
        "front_doors_s": front, "front_jobs": FRONT_JOBS, "front_sleep_s": FRONT_SLEEP_S,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
