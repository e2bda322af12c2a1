"""Replicas of the Comfy API v2 server on one PostgreSQL and one bucket, side by side in one run
(``make bench-replicas``; a part of ``make bench``): ``python bench/replicas.py OUT.json``.

Started here on loopback: a PostgreSQL (Debian's, in a temporary folder) and a SeaweedFS bucket,
as the tests start them (``tests/servers.py``), and ``python -m embedded serve`` processes, each
with a work folder of its own holding the sleeping node of ``devices.py`` (no test code is loaded):

- **throughput**: ``BENCH_REPLICA_JOBS`` (default 6) jobs of a node sleeping ``BENCH_REPLICA_SLEEP_S``
  (2 s: the stand-in for GPU time) all submitted to replica A, from the first submission to the last
  job's terminal status (each job read every 50 ms): A alone on a database of its own, against A
  with a second replica B on another database, the two taking turns, median of
  ``BENCH_REPLICA_RUNS`` (2) runs a side (goal: at most 0.6 of A alone). Which replica ran each job
  is read from the database.
- **dispatch overhead**: the SQLite default (one server, ``--state-dir`` a folder) against the
  PostgreSQL state (the one replica above): ``BENCH_DISPATCH_JOBS`` (30) jobs sleeping 0 s, one
  after another (each once the one before has ended, so a device is always free), the two taking
  turns job by job, after 3 jobs each not counted: the median and p90 of the job's ``queue_ms``
  (submitted to running, the server's own times), and of the submission's round trip as this
  client sees it (goal: PostgreSQL at most +10 ms at the median).
- **claimed by another replica** (for information): A kept busy by a long job, ``BENCH_CLAIM_JOBS``
  (10) jobs sleeping 0 s submitted to A one after another, which B takes from the queue: their
  ``queue_ms``.

Every process started here is stopped at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import WORK, machine, percentile  # noqa: E402
from devices import SLEEP_NODE  # noqa: E402

from tests.e2e.apiv2 import ApiServer  # noqa: E402

FOLDER = WORK / "replicas"
JOBS = int(os.environ.get("BENCH_REPLICA_JOBS", "6"))
SLEEP_S = float(os.environ.get("BENCH_REPLICA_SLEEP_S", "2.0"))
RUNS = int(os.environ.get("BENCH_REPLICA_RUNS", "2"))
DISPATCH_JOBS = int(os.environ.get("BENCH_DISPATCH_JOBS", "30"))
CLAIM_JOBS = int(os.environ.get("BENCH_CLAIM_JOBS", "10"))
WARMUP_JOBS = 3
TOKEN = "bench-replicas-token"
BUCKET = "bench"
TERMINAL = ("succeeded", "failed", "canceled")
#: the goals: the jobs' wall time with two replicas against one; PostgreSQL's queue_ms against SQLite's
GOAL_RATIO, GOAL_DISPATCH_MS = 0.6, 10.0


def sleeping(seconds: float, job: int) -> dict:
    return {"1": {"class_type": "BenchSleep", "inputs": {"seconds": seconds, "job": job}}}


class Server(ApiServer):
    """``python -m embedded serve --port 0 --token TOKEN`` (the tests' ``ApiServer``) on a work folder
    of its own (with the sleeping node), its log beside it."""

    def __init__(self, name: str, **extra: str):
        work = FOLDER / name
        (work / "custom_nodes").mkdir(parents=True, exist_ok=True)
        (work / "custom_nodes" / "bench_sleep.py").write_text(SLEEP_NODE)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BUCKET_", "SERVE_", "RUNPOD_")) and k != "COMFY_DEVICES"}
        env.update(COMFY_WORK_DIR=str(work), COMFY_LOG_LEVEL="WARNING", COMFY_DISABLE_METADATA="true",
                   PYTHONUNBUFFERED="1", **extra)
        args = ["--token", TOKEN]
        if "SERVE_STATE" not in extra:
            (work / "state").mkdir(exist_ok=True)
            args += ["--state-dir", str(work / "state")]
        self.name = name
        super().__init__(env, FOLDER / f"{name}.log", *args)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_healthy(self, timeout: float = 300) -> "Server":
        return super().wait_healthy(timeout)

    def request(self, method: str, path: str, **kwargs):
        return self.raw(method, path, token=TOKEN, **{"timeout": 30, **kwargs})

    def submit(self, workflow: dict) -> tuple[str, float]:
        """The job's id, and the submission's round trip in ms."""
        started = time.perf_counter()
        answer = self.request("POST", "/jobs", json={"workflow": workflow})
        took = 1000 * (time.perf_counter() - started)
        if answer.status_code != 201:
            raise RuntimeError(f"{self.name} refused a job: {answer.status_code} {answer.text[:500]}")
        return answer.json()["id"], took

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/jobs/{job_id}").json()

    def wait(self, job_id: str, statuses=TERMINAL, timeout: float = 300, interval: float = 0.05) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {job['status']} after {timeout} s at {self.name}:\n"
                                   f"{self.log()[-3000:]}")
            time.sleep(interval)

    def run(self, workflow: dict, interval: float = 0.05) -> dict:
        job = self.wait(self.submit(workflow)[0], interval=interval)
        if job["status"] != "succeeded":
            raise RuntimeError(f"a job failed at {self.name}: {job['error']}")
        return job

    def stop(self, timeout: float = 30) -> None:
        super().stop(timeout)


def owners(database: str, ids: list[str]) -> dict[str, str]:
    """Job id -> the pid of the replica that ran it (a replica's id is ``host-pid-random``)."""
    import psycopg
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT id, owner FROM embedded_jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    return {job_id: (owner.rsplit("-", 2)[1] if owner else "") for job_id, owner in rows}


def throughput(a: Server, database: str, first: int) -> tuple[float, float, list[str]]:
    """JOBS sleeping jobs submitted to ``a`` at once: seconds from the first submission to the last
    terminal status as read here, the same from the servers' own times, and who ran each job."""
    from datetime import datetime
    started = time.perf_counter()
    ids = [a.submit(sleeping(SLEEP_S, first + i))[0] for i in range(JOBS)]
    jobs = [a.wait(job_id) for job_id in ids]
    wall = time.perf_counter() - started
    failed = [j for j in jobs if j["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} of the jobs at {a.name} did not succeed: {failed[0]['error']}")

    def at(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    span = max(at(j["completed_at"]) for j in jobs) - min(at(j["created_at"]) for j in jobs)
    ran = owners(database, ids)
    return wall, span, [ran.get(job_id, "") for job_id in ids]


def quantiles(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "p90": round(percentile(values, 0.9), 2),
            "n": len(values)}


def main(out: Path) -> None:
    from tests.servers import Postgres, SeaweedS3

    FOLDER.mkdir(parents=True, exist_ok=True)
    for old in FOLDER.glob("*.log"):
        old.unlink()
    started: list = []  # everything started here, stopped in reverse order in the end
    try:
        pg = Postgres(FOLDER / "postgres.log")
        started.append(pg)
        seaweed_dir = FOLDER / "seaweed"
        shutil.rmtree(seaweed_dir, ignore_errors=True)
        seaweed_dir.mkdir()
        s3 = SeaweedS3(seaweed_dir, FOLDER / "weed.log")
        started.append(s3)
        s3.create_bucket(BUCKET)

        def replica(name: str, database: str) -> Server:
            server = Server(name, SERVE_STATE=database, BUCKET_ENDPOINT_URL=f"{s3.endpoint}/{BUCKET}",
                            BUCKET_ACCESS_KEY_ID=s3.ACCESS_KEY, BUCKET_SECRET_ACCESS_KEY=s3.SECRET_KEY,
                            BUCKET_PREFIX=name, FETCH_ALLOW="127.0.0.1")
            started.append(server)
            return server

        one_db, two_db = pg.database(), pg.database()
        one = replica("one-a", one_db)  # A alone: the throughput's peer, and the dispatch's PostgreSQL
        a = replica("two-a", two_db)
        b = replica("two-b", two_db)
        sqlite = Server("sqlite")
        started.append(sqlite)
        for server in (one, a, b, sqlite):
            server.wait_healthy()
        print("bench replicas: PostgreSQL, the bucket and 4 servers up", flush=True)

        # warm-up: the first jobs of a process import the nodes they use. Two at once to A of the
        # pair: A takes the first (its device is free), B claims the second from the queue.
        for server in (one, sqlite):
            for i in range(WARMUP_JOBS):
                server.run(sleeping(0.0, -1 - i))
        warm_ids = []
        for i in range(WARMUP_JOBS):
            warm_ids += [a.submit(sleeping(0.2, -10 - 2 * i - k))[0] for k in range(2)]
            for job_id in warm_ids[-2:]:
                a.wait(job_id)
        warm_on_b = list(owners(two_db, warm_ids).values()).count(str(b.pid))

        # 1. throughput: A alone against A and B, taking turns
        walls = {"one": [], "two": []}
        spans = {"one": [], "two": []}
        ran_on = {"one": [], "two": []}
        for k in range(RUNS):
            for name, server, database in (("one", one, one_db), ("two", a, two_db)):
                wall, span, who = throughput(server, database, 1000 * (2 * k + (name == "two") + 1))
                walls[name].append(round(wall, 3))
                spans[name].append(round(span, 3))
                ran_on[name].append({"a": who.count(str(server.pid)), "b": who.count(str(b.pid))})
            print(f"bench replicas: {JOBS} jobs of {SLEEP_S:g} s: {walls['two'][-1]:.2f} s on A and B "
                  f"({ran_on['two'][-1]['b']} on B), {walls['one'][-1]:.2f} s on A alone", flush=True)

        # 2. dispatch overhead: SQLite against PostgreSQL, one job each in turn
        queue_ms = {"sqlite": [], "postgresql": []}
        submit_ms = {"sqlite": [], "postgresql": []}
        for i in range(DISPATCH_JOBS):
            order = (("sqlite", sqlite), ("postgresql", one))
            for name, server in (order if i % 2 == 0 else order[::-1]):
                job_id, took = server.submit(sleeping(0.0, 100_000 + 2 * i + (name == "postgresql")))
                job = server.wait(job_id, interval=0.01)
                if job["status"] != "succeeded":
                    raise RuntimeError(f"a job failed at {server.name}: {job['error']}")
                queue_ms[name].append(job["metrics"]["queue_ms"])
                submit_ms[name].append(round(took, 3))
        dispatch = {name: {"queue_ms": quantiles(queue_ms[name]), "submit_ms": quantiles(submit_ms[name]),
                           "queue_ms_all": queue_ms[name]} for name in queue_ms}
        difference = round(dispatch["postgresql"]["queue_ms"]["median"] - dispatch["sqlite"]["queue_ms"]["median"], 2)
        print(f"bench replicas: queue_ms median {dispatch['postgresql']['queue_ms']['median']:.1f} ms on PostgreSQL, "
              f"{dispatch['sqlite']['queue_ms']['median']:.1f} ms on SQLite ({difference:+.1f} ms)", flush=True)

        # 3. a job submitted to a busy A, claimed by B
        claim_ms, claim_ids = [], []
        if CLAIM_JOBS:
            busy, _ = a.submit(sleeping(600.0, 200_000))
            a.wait(busy, statuses=("running",) + TERMINAL)
            for i in range(CLAIM_JOBS):
                job_id, _ = a.submit(sleeping(0.0, 200_001 + i))
                job = a.wait(job_id, interval=0.01)
                if job["status"] != "succeeded":
                    raise RuntimeError(f"a job failed: {job['error']}")
                claim_ms.append(job["metrics"]["queue_ms"])
                claim_ids.append(job_id)
            if a.job(busy)["status"] != "running":
                raise RuntimeError(f"A's long job ended early: {a.job(busy)}")
            a.request("POST", f"/jobs/{busy}/cancel")
            a.wait(busy)
        claimed_by = owners(two_db, claim_ids)
        on_b = sum(claimed_by.get(j) == str(b.pid) for j in claim_ids)
        if claim_ms:
            print(f"bench replicas: a job submitted to a busy A runs on B after {statistics.median(claim_ms):.1f} ms "
                  f"(median; {on_b} of {len(claim_ms)} on B)", flush=True)
    finally:
        for thing in reversed(started):
            try:
                thing.stop()
            except Exception as error:  # noqa: BLE001 - stop the others all the same
                print(f"bench replicas: stopping {type(thing).__name__} failed: {error}", file=sys.stderr)

    wall = {k: statistics.median(v) for k, v in walls.items()}
    ratio = round(wall["two"] / wall["one"], 3)
    out.write_text(json.dumps({
        "machine": machine(), "jobs": JOBS, "sleep_s": SLEEP_S, "runs": RUNS,
        "throughput_s": {"two": round(wall["two"], 3), "one": round(wall["one"], 3), "ratio": ratio,
                         "goal_ratio": GOAL_RATIO, "meets_goal": ratio <= GOAL_RATIO, "runs": walls,
                         "server_span_s": spans, "ran_on": ran_on},
        "warmup_jobs": WARMUP_JOBS, "warmup_on_b": warm_on_b, "dispatch_jobs": DISPATCH_JOBS,
        "dispatch": {**dispatch, "queue_ms_median_difference": difference, "goal_ms": GOAL_DISPATCH_MS,
                     "meets_goal": difference <= GOAL_DISPATCH_MS,
                     "submit_ms_median_difference": round(dispatch["postgresql"]["submit_ms"]["median"]
                                                          - dispatch["sqlite"]["submit_ms"]["median"], 2)},
        "claimed_by_other": ({**quantiles(claim_ms), "on_b": on_b, "queue_ms_all": claim_ms} if claim_ms else None),
    }, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
