"""How output files reach the client: base64 in the response, or an S3 upload and its URL.

Owns: the choice (S3 when the job sent its own ``s3`` block, or when ``BUCKET_ENDPOINT_URL``,
``BUCKET_ACCESS_KEY_ID`` and ``BUCKET_SECRET_ACCESS_KEY`` are all set: runpod's ``rp_upload``
would otherwise write to a local folder and return its path), the upload (through ``rp_upload``
for the configured bucket, through the guarded fetcher to a presigned URL for a job's own;
key ``[<prefix>/]<job id>/<8 hex><ext>``, a presigned URL valid 7 days), how much may be
returned inline (``OUTPUT_MAX_INLINE_BYTES`` of base64 per job) and the fallback: an output whose
upload fails is returned as base64, with the failure in ``errors``, while that fits, else it is
not returned and ``errors`` says why. A client never receives a local path.

Must not import ComfyUI or the backends. Never logs credentials (``rp_upload`` reads them from
the environment itself; a job's own are only in its ``S3Settings``).
"""

from __future__ import annotations

import base64
import concurrent.futures
import logging
import os
import re
import threading
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..staging.downloads import CHECKSUMS, Fetcher, FetchError, S3Settings
from ..job.types import IMAGE, Output

log = logging.getLogger("embedded.delivery")


@dataclass(frozen=True)
class Delivered:
    type: str  # "base64" or "s3_url"
    data: str


class NotDelivered(Exception):
    """An output that could be neither uploaded nor returned inline; its text says why."""


