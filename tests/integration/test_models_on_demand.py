"""Models on demand: the model cache (reuse without a request, checksums, atomic placement, one
download for two processes, least-recently-used eviction) and a real checkpoint fetched by URL
that ComfyUI's CheckpointLoaderSimple loads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedded.job.errors import InputError
from embedded.staging.downloads import FetchError, Fetcher, FetchSettings
from embedded.staging.modelcache import ModelCache, ModelRef
from embedded.staging.guard import Allowlist, Guard

from ..helpers import open_image, workflow
from ..servers import REPO

pytestmark = pytest.mark.timeout(180)


def cache_at(root: Path, server, max_bytes=None) -> ModelCache:
    return ModelCache(root, max_bytes, Fetcher(FetchSettings(Guard(Allowlist.parse(server.allow)))))


def serve(server, path: str, data: bytes) -> str:
    server.files[path] = data
    return server.url(path)


def test_a_model_is_fetched_once_and_then_reused_without_a_request(file_server, tmp_path):
    url = serve(file_server, "/reuse/a.safetensors", b"weights-a")
    cache = cache_at(tmp_path, file_server)
    ref = ModelRef.of(url, "loras", "a.safetensors")
    first = cache.ensure(ref)
    second = cache.ensure(ref)
    assert first == second == tmp_path / "loras" / "a.safetensors"
    assert first.read_bytes() == b"weights-a"
    assert file_server.hits("/reuse/a.safetensors") == 1


def test_a_checksum_mismatch_is_an_error_and_leaves_nothing_in_the_cache(file_server, tmp_path):
    url = serve(file_server, "/sum/bad.safetensors", b"not what you think")
    cache = cache_at(tmp_path, file_server)
    with pytest.raises(FetchError, match="sha256 is .* not the 0{64} asked for"):
        cache.ensure(ModelRef.of(url, "checkpoints", "bad.safetensors", "0" * 64))
    assert not (tmp_path / "checkpoints" / "bad.safetensors").exists()
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_a_matching_checksum_is_kept_so_the_file_is_hashed_once(file_server, tmp_path):
    data = b"good weights"
    url = serve(file_server, "/sum/good.safetensors", data)
    cache = cache_at(tmp_path, file_server)
    ref = ModelRef.of(url, "vae", "good.safetensors", hashlib.sha256(data).hexdigest())
    path = cache.ensure(ref)
    assert path.read_bytes() == data and cache.cached(ref)
    assert json.loads((tmp_path / ".meta" / "vae" / "good.safetensors.json").read_text())["sha256"] == ref.sha256


def test_a_cached_file_whose_checksum_differs_from_the_request_is_fetched_again(file_server, tmp_path):
    new = b"version 2"
    url = serve(file_server, "/sum/v.safetensors", new)
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "v.safetensors").write_bytes(b"version 1")
    cache = cache_at(tmp_path, file_server)
    path = cache.ensure(ModelRef.of(url, "loras", "v.safetensors", hashlib.sha256(new).hexdigest()))
    assert path.read_bytes() == new and file_server.hits("/sum/v.safetensors") == 1


def test_a_cached_file_from_another_url_is_not_taken_for_the_requested_one(file_server, tmp_path):
    cache = cache_at(tmp_path, file_server)
    first = ModelRef.of(serve(file_server, "/src/one.safetensors", b"one"), "loras", "same.safetensors")
    other = ModelRef.of(serve(file_server, "/src/two.safetensors", b"two"), "loras", "same.safetensors")
    assert cache.ensure(first).read_bytes() == b"one"
    assert not cache.cached(other)
    assert cache.ensure(other).read_bytes() == b"two"
    signed = ModelRef.of(file_server.url("/src/two.safetensors") + "?X-Amz-Signature=new", "loras", "same.safetensors")
    assert cache.cached(signed)  # the same source, signed again


def test_least_recently_used_models_are_evicted_to_fit_the_limit(file_server, tmp_path):
    cache = cache_at(tmp_path, file_server, max_bytes=2500)
    refs = [ModelRef.of(serve(file_server, f"/lru/{n}.safetensors", n.encode() * 1000), "loras", f"{n}.safetensors")
            for n in "abc"]
    a, b, c = (cache.path_of(r) for r in refs)
    cache.ensure(refs[0])
    cache.ensure(refs[1])
    import os
    os.utime(a, (1, 1))
    os.utime(b, (2, 2))
    cache.ensure(refs[0])  # used again: now the most recent, and too recent to evict
    cache.ensure(refs[2])
    assert cache.evict(keep=[c]) == [b]
    assert a.exists() and c.exists() and not b.exists()


def test_a_model_used_in_the_last_minutes_is_not_evicted_even_over_the_limit(file_server, tmp_path):
    cache = cache_at(tmp_path, file_server, max_bytes=1000)
    refs = [ModelRef.of(serve(file_server, f"/grace/{n}.safetensors", n.encode() * 800), "vae", f"{n}.safetensors")
            for n in "xy"]
    for ref in refs:
        cache.ensure(ref)  # another worker's model and this job's: both just used
    assert cache.evict(keep=[cache.path_of(refs[1])]) == []
    assert all(cache.path_of(r).exists() for r in refs)


def test_two_processes_wanting_one_model_download_it_once(file_server, tmp_path):
    url = serve(file_server, "/shared/big.safetensors", b"z" * (6 * 256 * 1024))
    file_server.delay["/shared/big.safetensors"] = 0.2  # about a second: the second process waits
    script = (
        "import sys, json; from pathlib import Path\n"
        "from embedded.staging.modelcache import ModelCache, ModelRef\n"
        "from embedded.staging.downloads import Fetcher, FetchSettings\n"
        "from embedded.staging.guard import Allowlist, Guard\n"
        "cache = ModelCache(Path(sys.argv[1]), None, Fetcher(FetchSettings(Guard(Allowlist.parse(sys.argv[3])))))\n"
        "path = cache.ensure(ModelRef.of(sys.argv[2], 'checkpoints', 'big.safetensors'))\n"
        "print(json.dumps([str(path), path.stat().st_size]))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), url, file_server.allow],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) for _ in range(2)]
    answers = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in answers]
    assert {tuple(json.loads(out)) for out, _ in answers} == {(str(tmp_path / "checkpoints" / "big.safetensors"),
                                                               6 * 256 * 1024)}
    assert file_server.hits("/shared/big.safetensors") == 1


@pytest.mark.parametrize("spec,expected", [
    ("https://h.example/x.safetensors:loras/x.safetensors", ("https://h.example/x.safetensors", "loras", "x.safetensors", None)),
    ("http://h.example:8080/m:checkpoints/sub/m.ckpt:" + "ab" * 32,
     ("http://h.example:8080/m", "checkpoints", "sub/m.ckpt", "ab" * 32)),
    ("https://h.example/c:clip/t5.safetensors", ("https://h.example/c", "text_encoders", "t5.safetensors", None)),
])
def test_the_cli_model_spec_is_url_folder_filename_and_an_optional_sha256(spec, expected):
    ref = ModelRef.parse(spec)
    assert (ref.url, ref.folder, ref.filename, ref.sha256) == expected


@pytest.mark.parametrize("item,problem", [
    ({"url": "https://h/x", "folder": "nonsense", "filename": "x.safetensors"}, "not one of ComfyUI's"),
    ({"url": "https://h/x", "folder": "loras", "filename": "../x.safetensors"}, "Model file name"),
    ({"url": "https://h/x", "folder": "loras", "filename": "/etc/x"}, "absolute"),
    ({"url": "https://h/x", "folder": "loras", "filename": "x", "sha256": "abc"}, "64 hex digits"),
    ({"url": "https://h/x", "folder": "loras"}, "'url', 'folder' and 'filename'"),
])
def test_a_bad_models_item_is_refused_before_anything_is_fetched(item, problem):
    with pytest.raises(InputError, match=problem):
        ModelRef.from_request(item)


def test_a_checkpoint_fetched_by_url_is_loaded_by_checkpoint_loader_simple(executor, models, file_server):
    data = _checkpoint_bytes("tiny-sd15.safetensors")
    url = serve(file_server, "/ckpt/fetched-sd15.safetensors", data)
    wf = workflow("txt2img_checkpoint")
    wf["1"]["inputs"]["ckpt_name"] = "fetched-sd15.safetensors"
    wf["4"]["inputs"].update(width=64, height=64)
    seen = []
    result = executor.run(wf, models=[{"url": url, "folder": "checkpoints", "filename": "fetched-sd15.safetensors",
                                       "sha256": hashlib.sha256(data).hexdigest()}], on_event=seen.append)
    assert open_image(result.outputs[0].data).size == (64, 64)
    downloads = [e for e in seen if type(e).__name__ == "DownloadEvent"]
    assert downloads and downloads[-1].done and downloads[-1].received == len(data)
    assert downloads[-1].name == "checkpoints/fetched-sd15.safetensors"
    # the second job finds it in the cache
    executor.run(wf, models=[{"url": url, "folder": "checkpoints", "filename": "fetched-sd15.safetensors"}])
    assert file_server.hits("/ckpt/fetched-sd15.safetensors") == 1


def _checkpoint_bytes(name: str) -> bytes:
    """A random-weight checkpoint the ``models`` fixture installed."""
    import folder_paths

    return Path(folder_paths.get_full_path_or_raise("checkpoints", name)).read_bytes()


def test_one_rule_says_whether_a_cached_file_serves_a_request_for_the_preflight_and_the_run(file_server, tmp_path):
    """Issue 18, item 4: a model placed by hand serves a request without a checksum (no request
    is made), in the preflight as in the run; one with a checksum is hashed once, then known."""
    url = serve(file_server, "/hand/placed.safetensors", b"from the server")
    cache = cache_at(tmp_path, file_server)
    placed = tmp_path / "loras" / "placed.safetensors"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"by hand")
    ref = ModelRef.of(url, "loras", "placed.safetensors")
    assert cache.cached(ref) is True
    assert cache.ensure(ref).read_bytes() == b"by hand" and file_server.hits("/hand/placed.safetensors") == 0
    summed = ModelRef.of(url, "loras", "placed.safetensors", hashlib.sha256(b"by hand").hexdigest())
    assert cache.cached(summed) is True and cache.ensure(summed) == placed
    other = ModelRef.of(url, "loras", "placed.safetensors", "1" * 64)
    assert cache.cached(other) is False


def test_partial_downloads_of_dead_writers_are_swept_at_start_and_before_a_download_without_a_size_limit(
        file_server, tmp_path):
    import os
    import time

    from embedded.staging.modelcache import ABANDONED_S

    incoming = tmp_path / ".incoming"
    incoming.mkdir()
    old = time.time() - ABANDONED_S - 60

    def left_behind(name: str) -> Path:
        path = incoming / name
        path.write_bytes(b"partial")
        os.utime(path, (old, old))
        return path

    dead, live = left_behind("dead-at-start"), incoming / "being-written"
    live.write_bytes(b"fresh")
    cache = cache_at(tmp_path, file_server)  # no MODEL_CACHE_MAX_GB
    assert not dead.exists() and live.exists()
    dead = left_behind("dead-later")
    cache.ensure(ModelRef.of(serve(file_server, "/sweep/m.safetensors", b"m"), "loras", "m.safetensors"))
    assert not dead.exists() and live.exists()
