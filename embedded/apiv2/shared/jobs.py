"""The jobs of a shared state: every replica takes submissions, reads, streams and cancels any job, and
runs jobs on its own devices; PostgreSQL is the authority.

Owns ``SharedJobs`` (a ``Jobs``: the submission's checks, the run on the executor, its events and
outputs are the same code):
- **Submission**: the body is checked here, then, in one transaction under an advisory lock, the
  idempotency key is inserted (its primary key refuses a key any replica saw: 422
  ``idempotency_key_reuse``), the queue bound counted across replicas (the unfinished jobs against
  the live replicas' devices plus ``--max-queue``: 429 ``queue_full``), and the job inserted. When a
  device of this replica is free and no job waits, the job is this replica's at once (its lease
  taken in the same insert) and answered after ComfyUI's validation, as on one server; otherwise it
  waits in the queue and a ``NOTIFY`` wakes the replicas.
- **Claims**: a replica with an idle device takes the oldest waiting job with ``FOR UPDATE SKIP
  LOCKED`` (two replicas never take the same), woken by ``NOTIFY``, by a job of its own ending, and
  every CLAIM_POLL_S in case a notice was lost. What the claimant needs and the others must not see
  (the files' assets, ``extra_data`` with an API key) is in the row's ``run`` until the claim
  clears it.
- **Leases**: the owner renews, each third of the lease (SERVE_LEASE_S), the jobs it tracks (runs,
  validates, or has not written the end of: a row it owns but lost track of, such as a claim whose
  answer never came, runs out); a job whose lease is older than the lease plus the grace
  (SERVE_LEASE_GRACE_S) is ended ``failed``, ``worker_lost``, by whichever replica looks first, but
  never within lease + grace of that replica's database answering again, nor of PostgreSQL's own
  start (no replica could renew meanwhile: a job running through an outage ends as it ran). Every
  write of the owner is conditioned on the job still being its own and unfinished, so a job runs
  at most once: an owner that finds its job ended elsewhere stops it, writes nothing, and its
  streams follow what the database says.
- **Events across replicas**: the owner writes the job's record (status and outputs at once;
  progress and previews at most every PROGRESS_WRITE_S) and ``NOTIFY``s its id; a replica with a
  stream on the job reads the row again and publishes what changed to it (a *mirror* of the job),
  outputs before the terminal status, and looks again every WATCH_S whatever the notices.
- **Cancels across replicas**: a waiting job is ended ``canceled`` in the row; a running one is
  marked and its owner told by ``NOTIFY`` (and by its next lease renewal, should the notice be lost).
- **A dropped database**: requests get 503 ``state_unavailable``, ``/health`` says it; writes of
  the owner are kept and written once it answers; the listening connection reconnects and every
  mirror is read again. Each background loop logs what fails and goes on.
- **What PostgreSQL cannot keep** (a NUL character, NaN): a submission holding it is 422; a job's
  record is written without it.

Must not import the executor's modules, the backends or ComfyUI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import time
import uuid
from typing import Any, Awaitable, Callable

from psycopg.types.json import Jsonb

from ..bucket import Bucket
from ..jobs import IDEMPOTENCY_TTL_S, Jobs, _asset_ids, _resolve_assets, key_reused
from ..record import JOB_TTL_S, JobRecord
from ..wire import ApiError, not_found
from .assets import OPEN, SharedAssets, _asset, retrying
from .database import CANCEL, ID, JOB, QUEUE, SUBMIT_LOCK, SWEEP_LOCK, Database, StateUnavailable, unreadable

log = logging.getLogger("embedded.apiv2")

CLAIM_POLL_S = 1.0
WATCH_S = 1.0
PROGRESS_WRITE_S = 0.25
#: lease defaults: the lost job of a killed replica is ended within about 30 s
LEASE_S, LEASE_GRACE_S = 15.0, 15.0
_INTERVAL = "make_interval(secs => %s)"
#: the oldest waiting job, made the claimant's (``owner``, lease seconds): two claimants never get the
#: same one (the row is locked by the first, skipped by the second); returns its record and what only
#: the claimant may see (``run``, cleared in the row)
CLAIM = (f"WITH picked AS (SELECT id, run FROM embedded_jobs WHERE status = 'queued' AND owner IS NULL ORDER BY "
         f"created_at, id FOR UPDATE SKIP LOCKED LIMIT 1) UPDATE embedded_jobs j SET owner = %s, leased_until = now() + "
         f"{_INTERVAL}, run = NULL FROM picked WHERE j.id = picked.id RETURNING j.record, j.workflow, picked.run")
#: the jobs whose lease ran out ``grace`` seconds ago, ended ``failed`` (never a row another
#: transaction holds; never within lease + grace of the database's own start, when no replica could
#: renew); each announced
REAP = (f"WITH lost AS (UPDATE embedded_jobs SET status = 'failed', completed_at = %(now)s, preview = NULL, "
        f"record = record || jsonb_build_object('status', 'failed', 'completed_at', %(now)s::float8, "
        f"'error', %(error)s::jsonb, 'current_node', NULL) WHERE id IN (SELECT id FROM embedded_jobs WHERE owner IS "
        f"NOT NULL AND status IN {OPEN} AND leased_until < now() - make_interval(secs => %(grace)s) "
        f"AND now() - pg_postmaster_start_time() > make_interval(secs => %(window)s) FOR UPDATE SKIP LOCKED) "
        f"RETURNING id) SELECT id, pg_notify('{JOB}', id) FROM lost")


class SharedJobs(Jobs):
    def __init__(self, executor, assets: SharedAssets, max_queue: int, db: Database, bucket: Bucket,
                 lease_s: float = LEASE_S, grace_s: float = LEASE_GRACE_S):
        super().__init__(executor, assets, max_queue, state=None, bucket=bucket)
        self.db, self.lease_s, self.grace_s = db, lease_s, grace_s
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.keep_when_upload_fails = False  # a file on one replica's disk is no other's
        #: jobs of other replicas (or of this one, read back) that a request here reads or streams
        self._mirrors: dict[str, JobRecord] = {}
        #: jobs of this replica whose record the database has not seen yet: id -> urgent (a status,
        #: an output) or not (progress, a preview)
        self._dirty: dict[str, bool] = {}
        #: jobs of this replica ended elsewhere (their lease ran out): stopped here, never written
        self._gone: set[str] = set()
        #: submissions taking a device of this replica, between the check and their hand-over
        self._reserved = 0
        #: mirrors to read again (one query for all, whatever the number of notices)
        self._to_refresh: set[str] = set()
        self._wake_claimer, self._wake_writer, self._wake_refresher = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._background: list[asyncio.Task] = []
        self._live_runners = self.runners

    # --- life ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.db.listen({QUEUE: lambda _: self._wake_claimer.set(), JOB: self._on_job_notice,
                        CANCEL: self._on_cancel_notice})
        self.db.on_reconnect = self._after_reconnect
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self._forever(name, step, pause)) for name, step, pause in (
            ("claiming jobs", self._claim_once, None), ("writing jobs", self._write_once, None),
            ("renewing leases", self._renew, self.lease_s / 3), ("reaping lost jobs", self._reap, self.lease_s / 3),
            ("reading mirrors", self._refresh_once, None), ("watching streams", self._watch, WATCH_S))]
        try:
            await self._heartbeat()
        except StateUnavailable:
            pass  # the lease loop tries again

    async def _forever(self, what: str, step: Callable[[], Awaitable[None]], pause: float | None) -> None:
        """Run ``step`` again and again (every ``pause`` seconds): a database away, or any other
        failure, is logged and the next round tries again."""
        while not asyncio.current_task().cancelling():  # (a cancel a step swallowed still ends the loop)
            if pause is not None:
                await asyncio.sleep(pause)
            try:
                await step()
            except StateUnavailable:
                await asyncio.sleep(0.5)  # said by the database
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop goes on
                log.exception("embedded.apiv2: %s failed; trying again", what)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        """After ``drain``: the last writes, then this replica leaves the live ones."""
        writer = self._background[1]
        for task in self._background:
            if task is not writer:
                task.cancel()
        deadline = time.monotonic() + 10
        while self._dirty and time.monotonic() < deadline and self.db.error is None:
            await asyncio.sleep(0.05)
        writer.cancel()
        await asyncio.wait(self._background, timeout=10)
        try:
            await self.db.all("DELETE FROM embedded_replicas WHERE id = %s", (self.replica,))
        except ApiError:  # (StateUnavailable too) its row is left to the sweep
            pass

    def status(self) -> str:
        status = super().status()
        return "state_unavailable" if status == "healthy" and self.db.error is not None else status

    def state_error(self) -> str | None:
        return self.db.error

    # --- submission ------------------------------------------------------------------------------
    async def submit(self, body: Any, idempotency_key: str | None) -> JobRecord:
        self.readiness.check_accepting()
        workflow, metadata, extra_data = self._checked(body)
        if not _keepable({"workflow": workflow, "metadata": metadata, "extra_data": extra_data}):
            raise unreadable("a value")
        found = await self.assets.lookup(_asset_ids(workflow))
        workflow, files, used = _resolve_assets(workflow, found)
        job = JobRecord(uuid.uuid4().hex, workflow, metadata, time.time(), assets_used=used)
        here = self._idle() > 0
        if here:
            self._reserved += 1  # (checked and taken with no await between: two submissions never share a device)
        if not await self._insert(job, files, extra_data, idempotency_key, here):
            return job  # it waits in the queue
        self._reserved -= 1  # _hand_over counts it (in _validating) before it first waits
        try:
            return await self._hand_over(job, files, extra_data)
        except ApiError:  # refused by ComfyUI's validation: no job was made, the key may be used again
            await self._forget(job.id, idempotency_key)
            raise

    async def _insert(self, job: JobRecord, files: dict[str, Any], extra_data: dict[str, Any], key: str | None,
                      here: bool) -> bool:
        """Insert the job (and its key) under the queue bound; whether it is this replica's at once
        (else it waits in the queue). A device reserved for it is released when it is not."""
        try:
            async with self.db.transaction() as cur:
                await cur.execute("SELECT pg_advisory_xact_lock(%s)", (SUBMIT_LOCK,))
                if key is not None:
                    await cur.execute("DELETE FROM embedded_keys WHERE key = %s AND at < %s",
                                      (key, time.time() - IDEMPOTENCY_TTL_S))
                    await cur.execute("INSERT INTO embedded_keys (key, job_id, at) VALUES (%s, %s, %s) ON CONFLICT DO "
                                      "NOTHING", (key, job.id, time.time()))
                    if cur.rowcount == 0:
                        raise key_reused()
                await cur.execute(f"SELECT count(*) FILTER (WHERE status IN {OPEN}), count(*) FILTER (WHERE status = "
                                  f"'queued' AND owner IS NULL), (SELECT coalesce(sum(runners), 0) FROM "
                                  f"embedded_replicas WHERE seen_at > now() - {_INTERVAL}) FROM embedded_jobs WHERE "
                                  f"status IN {OPEN}", (self.lease_s + self.grace_s,))
                unfinished, waiting, runners = await cur.fetchone()
                self._live_runners = max(int(runners), self.runners)
                if unfinished >= self._live_runners + self.max_queue:
                    raise self._queue_full(waiting)
                mine = here and waiting == 0
                run = None if mine else Jsonb({"files": {n: a.id for n, a in files.items()}, "extra_data": extra_data})
                await cur.execute(
                    f"INSERT INTO embedded_jobs (id, created_at, status, owner, leased_until, metadata, workflow, record, "
                    f"run) VALUES (%s, %s, 'queued', %s, CASE WHEN %s THEN now() + {_INTERVAL} END, %s, %s, %s, %s)",
                    (job.id, job.created_at, self.replica if mine else None, mine, self.lease_s, Jsonb(job.metadata),
                     Jsonb(job.workflow), Jsonb(_snapshot(job)), run))
                if not mine:
                    await cur.execute(f"NOTIFY {QUEUE}")
        except BaseException:
            if here:
                self._reserved -= 1
            raise
        if here and not mine:
            self._reserved -= 1
        return mine

    async def _forget(self, job_id: str, key: str | None) -> None:
        """A refused submission: its row and key go (the job is this replica's until then: if the
        database is away, its lease runs out and it ends ``worker_lost``)."""
        try:
            async with self.db.transaction() as cur:
                await cur.execute("DELETE FROM embedded_jobs WHERE id = %s", (job_id,))
                if key is not None:
                    await cur.execute("DELETE FROM embedded_keys WHERE key = %s", (key,))
        except StateUnavailable:
            log.warning("embedded.apiv2: refused job %s could not be removed from the shared state now", job_id)

    def _queue_full(self, waiting: int) -> ApiError:
        return ApiError(429, "queue_full", f"{waiting} job(s) wait beside the {self._live_runners} the replicas run at "
                                           f"once: the bound of these replicas (--max-queue {self.max_queue})",
                        headers={"Retry-After": str(self._retry_after())})

    # --- claims ----------------------------------------------------------------------------------
    def _accepting(self) -> bool:
        r = self.readiness
        return r.booted and not r.stuck and not r.shutting_down and r.boot_error is None

    def _idle(self) -> int:
        """How many more jobs this replica can start now."""
        if not self._accepting():
            return 0
        return min(self.executor.ready, self.runners) - self.unfinished() - self._reserved

    async def _claim_once(self) -> None:
        try:  # (not wait_for: on Python 3.11 it swallows a cancel that comes as the event is set)
            async with asyncio.timeout(CLAIM_POLL_S):
                await self._wake_claimer.wait()
        except TimeoutError:
            pass
        self._wake_claimer.clear()
        while self._idle() > 0:
            row = await self.db.one(CLAIM, (self.replica, self.lease_s))
            if row is None:
                break
            self._start_claimed(*row)

    def _start_claimed(self, record: dict[str, Any], workflow: dict[str, Any], run: dict[str, Any] | None) -> None:
        try:
            job = _job(record, workflow=workflow)
        except Exception:  # noqa: BLE001 - a record this server cannot read: its lease runs out (worker_lost)
            log.exception("embedded.apiv2: a claimed job's record could not be read")
            return
        self._jobs[job.id] = job
        self._open[job.id] = job
        self.assets.use(job.assets_used)
        task = asyncio.get_running_loop().create_task(self._run_claimed(job, run or {}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_claimed(self, job: JobRecord, run: dict[str, Any]) -> None:
        try:
            names = run.get("files") or {}
            found = await retrying(lambda: self.assets.lookup(list(names.values())), self.lease_s)
            missing = [i for i in names.values() if i not in found]
            if missing:
                self._finish(job, "failed", {"code": "missing_asset", "message": "Asset(s) expired or deleted before "
                                             f"the job ran: {', '.join(missing)}", "node_id": None,
                                             "class_type": None, "traceback": None})
                return
            await self._run(job, {n: found[i] for n, i in names.items()}, run.get("extra_data") or {})
        except Exception as exc:  # noqa: BLE001 - the job ends, saying why
            log.exception("embedded.apiv2: job %s failed in the server", job.id)
            if not job.terminal:
                self._finish(job, "failed", {"code": "server_error", "message": f"The server failed: "
                                             f"{getattr(exc, 'message', None) or type(exc).__name__}",
                                             "node_id": None, "class_type": None, "traceback": None})

    # --- writes of this replica's jobs -----------------------------------------------------------
    def _save(self, job: JobRecord) -> None:
        if job.id not in self._gone:
            self._dirty[job.id] = True
            self._wake_writer.set()

    def _changed(self, job: JobRecord) -> None:
        if job.id not in self._gone:
            self._dirty.setdefault(job.id, False)
            self._wake_writer.set()

    def _finish(self, job: JobRecord, status: str, error: dict[str, Any] | None = None) -> None:
        super()._finish(job, status, error)
        self._wake_claimer.set()  # a device is free

    async def _write_once(self) -> None:
        await self._wake_writer.wait()
        if not any(self._dirty.values()):  # progress only: written at most every PROGRESS_WRITE_S
            await asyncio.sleep(PROGRESS_WRITE_S)
        self._wake_writer.clear()
        batch, self._dirty = self._dirty, {}
        for job_id, urgent in batch.items():
            job = self._jobs.get(job_id)
            if job is None or job_id in self._gone:
                continue
            try:
                owned = await self._write(job)
            except StateUnavailable:  # kept, with what is not written yet, for when the database answers
                for later, was in batch.items():
                    if later in self._jobs:
                        self._dirty[later] = self._dirty.get(later, False) or was
                self._wake_writer.set()
                raise
            except Exception:  # noqa: BLE001 - never a job left running for want of its last write
                log.exception("embedded.apiv2: job %s could not be written; its status is written alone", job_id)
                owned = await self._write_status(job)
            if not owned:
                self._lost(job)
            elif job.terminal and job_id not in self._dirty:
                self._jobs.pop(job_id, None)  # ended and written: read from the database from now on

    async def _write(self, job: JobRecord) -> bool:
        """Write ``job``'s record if it is still this replica's and unfinished; whether it was."""
        row = await self.db.one(
            f"WITH written AS (UPDATE embedded_jobs SET status = CASE WHEN cancel_requested AND %(status)s IN "
            f"('queued', 'running') THEN 'canceling' ELSE %(status)s END, record = %(record)s, preview = %(preview)s, "
            f"completed_at = %(completed_at)s, leased_until = now() + make_interval(secs => %(lease)s) "
            f"WHERE id = %(id)s AND owner = %(me)s AND status IN {OPEN} RETURNING id) "
            f"SELECT pg_notify('{JOB}', id) FROM written",
            {"status": job.status, "record": Jsonb(_snapshot(job)),
             "preview": Jsonb(_sanitized(job.preview)) if job.preview is not None else None,
             "completed_at": job.completed_at, "lease": self.lease_s, "id": job.id, "me": self.replica})
        return row is not None

    async def _write_status(self, job: JobRecord) -> bool:
        """The job's status, times and error alone (when its whole record could not be written)."""
        change = _sanitized({"status": job.status, "started_at": job.started_at, "completed_at": job.completed_at,
                             "error": job.error})
        row = await self.db.one(
            f"WITH written AS (UPDATE embedded_jobs SET status = %s, completed_at = %s, record = record || %s "
            f"WHERE id = %s AND owner = %s AND status IN {OPEN} RETURNING id) SELECT pg_notify('{JOB}', id) FROM written",
            (job.status, job.completed_at, Jsonb(change), job.id, self.replica))
        return row is not None

    def _lost(self, job: JobRecord) -> None:
        """``job`` was ended by another replica (its lease ran out): stop it here, write nothing;
        streams here follow what the database says of it."""
        if job.id in self._gone:
            return
        if len(self._gone) > 10_000:
            self._gone.clear()
        self._gone.add(job.id)
        self._dirty.pop(job.id, None)
        log.error("embedded.apiv2: job %s was ended by another replica (this one did not renew its lease in time); "
                  "it is stopped here", job.id)
        self._jobs.pop(job.id, None)
        self._open.pop(job.id, None)
        self._wake_claimer.set()
        if not job.terminal:
            job.stop.set()
            job.cancelled.set()
            if self.executor is not None:
                self.executor.interrupt(job.id)
        self._mirrors[job.id] = job
        self._want_refresh([job.id])

    # --- leases ----------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        await self.db.all("INSERT INTO embedded_replicas (id, runners, seen_at) VALUES (%s, %s, now()) "
                          "ON CONFLICT (id) DO UPDATE SET runners = excluded.runners, seen_at = now()",
                          (self.replica, self.runners if self._accepting() else 0))

    def _tracked(self) -> list[JobRecord]:
        """The jobs of this replica the database still counts open: those it runs, validates or has
        not written the end of (a job leaves ``_jobs`` once its end is written)."""
        jobs = {**self._jobs, **self._validating}
        return [j for i, j in jobs.items() if i not in self._gone]

    async def _renew(self) -> None:
        """Renew the leases of the jobs this replica tracks (a row it owns but lost track of, a
        claim whose answer never came, runs out and ends ``worker_lost``); a cancel whose notice
        was lost is seen here."""
        await self._heartbeat()
        tracked = self._tracked()
        if not tracked:
            return
        held = dict(await self.db.all(f"UPDATE embedded_jobs SET leased_until = now() + {_INTERVAL} WHERE id = ANY(%s) "
                                      f"AND owner = %s AND status IN {OPEN} RETURNING id, cancel_requested",
                                      (self.lease_s, [j.id for j in tracked], self.replica)))
        for job in tracked:
            if job.id not in held:
                if job.id in self._jobs and job.id not in self._validating:
                    self._lost(job)
            elif held[job.id] and not job.cancel_requested and job.id in self._jobs:  # a cancel's lost notice
                self.cancel(job.id)

    async def _reap(self) -> None:
        """End ``failed`` (``worker_lost``) the jobs whose replica stopped renewing their lease; not
        before this replica has had the database for lease + grace (after an outage, no replica
        could renew)."""
        if time.monotonic() - self.db.answering_since < self.lease_s + self.grace_s:
            return
        error = {"code": "worker_lost", "message": "The replica running this job stopped answering (killed, or cut "
                 "off from the database) and its lease ran out: submit it again", "node_id": None,
                 "class_type": None, "traceback": None}
        rows = await self.db.all(REAP, {"now": time.time(), "error": Jsonb(error), "grace": self.grace_s,
                                        "window": self.lease_s + self.grace_s})
        for (job_id, _) in rows:
            log.warning("embedded.apiv2: job %s failed: its replica stopped renewing its lease (worker_lost)", job_id)

    # --- reading ---------------------------------------------------------------------------------
    async def find(self, job_id: str) -> JobRecord:
        local = self._jobs.get(job_id)
        if local is not None:
            return local
        if not ID.match(str(job_id)):
            raise not_found("job", job_id)
        mirror = self._mirrors.get(job_id)
        row = await self.db.one("SELECT status, record, preview, CASE WHEN %s THEN workflow END FROM embedded_jobs "
                                "WHERE id = %s", (mirror is None, job_id))
        if row is None:
            raise not_found("job", job_id)
        for gone in [k for k, m in self._mirrors.items() if not m.listeners and k != job_id]:
            del self._mirrors[gone]
        mirror = self._mirrors.get(job_id)
        if mirror is None:
            if row[3] is None:  # (its mirror went meanwhile)
                row = (*row[:3], (await self.db.one("SELECT workflow FROM embedded_jobs WHERE id = %s", (job_id,))
                                  or ({},))[0])
            mirror = self._mirrors[job_id] = _job(row[1], row[0], row[2], row[3])
        else:
            _update(mirror, _job(row[1], row[0], row[2], mirror.workflow))
        return mirror

    async def position(self, job: JobRecord) -> int | None:
        if job.status != "queued":
            return None
        try:
            row = await self.db.one("SELECT count(*) FROM embedded_jobs WHERE status = 'queued' AND (created_at, id) "
                                    "<= (%s, %s)", (job.created_at, job.id))
        except StateUnavailable:
            return None  # (the job is read whole; only its place is not known now)
        return max(1, row[0])

    async def page(self, metadata: dict[str, str], limit: int,
                   cursor: str | None) -> tuple[list[JobRecord], str | None]:
        after = ""
        params: list[Any] = [Jsonb(metadata)]
        if cursor is not None:
            mark = await self.db.one("SELECT created_at, id FROM embedded_jobs WHERE id = %s",
                                     (cursor,)) if ID.match(cursor) else None
            if mark is None:
                raise ApiError(422, "invalid_cursor", "The cursor is not one this server gave (or its job expired)")
            after, params = " AND (created_at, id) < (%s, %s)", params + list(mark)
        if not _keepable(metadata):
            return [], None  # no job carries such a label
        rows = await self.db.all(
            "SELECT id, status, created_at, (record->>'started_at')::float8, completed_at, metadata FROM embedded_jobs "
            f"WHERE metadata @> %s{after} ORDER BY created_at DESC, id DESC LIMIT %s", (*params, limit + 1))
        page = [JobRecord(r[0], {}, r[5], r[2], status=r[1], started_at=r[3], completed_at=r[4]) for r in rows[:limit]]
        return page, (page[-1].id if len(rows) > limit else None)

    async def counts(self) -> dict[str, Any]:
        try:
            waiting, unfinished, runners, replicas = await self.db.one(
                f"SELECT count(*) FILTER (WHERE status = 'queued'), count(*), (SELECT coalesce(sum(runners), 0) FROM "
                f"embedded_replicas WHERE seen_at > now() - {_INTERVAL}), (SELECT count(*) FROM embedded_replicas "
                f"WHERE seen_at > now() - {_INTERVAL}) FROM embedded_jobs WHERE status IN {OPEN}",
                (self.lease_s + self.grace_s, self.lease_s + self.grace_s))
        except StateUnavailable:
            return {**await super().counts(), "replica": self.replica, "replicas": None}
        return {"jobs_waiting": waiting, "jobs_unfinished": unfinished, "jobs_at_once": self.runners,
                "jobs_at_once_all_replicas": max(int(runners), self.runners), "replica": self.replica,
                "replicas": replicas}

    # --- cancels ---------------------------------------------------------------------------------
    async def request_cancel(self, job_id: str) -> JobRecord:
        if job_id in self._jobs:
            return self.cancel(job_id)
        if not ID.match(str(job_id)):
            raise not_found("job", job_id)
        async with self.db.transaction() as cur:
            await cur.execute("SELECT owner, status FROM embedded_jobs WHERE id = %s FOR UPDATE", (job_id,))
            row = await cur.fetchone()
            if row is None:
                raise not_found("job", job_id)
            owner, status = row
            if status in ("queued", "running"):
                if owner is None:  # waiting: no replica runs it, it ends here
                    change = {"status": "canceled", "completed_at": time.time(), "cancel_requested": True}
                else:
                    change = {"status": "canceling", "cancel_requested": True}
                await cur.execute("UPDATE embedded_jobs SET status = %s, cancel_requested = true, completed_at = %s, "
                                  "run = CASE WHEN owner IS NULL THEN NULL ELSE run END, record = record || %s "
                                  "WHERE id = %s", (change["status"], change.get("completed_at"), Jsonb(change),
                                                    job_id))
                await cur.execute("SELECT pg_notify(%s, %s)", (JOB, job_id))
                if owner is not None:
                    await cur.execute("SELECT pg_notify(%s, %s)", (CANCEL, f"{owner} {job_id}"))
        return await self.find(job_id)

    def _on_cancel_notice(self, payload: str) -> None:
        owner, _, job_id = payload.partition(" ")
        if owner == self.replica and job_id in self._open:
            self.cancel(job_id)

    # --- mirrors ---------------------------------------------------------------------------------
    def _on_job_notice(self, job_id: str) -> None:
        if job_id in self._mirrors:
            self._want_refresh([job_id])

    def _after_reconnect(self) -> None:
        self._wake_claimer.set()
        self._want_refresh(list(self._mirrors))

    def _want_refresh(self, ids: list[str]) -> None:
        self._to_refresh.update(ids)
        self._wake_refresher.set()

    async def _refresh_once(self) -> None:
        await self._wake_refresher.wait()
        self._wake_refresher.clear()
        ids, self._to_refresh = self._to_refresh, set()
        ids = [i for i in ids if i in self._mirrors]
        if not ids:
            return
        try:
            rows = await self.db.all("SELECT id, status, record, preview FROM embedded_jobs WHERE id = ANY(%s)", (ids,))
        except StateUnavailable:
            self._want_refresh(ids)  # again once the database answers
            raise
        seen = set()
        for job_id, status, record, preview in rows:
            seen.add(job_id)
            mirror = self._mirrors.get(job_id)
            if mirror is not None:
                _update(mirror, _job(record, status, preview, mirror.workflow))
        for job_id in set(ids) - seen:  # its row is gone (expired, or a refused submission's)
            mirror = self._mirrors.pop(job_id, None)
            if mirror is not None and not mirror.terminal:
                mirror.status = "expired"
                mirror.publish("status", {"status": "expired", "queue_position": None})

    async def _watch(self) -> None:
        """Read the streamed mirrors again, whatever the notices say."""
        self._want_refresh([k for k, m in self._mirrors.items() if m.listeners and not m.terminal])

    # --- the rest --------------------------------------------------------------------------------
    async def tidy(self) -> int:
        """Forget the jobs that ended more than JOB_TTL_S ago, old keys and replicas (one replica at a
        time does it); returns how many jobs went."""
        async with self.db.transaction() as cur:
            await cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK,))
            if not (await cur.fetchone())[0]:
                return 0
            await cur.execute(f"DELETE FROM embedded_jobs WHERE status NOT IN {OPEN} AND completed_at < %s",
                              (time.time() - JOB_TTL_S,))
            gone = cur.rowcount
            await cur.execute("DELETE FROM embedded_keys WHERE at < %s", (time.time() - IDEMPOTENCY_TTL_S,))
            await cur.execute("DELETE FROM embedded_replicas WHERE seen_at < now() - interval '1 day'")
        return gone


