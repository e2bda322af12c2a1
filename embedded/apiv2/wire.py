"""The wire format of Comfy API v2: times, the error envelope, and the shapes of a job, an output
and an asset as the spec and ``comfy-sdk`` read them.

Owns ``ApiError`` (status, ``code``, message, ``details``, headers: the one way any route fails)
and the JSON of each record. Rules the client holds us to: times carry a timezone; every key of a
job, an output and an asset is present, ``null`` when it has no value; asset and output ``url`` is
absolute; statuses are spelled ``queued``, ``running``, ``canceling``, ``succeeded``, ``failed``,
``canceled``, ``expired``. Must not import the executor, the backends or ComfyUI.
"""

from __future__ import annotations

import re
from email.message import Message
from email.utils import encode_rfc2231
from datetime import datetime, timezone
from typing import Any

#: statuses after which a job changes no more
TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
#: our output kinds are the API's output types; anything else is a ``file``
OUTPUT_TYPES = frozenset({"image", "video", "audio", "text", "file"})


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC (``...Z``), or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ApiError(Exception):
    """A request the API answers with its error envelope ``{"error": {"code", "message", "details"}}``."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"No {what} {ident!r}")


_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"/:,;()]+/)*([^\s'\"/:,;()]+)")


def without_paths(text: str) -> str:
    """``text`` with each absolute local path cut to its last part (``.../name``): an answer never
    shows where the server keeps its files."""
    return _PATH.sub(lambda m: ".../" + m.group(1), text)


def inline(name: str) -> str:
    """``Content-Disposition: inline`` naming ``name`` as RFC 6266 says, built by the standard
    library's MIME code: a quoted ASCII ``filename`` for old clients, and ``filename*`` (RFC 2231
    encoding, UTF-8, percent-escaped: no byte of it can end the header)."""
    header = Message()
    header.add_header("Content-Disposition", "inline", filename="".join(c if " " <= c <= "~" else "_" for c in name))
    return f"{header['Content-Disposition']}; filename*={encode_rfc2231(name, 'utf-8')}"
