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
(``soak.py``: BENCH_SOAK_JOBS jobs, txt2img with failing jobs among them, after a warm-up that
lasts until the readings settle; BENCH_SOAK_RUNS runs with one checkpoint give the growth figure,
their spread and whether they agree within a point; one run alternating two checkpoints is
reported apart), reporting memory growth and leaked files, threads and asyncio tasks against the
goal (growth at most 2 %, no leaks). BENCH_SOAK_JOBS=0 leaves the soak out. Last, Comfy API v2
(``api_v2.py``): our server against comfy-api-proxy in front of ComfyUI's server, through the
official client (cold start, per job for two workflows with the client's own time apart, and our
queue's jobs per second); BENCH_API_JOBS=0 leaves it out. Then several devices (``devices.py``):
``cpu,cpu`` (or ``COMFY_DEVICES``) against one executor, in jobs per second, per-job overhead and
cold start; BENCH_DEVICE_JOBS=0 leaves it out. Then replicas of the API v2 server on one PostgreSQL and
one bucket (``replicas.py``): sleeping jobs all submitted to one replica with a second one running
against that replica alone, and the dispatch overhead of the PostgreSQL state against the SQLite
default; BENCH_REPLICA_JOBS=0 leaves it out. ``BENCH_ONLY=api_v2``, ``BENCH_ONLY=devices`` or
``BENCH_ONLY=replicas`` runs that part alone and puts it into the results already there (its own
date is in the table).
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
SOAK_JOBS = int(os.environ.get("BENCH_SOAK_JOBS", "200"))
#: the soak's growth figure: this many runs of the one-checkpoint soak, which must agree within
#: SOAK_AGREE_PP percentage points (the mixed-size soak runs once, reported apart)
SOAK_RUNS = int(os.environ.get("BENCH_SOAK_RUNS", "3"))
SOAK_AGREE_PP = 1.0
#: the Comfy API v2 scenario (api_v2.py): jobs per side; 0 leaves it out
API_JOBS = int(os.environ.get("BENCH_API_JOBS", "50"))
#: the several-devices scenario (devices.py): sleeping jobs per side; 0 leaves it out
DEVICE_JOBS = int(os.environ.get("BENCH_DEVICE_JOBS", "8"))
#: the replicas scenario (replicas.py): sleeping jobs submitted to one replica; 0 leaves it out
REPLICA_JOBS = int(os.environ.get("BENCH_REPLICA_JOBS", "6"))
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
    subprocess.run([sys.executable, "-m", "embedded.backends.comfy.build_index"], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "COMFY_WORK_DIR": str(WORK / "cold-embedded"), "COMFY_LOG_LEVEL": "ERROR"})


def soak_once(mode: str, mix: str, run: int) -> dict:
    out = WORK / f"soak-{mode}-{mix}-{run}.json"
    subprocess.run([sys.executable, str(BENCH / "soak.py"), mode, mix, str(out)], cwd=REPO, check=True,
                   stderr=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    print(f"bench: {mode} soak ({mix}, run {run}): {result['growth_pct']:+.2f} % memory", flush=True)
    return result


def soak_runs(mode: str) -> dict:
    """SOAK_RUNS one-checkpoint soaks (the growth figure: its spread, whether the runs agree and
    whether every run meets the goal) and one mixed-size soak, reported apart."""
    runs = [soak_once(mode, "single", k + 1) for k in range(SOAK_RUNS)]
    mixed = soak_once(mode, "mixed", 1)
    growth = [r["growth_pct"] for r in runs]
    leaks = ("leaked_files", "leaked_threads", "leaked_server_threads", "leaked_loop_tasks")
    leaked = {k: max((r[k] or 0) for r in runs + [mixed]) for k in leaks}
    spread = round(max(growth) - min(growth), 2)
    return {"runs": runs, "mixed": mixed, "growth_pct": growth, "growth_median_pct": round(statistics.median(growth), 2),
            "spread_pp": spread, "runs_agree": spread <= SOAK_AGREE_PP, "leaked": leaked,
            "meets_goal": max(growth) <= SOAK_GOAL_PCT and not any(leaked.values())}


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
    soak = {mode: soak_runs(mode) for mode in (MODES if SOAK_JOBS else ())}  # embedded first: it writes the models
    api = api_v2() if API_JOBS else None
    several = devices() if DEVICE_JOBS else None
    shared = replicas() if REPLICA_JOBS else None
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
              "soak": soak, "api_v2": api, "devices": several, "replicas": shared}
    write(result)
    return 0