def inline_size(data: bytes) -> int:
    """Bytes of ``data`` as base64."""
    return 4 * ((len(data) + 2) // 3)


class Delivery:
    """One job's deliveries: to ``bucket`` (the job's own ``s3`` block, uploaded through
    ``fetcher``) or, when ``env_bucket`` (the ``BUCKET_*`` variables are set), through
    ``rp_upload``; else base64, at most ``max_inline`` bytes of it. ``s3_enabled`` says whether
    outputs go to a bucket."""

    def __init__(self, env_bucket: bool, bucket: S3Settings | None = None, fetcher: Fetcher | None = None,
                 max_inline: int | None = None, upload_deadline: float | None = None, prefix: str = ""):
        if bucket is not None and fetcher is None:
            raise ValueError("a job's own bucket needs the fetcher that uploads to it")
        self.s3_enabled = env_bucket or bucket is not None
        self.bucket = bucket
        self.fetcher = fetcher
        self.max_inline = max_inline
        #: longest an ``rp_upload`` upload may take (UPLOAD_DEADLINE_S; the fetcher bounds its own)
        self.upload_deadline = upload_deadline
        #: BUCKET_PREFIX: the ``BUCKET_*`` bucket's folder that outputs go under
        self.prefix = prefix
        self._inline = 0
        self._inline_lock = threading.Lock()

    def deliver(self, job_id: str, output: Output, errors: list[str]) -> Delivered:
        """Base64 or S3 URL for one output; an S3 failure falls back to base64 and is added to
        ``errors``; raises ``NotDelivered`` when base64 would go over ``max_inline``."""
        too_large = f"too large to return inline (OUTPUT_MAX_INLINE_BYTES={self.max_inline}); it was not returned"
        if self.s3_enabled:
            try:
                return Delivered("s3_url", self._upload(job_id, output))
            except Exception as exc:  # noqa: BLE001 - any upload failure must not lose the output
                reason = _describe(exc)
                log.warning("S3 upload of %s failed (%s); returning it as base64", output.filename, reason)
                if not self._take_inline(output):
                    raise NotDelivered(f"S3 upload of {output.filename} failed ({reason}) and it is {too_large}") \
                        from None
                errors.append(f"S3 upload of {output.filename} failed ({reason}); returned as base64 instead")
        elif not self._take_inline(output):
            raise NotDelivered(f"{output.filename} is {too_large}")
        return Delivered("base64", base64.b64encode(output.data).decode("ascii"))

    def _take_inline(self, output: Output) -> bool:
        size = inline_size(output.data)
        with self._inline_lock:
            if self.max_inline is not None and self._inline + size > self.max_inline:
                return False
            self._inline += size
            return True

    def _upload(self, job_id: str, output: Output) -> str:
        suffix = Path(output.filename).suffix or ".bin"
        if self.bucket is not None:  # the job's own bucket, through the URL guard
            key = "/".join(p for p in (self.bucket.prefix, job_id, f"{uuid.uuid4().hex[:8]}{suffix}") if p)
            return self.fetcher.upload(self.bucket, key, output.data, output.mime_type)
        return _within(self.upload_deadline, lambda: self._rp_upload(job_id, output, suffix, self.prefix))

    @staticmethod
    def _rp_upload(job_id: str, output: Output, suffix: str, prefix: str = "") -> str:
        from runpod.serverless.utils import rp_upload

        for name, value in (("AWS_REQUEST_CHECKSUM_CALCULATION", CHECKSUMS["request_checksum_calculation"]),
                            ("AWS_RESPONSE_CHECKSUM_VALIDATION", CHECKSUMS["response_checksum_validation"])):
            os.environ.setdefault(name, value)  # rp_upload makes its client per upload: S3-compatible stores
        with tempfile.TemporaryDirectory(prefix="embedded-upload-") as tmp:
            path = Path(tmp) / f"{uuid.uuid4().hex[:8]}{suffix}"
            path.write_bytes(output.data)
            if prefix:  # BUCKET_PREFIX, as worker-comfyui's: <prefix>/<job id>/<the output's own name>
                folder = "/".join(p for p in (prefix, job_id, output.subfolder.strip("/")) if p)
                url = rp_upload.upload_file_to_bucket(Path(output.filename).name, str(path), prefix=folder,
                                                      extra_args={"ContentType": output.mime_type})
            elif output.kind == IMAGE:
                url = rp_upload.upload_image(job_id, str(path))  # what worker-comfyui calls
            else:  # same key layout, with the right Content-Type (upload_image says image/<ext>)
                url = rp_upload.upload_file_to_bucket(path.name, str(path), prefix=job_id,
                                                      extra_args={"ContentType": output.mime_type})
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RuntimeError("the upload returned no URL")
        return url


class UploadTimeout(Exception):
    """An upload through ``rp_upload`` (boto3) did not end within ``UPLOAD_DEADLINE_S``."""


def _within(deadline: float | None, upload: Callable[[], str]) -> str:
    """``upload()``, answered within ``deadline`` seconds: boto3's transfer cannot be stopped from
    outside, so it runs in a thread of its own, left to end (or fail) by itself when it is late;
    the output is then handled as any failed upload (returned inline, nothing lost)."""
    if deadline is None:
        return upload()
    result: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            result.set_result(upload())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            result.set_exception(exc)

    threading.Thread(target=run, name="embedded-rp-upload", daemon=True).start()
    try:
        return result.result(timeout=deadline)
    except concurrent.futures.TimeoutError:
        raise UploadTimeout(f"not done within {deadline:g} s (UPLOAD_DEADLINE_S)") from None


class RememberingDelivery(Delivery):
    """Delivers each output of a job once: a streamed output and the same output in the final
    result share one upload (outputs are told apart by node, folder type, sub-folder and name)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, str, str, str], concurrent.futures.Future] = {}

    def deliver(self, job_id: str, output: Output, errors: list[str]) -> Delivered:
        key = (output.node_id, output.type, output.subfolder, output.filename)
        with self._lock:  # the streamed item and the final result may ask at the same time
            first = key not in self._sent
            if first:
                self._sent[key] = concurrent.futures.Future()
            pending = self._sent[key]
        if first:
            problems: list[str] = []
            try:
                pending.set_result((super().deliver(job_id, output, problems), problems))
            except BaseException as exc:  # the other caller gets it too, instead of waiting forever
                pending.set_exception(exc)
        sent, problems = pending.result()
        errors.extend(problems)
        return sent


def _describe(exc: Exception) -> str:
    """A short reason that names neither the endpoint, the bucket nor the object key: S3's error
    code where there is one, else the kind of failure."""
    if isinstance(exc, FetchError):  # a job's own bucket: the fetcher's words name no URL
        return exc.message
    if isinstance(exc, UploadTimeout):
        return f"the upload was {exc}"
    code = None
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
    if code is None:  # boto3's S3UploadFailedError keeps only the text of the ClientError it wraps
        found = re.search(r"An error occurred \((\w+)\)", str(exc))
        code = found.group(1) if found else None
    if code:
        return f"S3 error {code}"
    if any(cls.__name__ in ("EndpointConnectionError", "ConnectionError", "ConnectTimeoutError", "ReadTimeoutError")
           for cls in type(exc).__mro__):
        return "the bucket endpoint could not be reached"
    return type(exc).__name__
