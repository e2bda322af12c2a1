"""The asset store: files clients upload and files jobs produce, by id, their bytes kept once per
blake3 hash.

Owns ``Asset`` and ``AssetStore``: blobs under ``<root>/blobs/<hex>`` (one file per content,
whatever the number of assets naming it), the index of assets in memory, hashing while an upload
streams in (``expected_hash`` checked before anything is kept: 409 ``hash_mismatch``), dedup
(``by_hash``, ``from_hash``), the limits (one upload at most ``max_upload_bytes``: 413
``payload_too_large``; all blobs together at most ``max_total_bytes``: 507 ``storage_full``, after
expired assets are swept; a disk that is full, or fails, is 507 ``storage_full`` / 500
``server_error`` with what the system said, never a traceback), expiry (``ttl_s`` after
creation; an asset a queued or running job uses is neither swept nor deleted: 409
``asset_in_use``), an asset's JSON, and, with a ``State``, the index written through and read back
at start. Nothing half-written stays: a blob is written to a temporary file in ``blobs/`` and
renamed into place, the temporary file removed whatever happens (and those a killed process left
are removed at start). A job's output larger than INLINE_BYTES is hashed and written in a thread
(``add_output``): the event loop never waits long for the disk.

Must not import the executor, the backends or ComfyUI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import re
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import blake3

from .state import State
from .wire import ApiError, iso, not_found

HASH = re.compile(r"^blake3:[0-9a-f]{64}$")
#: temporary files in ``blobs/``: an upload streaming in, an output being written
TEMPORARY = (".upload-", ".write-")
#: an output this small is hashed and written on the event loop (well under a millisecond)
INLINE_BYTES = 256 * 1024
#: what the system says when the disk has no room
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def blake3_of(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


@dataclass
class Asset:
    id: str
    hash: str
    size_bytes: int
    content_type: str
    file_path: str | None
    created_at: float
    expires_at: float | None
    job_id: str | None = None
    node_id: str | None = None
    #: the API's output type, for a job's output (``image``, ``video``, ``audio``, ``text``, ``file``)
    type: str = "file"
    created_new: bool = True
    #: a job's output uploaded to the configured bucket: its presigned URL and when that expires
    remote_url: str | None = None
    remote_expires_at: float | None = None

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {"id": self.id, "hash": self.hash, "size_bytes": self.size_bytes, "content_type": self.content_type,
                "file_path": self.file_path, "created_at": iso(self.created_at), "url": self.url(base_url),
                "url_expires_at": self.url_expires_at(), "expires_at": iso(self.expires_at),
                "job_id": self.job_id, "created_new": self.created_new}

    def output_json(self, base_url: str) -> dict[str, Any]:
        """The asset as a job's output (``job.outputs[]`` and the ``output`` event)."""
        return {"node_id": self.node_id, "name": self.file_path, "type": self.type, "content_type": self.content_type,
                "size_bytes": self.size_bytes, "id": self.id, "hash": self.hash, "url": self.url(base_url),
                "url_expires_at": self.url_expires_at(), "job_id": self.job_id}

    def url(self, base_url: str) -> str:
        return self.remote_url or f"{base_url}/api/v2/assets/{self.id}/content"

    def url_expires_at(self) -> str | None:
        return iso(self.remote_expires_at or self.expires_at or self.created_at + 86400)


