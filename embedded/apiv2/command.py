"""``python -m embedded serve`` (and ``comfy-embedded serve``): the Comfy API v2 server's command line.

Owns the options and their environment variables (``--host``/``SERVE_HOST``, default 127.0.0.1;
``--port``/``SERVE_PORT``, 8189, 0 for any free port; ``--token``/``SERVE_TOKEN``;
``--allowed-hosts``/``SERVE_ALLOWED_HOSTS``, the Host names it answers to besides loopback and its
own address; ``--max-queue``/``SERVE_MAX_QUEUE``, 16; ``--state``/``SERVE_STATE`` (``--state-dir``/``SERVE_STATE_DIR``
are the same): a folder, where assets and the SQLite state (jobs, keys, the asset index) are kept
across restarts, default a temporary folder removed at exit, refused at start when it cannot be
written; or a PostgreSQL URL, the state replicas share (``shared``), which needs the ``BUCKET_*``
bucket and takes ``SERVE_LEASE_S`` and ``SERVE_LEASE_GRACE_S`` (15 s each), and is waited for 30 s
at start (then refused with why, never the URL);
``--devices``/``COMFY_DEVICES``, the devices jobs run on at once, one ComfyUI process each;
``SERVE_SHUTDOWN_GRACE_S``, 30; and the ``Limits``: ``SERVE_MAX_UPLOAD_BYTES``, at most
``INPUT_MAX_BYTES`` (its default), ``SERVE_MAX_JSON_BYTES``, 16 MiB, ``SERVE_MAX_STORAGE_BYTES``,
20 GiB, ``SERVE_ASSET_TTL_S``, 86400, ``SERVE_MAX_STREAMS``, 100), outputs to the ``BUCKET_*`` bucket when it is configured
(``bucket``), the refusal of a host that is not loopback without a token (unless
``--unsafe-no-token``, ``SERVE_UNSAFE_NO_TOKEN=true``), and the process's life: ComfyUI boots in a
thread while the server already answers (``readiness``: jobs wait for the boot; a failed boot is
kept and said by ``/health``), ``serving Comfy API v2 on <url>`` is printed once it listens, and
SIGTERM or SIGINT stops it taking jobs, lets the unfinished ones end within the grace period (then
cancels them), and exits 0. A runner stuck in a node deaf to interrupts retires the process: once
its jobs are answered, clients get SERVE_SHUTDOWN_GRACE_S to read them, then it exits with
``EXIT_STUCK`` (75) so that an orchestrator starts a new one.

May import the public API, ``config`` and this package; never a backend.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import os
import shutil
import signal
import sys
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

SWEEP_EVERY_S = 60.0

log = logging.getLogger("embedded.apiv2")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"error: {name} must be an integer, not {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m embedded serve",
                                     description="Serve Comfy API v2 (the official comfy-sdk client works against "
                                                 "it) on this process's in-process ComfyUI.")
    parser.add_argument("--host", default=env("SERVE_HOST", "127.0.0.1"), help="address to listen on (SERVE_HOST)")
    parser.add_argument("--port", type=int, default=_env_int("SERVE_PORT", 8189), help="port (SERVE_PORT; 0: any)")
    parser.add_argument("--token", default=env("SERVE_TOKEN") or None,
                        help="require 'Authorization: Bearer TOKEN' on /api/v2/* but health (SERVE_TOKEN)")
    parser.add_argument("--max-queue", type=int, default=_env_int("SERVE_MAX_QUEUE", 16),
                        help="jobs that may wait beside the running one (0: none wait, a job is taken only when the "
                             "runner is free); more get 429 queue_full (SERVE_MAX_QUEUE)")
    parser.add_argument("--state", "--state-dir", dest="state", metavar="FOLDER|postgresql://...",
                        default=env("SERVE_STATE") or env("SERVE_STATE_DIR") or None,
                        help="where jobs, idempotency keys and assets are kept (SERVE_STATE; SERVE_STATE_DIR and "
                             "--state-dir are the same): a folder keeps them across restarts (SQLite, files beside "
                             "it; default: a temporary folder removed at exit); a PostgreSQL URL shares them between "
                             "replicas, with files in the BUCKET_* bucket (every replica serves every job)")
    parser.add_argument("--allowed-hosts", default=env("SERVE_ALLOWED_HOSTS", ""),
                        help="comma-separated Host names this server answers to besides loopback and its own address "
                             "('.example.com': a domain and its sub-domains; '*': any) (SERVE_ALLOWED_HOSTS)")
    parser.add_argument("--devices", default=None, metavar="all|0,1|cpu,cpu",
                        help="run jobs on these devices at once, one ComfyUI process each (COMFY_DEVICES; default: "
                             "one, in this process)")
    parser.add_argument("--unsafe-no-token", action="store_true",
                        default=env("SERVE_UNSAFE_NO_TOKEN", "").strip().lower() in ("1", "true", "yes"),
                        help="listen on a non-loopback host without a token (anyone who reaches it can run jobs)")
    return parser


def shared_state(state: str | None) -> bool:
    """Whether ``--state`` names a PostgreSQL database (shared by replicas) rather than a folder."""
    return bool(state) and "://" in state and state.split("://", 1)[0].lower() in ("postgresql", "postgres")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    try:
        number = float(value) if value else default
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 < number <= 3600:
        raise ValueError(f"{name} must be more than 0 and at most 3600 seconds, not {value!r}")
    return number


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` (made if missing) cannot hold the state, or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not _loopback(args.host) and not args.token and not args.unsafe_no_token:
        print(f"error: --host {args.host} is reachable from other machines: give --token (SERVE_TOKEN), or "
              "--unsafe-no-token to serve without one", file=sys.stderr)
        return 2
    if args.max_queue < 0:
        print("error: --max-queue must be 0 or more", file=sys.stderr)
        return 2
    args.shared = shared_state(args.state)
    args.state_dir = Path(args.state) if args.state and not args.shared else None
    if args.state_dir is not None and (problem := _unwritable(args.state_dir)):
        print(f"error: the state folder {args.state_dir} cannot be written ({problem}): give --state "
              "(SERVE_STATE or SERVE_STATE_DIR) a folder this process may write", file=sys.stderr)
        return 2
    if args.shared:
        from ..staging.downloads import S3Settings
        if S3Settings.from_env() is None:
            print("error: a shared state (--state postgresql://...) keeps files in a bucket: set BUCKET_ENDPOINT_URL, "
                  "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (every replica the same)", file=sys.stderr)
            return 2
        try:
            args.lease_s = _env_float("SERVE_LEASE_S", 15.0)
            args.lease_grace_s = _env_float("SERVE_LEASE_GRACE_S", 15.0)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    from ..config import Config, parse_devices
    try:
        config = Config.from_env()
        if args.devices is not None:
            config = dataclasses.replace(config, devices=parse_devices(args.devices))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    limits = Limits.from_env(config)
    if limits.max_upload_bytes > config.input_max_bytes:
        print(f"error: SERVE_MAX_UPLOAD_BYTES={limits.max_upload_bytes} is above INPUT_MAX_BYTES="
              f"{config.input_max_bytes}, the largest input a job takes: every job using such an upload would be "
              "refused; lower the first or raise the second", file=sys.stderr)
        return 2
    return asyncio.run(serve(args, config, limits))


@dataclass(frozen=True)
class Limits:
    """The server's bounds on what it takes (each from its variable)."""

    #: one upload (SERVE_MAX_UPLOAD_BYTES; default and at most: INPUT_MAX_BYTES, what a job takes)
    max_upload_bytes: int
    #: a JSON body (SERVE_MAX_JSON_BYTES, 16 MiB): past it, 413 payload_too_large
    max_json_bytes: int
    #: all assets together (SERVE_MAX_STORAGE_BYTES, 20 GiB)
    max_storage_bytes: int
    #: how long an asset is kept (SERVE_ASSET_TTL_S, a day)
    asset_ttl_s: int
    #: live event streams at once (SERVE_MAX_STREAMS, 100): past it, 429 too_many_streams
    max_streams: int

    @classmethod
    def from_env(cls, config) -> "Limits":
        return cls(_env_int("SERVE_MAX_UPLOAD_BYTES", config.input_max_bytes),
                   _env_int("SERVE_MAX_JSON_BYTES", 16 << 20), _env_int("SERVE_MAX_STORAGE_BYTES", 20 << 30),
                   _env_int("SERVE_ASSET_TTL_S", 86400), _env_int("SERVE_MAX_STREAMS", 100))


