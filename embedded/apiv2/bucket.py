"""Outputs to the configured bucket (the ``BUCKET_*`` variables, as the RunPod worker reads them):
uploaded with boto3 and handed out as presigned URLs.

Owns ``Bucket``: which bucket the endpoint names (``https://host/<bucket>`` or the virtual-hosted
``https://<bucket>.host``), one object per output under ``<job id>/<name>``, its presigned ``GET``
URL (at most 7 days, S3's limit for a signature), and timeouts on every request (connect
``CONNECT_S``, read ``READ_S``, two retries), so that a bucket that does not answer cannot hold a
job. Never logs the endpoint, the key or the secret. Must not import the executor, the backends or
ComfyUI.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..staging.downloads import S3Settings

CONNECT_S, READ_S = 10, 60
MAX_URL_S = 7 * 86400


class Bucket:
    def __init__(self, settings: S3Settings):
        parts = urlsplit(settings.endpoint_url)
        path = parts.path.strip("/")
        name = path.split("/", 1)[0] if path else parts.netloc.split(".", 1)[0]
        self.name = name
        self.s3 = settings.for_bucket(name)
        self._client = None

    @classmethod
    def from_env(cls) -> "Bucket | None":
        settings = S3Settings.from_env()
        return cls(settings) if settings is not None else None

    def client(self):
        if self._client is None:
            self._client = self.s3.client(connect_timeout=CONNECT_S, read_timeout=READ_S, retries={"max_attempts": 2})
        return self._client

    def put(self, key: str, data: bytes, content_type: str, seconds: float) -> str:
        """Upload ``data`` under ``key`` (blocking: call it from a thread); its presigned URL."""
        client = self.client()
        client.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)
        return client.generate_presigned_url("get_object", Params={"Bucket": self.name, "Key": key},
                                             ExpiresIn=int(min(seconds, MAX_URL_S)))
