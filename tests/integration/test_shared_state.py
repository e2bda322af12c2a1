"""The shared state's database on a real PostgreSQL (Debian's, on loopback), without a server: the
schema is made once whoever starts first, a newer one is refused, claims never give a job twice,
and no message holds the database's password.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import psycopg
import pytest

from embedded.apiv2.shared.database import Database, StateUnavailable, migrate, redacted
from embedded.apiv2.shared.jobs import CLAIM

from ..servers import free_port


def run(coro):
    return asyncio.run(coro)


def test_replicas_starting_together_make_the_schema_once(postgres):
    url = postgres.database()

    async def start_three():
        databases = [Database(url) for _ in range(3)]
        await asyncio.gather(*(d.open() for d in databases))
        rows = await databases[0].all("SELECT version FROM embedded_schema")
        for d in databases:
            await d.close()
        return rows
    assert run(start_three()) == [(1,)]


def test_a_database_migrated_by_a_newer_server_is_refused_with_what_to_do(postgres):
    url = postgres.database()

    async def newer():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            await conn.execute("INSERT INTO embedded_schema VALUES (99)")
        with pytest.raises(StateUnavailable) as refused:
            await Database(url).open(wait_s=0)
        return refused.value.message
    message = run(newer())
    assert "version 99" in message and "newer" in message and "every replica" in message


def test_two_claimants_never_take_the_same_job(postgres):
    url = postgres.database()
    jobs = 60

    async def claim_all():
        db = Database(url)
        await db.open()
        async with db.transaction() as cur:
            for n in range(jobs):
                await cur.execute("INSERT INTO embedded_jobs (id, created_at, status, workflow, record, run) VALUES "
                                  "(%s, %s, 'queued', '{}', %s, %s)", (f"job{n:03}", time.time() + n,
                                                                       json.dumps({"n": n}), json.dumps({"files": {}})))

        async def claimant(name: str) -> list[str]:
            taken = []
            while (row := await db.one(CLAIM, (name, 30))) is not None:
                assert row[2] == {"files": {}}, "the claimant gets what the row held for it"
                taken.append(row[0]["n"])
            return taken
        results = await asyncio.gather(*(claimant(f"replica-{i}") for i in range(4)))
        owners = await db.all("SELECT owner, count(*) FROM embedded_jobs GROUP BY owner")
        run_left = await db.one("SELECT count(*) FROM embedded_jobs WHERE run IS NOT NULL")
        await db.close()
        return results, dict(owners), run_left[0]
    results, owners, run_left = run(claim_all())
    taken = [n for r in results for n in r]
    assert sorted(taken) == list(range(jobs)), "each job taken exactly once"
    assert sum(owners.values()) == jobs and None not in owners
    assert run_left == 0, "what only the claimant may see is cleared by the claim"
    for r in results:
        assert r == sorted(r), "each claimant takes the oldest first"


def test_a_database_that_does_not_answer_is_a_503_that_names_no_password():
    url = f"postgresql://user:s3cret-pass@127.0.0.1:{free_port()}/nothing"

    async def start():
        with pytest.raises(StateUnavailable) as refused:
            await Database(url).open(wait_s=0)
        return refused.value
    error = run(start())
    assert error.status == 503 and error.code == "state_unavailable" and error.headers["Retry-After"]
    assert "s3cret" not in error.message and "127.0.0.1" in error.message
    assert redacted("postgresql://me:pw@db/x password=pw2") == "postgresql://***@db/x password=***"


def test_serve_on_a_shared_state_without_a_bucket_is_refused_before_it_starts(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SERVE_STATE": "postgresql://u:s3cret@127.0.0.1:1/x"}
    done = subprocess.run([sys.executable, "-m", "embedded", "serve", "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "BUCKET_ENDPOINT_URL" in done.stderr and "s3cret" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_lease_that_is_not_a_number_of_seconds_is_refused_saying_so(tmp_path, value):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SERVE_STATE": "postgresql://u@127.0.0.1:1/x",
           "BUCKET_ENDPOINT_URL": "http://127.0.0.1:1/b", "BUCKET_ACCESS_KEY_ID": "k", "BUCKET_SECRET_ACCESS_KEY": "s",
           "SERVE_LEASE_S": value}
    done = subprocess.run([sys.executable, "-m", "embedded", "serve", "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=60)
    said = "must be a number of seconds" if value == "soon" else "must be more than 0"
    assert done.returncode == 2 and f"SERVE_LEASE_S {said}" in done.stderr, done.stderr


def test_only_a_postgresql_url_is_a_shared_state_a_folder_named_so_is_a_folder():
    from embedded.apiv2.command import shared_state

    assert shared_state("postgresql://u@h/db") and shared_state("postgres://u@h/db")
    assert not shared_state("postgres") and not shared_state("./postgresql") and not shared_state(None)
