"""The process's logging, and keeping secrets out of it.

Owns: ``setup`` (the root level from ``COMFY_LOG_LEVEL``, one stderr handler when the process has
none, and third-party loggers that log credentials or request signatures at DEBUG, ``boto3``,
``botocore`` and ``s3transfer``, capped at WARNING whatever the level, and ``urllib3``, whose
retry warnings carry whole URLs with their presigned query strings, capped at ERROR) and ``redact``
(a frame or any JSON-like value with the job's secrets, and values under secret-looking keys,
replaced by ``<redacted>``).

Must not import ComfyUI or any other module of this package.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable

#: loggers that write access key ids, signatures or whole signed requests, and the lowest level
#: they may log at
CAPPED = {"boto3": logging.WARNING, "botocore": logging.WARNING, "s3transfer": logging.WARNING,
          "urllib3": logging.ERROR,
          # at DEBUG Pillow logs every chunk it reads ("STREAM b'IDAT' 41 493"): noise, never what a user asks for
          "PIL": logging.INFO}
#: keys whose values are never logged (ComfyUI's hidden API-key inputs, bucket credentials...)
SECRET_KEY = re.compile(r"(?i)(api_?key|auth_?token|secret|password|credential|signature)")
REDACTED = "<redacted>"


def setup(level: str, prefix: str = "") -> None:
    """The root logger at ``level``, with a stderr handler when the process has none (each line after
    ``prefix``: a device's process names its device)."""
    root = logging.getLogger()
    root.setLevel(level)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
        root.addHandler(handler)
    for name, lowest in CAPPED.items():
        logging.getLogger(name).setLevel(max(lowest, logging.getLogger(name).level))


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` with every occurrence of ``secrets`` (in any string) and every value under a
    secret-looking key replaced by ``<redacted>``."""
    secrets = tuple(s for s in secrets if isinstance(s, str) and len(s) >= 4)

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: REDACTED if isinstance(k, str) and SECRET_KEY.search(k) else walk(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [walk(v) for v in item]
        if isinstance(item, str):
            for secret in secrets:
                item = item.replace(secret, REDACTED)
        return item

    return walk(value)
