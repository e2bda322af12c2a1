"""The asset store of a shared state: the index in PostgreSQL, the bytes in the bucket, this replica's
disk only a cache.

Owns ``SharedAssets`` (an ``AssetStore``): an upload is hashed while it streams into the cache, then
put in the bucket under its hash (``<BUCKET_PREFIX>/assets/<blake3 hex>``, recorded in
``embedded_blobs``) and indexed in ``embedded_assets``; any replica finds it, serves its content as a
redirect to a presigned ``GET``, and, when a job of its own uses it, fetches it into its cache once
(``local_files``; the same content asked twice at once is fetched once). A job's outputs are in the
bucket already (``Jobs._upload``): their index rows are written here. An asset an unfinished job
uses (on any replica) cannot be deleted (409 ``asset_in_use``) nor swept. The store's limits: an
upload's size as before; this replica's cache holds what its jobs used and uploads it took, each
file removed once unused for the asset TTL (``SERVE_MAX_STORAGE_BYTES`` does not apply: the bucket
holds the assets). Objects in the bucket are left to its lifecycle rules: the
index knows content by hash (``by-hash``, ``from-hash``) only within the asset TTL of its last upload,
and an upload always puts its bytes again, so a rule expiring objects after twice the TTL never
removes what an asset names.

Must not import the executor, the backends or ComfyUI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from ...staging.downloads import Cancelled, FetchError
from ..assets import HASH, Asset, AssetStore, Received, _check_hash, _clean_name, check_content_type, check_name
from ..bucket import Bucket
from ..wire import ApiError, inline, not_found
from .database import ASSET_SWEEP_LOCK, ID, Database, StateUnavailable

#: how long a redirect to an asset's content is good for
CONTENT_URL_S = 3600


async def retrying(step, seconds: float):
    """``await step()``, tried again every second while the database does not answer, for at most
    ``seconds`` (a restart of PostgreSQL must not fail a job); then its ``StateUnavailable``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await step()
        except StateUnavailable:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(1.0)
OPEN = "('queued', 'running', 'canceling')"


