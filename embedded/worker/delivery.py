"""How output files reach the client: base64 in the response, or an S3 upload and its URL.

Owns: the choice (S3 only when ``BUCKET_ENDPOINT_URL``, ``BUCKET_ACCESS_KEY_ID`` and
``BUCKET_SECRET_ACCESS_KEY`` are all set: runpod's ``rp_upload`` would otherwise write to a local
folder and return its path), the upload through ``rp_upload`` (key ``<job id>/<8 hex><ext>``,
a presigned URL valid 7 days), and the fallback: an output whose upload fails is returned as
base64, with the failure in ``errors``. A client never receives a local path.

Must not import ComfyUI or the backends. Never logs credentials (``rp_upload`` reads them from
the environment itself).
"""

from __future__ import annotations

import base64
import concurrent.futures
import logging
import re
import threading
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..types import IMAGE, Output

log = logging.getLogger("embedded.delivery")


@dataclass(frozen=True)
class Delivered:
    type: str  # "base64" or "s3_url"
    data: str


class Delivery:
    def __init__(self, s3_enabled: bool):
        self.s3_enabled = s3_enabled

    def deliver(self, job_id: str, output: Output, errors: list[str]) -> Delivered:
        """Base64 or S3 URL for one output; an S3 failure falls back to base64 and is added to ``errors``."""
        if self.s3_enabled:
            try:
                return Delivered("s3_url", self._upload(job_id, output))
            except Exception as exc:  # noqa: BLE001 - any upload failure must not lose the output
                reason = _describe(exc)
                log.warning("S3 upload of %s failed (%s); returning it as base64", output.filename, reason)
                errors.append(f"S3 upload of {output.filename} failed ({reason}); returned as base64 instead")
        return Delivered("base64", base64.b64encode(output.data).decode("ascii"))

    @staticmethod
    def _upload(job_id: str, output: Output) -> str:
        from runpod.serverless.utils import rp_upload

        suffix = Path(output.filename).suffix or ".bin"
        with tempfile.TemporaryDirectory(prefix="embedded-upload-") as tmp:
            path = Path(tmp) / f"{uuid.uuid4().hex[:8]}{suffix}"
            path.write_bytes(output.data)
            if output.kind == IMAGE:
                url = rp_upload.upload_image(job_id, str(path))  # what worker-comfyui calls
            else:  # same key layout, with the right Content-Type (upload_image says image/<ext>)
                url = rp_upload.upload_file_to_bucket(path.name, str(path), prefix=job_id,
                                                      extra_args={"ContentType": output.mime_type})
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RuntimeError("the upload returned no URL")
        return url


class RememberingDelivery(Delivery):
    """Delivers each output of a job once: a streamed output and the same output in the final
    result share one upload (outputs are told apart by node, folder type, sub-folder and name)."""

    def __init__(self, s3_enabled: bool):
        super().__init__(s3_enabled)
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
            pending.set_result((super().deliver(job_id, output, problems), problems))
        sent, problems = pending.result()
        errors.extend(problems)
        return sent


def _describe(exc: Exception) -> str:
    """A short reason that names neither the endpoint, the bucket nor the object key: S3's error
    code where there is one, else the kind of failure."""
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