def _sanitized(value: Any) -> Any:
    """``value`` as PostgreSQL's JSON keeps it: no NUL character in a string, NaN and the infinities
    as null."""
    text = json.dumps(value, default=str).replace("\\u0000", "")
    return json.loads(text, parse_constant=lambda _: None)


def _keepable(value: Any) -> bool:
    """Whether ``value`` is JSON PostgreSQL keeps as it is (no NaN, no infinity, no NUL character)."""
    try:
        return "\\u0000" not in json.dumps(value, allow_nan=False, default=str)
    except ValueError:
        return False


def _snapshot(job: JobRecord) -> dict[str, Any]:
    """``job`` as its row's ``record``: what any replica needs to answer for it, but its workflow
    (written once, in its own column: progress is written often)."""
    return _sanitized({
        "id": job.id, "metadata": job.metadata, "created_at": job.created_at,
        "status": job.status, "started_at": job.started_at, "completed_at": job.completed_at,
        "outputs": [dataclasses.asdict(a) for a in job.outputs], "error": job.error, "assets_used": job.assets_used,
        "cancel_requested": job.cancel_requested, "done": sorted(job.done), "outputs_reused": job.outputs_reused,
        "current_node": job.current_node, "step": job.step, "steps": job.steps, "running": job.running,
        "progress_version": job.progress_version, "preview_version": job.preview_version})


