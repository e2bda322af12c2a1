"""The shared state's database: PostgreSQL through psycopg 3, for every replica of the server.

Owns:
- the **schema** and its migrations (``MIGRATIONS``, applied in order at start, each once, under an
  advisory lock so that replicas starting together migrate once; ``embedded_schema`` holds the
  version; a database newer than this server is refused with what to do);
- the **pool** (psycopg_pool): each connection is checked before use, so that one a restart of
  PostgreSQL broke is replaced, a request waits at most ``CONNECT_WAIT_S`` for one, and a database
  back after an outage is used at once (``RECONNECT_S``); statements and locks have time limits;
- the **listening connection**: ``LISTEN`` on the channels a caller names, ``NOTIFY`` delivered to
  its callback on the event loop, reconnected with a growing pause after a drop (TCP keepalives
  notice a silent one), and ``on_reconnect`` called once it listens again, so that what a drop hid
  is looked at again;
- what a database that does not answer means: ``StateUnavailable``, a 503 ``state_unavailable``
  with ``Retry-After`` (the routes answer it in the API's envelope), ``error``, what ``/health``
  says meanwhile, and ``answering_since``; a value it refuses (``DataError``) is a 422 that never
  quotes it. A message never holds the URL nor any piece of its password.

Must not import the executor, the backends or ComfyUI.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..wire import ApiError

log = logging.getLogger("embedded.apiv2")

#: how long a request waits for a connection before it is answered 503
CONNECT_WAIT_S = 5.0
#: how long the pool keeps trying one new connection in the background, its pauses growing, before
#: it gives up (the next request tries at once): a database back after a long outage is used within
#: seconds, not after a pause grown to minutes
RECONNECT_S = 2.0
#: TCP keepalives: a connection whose peer went silent is found dead within about 25 s (both ends);
#: a statement waits at most 5 s for a lock and runs at most 15 s, and a transaction left open by a
#: client that froze (a paused VM, SIGSTOP) is ended after 15 s, so that its locks never hold the others
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
              "connect_timeout": 5,
              "options": "-c lock_timeout=5s -c statement_timeout=15s -c idle_in_transaction_session_timeout=15s "
                         "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"}
#: advisory lock keys (64-bit numbers of ours): migrating, submitting, sweeping jobs, sweeping assets
MIGRATE_LOCK, SUBMIT_LOCK, SWEEP_LOCK, ASSET_SWEEP_LOCK = 0x656D62_0001, 0x656D62_0002, 0x656D62_0003, 0x656D62_0004
#: what a job id and an asset id look like (any other is not found, without asking the database)
ID = re.compile(r"^[0-9a-f]{32}$")
#: the channels of NOTIFY: a job waits in the queue; a job changed (its id); a cancel for a job's
#: replica (``<replica> <job id>``)
QUEUE, JOB, CANCEL = "embedded_queue", "embedded_job", "embedded_cancel"

#: the schema, one step per version (never edit a step that shipped: add one)
MIGRATIONS: list[str] = [
    # 1: jobs, idempotency keys, assets and their blobs, replicas
    """
    CREATE TABLE embedded_jobs (
        id text PRIMARY KEY,
        created_at double precision NOT NULL,
        status text NOT NULL,
        owner text,
        leased_until timestamptz,
        cancel_requested boolean NOT NULL DEFAULT false,
        metadata jsonb NOT NULL DEFAULT '{}',
        workflow jsonb NOT NULL,
        record jsonb NOT NULL,
        run jsonb,
        preview jsonb,
        completed_at double precision
    );
    CREATE INDEX embedded_jobs_waiting ON embedded_jobs (created_at, id) WHERE status = 'queued' AND owner IS NULL;
    CREATE INDEX embedded_jobs_open ON embedded_jobs (status) WHERE status IN ('queued', 'running', 'canceling');
    CREATE INDEX embedded_jobs_newest ON embedded_jobs (created_at DESC, id DESC);
    CREATE INDEX embedded_jobs_leases ON embedded_jobs (leased_until) WHERE owner IS NOT NULL
        AND status IN ('queued', 'running', 'canceling');
    CREATE TABLE embedded_keys (key text PRIMARY KEY, job_id text, at double precision NOT NULL);
    CREATE TABLE embedded_blobs (hash text PRIMARY KEY, size_bytes bigint NOT NULL, content_type text NOT NULL,
                                 stored_at double precision NOT NULL);
    CREATE TABLE embedded_assets (id text PRIMARY KEY, hash text NOT NULL, record jsonb NOT NULL,
                                  expires_at double precision);
    CREATE INDEX embedded_assets_hash ON embedded_assets (hash);
    CREATE TABLE embedded_replicas (id text PRIMARY KEY, runners integer NOT NULL, seen_at timestamptz NOT NULL,
                                    started_at timestamptz NOT NULL DEFAULT now());
    """,
]


class StateUnavailable(ApiError):
    """The database did not answer: 503, the client retries."""

    def __init__(self, why: str, message: str | None = None):
        super().__init__(503, "state_unavailable", message or f"The server's shared state (PostgreSQL) cannot be "
                                                              f"reached now ({why}): retry shortly",
                         headers={"Retry-After": "2"})


def unreadable(value: str) -> ApiError:
    """A value the database refused to keep (a NUL character, a number JSON cannot carry): 422."""
    return ApiError(422, "invalid_request", f"The request holds {value} that this server cannot keep (a NUL character "
                                            "in a string, or NaN or Infinity)")


def redacted(text: str) -> str:
    """``text`` without what a connection string may hide in it (a password, a URL's user part)."""
    text = re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.I)
    return re.sub(r"(postgres(?:ql)?://)[^@/\s]*@", r"\1***@", text)


