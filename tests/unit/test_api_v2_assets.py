"""The API server's asset store: content kept once per hash, limits on one upload and on all of
them, expiry, and assets a job uses kept."""

from __future__ import annotations

import asyncio
import time

import pytest

from embedded.apiv2.assets import AssetStore, blake3_of
from embedded.apiv2.wire import ApiError


def store(tmp_path, upload=1000, total=2500, ttl=3600.0) -> AssetStore:
    return AssetStore(tmp_path / "assets", upload, total, ttl)


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


def upload(s: AssetStore, data: bytes, name="f.bin", expected=None):
    """As the upload route does: the bytes received, then kept with the fields (the temporary file gone)."""
    async def received_and_kept():
        received = await s.receive(_chunks(data[:10], data[10:]))
        try:
            return s.keep(received, name, "application/octet-stream", expected)
        finally:
            received.discard()
    return asyncio.run(received_and_kept())


def test_the_same_content_is_one_blob_under_two_assets(tmp_path):
    s = store(tmp_path)
    a, b = upload(s, b"x" * 100, "a.bin"), upload(s, b"x" * 100, "dir/b.bin")
    assert a.id != b.id and a.hash == b.hash == blake3_of(b"x" * 100)
    assert (a.created_new, b.created_new) == (True, False) and b.file_path == "b.bin"
    assert len([p for p in s.blobs.iterdir() if not p.name.startswith(".")]) == 1
    assert s.stored_bytes() == 100 == store(tmp_path).stored_bytes()  # counted, and counted again at start
    s.delete(a.id)
    assert s.path(b).read_bytes() == b"x" * 100, "the blob stays while an asset names it"
    s.delete(b.id)
    assert not s.path(b).exists() and s.stored_bytes() == 0


def test_an_upload_over_the_limit_or_with_another_hash_keeps_nothing(tmp_path):
    s = store(tmp_path)
    with pytest.raises(ApiError) as big:
        upload(s, b"y" * 1001)
    assert (big.value.status, big.value.code) == (413, "payload_too_large")
    with pytest.raises(ApiError) as other:
        upload(s, b"z" * 10, expected="blake3:" + "0" * 64)
    assert (other.value.status, other.value.code) == (409, "hash_mismatch")
    assert list(s.blobs.iterdir()) == []


def test_a_full_store_sweeps_expired_assets_first_then_refuses(tmp_path):
    s = store(tmp_path, ttl=0.05)
    old = upload(s, b"1" * 900)
    time.sleep(0.1)
    upload(s, b"2" * 900)
    upload(s, b"3" * 900)  # fits once the expired one is swept
    with pytest.raises(ApiError):
        s.get(old.id)
    s.use([upload(s, b"4" * 10).id])
    with pytest.raises(ApiError) as full:
        asyncio.run(s.add_output(b"5" * 900, "out.png", "image/png"))
    assert (full.value.status, full.value.code) == (507, "storage_full")


def test_an_asset_in_use_is_neither_deleted_nor_swept(tmp_path):
    s = store(tmp_path, ttl=0.05)
    a = upload(s, b"in use")
    s.use([a.id])
    with pytest.raises(ApiError) as busy:
        s.delete(a.id)
    assert busy.value.code == "asset_in_use"
    time.sleep(0.1)
    assert s.sweep() == 0 and s.path(a).exists()
    s.release([a.id])
    assert s.sweep() == 1 and not s.path(a).exists()

