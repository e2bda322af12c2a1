"""Downloads: one URL (``http``, ``https`` or ``s3``) streamed into a file, through the guard.

Owns: the HTTP session every download uses (``requests`` with connections whose address comes
from ``guard.Guard.resolve``: every hop of a redirect is checked again, and the connection
goes to the address that was checked; no proxy or ``.netrc`` from the environment), connect and
read timeouts, retries with backoff on connection errors and 5xx (urllib3's ``Retry``), the size
cap while streaming, per-host tokens (``HF_TOKEN`` for Hugging Face, ``CIVITAI_TOKEN`` for
civitai.com, sent as a bearer header and dropped by ``requests`` on a redirect to another host),
``s3://bucket/key`` (a presigned ``GET`` made with boto3 from the job's ``S3Settings`` or the
``BUCKET_*`` variables, then fetched as any URL) and uploads to a job's own bucket (a presigned
``PUT`` through the same guarded session). Errors (``FetchError``) name what was fetched and the
host, never the query string, user-info or a token.

Must not import ComfyUI or the backends.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util import connection as urllib3_connection
from urllib3.util.retry import Retry

from ..job.errors import InputError
from .guard import FetchRefused, Guard, host_of, redact

#: bytes read at a time
CHUNK = 64 * 1024
#: how often a transfer's watcher looks at its cancel and its deadline (seconds)
WATCH_EVERY_S = 0.1
#: redirects followed, each checked by the guard like the first URL
MAX_REDIRECTS = 10
#: a presigned URL's life for one transfer: an ``s3://`` input's GET, an output's PUT (seconds)
PRESIGN_TRANSFER_S = 3600
#: how long a presigned URL of an output in a job's own bucket stays valid (as rp_upload: 7 days)
PRESIGN_RESULT_S = 7 * 24 * 3600
#: bearer tokens by host: (the variable, the hosts it is sent to, with their sub-domains)
TOKENS = (("HF_TOKEN", ("huggingface.co", "hf.co")), ("CIVITAI_TOKEN", ("civitai.com",)))


class FetchError(InputError):
    """A download failed: HTTP status, timeout, unreachable host, size cap, checksum."""

    kind = "fetch"


class Cancelled(Exception):
    """The job was cancelled while its files were downloading."""


class _Stopped(Exception):
    """A transfer's watcher closed its connection (raised where a new one would be made)."""


class _Transfer:
    """One download or upload: the sockets it opened, shut down from the watcher's thread when it
    must stop (``stop``), so that a read or write blocked on a server that drips, or accepts bytes
    slowly, returns at once; a cancel or a deadline takes effect within ``WATCH_EVERY_S``."""

    def __init__(self) -> None:
        self.stopped: str | None = None  # "cancel" or "deadline"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            stopped = self.stopped
        if stopped:
            _shut(sock)

    def stop(self, why: str) -> None:
        with self._lock:
            if self.stopped:
                return
            self.stopped = why
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Wake whatever blocks on ``sock``; its close (by urllib3, after the error) then resets the
    connection instead of sending what is still buffered (no lingering)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


#: the transfer the current thread runs (its connections register with it)
_current = threading.local()


@contextlib.contextmanager
def _watched(cancel: threading.Event | None, deadline_s: float | None) -> Iterator[_Transfer]:
    """Run a transfer in the block; a thread stops it when ``cancel`` is set or ``deadline_s``
    seconds have passed, by shutting its connections down."""
    transfer = _Transfer()
    done = threading.Event()
    ends = time.monotonic() + deadline_s if deadline_s else None

    def watch() -> None:
        while not done.wait(WATCH_EVERY_S):
            if cancel is not None and cancel.is_set():
                transfer.stop("cancel")
                return
            if ends is not None and time.monotonic() >= ends:
                transfer.stop("deadline")
                return

    watcher = threading.Thread(target=watch, name="embedded-transfer-watch", daemon=True)
    previous = getattr(_current, "transfer", None)
    _current.transfer = transfer
    watcher.start()
    try:
        yield transfer
    finally:
        done.set()
        _current.transfer = previous


#: boto3's checksums only where an operation requires them (what S3-compatible stores accept); the same
#: as the AWS_REQUEST_CHECKSUM_CALCULATION / AWS_RESPONSE_CHECKSUM_VALIDATION variables say for clients
#: made elsewhere (the runpod SDK's ``rp_upload``)
CHECKSUMS = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}