def out_dir() -> Path:
    return Path(os.environ.get("BENCH_OUT") or BENCH / "results")


def write(result: dict) -> None:
    out_dir().mkdir(parents=True, exist_ok=True)
    (out_dir() / "latest.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir() / "latest.md").write_text(markdown(result))
    print(markdown(result))


def part(script: str) -> dict:
    """``bench/<script>`` run in a process of its own (it writes its figures to a JSON file), with when it
    ran and the machine's load averages before and after it."""
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / f"{Path(script).stem}.json"
    load_before = [round(x, 2) for x in os.getloadavg()]
    subprocess.run([sys.executable, str(BENCH / script), str(out)], cwd=REPO, check=True, stderr=subprocess.DEVNULL)
    figures = json.loads(out.read_text())
    figures["generated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    figures["load"] = {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]}
    return figures


def api_v2() -> dict:
    api = part("api_v2.py")
    per_job = ", ".join(f"{name} {f['ratio']['ms_median']:.2f}x" for name, f in api["per_job"].items())
    print(f"bench: Comfy API v2: per job {per_job}, cold start {api['ratio']['cold_start']:.2f}x "
          "of comfy-api-proxy + ComfyUI", flush=True)
    return api


def devices() -> dict:
    several = part("devices.py")
    print(f"bench: {several['devices']}: {several['jobs_per_s']['ratio']:.2f}x the jobs per second of one executor, "
          f"{several['overhead_ms_median']:+.2f} ms per job, cold start {several['cold_start_s']['ratio']:.2f}x",
          flush=True)
    return several


def replicas() -> dict:
    shared = part("replicas.py")
    t, d = shared["throughput_s"], shared["dispatch"]
    print(f"bench: replicas: {shared['jobs']} jobs to one replica with a second running in {t['ratio']:.2f} of "
          f"the time one alone takes; PostgreSQL's dispatch {d['queue_ms_median_difference']:+.1f} ms against "
          "SQLite's (median)", flush=True)
    return shared


def only(part: str) -> int:
    """One part again (``api_v2``, ``devices``, ``replicas``), into the results already there."""
    result = json.loads((out_dir() / "latest.json").read_text())
    result[part] = {"api_v2": api_v2, "devices": devices, "replicas": replicas}[part]()
    write(result)
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
    if result.get("api_v2"):
        a = result["api_v2"]
        lines += ["", f"Comfy API v2 (run {a.get('generated', result['generated'])}) through the official client "
                  "(comfy-sdk), our server against comfy-api-proxy in front of ComfyUI's server: per job, a workflow "
                  "submitted, its events followed, the job read and its output downloaded, "
                  f"{a['jobs']} jobs a side; *client* is the CPU time the client itself took per job (the same "
                  "calls on both sides), *servers' share* the wall time minus it; *stalled*: jobs over 1 s. "
                  "Ratio = ours / theirs:", "",
                  "| scenario | unit | ours | comfy-api-proxy + ComfyUI | ratio |", "|---|---|---|---|---|",
                  f"| cold start (processes started to the first outputs downloaded) | s | "
                  f"{a['cold_start_s']['ours']:.2f} | {a['cold_start_s']['peer']:.2f} | {a['ratio']['cold_start']:.2f} |"]
        for name, f in a["per_job"].items():
            for q in ("median", "p90", "p99"):
                lines.append(f"| {name}: per job ({q}) | ms | {f['ours']['ms'][q]:.1f} | {f['peer']['ms'][q]:.1f} | "
                             f"{f['ratio']['ms_' + q]:.2f} |")
            lines.append(f"| {name}: servers' share (median) | ms | {f['ours']['server_ms']['median']:.1f} | "
                         f"{f['peer']['server_ms']['median']:.1f} | {f['ratio']['server_ms_median']:.2f} |")
            lines.append(f"| {name}: client (median) | ms | {f['ours']['client_ms']['median']:.1f} | "
                         f"{f['peer']['client_ms']['median']:.1f} | |")
            lines.append(f"| {name}: stalled jobs | of {f['ours']['n']} | {f['ours']['stalled']} | "
                         f"{f['peer']['stalled']} | |")
        if a.get("load"):
            lines += ["", "The machine's load (1, 5 and 15 minute averages) as this part began: "
                      f"{', '.join(map(str, a['load']['before']))}; as it ended: {', '.join(map(str, a['load']['after']))}."]
        qd = a["queue"]
        lines += ["", f"Our server's queue: {qd['jobs']} jobs submitted at once, then read and downloaded: "
                  f"{qd['queued_jobs_per_s']:.2f} jobs/s, against {qd['sequential_jobs_per_s']:.2f} jobs/s one after "
                  f"another ({qd['ratio']:.2f}x)."]
    if result.get("devices"):
        d = result["devices"]
        lines += ["", f"Several devices (run {d['generated']}): `COMFY_DEVICES={d['devices']}` ({d['capacity']} processes) "
                  "against one executor in the process (no `COMFY_DEVICES`). Throughput: "
                  f"{d['jobs']} jobs of a node sleeping {d['sleep_s']:g} s (the stand-in for GPU time) submitted at "
                  f"once, median of 2 runs a side; per job: {d['overhead_jobs']} small jobs (an 8 px image saved) one "
                  f"after another, the two taking turns; cold start: a fresh process to its first result, median of "
                  f"{d['cold_runs']}. Goals: at least 1.8x the jobs per second, at most +2 ms per job, at most 1.2x "
                  "the cold start.", "",
                  "| scenario | unit | several devices | one executor | ratio or difference |", "|---|---|---|---|---|",
                  f"| throughput | jobs/s | {d['jobs_per_s']['pool']:.2f} | {d['jobs_per_s']['single']:.2f} | "
                  f"{d['jobs_per_s']['ratio']:.2f}x |"]
        for q in ("median", "p95", "p99"):
            lines.append(f"| per job ({q}) | ms | {d['per_job_ms']['pool'][q]:.2f} | {d['per_job_ms']['single'][q]:.2f} | "
                         f"{d['per_job_ms']['pool'][q] - d['per_job_ms']['single'][q]:+.2f} ms |")
        lines.append(f"| cold start | s | {d['cold_start_s']['pool']:.2f} | {d['cold_start_s']['single']:.2f} | "
                     f"{d['cold_start_s']['ratio']:.2f}x |")
        for door, name in (("api_v2", "Comfy API v2 server"), ("worker", "RunPod worker, production loop")):
            if d.get("front_doors_s"):
                f = d["front_doors_s"][door]
                lines.append(f"| {name}: {d['front_jobs']} jobs of {d['front_sleep_s']:g} s submitted at once, to the "
                             f"last answer (goal: at most 0.6) | s | {f['pool']:.2f} | {f['single']:.2f} | "
                             f"{f['ratio']:.2f}x |")
        if d.get("load"):
            lines += ["", "The machine's load (1, 5 and 15 minute averages) as this part began: "
                      f"{', '.join(map(str, d['load']['before']))}; as it ended: {', '.join(map(str, d['load']['after']))}."]
    if result.get("replicas"):
        r = result["replicas"]
        t, d, c = r["throughput_s"], r["dispatch"], r.get("claimed_by_other")
        met = {True: "met", False: "not met"}
        on_b = ", ".join(str(x["b"]) for x in t["ran_on"]["two"])
        lines += ["", f"Replicas of the Comfy API v2 server (run {r['generated']}, {r['machine']['cores']} cores): "
                  "`serve` with `SERVE_STATE=postgresql://...` and a bucket, one PostgreSQL (Debian's) and one "
                  f"SeaweedFS bucket on loopback. Throughput: {r['jobs']} jobs of a node sleeping {r['sleep_s']:g} s "
                  "(the stand-in for GPU time) all submitted to replica A, from the first submission to the last "
                  "job's terminal status (each job read every 50 ms), A with a second replica B running against A "
                  f"alone, each on a database of its own, median of {r['runs']} runs a side, taking turns (jobs run "
                  f"on B: {on_b} of {r['jobs']}). Dispatch: {r['dispatch_jobs']} jobs sleeping 0 s one after another "
                  "(a device always free), the SQLite default (`--state-dir`) and the PostgreSQL state (one replica) "
                  f"taking turns, after {r['warmup_jobs']} jobs each not counted; *queue_ms* is the server's own "
                  "time from submission to running, the round trip the submission's as the client sees it. Goals: "
                  f"at most {t['goal_ratio']:g} of A alone; PostgreSQL at most +{d['goal_ms']:g} ms at the median.",
                  "", "| scenario | unit | replicas or PostgreSQL | one replica or SQLite | ratio or difference | "
                  "goal |", "|---|---|---|---|---|---|",
                  f"| throughput: {r['jobs']} jobs of {r['sleep_s']:g} s submitted to A, A and B against A alone | "
                  f"s | {t['two']:.2f} | {t['one']:.2f} | {t['ratio']:.2f}x | at most {t['goal_ratio']:g}x "
                  f"({met[t['meets_goal']]}) |"]
        for what, name in (("queue_ms", "queue_ms"), ("submit_ms", "the submission's round trip")):
            for q in ("median", "p90"):
                pg, lite = d["postgresql"][what][q], d["sqlite"][what][q]
                goal = (f" at most +{d['goal_ms']:g} ms ({met[d['meets_goal']]})"
                        if (what, q) == ("queue_ms", "median") else "")
                lines.append(f"| dispatch: {name} ({q}), PostgreSQL against SQLite | ms | {pg:.1f} | {lite:.1f} | "
                             f"{pg - lite:+.1f} ms |{goal} |")
        if c:
            for q in ("median", "p90"):
                lines.append(f"| a job submitted to A while A is busy, taken by B: queue_ms ({q}; {c['on_b']} of "
                             f"{c['n']} ran on B) | ms | {c[q]:.1f} | | | for information |")
        if r.get("load"):
            lines += ["", "The machine's load (1, 5 and 15 minute averages) as this part began: "
                      f"{', '.join(map(str, r['load']['before']))}; as it ended: {', '.join(map(str, r['load']['after']))}."]
    if result.get("soak"):
        lines += ["", f"Soak (goal: memory growth after warm-up at most {SOAK_GOAL_PCT:g} %, nothing leaked). Memory is "
                  "the process tree's anonymous resident memory after a collection, a reading every 11 jobs; growth "
                  "is the Theil-Sen line through the readings, over the soak. The growth figure comes from "
                  f"{SOAK_RUNS} runs with one checkpoint (they must agree within {SOAK_AGREE_PP:g} point); the "
                  "mixed run alternates two checkpoints of very different sizes and is reported apart:", "",
                  "| mode | run | checkpoints | jobs ok | failing jobs | warm-up jobs (settled) | memory at the start "
                  "(MiB) | at the end (MiB) | growth | of which ComfyUI's server |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for mode, s in result["soak"].items():
            for name, run in [*((str(k + 1), r) for k, r in enumerate(s["runs"])), ("mixed", s["mixed"])]:
                server = (f"{run['server_growth_pct']:+.2f} %" if run.get("server_growth_pct") is not None else "n/a")
                lines.append(f"| {mode} | {name} | {len(run['checkpoints'])} | {run['jobs']} | {run['failing_jobs']} | "
                             f"{run['warmup_jobs']} ({'yes' if run['warmup_settled'] else 'no'}) | "
                             f"{run['start_mb']:.1f} | {run['end_mb']:.1f} | {run['growth_pct']:+.2f} % | {server} |")
        lines += ["", "| mode | growth, one checkpoint (median of the runs) | spread | runs agree | leaked (files, "
                  "threads, server threads, loop tasks) | goal met |", "|---|---|---|---|---|---|"]
        for mode, s in result["soak"].items():
            leaked = ", ".join(str(v) for v in s["leaked"].values())
            lines.append(f"| {mode} | {s['growth_median_pct']:+.2f} % | {s['spread_pp']:.2f} pp | "
                         f"{'yes' if s['runs_agree'] else 'no'} | {leaked} | {'yes' if s['meets_goal'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(only(os.environ["BENCH_ONLY"]) if os.environ.get("BENCH_ONLY") else main())