class AssetStore:
    def __init__(self, root: Path, max_upload_bytes: int, max_total_bytes: int, ttl_s: float,
                 state: State | None = None):
        self.root, self.state = root, state
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes, self.max_total_bytes, self.ttl_s = max_upload_bytes, max_total_bytes, ttl_s
        self._assets: dict[str, Asset] = {}
        self._in_use: Counter[str] = Counter()
        for left in self.blobs.iterdir():  # what a killed process was writing
            if left.name.startswith(TEMPORARY):
                left.unlink(missing_ok=True)
        for record in state.assets() if state else ():  # the index of the last run: those whose content is here
            asset = Asset(**record)
            if asset.remote_url or self.path(asset).is_file():
                self._assets[asset.id] = asset
        if state is not None:  # a blob no asset names (its index row was never written) is no one's
            named = {a.hash.split(":", 1)[1] for a in self._assets.values()}
            for blob in self.blobs.iterdir():
                if not blob.name.startswith(".") and blob.name not in named:
                    blob.unlink(missing_ok=True)
        #: bytes of all blobs, counted once here and kept up to date as blobs come and go
        self._stored = sum(p.stat().st_size for p in self.blobs.iterdir() if not p.name.startswith("."))
        #: bytes of outputs being written (counted against the limit until they are in place)
        self._reserved = 0
        #: hashes an output is being stored under: their blobs are neither deleted nor written twice
        self._pending: Counter[str] = Counter()

    # --- reading ---------------------------------------------------------------------------------
    def get(self, asset_id: str) -> Asset:
        asset = self._assets.get(asset_id)
        if asset is None or self._expired(asset):
            raise not_found("asset", asset_id)
        return asset

    def path(self, asset: Asset) -> Path:
        return self.path_of_hash(asset.hash)

    def has_blob(self, hash_: str) -> bool:
        return bool(HASH.match(hash_)) and self.path_of_hash(hash_).is_file()

    # --- writing ---------------------------------------------------------------------------------
    def from_hash(self, hash_: str, file_path: str | None, content_type: str | None = None) -> Asset:
        """A new asset naming a blob the store already has (404 ``blob_not_found`` otherwise)."""
        if not isinstance(hash_, str) or not self.has_blob(hash_):
            raise ApiError(404, "blob_not_found", f"No content with hash {str(hash_)[:80]!r} here: upload it")
        file_path, content_type = check_name(file_path), check_content_type(content_type)
        like = next((a for a in self._assets.values() if a.hash == hash_), None)
        return self._add(hash_, self.path_of_hash(hash_).stat().st_size,
                         content_type or (like.content_type if like else "application/octet-stream"),
                         _clean_name(file_path), created_new=False)

    async def add_output(self, data: bytes, file_path: str, content_type: str, **fields: Any) -> Asset:
        """An asset of ``data`` (a job's output): hashed, and its blob written unless the store has
        it, in a thread when it is large (a small one costs less than the hop to a thread). Raises
        ``ApiError`` (``storage_full``, ``server_error``)."""
        small = len(data) <= INLINE_BYTES
        hash_ = blake3_of(data) if small else await asyncio.to_thread(blake3_of, data)
        self._pending[hash_] += 1
        try:
            known = self.path_of_hash(hash_).is_file()  # on the loop: no deletion comes between this and _add
            if not known:
                self._make_room(len(data))
                self._reserved += len(data)
                try:
                    written = (self._write_blob(hash_, data) if small
                               else await asyncio.to_thread(self._write_blob, hash_, data))
                finally:
                    self._reserved -= len(data)
                self._stored += len(data) if written else 0
            return self._add(hash_, len(data), content_type, _clean_name(file_path), created_new=not known, **fields)
        finally:
            self._pending[hash_] -= 1
            self._pending += Counter()  # drop zeros

    def _write_blob(self, hash_: str, data: bytes) -> bool:
        """Write ``data``'s blob; False when another write put it there meanwhile."""
        blob = self.path_of_hash(hash_)
        if blob.is_file():
            return False
        try:
            _write_atomic(blob, data)
        except OSError as exc:
            raise _disk_error(exc, "the output") from None
        return True

    async def receive(self, chunks: AsyncIterator[bytes]) -> "Received":
        """An upload's bytes, streamed into a temporary file while they are hashed and counted
        (413 past ``max_upload_bytes``); ``keep`` it, then ``discard`` it (its fields may come
        after its bytes: they are checked by ``keep``)."""
        hasher, size, tmp = blake3.blake3(), 0, None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".upload-")
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise ApiError(413, "payload_too_large", f"An upload may hold at most {self.max_upload_bytes} "
                                                                 "bytes (SERVE_MAX_UPLOAD_BYTES)")
                    hasher.update(chunk)
                    out.write(chunk)
        except BaseException as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _disk_error(exc, "the upload") from None
            raise
        return Received(Path(tmp), "blake3:" + hasher.hexdigest(), size)

    def keep(self, received: "Received", file_path: str | None, content_type: str | None,
             expected_hash: str | None) -> Asset:
        """The asset of an upload ``receive`` took: its name and type checked, its hash the expected
        one (409 ``hash_mismatch``), its blob moved into place unless the store has it."""
        file_path, content_type = check_name(file_path), check_content_type(content_type)
        _check_hash(expected_hash)
        hash_, size = received.hash, received.size
        if expected_hash is not None and expected_hash != hash_:
            raise ApiError(409, "hash_mismatch", f"The content's hash is {hash_}, not the expected {expected_hash}",
                           {"expected_hash": expected_hash, "actual_hash": hash_})
        blob = self.path_of_hash(hash_)
        new = not blob.is_file() and hash_ not in self._pending  # (pending: an output is writing these bytes)
        if new:
            self._make_room(size)
            try:
                os.replace(received.path, blob)
            except OSError as exc:
                raise _disk_error(exc, "the upload") from None
            self._stored += size
        return self._add(hash_, size, content_type or "", _clean_name(file_path), created_new=new)

    async def add_remote(self, hash_: str, size: int, file_path: str, content_type: str, url: str,
                         url_expires_at: float, **fields: Any) -> Asset:
        """An asset whose bytes are in the bucket (a job's output uploaded there): no blob here."""
        return self._add(hash_, size, content_type, _clean_name(file_path), created_new=True, remote_url=url,
                         remote_expires_at=url_expires_at, **fields)

    def delete(self, asset_id: str) -> None:
        asset = self.get(asset_id)
        if self._in_use[asset_id]:
            raise ApiError(409, "asset_in_use", f"Asset {asset_id!r} is used by a job that has not ended")
        self._drop(asset)

    # --- what the routes and the jobs ask (a shared state answers from its database and bucket) ---
    async def find(self, asset_id: str) -> Asset:
        return self.get(asset_id)

    async def lookup(self, ids: list[str]) -> dict[str, Asset]:
        """The assets of ``ids`` that exist, by id."""
        return {i: a for i in set(ids) if (a := self._assets.get(i)) is not None and not self._expired(a)}

    async def local_files(self, files: dict[str, Asset], cancel: Any = None) -> dict[str, Path]:
        """A job's files (``name -> Asset``) as paths on this machine."""
        return {name: self.path(asset) for name, asset in files.items()}

    async def holds(self, hash_: str) -> bool:
        return self.has_blob(hash_)

    async def new_from_hash(self, hash_: Any, file_path: Any, content_type: Any = None) -> Asset:
        return self.from_hash(hash_, file_path, content_type)

    async def keep_upload(self, received: "Received", file_path: str | None, content_type: str | None,
                          expected_hash: str | None) -> Asset:
        return self.keep(received, file_path, content_type, expected_hash)

    async def remove(self, asset_id: str) -> None:
        self.delete(asset_id)

    async def redirect(self, asset: Asset) -> str | None:
        """Where a client reads ``asset``'s bytes instead of here (a presigned URL), or None."""
        return asset.remote_url

    # --- jobs using assets -----------------------------------------------------------------------
    def use(self, ids: list[str]) -> None:
        self._in_use.update(ids)

    def release(self, ids: list[str]) -> None:
        self._in_use.subtract(ids)
        self._in_use += Counter()  # drop zeros

    # --- the rest --------------------------------------------------------------------------------
    def path_of_hash(self, hash_: str) -> Path:
        return self.blobs / hash_.split(":", 1)[1]

    def sweep(self) -> int:
        """Drop the expired assets no job uses; returns how many."""
        gone = [a for a in self._assets.values() if self._expired(a) and not self._in_use[a.id]]
        for asset in gone:
            self._drop(asset)
        return len(gone)

    async def tidy(self) -> int:
        """What the sweeper runs every minute."""
        return self.sweep()

    def stored_bytes(self) -> int:
        return self._stored

    def _add(self, hash_: str, size: int, content_type: str, file_path: str | None, created_new: bool,
             **fields: Any) -> Asset:
        now = time.time()
        asset = Asset(uuid.uuid4().hex, hash_, size, content_type or "application/octet-stream", file_path, now,
                      now + self.ttl_s if self.ttl_s else None, created_new=created_new, **fields)
        self._assets[asset.id] = asset
        if self.state:
            self.state.save_asset(asset.id, dataclasses.asdict(asset))
        return asset

    def _drop(self, asset: Asset) -> None:
        self._assets.pop(asset.id, None)
        if self.state:
            self.state.delete_asset(asset.id)
        blob = self.path(asset)
        if not any(a.hash == asset.hash for a in self._assets.values()) and asset.hash not in self._pending \
                and blob.is_file():
            self._stored -= blob.stat().st_size
            blob.unlink()

    def _expired(self, asset: Asset) -> bool:
        return asset.expires_at is not None and asset.expires_at <= time.time()

    def _make_room(self, size: int) -> None:
        if self.stored_bytes() + self._reserved + size > self.max_total_bytes:
            self.sweep()
        if self.stored_bytes() + self._reserved + size > self.max_total_bytes:
            raise ApiError(507, "storage_full", f"The server's asset storage is full ({self.max_total_bytes} bytes, "
                                                "SERVE_MAX_STORAGE_BYTES): delete assets or wait for them to expire")


