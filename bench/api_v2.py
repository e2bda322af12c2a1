"""Comfy API v2 side by side: ``python bench/api_v2.py OUT.json``.

The same jobs through the same official client (``comfy-sdk``) against our server (``python -m
embedded serve``) and against ``comfy-api-proxy`` in front of ComfyUI's own server (``main.py`` of
the vendored tree), both started here on loopback:

- **cold start**: from starting the processes to the first job's outputs downloaded (median of
  BENCH_API_COLD_RUNS fresh starts each; our server finds the node index, as in the image, which
  builds it at build time);
- **per job**: a workflow (a new colour each time, so no cache hit) submitted, its events followed
  to the end, the job read and its output downloaded, BENCH_API_JOBS jobs after a warm-up
  (median, p90, p99), both sides running, one job on each in turn, for two workflows: the model-free 512 px one (the job's own execution is
  most of it on a CPU) and a 64 px image saved (the servers' own work is most of it). Each job's
  client time (the CPU time this process spent in the client: building requests, parsing the
  answers) is measured too, and the servers' share is the wall time minus it; and how many jobs
  took over STALL_S (a stream that missed the job's end and waited for its next keepalive);
- **the queue** (our server): BENCH_API_BATCH jobs submitted at once, then their outputs
  downloaded, against the same jobs one after another (run, download, next): jobs per second.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, WORK, model_free_64, model_free_512, percentile  # noqa: E402

JOBS = int(os.environ.get("BENCH_API_JOBS", "50"))
COLD_RUNS = int(os.environ.get("BENCH_API_COLD_RUNS", "5"))
BATCH = int(os.environ.get("BENCH_API_BATCH", "20"))
#: a job slower than this waited on something other than work (the peer's stream missing the end)
STALL_S = 1.0
WORKFLOWS = {"model_free_512": model_free_512, "save_64": model_free_64}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 180) -> None:
    import requests
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


class Started:
    """Processes started for one side, stopped together."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def ours(run: Started, work: Path) -> str:
    port = free_port()
    env = {**os.environ, "COMFY_WORK_DIR": str(work), "COMFY_LOG_LEVEL": "ERROR", "COMFY_DISABLE_METADATA": "true"}
    # --max-queue: the queue scenario submits BATCH jobs at once (past the bound, 429s and the
    # client's retries would be measured instead)
    run.start([sys.executable, "-m", "embedded", "serve", "--port", str(port), "--max-queue", str(BATCH)], REPO, env,
              work.parent / "ours.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/api/v2/health")
    return url