def _why(exc: BaseException, url: str = "") -> str:
    if isinstance(exc, PoolTimeout):
        return f"no connection within {CONNECT_WAIT_S:g} s"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _without_secret(redacted(first), url)[:300]


def _without_secret(text: str, url: str) -> str:
    """``text`` without any piece of the password in ``url`` (libpq may quote a host it read from a
    password holding an unescaped ``@``)."""
    userinfo = url.split("://", 1)[-1].rpartition("@")[0]
    secret = userinfo.partition(":")[2]
    for piece in sorted({secret, *re.split(r"[@:/?#\[\]]", secret)}, key=len, reverse=True):
        if len(piece) >= 2:
            text = text.replace(piece, "***")
    return text


class Database:
    def __init__(self, url: str):
        self._url = url
        self._pool: AsyncConnectionPool | None = None
        self._listener: asyncio.Task | None = None
        self._channels: dict[str, Callable[[str], None]] = {}
        #: called (on the loop) each time the listening connection is back after a drop
        self.on_reconnect: Callable[[], None] = lambda: None
        #: why the database did not answer last (None: it answers)
        self.error: str | None = None
        #: since when (``time.monotonic``) the database has answered without a failure
        self.answering_since = time.monotonic()
        self.listening = False

    def __repr__(self) -> str:  # never the URL
        return "Database(<url>)"

    # --- life ------------------------------------------------------------------------------------
    async def open(self, wait_s: float = 30.0) -> None:
        """Connect and migrate the schema; keeps trying for ``wait_s`` (replicas may start before
        the database). Raises ``StateUnavailable`` with why."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True, **KEEPALIVES) as conn:
                    await migrate(conn)
                break
            except (psycopg.OperationalError, OSError) as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise StateUnavailable(_why(exc, self._url)) from None
                await asyncio.sleep(1.0)
            except psycopg.Error:  # ProgrammingError: libpq cannot read the URL (its message quotes it)
                raise StateUnavailable("", "The --state URL cannot be read: write it as postgresql://USER:PASSWORD@"
                                           "HOST:PORT/DATABASE, with the password's special characters "
                                           "percent-encoded (@ as %40)") from None
        # the pool's own warnings repeat each failed connection attempt while the database is away: ours
        # says it once (and again when it answers)
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        self._pool = AsyncConnectionPool(self._url, min_size=1, max_size=10, open=False, timeout=CONNECT_WAIT_S,
                                         kwargs={"autocommit": True, **KEEPALIVES},
                                         check=AsyncConnectionPool.check_connection, name="embedded",
                                         reconnect_timeout=RECONNECT_S)
        await self._pool.open(wait=False)

    def listen(self, channels: dict[str, Callable[[str], None]]) -> None:
        """Deliver each ``NOTIFY`` on these channels to its callback (on the loop), from now on."""
        self._channels.update(channels)
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()

    # --- statements ------------------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncCursor]:
        """A cursor in a transaction (committed when the block ends, rolled back when it raises);
        a database that does not answer is ``StateUnavailable``."""
        assert self._pool is not None, "open() first"
        try:
            async with self._pool.connection() as conn:
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        yield cur
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            self._failed(exc)
            raise StateUnavailable(_why(exc, self._url)) from None
        except psycopg.DataError:  # never its message: it may quote the value (a job's extra_data)
            raise unreadable("a value") from None
        self._answered()

    async def all(self, sql: str, params: Any = None) -> list[tuple]:
        async with self.transaction() as cur:
            await cur.execute(sql, params)
            return await cur.fetchall() if cur.description else []

    async def one(self, sql: str, params: Any = None) -> tuple | None:
        rows = await self.all(sql, params)
        return rows[0] if rows else None

    def _failed(self, exc: BaseException) -> None:
        if self.error is None:
            log.error("embedded.apiv2: the shared state (PostgreSQL) does not answer (%s); requests get 503 "
                      "state_unavailable until it does", _why(exc, self._url))
        self.error = _why(exc, self._url)

    def _answered(self) -> None:
        if self.error is not None:
            log.warning("embedded.apiv2: the shared state (PostgreSQL) answers again")
            self.error = None
            self.answering_since = time.monotonic()

    # --- LISTEN ----------------------------------------------------------------------------------
    async def _listen(self) -> None:
        pause, dropped = 0.2, False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True, **KEEPALIVES) as conn:
                    for channel in self._channels:
                        await conn.execute(f"LISTEN {channel}")
                    self.listening, pause = True, 0.2
                    if dropped:
                        log.warning("embedded.apiv2: listening to the shared state again")
                        self.on_reconnect()
                    async for note in conn.notifies():
                        callback = self._channels.get(note.channel)
                        if callback is not None:
                            try:
                                callback(note.payload)
                            except Exception:  # noqa: BLE001 - the next notices still count
                                log.exception("embedded.apiv2: a notice on %s could not be handled", note.channel)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                if self.listening or not dropped:
                    log.warning("embedded.apiv2: the shared state's notices stopped (%s); reconnecting",
                                _why(exc, self._url))
                self.listening, dropped = False, True
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)


async def migrate(conn: psycopg.AsyncConnection) -> int:
    """Bring the schema to the last version (once, whoever else migrates at the same time);
    returns it."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS embedded_schema (version integer NOT NULL)")
        row = await (await conn.execute("SELECT coalesce(max(version), 0) FROM embedded_schema")).fetchone()
        version = row[0]
        if version > len(MIGRATIONS):
            raise StateUnavailable("", f"The shared state's schema is version {version}, newer than this server's "
                                       f"({len(MIGRATIONS)}): run the newer server's image on every replica")
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(step)
            await conn.execute("INSERT INTO embedded_schema (version) VALUES (%s)", (number,))
            log.info("embedded.apiv2: the shared state's schema is now version %d", number)
        return len(MIGRATIONS)
