"""Outputs to the configured bucket (the ``BUCKET_*`` variables, as the RunPod worker reads them),
handed out as presigned URLs.

Owns ``Bucket``: which bucket the endpoint names (``https://host/<bucket>`` or the virtual-hosted
``https://<bucket>.host``), one object per output under ``<job id>/<name>`` and its presigned
``GET`` URL (at most 7 days, S3's limit for a signature). The upload itself is the package's one
S3 upload path (``Fetcher.upload``: a presigned ``PUT`` through the configured fetcher, which lets
the operator's endpoint through, with its timeouts, retries, ``UPLOAD_DEADLINE_S`` and a cancel
that closes the connection), so that a bucket that does not answer cannot hold a job. Never logs
the endpoint, the key or the secret. Must not import the executor, the backends or ComfyUI.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from ..config import Config
from ..staging.downloads import Fetcher, S3Settings
from ..staging.stage import fetcher_for

MAX_URL_S = 7 * 86400


class Bucket:
    def __init__(self, settings: S3Settings, fetcher: Fetcher):
        parts = urlsplit(settings.endpoint_url)
        path = parts.path.strip("/")
        name = path.split("/", 1)[0] if path else parts.netloc.split(".", 1)[0]
        self.name = name
        self.s3 = settings.for_bucket(name)
        self.fetcher = fetcher

    @classmethod
    def from_config(cls, config: Config) -> "Bucket | None":
        settings = S3Settings.from_env()
        return cls(settings, fetcher_for(config)) if settings is not None else None

    def put(self, key: str, data: bytes, content_type: str, seconds: float,
            cancel: threading.Event | None = None) -> str:
        """Upload ``data`` under ``key`` (blocking: call it from a thread); its presigned URL.
        Raises ``FetchError`` (with a reason that names no endpoint), ``Cancelled``."""
        return self.fetcher.upload(self.s3, key, data, content_type, cancel=cancel,
                                   expires_s=int(min(seconds, MAX_URL_S)))
