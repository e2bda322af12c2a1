"""``make bench``: the embedded executor against the legacy server mode, side by side, in one run.

Writes ``bench/results/latest.json`` (one object per scenario: ``embedded``, ``server``, ``ratio``
= embedded / server, and the unit; below 1 means embedded is faster or smaller) and
``bench/results/latest.md`` (the same as a table, with the machine it ran on).

Scenarios: cold start (process start to first result, median of BENCH_COLD_RUNS fresh processes per
mode; server mode pays the server start, HTTP readiness and the first job, as worker-comfyui does;
started as the worker starts (the runpod SDK imported while the backend boots) and split into
phases: interpreter, the SDK import, torch, ComfyUI's core, ComfyUI's own packs, custom packs, the
server's start, the first job; the embedded runs find the node index, as in the image);
per-job wall time and overhead (median, p95, p99 over BENCH_JOBS jobs) for a model-free 512 px
workflow and tiny txt2img at 64 and 512 px; the preflight (``"dry_run": true``) of the first; resident memory after boot and after BENCH_RSS_JOBS
jobs; ``/runsync`` through runpod's local API against a direct ``execute()`` call; and a soak
(``soak.py``: BENCH_SOAK_JOBS txt2img jobs alternating two checkpoints and BENCH_SOAK_FAILING
failing jobs per mode), reporting memory growth and leaked files, threads and asyncio tasks
against the goal (growth at most 2 %, no leaks). BENCH_SOAK_JOBS=0 leaves the soak out.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, REPO, WORK, machine  # noqa: E402

COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "3"))
SOAK_JOBS = int(os.environ.get("BENCH_SOAK_JOBS", "300"))
MODES = ("embedded", "server")
#: the soak's goal: memory growth after warm-up at most this, and nothing leaked
SOAK_GOAL_PCT = 2.0


def cold_start(mode: str) -> tuple[float, dict[str, float]]:
    """Seconds from spawning a fresh process to its first result, and its phases."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(BENCH / "cold_start.py"), mode], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    phases: dict[str, float] = {}
    for line in proc.stdout:
        if line.startswith("PHASE\t"):
            _, name, seconds = line.rstrip("\n").split("\t")
            phases[name] = float(seconds)
        elif line.startswith("FIRST_RESULT"):
            elapsed = time.perf_counter() - started
            proc.wait(120)
            overlapped = phases.get("runpod SDK import (during the boot)", 0.0)
            return elapsed, {"interpreter start": max(elapsed - sum(phases.values()) + overlapped, 0.0), **phases}
    raise RuntimeError(f"{mode} cold start produced no result (exit {proc.wait()})")


def build_node_index() -> None:
    """The embedded cold starts find the node index, as in the image (built at image build time)."""
    subprocess.run([sys.executable, "-m", "embedded.comfy.nodeindex"], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "COMFY_WORK_DIR": str(WORK / "cold-embedded"), "COMFY_LOG_LEVEL": "ERROR"})


def ratio(a, b):
    return round(a / b, 3) if b else None


def scenario(unit, embedded, server, note=""):
    if isinstance(embedded, dict):
        keys = ("median", "p95", "p99")
        entry = {"unit": unit, "embedded": {k: round(embedded[k], 3) for k in keys} | {"n": embedded["n"]},
                 "server": {k: round(server[k], 3) for k in keys} | {"n": server["n"]},
                 "ratio": {k: ratio(embedded[k], server[k]) for k in keys}}
    else:
        entry = {"unit": unit, "embedded": round(embedded, 3), "server": round(server, 3),
                 "ratio": ratio(embedded, server)}
    if note:
        entry["note"] = note
    return entry