def _job(record: dict[str, Any], status: str | None = None, preview: dict[str, Any] | None = None,
         workflow: dict[str, Any] | None = None) -> JobRecord:
    """A job as a row holds it (its status column is the authority: a cancel or a reaper wrote it)."""
    names = {f.name for f in dataclasses.fields(JobRecord)} - {"workflow"}
    fields = {k: v for k, v in record.items() if k in names}  # (a newer replica's extra keys are left)
    fields["workflow"] = workflow or {}
    outputs = [_asset(a) for a in fields.pop("outputs", [])]
    job = JobRecord(**{**fields, "done": set(fields.get("done") or ())}, outputs=outputs)
    if status is not None:
        job.status = status
    job.preview = preview
    return job


def _update(mirror: JobRecord, now: JobRecord) -> None:
    """Bring ``mirror`` to ``now`` and tell its streams what changed: new outputs, then the status."""
    known = {a.id for a in mirror.outputs}
    status_changed = now.status != mirror.status
    for name in ("workflow", "metadata", "started_at", "completed_at", "outputs", "error", "assets_used",
                 "cancel_requested", "done", "outputs_reused", "current_node", "step", "steps", "running"):
        setattr(mirror, name, getattr(now, name))
    mirror.status = now.status
    mirror.progress_version = now.progress_version
    if now.preview_version != mirror.preview_version and now.preview is not None:
        mirror.preview, mirror.preview_version = now.preview, now.preview_version
        mirror.publish("preview", None)
    elif mirror.terminal:
        mirror.preview = None
    for asset in now.outputs:
        if asset.id not in known:
            mirror.publish("output", asset.output_json(""))
    if status_changed:
        mirror.publish("status", {"status": mirror.status, "queue_position": None})