class SharedAssets(AssetStore):
    def __init__(self, cache: Path, max_upload_bytes: int, max_total_bytes: int, ttl_s: float, db: Database,
                 bucket: Bucket):
        super().__init__(cache, max_upload_bytes, max_total_bytes, ttl_s)
        self.db, self.bucket = db, bucket
        self._fetching: dict[str, asyncio.Future] = {}

    def blob_key(self, hash_: str) -> str:
        return "/".join(p for p in (self.bucket.s3.prefix, "assets", hash_.split(":", 1)[1]) if p)

    # --- reading ---------------------------------------------------------------------------------
    async def find(self, asset_id: str) -> Asset:
        if not ID.match(str(asset_id)):
            raise not_found("asset", asset_id)
        row = await self.db.one("SELECT record FROM embedded_assets WHERE id = %s AND (expires_at IS NULL OR "
                                "expires_at > %s)", (str(asset_id), time.time()))
        if row is None:
            raise not_found("asset", asset_id)
        return _asset(row[0])

    async def lookup(self, ids: list[str]) -> dict[str, Asset]:
        if not ids:
            return {}
        ids = [i for i in ids if ID.match(i)]
        rows = await self.db.all("SELECT record FROM embedded_assets WHERE id = ANY(%s) AND (expires_at IS NULL OR "
                                 "expires_at > %s)", (sorted(set(ids)), time.time()))
        return {a.id: a for a in map(_asset, (r[0] for r in rows))}

    async def holds(self, hash_: str) -> bool:
        return await self._blob(hash_) is not None

    async def _blob(self, hash_: Any) -> tuple | None:
        """The size and type of content put in the bucket within the asset TTL (older objects may
        have gone by the bucket's lifecycle rules: the client uploads them again), or None."""
        if not isinstance(hash_, str) or not HASH.match(hash_):
            return None
        return await self.db.one("SELECT size_bytes, content_type FROM embedded_blobs WHERE hash = %s AND "
                                 "stored_at > %s", (hash_, time.time() - (self.ttl_s or 86400)))

    async def redirect(self, asset: Asset) -> str | None:
        if asset.remote_url:
            return asset.remote_url
        return self.bucket.s3.presign("get_object", self.bucket.name, self.blob_key(asset.hash), CONTENT_URL_S,
                                      ResponseContentType=asset.content_type,
                                      ResponseContentDisposition=inline(asset.file_path or asset.id))

    # --- writing ---------------------------------------------------------------------------------
    async def keep_upload(self, received: Received, file_path: str | None, content_type: str | None,
                          expected_hash: str | None) -> Asset:
        file_path, content_type = check_name(file_path), check_content_type(content_type)
        _check_hash(expected_hash)
        if expected_hash is not None and expected_hash != received.hash:
            raise ApiError(409, "hash_mismatch", f"The content's hash is {received.hash}, not the expected "
                                                 f"{expected_hash}",
                           {"expected_hash": expected_hash, "actual_hash": received.hash})
        known = await self.holds(received.hash)
        # put whatever the index says: the bytes are here, and the object's age (which the bucket's
        # lifecycle rules count) starts again
        await asyncio.to_thread(self._put, received, content_type or "application/octet-stream")
        async with self.db.transaction() as cur:
            await cur.execute("INSERT INTO embedded_blobs (hash, size_bytes, content_type, stored_at) VALUES "
                              "(%s, %s, %s, %s) ON CONFLICT (hash) DO UPDATE SET stored_at = excluded.stored_at",
                              (received.hash, received.size, content_type or "application/octet-stream", time.time()))
        blob = self.path_of_hash(received.hash)
        if not blob.is_file():  # this replica's cache: a job here reads it without a fetch
            try:
                os.replace(received.path, blob)
            except OSError:
                pass  # only a cache
        return await self._index(received.hash, received.size, content_type or "", _clean_name(file_path),
                                 created_new=not known)

    def _put(self, received: Received, content_type: str) -> None:
        try:
            with open(received.path, "rb") as data:
                self.bucket.put(self.blob_key(received.hash), data, content_type, CONTENT_URL_S)
        except (FetchError, OSError) as exc:
            raise ApiError(502, "storage_unavailable", "The bucket did not take the upload "
                                                       f"({getattr(exc, 'message', None) or type(exc).__name__}): "
                                                       "retry") from None

    async def new_from_hash(self, hash_: Any, file_path: Any, content_type: Any = None) -> Asset:
        row = await self._blob(hash_)
        if row is None:
            raise ApiError(404, "blob_not_found", f"No content with hash {str(hash_)[:80]!r} here: upload it")
        file_path, content_type = check_name(file_path), check_content_type(content_type)
        return await self._index(hash_, row[0], content_type or row[1], _clean_name(file_path), created_new=False)

    async def add_remote(self, hash_: str, size: int, file_path: str, content_type: str, url: str,
                         url_expires_at: float, **fields: Any) -> Asset:
        """A job's output, in the bucket already: indexed, the database waited for a while when it is
        away (the bytes are safe; losing the output would fail the job)."""
        return await retrying(lambda: self._index(hash_, size, content_type, _clean_name(file_path), created_new=True,
                                                  remote_url=url, remote_expires_at=url_expires_at, **fields), 30.0)

    async def _index(self, hash_: str, size: int, content_type: str, file_path: str | None, created_new: bool,
                     **fields: Any) -> Asset:
        now = time.time()
        asset = Asset(uuid.uuid4().hex, hash_, size, content_type or "application/octet-stream", file_path, now,
                      now + self.ttl_s if self.ttl_s else None, created_new=created_new, **fields)
        async with self.db.transaction() as cur:
            await cur.execute("INSERT INTO embedded_assets (id, hash, record, expires_at) VALUES (%s, %s, %s, %s)",
                              (asset.id, asset.hash, Jsonb(dataclasses.asdict(asset)), asset.expires_at))
        return asset

    async def remove(self, asset_id: str) -> None:
        if not ID.match(str(asset_id)):
            raise not_found("asset", asset_id)
        async with self.db.transaction() as cur:
            await cur.execute("SELECT 1 FROM embedded_assets WHERE id = %s AND (expires_at IS NULL OR expires_at > %s) "
                              "FOR UPDATE", (str(asset_id), time.time()))
            if await cur.fetchone() is None:
                raise not_found("asset", asset_id)
            await cur.execute(f"SELECT 1 FROM embedded_jobs WHERE status IN {OPEN} AND record->'assets_used' ? %s "
                              "LIMIT 1", (str(asset_id),))
            if await cur.fetchone() is not None:
                raise ApiError(409, "asset_in_use", f"Asset {asset_id!r} is used by a job that has not ended")
            await cur.execute("DELETE FROM embedded_assets WHERE id = %s", (str(asset_id),))

    # --- a job's files on this replica -----------------------------------------------------------
    async def local_files(self, files: dict[str, Asset], cancel: Any = None) -> dict[str, Path]:
        """Each file in this replica's cache, fetched from the bucket when it is not there yet (one
        fetch per content, whatever the number of jobs waiting for it, so that no job's cancel stops
        another's; bounded by FETCH_DEADLINE_S). ``Cancelled`` when ``cancel`` is set by then;
        ``ApiError`` when the bucket fails."""
        paths = {}
        for name, asset in files.items():
            path = self.path(asset)
            if not path.is_file():
                fetching = self._fetching.get(asset.hash)
                if fetching is None:
                    fetching = asyncio.ensure_future(asyncio.to_thread(self._fetch, asset))
                    self._fetching[asset.hash] = fetching
                    fetching.add_done_callback(lambda _, h=asset.hash: self._fetching.pop(h, None))
                await asyncio.shield(fetching)
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            try:
                os.utime(path)  # used now: the cache keeps it
            except OSError:
                pass
            paths[name] = path
        return paths

    def _fetch(self, asset: Asset) -> None:
        url = asset.remote_url or self.bucket.s3.presign("get_object", self.bucket.name, self.blob_key(asset.hash),
                                                         CONTENT_URL_S)
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".write-")
        os.close(fd)
        try:
            self.bucket.fetcher.download(url, Path(tmp), what=f"Asset {asset.id}")
            os.replace(tmp, self.path(asset))
        except FetchError as exc:
            raise ApiError(502, "storage_unavailable", f"The asset could not be read from the bucket: {exc}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    # --- the rest --------------------------------------------------------------------------------
    async def tidy(self) -> int:
        """Drop the expired assets no unfinished job uses (one replica at a time does it), and the
        cached files this replica has not used for the asset TTL; returns how many assets went."""
        now = time.time()
        gone = 0
        async with self.db.transaction() as cur:
            await cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (ASSET_SWEEP_LOCK,))
            if (await cur.fetchone())[0]:
                await cur.execute(f"DELETE FROM embedded_assets a WHERE expires_at <= %s AND NOT EXISTS (SELECT 1 FROM "
                                  f"embedded_jobs j WHERE j.status IN {OPEN} AND j.record->'assets_used' ? a.id)",
                                  (now,))
                gone = cur.rowcount
                await cur.execute("DELETE FROM embedded_blobs WHERE stored_at < %s", (now - (self.ttl_s or 86400),))
        old = now - (self.ttl_s or 86400)
        for blob in self.blobs.iterdir():
            try:
                if not blob.name.startswith(".") and blob.stat().st_mtime < old:
                    blob.unlink()
            except OSError:
                pass
        return gone


def _asset(record: dict[str, Any]) -> Asset:
    fields = {f.name for f in dataclasses.fields(Asset)}
    return Asset(**{k: v for k, v in record.items() if k in fields})