def main() -> int:
    started = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    build_node_index()
    cold = {mode: [] for mode in MODES}
    cold_phases = {mode: [] for mode in MODES}
    for _ in range(COLD_RUNS):
        for mode in MODES:  # interleaved, so that a noisy minute hits both
            seconds, phases = cold_start(mode)
            cold[mode].append(seconds)
            cold_phases[mode].append(phases)
            print(f"bench: cold start {mode}: {seconds:.2f} s", flush=True)
    figures = {}
    for mode in MODES:
        out = WORK / f"{mode}.json"
        subprocess.run([sys.executable, str(BENCH / "jobs.py"), mode, str(out)], cwd=REPO, check=True,
                       stderr=subprocess.DEVNULL)
        figures[mode] = json.loads(out.read_text())
        print(f"bench: {mode} jobs done", flush=True)
    soak = {}
    for mode in MODES if SOAK_JOBS else ():  # embedded first: it writes the second checkpoint
        out = WORK / f"soak-{mode}.json"
        subprocess.run([sys.executable, str(BENCH / "soak.py"), mode, str(out)], cwd=REPO, check=True,
                       stderr=subprocess.DEVNULL)
        soak[mode] = json.loads(out.read_text())
        soak[mode]["meets_goal"] = (soak[mode]["rss_growth_pct"] <= SOAK_GOAL_PCT and not any(
            soak[mode][k] for k in ("leaked_files", "leaked_threads", "leaked_server_threads", "leaked_loop_tasks")))
        print(f"bench: {mode} soak: {soak[mode]['rss_growth_pct']:+.2f} % memory", flush=True)
    emb, srv = figures["embedded"], figures["server"]
    scenarios = {
        "cold_start": scenario("s", statistics.median(cold["embedded"]), statistics.median(cold["server"]),
                               f"median of {COLD_RUNS} fresh processes: process start to the first result"),
    }
    for name in ["model_free_512"] + sorted((k for k in emb if k.startswith("txt2img_") and k != "txt2img_model"),
                                            key=lambda k: int(k.split("_")[1])):
        scenarios[f"{name}_wall"] = scenario("ms", emb[name]["wall_ms"], srv[name]["wall_ms"])
        scenarios[f"{name}_overhead"] = scenario("ms", emb[name]["overhead_ms"], srv[name]["overhead_ms"],
                                                 "wall time minus ComfyUI's own execution time")
    scenarios["preflight"] = scenario("ms", emb["preflight_ms"], srv["preflight_ms"],
                                      "dry run of the model-free 512 px workflow: ComfyUI's validation, no node runs")
    scenarios["rss_start"] = scenario("MiB", emb["rss_start_mb"], srv["rss_start_mb"],
                                      "after boot and one job; server mode: client + ComfyUI server processes")
    scenarios["rss_after_jobs"] = scenario("MiB", emb["rss_after_jobs_mb"], srv["rss_after_jobs_mb"],
                                           f"after {emb['rss_jobs']} more jobs")
    runsync = emb["runsync"]
    scenarios["runsync_vs_direct"] = {
        "unit": "ms", "direct_execute": runsync["direct_ms"], "runsync_local_api": runsync["runsync_ms"],
        "ratio": {k: ratio(runsync["direct_ms"][k], runsync["runsync_ms"][k]) for k in ("median", "p95", "p99")},
        "note": "model-free 512 px, embedded mode: a direct execute() call against /runsync through runpod's "
                "local API (the worker as a subprocess); ratio = direct / runsync"}
    result = {"generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "cold_start_phases": {mode: {name: round(statistics.median(run[name] for run in cold_phases[mode]), 3)
                                           for name in cold_phases[mode][0]} for mode in MODES},
              "txt2img_model": emb["txt2img_model"],
              "jobs_per_scenario": emb["model_free_512"]["wall_ms"]["n"], "boot_s": {m: figures[m]["boot_s"] for m in MODES},
              "bench_seconds": round(time.perf_counter() - started, 1), "scenarios": scenarios,
              "soak": soak}
    out_dir = Path(os.environ.get("BENCH_OUT") or BENCH / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "latest.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Benchmark of {result['generated']} on {m['cores']} cores ({m['cpu']}), {m['ram_gb']} GiB RAM, "
             f"{m['device']}; Python {m['python']}, torch {m['torch']}. Ratio = embedded / server "
             f"(below 1: embedded is faster or smaller). {result['jobs_per_scenario']} jobs per scenario; "
             f"txt2img uses {result['txt2img_model']['checkpoint']} (random weights), "
             f"{result['txt2img_model']['steps']} steps; "
             f"the whole run took {result['bench_seconds']:.0f} s.", "",
             "| scenario | unit | embedded | server | ratio |", "|---|---|---|---|---|"]
    for name, s in result["scenarios"].items():
        if name == "runsync_vs_direct":
            continue
        if isinstance(s["embedded"], dict):
            for k in ("median", "p95", "p99"):
                lines.append(f"| {name} ({k}) | {s['unit']} | {s['embedded'][k]:.2f} | {s['server'][k]:.2f} | "
                             f"{s['ratio'][k]:.2f} |")
        else:
            lines.append(f"| {name} | {s['unit']} | {s['embedded']:.2f} | {s['server']:.2f} | {s['ratio']:.2f} |")
    lines += ["", "Cold start by phase (seconds, median of the cold runs; the runpod SDK import runs during the "
              "boot, the other phases one after the other):", "",
              "| mode | phase | s |", "|---|---|---|"]
    for mode, phases in result["cold_start_phases"].items():
        lines += [f"| {mode} | {name} | {seconds:.3f} |" for name, seconds in phases.items()]
    r = result["scenarios"]["runsync_vs_direct"]
    lines += ["", "| embedded mode, model-free 512 px | unit | direct `execute()` | `/runsync` (local API) | ratio |",
              "|---|---|---|---|---|"]
    for k in ("median", "p95", "p99"):
        lines.append(f"| {k} | ms | {r['direct_execute'][k]:.2f} | {r['runsync_local_api'][k]:.2f} | {r['ratio'][k]:.2f} |")
    if result.get("soak"):
        lines += ["", f"Soak (goal: memory growth after warm-up at most {SOAK_GOAL_PCT:g} %, nothing leaked):", "",
                  "| mode | jobs ok | failing jobs | memory after warm-up (MiB) | after the soak (MiB) | growth | "
                  "of which ComfyUI's server (MiB) | leaked files | leaked threads | leaked server threads | "
                  "leaked loop tasks | goal met |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for mode, s in result["soak"].items():
            server_mb = (f"{s['before']['server_rss_mb']:.1f} → {s['after']['server_rss_mb']:.1f}"
                         if s["before"].get("server_rss_mb") is not None else "n/a")
            lines.append(f"| {mode} | {s['jobs']} | {s['failing_jobs']} | {s['before']['rss_mb']:.1f} | "
                         f"{s['after']['rss_mb']:.1f} | {s['rss_growth_pct']:+.2f} % | {server_mb} | {s['leaked_files']} | "
                         f"{s['leaked_threads']} | {s['leaked_server_threads'] if s['leaked_server_threads'] is not None else 'n/a'} | "
                         f"{s['leaked_loop_tasks'] if s['leaked_loop_tasks'] is not None else 'n/a'} | "
                         f"{'yes' if s['meets_goal'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