#: a media type as ``Content-Type`` carries it: ``type/subtype`` and parameters, in printable ASCII
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][\w!#$&^.+-]*/[\w!#$&^.+-]+(\s*;\s*[\w!#$&^.+-]+=(\"[ -~]*\"|[\w!#$&^.+-]+))*$")
MAX_NAME_BYTES = 255


def check_name(value: Any, what: str = "file_path") -> str | None:
    """A client's name for an asset: a string without control characters (they would end up in
    headers and file names), at most MAX_NAME_BYTES; 422 ``invalid_request`` otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(422, "invalid_request", f"{what} must be a string, not {type(value).__name__}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ApiError(422, "invalid_request", f"{what} may not hold control characters (line breaks, tabs...)")
    if len(value.encode()) > 4 * MAX_NAME_BYTES:
        raise ApiError(422, "invalid_request", f"{what} is too long")
    return value


def check_content_type(value: Any) -> str | None:
    """A client's ``content_type``: a media type (``image/png``), or nothing; 422 otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(422, "invalid_request", f"content_type must be a string, not {type(value).__name__}")
    if len(value) > 255 or not _MEDIA_TYPE.match(value.strip()):
        raise ApiError(422, "invalid_request", "content_type must be a media type such as 'image/png'")
    return value.strip()


def _clean_name(file_path: str | None) -> str | None:
    """A name safe as a job's input name: the last part of the client's path."""
    if not file_path:
        return None
    name = str(file_path).replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(c if ord(c) >= 32 and not 127 <= ord(c) < 160 else "_" for c in name)
    while len(name.encode()) > MAX_NAME_BYTES:
        name = name[:-1]
    return name if name not in ("", ".", "..") else None


@dataclass(frozen=True)
class Received:
    """An upload's bytes in a temporary file of the store, before they are kept."""

    path: Path
    hash: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _check_hash(expected_hash: Any) -> None:
    if expected_hash is not None and not (isinstance(expected_hash, str) and HASH.match(expected_hash)):
        raise ApiError(422, "invalid_request", "expected_hash must be 'blake3:' and 64 lowercase hex digits")


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: written beside it, then renamed; the temporary
    file is removed when anything fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".write-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _disk_error(exc: OSError, what: str) -> ApiError:
    """A disk that refused a write, in the API's words: what the system said, never a path."""
    said = exc.strerror or type(exc).__name__
    if exc.errno in _FULL:
        return ApiError(507, "storage_full", f"The server's disk is full: {what} could not be stored ({said})")
    return ApiError(500, "server_error", f"The server's disk failed: {what} could not be stored ({said})")