@dataclass(frozen=True)
class S3Settings:
    """A bucket: a job's own ``s3`` block, or the ``BUCKET_*`` variables. Never logged."""

    endpoint_url: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    bucket: str | None = None
    region: str | None = None
    prefix: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "S3Settings | None":
        env = os.environ if env is None else env
        url, key, secret = (env.get(n) for n in ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID",
                                                 "BUCKET_SECRET_ACCESS_KEY"))
        prefix = (env.get("BUCKET_PREFIX") or "").strip().strip("/")
        return cls(url, key, secret, prefix=prefix) if url and key and secret else None

    def for_bucket(self, bucket: str) -> "S3Settings":
        """These settings for fetching from ``bucket``: the service endpoint without a path (the
        ``BUCKET_ENDPOINT_URL`` of worker-comfyui users often ends in their bucket) or a
        ``<bucket>.`` host prefix (AWS's virtual-hosted form), and the region read from an AWS
        host (``s3.<region>.amazonaws.com``) when none is given."""
        parts = urlsplit(self.endpoint_url)
        host = parts.netloc
        if host.lower().startswith(bucket.lower() + "."):
            host = host[len(bucket) + 1:]
        region = self.region
        found = re.match(r"^s3[.-]([a-z0-9-]+)\.amazonaws\.com", host.lower())
        if region is None and found and found.group(1) != "external-1":
            region = found.group(1)
        return dataclasses.replace(self, endpoint_url=f"{parts.scheme}://{host}", bucket=bucket, region=region)

    def client(self, **boto_config: Any):
        """A boto3 S3 client for these settings; ``boto_config`` adds botocore ``Config`` options
        (timeouts, retries). Checksums are computed and validated only where the operation requires
        them: S3-compatible stores (Cloudflare R2, Google Cloud Storage...) refuse the ones boto3
        sends by default since 1.36."""
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key, region_name=self.region or "us-east-1",
            config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}, **{**CHECKSUMS, **boto_config}))

    def presign(self, method: str, bucket: str, key: str, seconds: int, **params: Any) -> str:
        """A presigned URL (made locally: no request; the client that signs is made once per
        settings, boto3's clients being thread-safe)."""
        with _signers_lock:
            signer = _signers.pop(self, None) or self.client()
            _signers[self] = signer  # the most recently used last
            while len(_signers) > MAX_SIGNERS:  # a job's own buckets come and go: the oldest goes
                _signers.popitem(last=False)
        return signer.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key, **params},
                                             ExpiresIn=seconds)


#: the boto3 client that presigns for each ``S3Settings`` (making one takes tens of milliseconds),
#: the MAX_SIGNERS used last
_signers: collections.OrderedDict[S3Settings, Any] = collections.OrderedDict()
MAX_SIGNERS = 16
_signers_lock = threading.Lock()