def peer(run: Started, work: Path) -> str:
    import torch
    comfy_port, port = free_port(), free_port()
    tree = REPO / "vendor" / "ComfyUI"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(comfy_port), "--disable-auto-launch",
            "--output-directory", str(work / "output"), "--input-directory", str(work / "input"),
            "--temp-directory", str(work / "temp"), "--disable-metadata"]
    if not torch.cuda.is_available():
        args.append("--cpu")
    run.start(args, tree, env, work.parent / "comfyui.log")
    proxy = shutil.which("comfy-api-proxy", path=str(Path(sys.executable).parent)) or "comfy-api-proxy"
    run.start([proxy, "run", "--comfyui", f"http://127.0.0.1:{comfy_port}", "--port", str(port)], work, env,
              work.parent / "proxy.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"http://127.0.0.1:{comfy_port}/system_stats")
    return url


def run_and_download(client, color: int, make=model_free_512) -> None:
    """Submit, follow the job's events to its end (the client's ``run`` polls with a backoff that
    starts at 0.5 s, which would hide the servers' own time), read it, download its outputs."""
    job = client.submit(client.workflows.from_json(make(color)))
    for _ in job.events():
        pass
    job.result()
    assert job.status == "succeeded", job.error
    for output in job.outputs:
        assert output.to_bytes()


def node_index() -> Path:
    """The node index, built once (as the image does when it is built), copied into each cold run."""
    work = WORK / "api-node-index"
    if not (work / "node-index.json").exists():
        subprocess.run([sys.executable, "-m", "embedded.backends.comfy.build_index"], cwd=REPO, check=True,
                       capture_output=True, env={**os.environ, "COMFY_WORK_DIR": str(work), "COMFY_LOG_LEVEL": "ERROR"})
    return work / "node-index.json"


def cold(side) -> float:
    from comfy_sdk import Comfy
    work = WORK / f"api-{side.__name__}-cold"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if side is ours:
        shutil.copy(node_index(), work / "node-index.json")
    run = Started()
    started = time.perf_counter()
    try:
        os.environ["COMFY_BASE_URL"] = side(run, work)
        with Comfy() as client:
            run_and_download(client, 1)
        return time.perf_counter() - started
    finally:
        run.stop()


def per_job() -> dict:
    """Per job on both sides started together, one job on each in turn (the order alternating), so
    that a noisy minute of this machine weighs on both alike."""
    from comfy_sdk import Comfy
    runs, clients = {}, {}
    try:
        for name, side in (("ours", ours), ("peer", peer)):
            work = WORK / f"api-{name}-jobs"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            runs[name] = Started()
            os.environ["COMFY_BASE_URL"] = side(runs[name], work)
            clients[name] = Comfy().__enter__()
        figures: dict = {name: {} for name in clients}
        for offset, (workflow, make) in enumerate(WORKFLOWS.items()):
            base = 1000 * offset
            for i in range(3):
                for client in clients.values():
                    run_and_download(client, base + i, make)  # warm-up
            times = {name: [] for name in clients}
            client_ms = {name: [] for name in clients}
            for i in range(JOBS):
                for name in (("ours", "peer") if i % 2 == 0 else ("peer", "ours")):
                    started, cpu = time.perf_counter(), time.process_time()
                    run_and_download(clients[name], base + 3 + i, make)
                    times[name].append(1000 * (time.perf_counter() - started))
                    client_ms[name].append(1000 * (time.process_time() - cpu))
            for name in clients:
                figures[name][workflow] = {
                    "ms": quantiles(times[name]), "client_ms": quantiles(client_ms[name]),
                    "server_ms": quantiles([t - c for t, c in zip(times[name], client_ms[name])]),
                    "stalled": sum(t > 1000 * STALL_S for t in times[name]), "n": len(times[name])}
        runs.pop("peer").stop()  # the queue is ours alone
        figures["ours"]["queue"] = throughput(clients["ours"])
        figures["peer"]["queue"] = None
        return figures
    finally:
        for client in clients.values():
            client.__exit__(None, None, None)
        for run in runs.values():
            run.stop()


def quantiles(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "p90": round(percentile(values, 0.9), 2),
            "p99": round(percentile(values, 0.99), 2)}


def throughput(client) -> dict:
    """Jobs per second: BATCH submitted at once (the server queues them), then downloaded, against
    the same number one after another."""
    started = time.perf_counter()
    for i in range(BATCH):
        run_and_download(client, 10_000 + i)
    sequential = BATCH / (time.perf_counter() - started)
    started = time.perf_counter()
    jobs = [client.submit(client.workflows.from_json(model_free_512(20_000 + i))) for i in range(BATCH)]
    for job in jobs:
        for _ in job.events():
            pass
        job.result()
        for output in job.outputs:
            assert output.to_bytes()
    queued = BATCH / (time.perf_counter() - started)
    return {"sequential_jobs_per_s": round(sequential, 2), "queued_jobs_per_s": round(queued, 2),
            "ratio": round(queued / sequential, 3), "jobs": BATCH}


def main(out: Path) -> None:
    colds = {"ours": [], "peer": []}
    for _ in range(COLD_RUNS):
        for name, side in (("ours", ours), ("peer", peer)):  # interleaved, so that a noisy minute hits both
            colds[name].append(cold(side))
    jobs = per_job()
    result = {"cold_start_s": {k: round(statistics.median(v), 3) for k, v in colds.items()},
              "jobs": JOBS, "per_job": {}, "queue": jobs["ours"]["queue"],
              "ratio": {"cold_start": round(statistics.median(colds["ours"]) / statistics.median(colds["peer"]), 3)}}
    for name in WORKFLOWS:
        figures = {side: jobs[side][name] for side in ("ours", "peer")}
        figures["ratio"] = {f"{what}_{q}": round(figures["ours"][what][q] / figures["peer"][what][q], 3)
                            for what in ("ms", "server_ms") for q in ("median", "p90", "p99")}
        result["per_job"][name] = figures
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