async def serve(args: argparse.Namespace, config, limits: Limits) -> int:
    from aiohttp import web

    from ..api import Executor
    from ..job.errors import BootError
    from .access import Hosts
    from .app import build
    from .assets import AssetStore
    from .bucket import Bucket
    from .jobs import Jobs
    from .readiness import EXIT_STUCK
    from .state import State

    temporary = args.state_dir is None
    state = Path(tempfile.mkdtemp(prefix="embedded-serve-")) if temporary else args.state_dir
    kept = None if temporary or args.shared else State(state / "state.sqlite3")
    database = None
    if args.shared:  # jobs and the asset index in PostgreSQL, files in the bucket; this folder is a cache
        from .shared.database import Database, StateUnavailable
        database = Database(args.state)
        try:
            await database.open()
        except StateUnavailable as exc:
            print(f"error: {exc.message.replace(': retry shortly', '')}; check --state (SERVE_STATE)", file=sys.stderr)
            shutil.rmtree(state, ignore_errors=True)
            return 2
    try:
        executor = Executor(config).prepare()
    except BootError as exc:  # devices that cannot be had: said before anything listens
        print(f"error: {exc}", file=sys.stderr)
        if database is not None:
            await database.close()
        if temporary:
            shutil.rmtree(state, ignore_errors=True)
        return 2
    bucket = Bucket.from_config(config)
    if database is not None:
        from .shared.assets import SharedAssets
        from .shared.jobs import SharedJobs
        store = SharedAssets(state / "assets", limits.max_upload_bytes, limits.max_storage_bytes, limits.asset_ttl_s,
                             database, bucket)
        jobs = SharedJobs(executor, store, args.max_queue, database, bucket, args.lease_s, args.lease_grace_s)
        await jobs.start()
    else:
        store = AssetStore(state / "assets", limits.max_upload_bytes, limits.max_storage_bytes, limits.asset_ttl_s,
                           kept)
        jobs = Jobs(executor, store, args.max_queue, kept, bucket)
    runner = web.AppRunner(build(jobs, store, args.token, limits.max_json_bytes,
                                 Hosts.parse(args.host, args.allowed_hosts), limits.max_streams), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # the port 0 got
    print(f"serving Comfy API v2 on http://{args.host}:{port}/api/v2", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    boot = jobs.readiness.start_boot(executor.start)  # in a thread: jobs submitted meanwhile wait for it
    grace = float(_env_int("SERVE_SHUTDOWN_GRACE_S", 30))

    async def sweep() -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                await jobs.tidy()
                await store.tidy()
            except Exception:  # noqa: BLE001 - the next sweep tries again (a shared state may be away)
                log.warning("embedded.apiv2: the sweep of old jobs and assets failed; the next one tries again")

    sweeper = loop.create_task(sweep())
    status = 0
    try:
        retire = loop.create_task(jobs.readiness.retire.wait())
        stopping = loop.create_task(stop.wait())
        await asyncio.wait([retire, stopping], return_when=asyncio.FIRST_COMPLETED)
        if retire.done():  # the runner is stuck: answer the jobs, let clients read them, then go
            status = EXIT_STUCK
            await jobs.settle()
            await asyncio.wait([stopping], timeout=grace)
        else:
            await jobs.drain(grace)
        retire.cancel()
        stopping.cancel()
    finally:
        sweeper.cancel()
        await jobs.close()
        await runner.cleanup()
        await asyncio.wait([boot], timeout=grace)  # a boot that hangs is left to the process's exit
        if boot.done() and not jobs.readiness.stuck:  # a boot still under way, a stuck runner: left to the exit
            await asyncio.to_thread(executor.close)
        if kept is not None:
            kept.close()
        if database is not None:
            await database.close()
        if temporary:
            shutil.rmtree(state, ignore_errors=True)
    return status