@dataclass(frozen=True)
class FetchSettings:
    guard: Guard = field(default_factory=Guard)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    #: variable name -> token (``HF_TOKEN``, ``CIVITAI_TOKEN``); never logged
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: longest a download may take, whatever the server sends (a job's timeout also stops it)
    deadline: float | None = 3600.0
    #: longest an upload to a job's own bucket may take
    upload_deadline: float | None = 600.0


def token_for(url: str, tokens: Mapping[str, str]) -> str | None:
    """The bearer token to send with ``url``: ``HF_TOKEN`` to Hugging Face, ``CIVITAI_TOKEN`` to
    civitai; over https only."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return None
    host = (parts.hostname or "").lower()
    for variable, domains in TOKENS:
        if tokens.get(variable) and any(host == d or host.endswith("." + d) for d in domains):
            return tokens[variable]
    return None


def _guarded_adapter(guard: Guard, retries: int) -> HTTPAdapter:
    """An adapter whose connections go to the address ``guard`` checked for their host."""

    def new_conn(conn: urllib3.connection.HTTPConnection) -> socket.socket:
        transfer = getattr(_current, "transfer", None)
        if transfer is not None and transfer.stopped:
            raise _Stopped()  # not an urllib3 error: not retried
        address = guard.resolve(conn.host, conn.port)  # raises FetchRefused: not retried
        try:
            sock = urllib3_connection.create_connection((address, conn.port), conn.timeout,
                                                        source_address=conn.source_address,
                                                        socket_options=conn.socket_options)
            if transfer is not None:
                transfer.add(sock)
            return sock
        except socket.timeout as exc:
            raise urllib3.exceptions.ConnectTimeoutError(conn, f"Connection to {conn.host} timed out") from exc
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(conn, f"Failed to establish a connection: {exc}") from exc

    http = type("GuardedHTTPConnection", (urllib3.connection.HTTPConnection,), {"_new_conn": new_conn})
    https = type("GuardedHTTPSConnection", (urllib3.connection.HTTPSConnection,), {"_new_conn": new_conn})
    pools = {"http": type("GuardedHTTPPool", (urllib3.HTTPConnectionPool,), {"ConnectionCls": http}),
             "https": type("GuardedHTTPSPool", (urllib3.HTTPSConnectionPool,), {"ConnectionCls": https})}
    adapter = HTTPAdapter(max_retries=Retry(total=retries, connect=retries, read=retries, status=retries,
                                            backoff_factor=0.5, status_forcelist=(500, 502, 503, 504),
                                            allowed_methods=frozenset({"GET", "PUT"}), raise_on_status=False,
                                            respect_retry_after_header=False, redirect=False))
    adapter.poolmanager.pool_classes_by_scheme = pools
    return adapter


class Fetcher:
    """Downloads and uploads through the guard. Thread-safe: one session per thread."""

    def __init__(self, settings: FetchSettings):
        self.settings = settings
        self._local = threading.local()

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy, .netrc or CA bundle from the environment
            adapter = _guarded_adapter(self.settings.guard, self.settings.retries)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def http_url(self, url: str, s3: S3Settings | None) -> str:
        """The ``http(s)`` URL to fetch for ``url``: itself, or a presigned ``GET`` for ``s3://``."""
        self.settings.guard.check_url(url)
        parts = urlsplit(url)
        if parts.scheme != "s3":
            return url
        key = parts.path.lstrip("/")
        if not key:
            raise FetchRefused(f"{redact(url)} names no object: use s3://bucket/key")
        if s3 is None:
            raise FetchError(f"{redact(url)}: no bucket credentials (set BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID "
                             "and BUCKET_SECRET_ACCESS_KEY, or send an 's3' block)")
        bucket = parts.netloc
        return s3.for_bucket(bucket).presign("get_object", bucket, key, PRESIGN_TRANSFER_S)

    def download(self, url: str, dest: Path, *, what: str, max_bytes: int | None = None,
                 s3: S3Settings | None = None, on_progress: Callable[[int, int | None], None] | None = None,
                 cancel: threading.Event | None = None, digest: Any = None) -> int:
        """Stream ``url`` into ``dest`` (created or replaced); returns its size. ``what`` names the
        file in errors ("Input 'a.png'"); ``digest`` is fed every chunk. ``cancel`` (the job's
        timeout and interrupt set it) and the per-file deadline (``FETCH_DEADLINE_S``) close the
        connection, whatever the server sends. Raises ``FetchError``, ``FetchRefused`` or
        ``Cancelled``."""
        target = self.http_url(url, s3)
        shown = f"{what} from {host_of(url)}"
        with _watched(cancel, self.settings.deadline) as transfer:
            try:
                size = self._download(target, dest, what, shown, max_bytes, on_progress, digest)
            except (FetchRefused, Cancelled):
                raise
            except Exception:
                if transfer.stopped:
                    raise self._stopped(transfer, shown) from None
                raise
            if transfer.stopped:  # the body may look complete when the connection was shut down
                raise self._stopped(transfer, shown)
            return size

    def _stopped(self, transfer: _Transfer, shown: str) -> Exception:
        if transfer.stopped == "cancel":
            return Cancelled()
        return FetchError(f"{shown}: not done within {self.settings.deadline:g} s (FETCH_DEADLINE_S)")

    def _download(self, target: str, dest: Path, what: str, shown: str, max_bytes: int | None,
                  on_progress: Callable[[int, int | None], None] | None, digest: Any) -> int:
        silent = f"{shown}: the server sent nothing for {self.settings.read_timeout:g} s (FETCH_READ_TIMEOUT_S)"
        try:
            with self._follow(target, shown) as reply:
                if reply.status_code != 200:
                    raise FetchError(f"{shown}: HTTP {reply.status_code}{f' {reply.reason}' if reply.reason else ''}")
                total = _length(reply)
                if max_bytes is not None and total is not None and total > max_bytes:
                    raise FetchError(f"{shown}: {total} bytes is over the limit of {max_bytes}")
                size = 0
                with open(dest, "wb") as out:
                    for chunk in reply.iter_content(CHUNK):
                        size += len(chunk)
                        if max_bytes is not None and size > max_bytes:
                            raise FetchError(f"{shown}: more than the limit of {max_bytes} bytes")
                        out.write(chunk)
                        if digest is not None:
                            digest.update(chunk)
                        if on_progress is not None:
                            on_progress(size, total)
                return size
        except (FetchError, FetchRefused, Cancelled, _Stopped):
            raise
        except requests.exceptions.ConnectTimeout:
            raise FetchError(f"{shown}: no connection within {self.settings.connect_timeout:g} s") from None
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError):
            raise FetchError(silent) from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            if _caused_by(exc, (socket.timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
                raise FetchError(silent) from None
            raise FetchError(f"{shown}: the connection failed ({type(exc).__name__})") from None
        except OSError as exc:
            raise FetchError(f"{what} could not be written ({exc.strerror or type(exc).__name__})") from None

    def _follow(self, url: str, shown: str) -> requests.Response:
        """The answer to ``GET url`` after its redirects (each checked by the guard when its
        connection is made; a redirect's body is never read). The token of ``url``'s host goes
        to that host only."""
        token = token_for(url, self.settings.tokens)
        origin = urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"Accept-Encoding": "identity"}
            if token and urlsplit(url).netloc == origin and urlsplit(url).scheme == "https":
                headers["Authorization"] = f"Bearer {token}"
            reply = self.session().get(url, stream=True, headers=headers, allow_redirects=False,
                                       timeout=(self.settings.connect_timeout, self.settings.read_timeout))
            if not reply.is_redirect:
                return reply
            location = reply.headers.get("Location", "")
            reply.close()
            url = urljoin(url, location)
            self.settings.guard.check_url(url, ("http", "https"))
        raise FetchError(f"{shown}: more than {MAX_REDIRECTS} redirects")

    def upload(self, s3: S3Settings, key: str, data: bytes, content_type: str, *,
               cancel: threading.Event | None = None, expires_s: int = PRESIGN_RESULT_S) -> str:
        """Put ``data`` at ``key`` of ``s3``'s bucket; returns a presigned ``GET`` URL valid
        ``expires_s`` (7 days). The package's one S3 upload path (a job's own bucket, the API
        server's ``BUCKET_*`` bucket): a bucket that takes longer than ``UPLOAD_DEADLINE_S``, or an
        upload whose ``cancel`` is set, has its connection closed (``FetchError``, ``Cancelled``)."""
        s3 = s3.for_bucket(s3.bucket)
        put = s3.presign("put_object", s3.bucket, key, PRESIGN_TRANSFER_S, ContentType=content_type)
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        with _watched(cancel, self.settings.upload_deadline) as transfer:
            try:
                self.settings.guard.check_url(put, ("http", "https"))
                reply = self.session().put(put, data=data, headers={"Content-Type": content_type},
                                           timeout=(self.settings.connect_timeout, self.settings.read_timeout))
            except FetchRefused as exc:  # the job's own endpoint: say why without repeating it
                raise FetchError(f"the bucket endpoint is refused: {exc.reason} (FETCH_ALLOW lets it through)") from None
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, _Stopped) as exc:
                if transfer.stopped == "cancel":
                    raise Cancelled() from None
                if transfer.stopped:
                    raise FetchError(f"the upload was not done within {self.settings.upload_deadline:g} s "
                                     f"(UPLOAD_DEADLINE_S)") from None
                raise FetchError(f"the bucket endpoint could not be reached ({type(exc).__name__})") from None
        if transfer.stopped == "cancel":
            raise Cancelled()
        if reply.status_code not in (200, 201):
            code = _s3_code(reply.text)
            raise FetchError(f"S3 error {code}" if code else f"the bucket answered HTTP {reply.status_code}")
        return s3.presign("get_object", s3.bucket, key, expires_s)


def _length(reply: requests.Response) -> int | None:
    try:
        return int(reply.headers["Content-Length"]) if "Content-Encoding" not in reply.headers else None
    except (KeyError, ValueError):
        return None


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kinds):
            return True
        exc = exc.__cause__ or exc.__context__ or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException)
                                                   else None)
        seen += 1
    return False


def _s3_code(text: str) -> str | None:
    start = text.find("<Code>")
    end = text.find("</Code>", start)
    return text[start + 6:end] if start >= 0 and end > start else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
