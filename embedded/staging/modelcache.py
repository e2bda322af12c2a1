"""Models on demand: a job's ``models`` downloaded once into a shared cache ComfyUI looks in.

Owns: ``ModelRef`` (``url``, ``folder``, ``filename``, optional ``sha256``; from a request's
``models`` item or the CLI's ``URL:folder/filename[:sha256]``), the cache's layout
(``<MODEL_CACHE_DIR>/<folder>/<filename>``, registered with ComfyUI's model folders by
``backends.launch``; ``MODEL_FOLDERS``, ComfyUI's model folder names, is this layout's), and ``ModelCache.ensure``: a cached file is reused without a request when it came
from the same URL (scheme, host and path; a query string may change) or has the requested
``sha256`` (its use refreshes its place in the least-recently-used order); otherwise one download
per file however many workers share the volume (``filelock``), into a temporary file moved into
place only when complete and, when ``sha256`` is given, matching (a mismatch leaves nothing in
the cache); then the least recently used files are evicted until the cache fits
``MODEL_CACHE_MAX_GB`` (never a file the job needs, nor one used in the last
``EVICT_GRACE_S``: another worker may be about to load it). Downloads left behind by killed
workers are swept at start and before each download (``sweep``). One rule (``_usable``) says
whether a cached file serves a request, for a run and a preflight alike. What is known of a file (its URL, its checksum once computed) is kept beside it under
``.meta/``, so that a cached file is hashed at most once.

Must not import ComfyUI or the backends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from filelock import FileLock, Timeout

from .downloads import Cancelled, Fetcher, FetchError, S3Settings, sha256_of
from ..job.inputs import check_input_name
from ..job.errors import InputError
from .guard import redact

log = logging.getLogger("embedded.models")

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
#: a model folder's other names (``clip`` for ``text_encoders``...) -> its name
#: folder_paths.folder_names_and_paths of the pinned tree, minus custom_nodes; values are the
#: sub-folders under the models root (first one is where ComfyUI saves)
MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",),
    "configs": ("configs",),
    "loras": ("loras",),
    "vae": ("vae",),
    "text_encoders": ("text_encoders", "clip"),
    "diffusion_models": ("diffusion_models", "unet"),
    "clip_vision": ("clip_vision",),
    "style_models": ("style_models",),
    "embeddings": ("embeddings",),
    "diffusers": ("diffusers",),
    "vae_approx": ("vae_approx",),
    "controlnet": ("controlnet", "t2i_adapter"),
    "gligen": ("gligen",),
    "upscale_models": ("upscale_models",),
    "latent_upscale_models": ("latent_upscale_models",),
    "hypernetworks": ("hypernetworks",),
    "photomaker": ("photomaker",),
    "classifiers": ("classifiers",),
    "model_patches": ("model_patches",),
    "audio_encoders": ("audio_encoders",),
}

FOLDER_NAMES = {alias: name for name, aliases in MODEL_FOLDERS.items() for alias in (name, *aliases)}
#: hidden folders of the cache: downloads in progress, locks, what is known of each file
INCOMING, LOCKS, META = ".incoming", ".locks", ".meta"
#: a file used this recently (seconds) is not evicted; a partial download untouched this long was
#: left by a writer that died (a live one writes at least every FETCH_READ_TIMEOUT_S)
EVICT_GRACE_S, ABANDONED_S = 600, 3600


@dataclass(frozen=True)
class ModelRef:
    """A model a job needs: fetched from ``url`` as ``<folder>/<filename>``."""

    url: str
    folder: str
    filename: str
    sha256: str | None = None

    @classmethod
    def from_request(cls, item: Any) -> "ModelRef":
        """A request's ``models`` item: ``{"url", "folder", "filename", "sha256"?}``."""
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("url", "folder", "filename")):
            raise InputError("Each 'models' item must be an object with 'url', 'folder' and 'filename' strings")
        sha = item.get("sha256")
        if sha is not None and not isinstance(sha, str):
            raise InputError("A model's 'sha256' must be a string of 64 hex digits")
        return cls.of(item["url"], item["folder"], item["filename"], sha)

    @classmethod
    def parse(cls, spec: str) -> "ModelRef":
        """The CLI's ``URL:folder/filename[:sha256]``."""
        head, _, last = spec.rpartition(":")
        sha = None
        if _SHA256.match(last):
            sha, (head, _, last) = last, head.rpartition(":")
        folder, _, filename = last.partition("/")
        if not head or not folder or not filename:
            raise InputError(f"--model {spec[:80]!r}: expected URL:folder/filename[:sha256]")
        return cls.of(head, folder, filename, sha)

    @classmethod
    def of(cls, url: str, folder: str, filename: str, sha256: str | None = None) -> "ModelRef":
        if folder not in FOLDER_NAMES:
            raise InputError(f"Model folder {folder!r} is not one of ComfyUI's: " + ", ".join(sorted(MODEL_FOLDERS)))
        try:
            check_input_name(filename)
        except InputError as exc:
            raise InputError(exc.message.replace("Input name", "Model file name", 1)) from None
        if sha256 is not None and not _SHA256.match(sha256):
            raise InputError(f"Model {filename!r}: 'sha256' must be 64 hex digits")
        return cls(url, FOLDER_NAMES[folder], filename, sha256.lower() if sha256 else None)


class ModelCache:
    """The cache under ``root`` (``MODEL_CACHE_DIR``), at most ``max_bytes`` (``None``: no limit)."""

    def __init__(self, root: Path, max_bytes: int | None, fetcher: Fetcher):
        self.root = root
        self.max_bytes = max_bytes
        self.fetcher = fetcher
        self._evicting = threading.Lock()
        self.sweep()

    def path_of(self, ref: ModelRef) -> Path:
        return self.root / ref.folder / ref.filename

    def cached(self, ref: ModelRef) -> bool:
        """Whether ``ref`` would be used from the cache without a request (what ``ensure``
        decides: the same function answers both)."""
        return self._usable(ref, self.path_of(ref))

    def sweep(self) -> list[Path]:
        """Remove the partial downloads of writers that died (untouched for ``ABANDONED_S``); at
        start and before each download, whatever ``MODEL_CACHE_MAX_GB`` says."""
        incoming = self.root / INCOMING
        removed = []
        now = time.time()
        for stale in incoming.glob("*") if incoming.is_dir() else ():
            try:
                if now - stale.stat().st_mtime > ABANDONED_S:
                    stale.unlink(missing_ok=True)
                    removed.append(stale)
            except OSError:
                continue
        if removed:
            log.info("model cache: removed %d partial download(s) left by workers that stopped", len(removed))
        return removed

    def ensure(self, ref: ModelRef, *, s3: S3Settings | None = None,
               on_progress: Callable[[int, int | None], None] | None = None,
               cancel: threading.Event | None = None) -> Path:
        """The cached file of ``ref``, downloaded first when it is not there (or its checksum
        differs). Raises ``FetchError``, ``FetchRefused`` or ``Cancelled``."""
        path = self.path_of(ref)
        if self._usable(ref, path):
            return self._touch(path)
        self.fetcher.http_url(ref.url, s3)  # a refused URL fails before any lock or file
        lock = FileLock(self._hidden(LOCKS, ref, ".lock"))
        while True:  # another worker may be downloading it: wait, and stop on a cancel
            try:
                lock.acquire(timeout=0.5)
                break
            except Timeout:
                if cancel is not None and cancel.is_set():
                    raise Cancelled() from None
        try:
            if self._usable(ref, path):  # the other worker's download
                return self._touch(path)
            self._download(ref, path, s3, on_progress, cancel)
        finally:
            lock.release()
        return path

    def evict(self, keep: Iterable[Path] = ()) -> list[Path]:
        """Remove the least recently used files until the cache fits ``max_bytes``; returns them."""
        if self.max_bytes is None:
            return []
        keep = {p.resolve() for p in keep}
        (self.root / LOCKS).mkdir(parents=True, exist_ok=True)
        with self._evicting, FileLock(self.root / LOCKS / "evict.lock"):
            now = time.time()
            files = [p for p in self._files() if p.resolve() not in keep and now - p.stat().st_mtime > EVICT_GRACE_S]
            total = sum(p.stat().st_size for p in self._files())
            removed = []
            for path in sorted(files, key=lambda p: p.stat().st_mtime):
                if total <= self.max_bytes:
                    break
                size = path.stat().st_size
                path.unlink(missing_ok=True)
                self._meta_path(path).unlink(missing_ok=True)
                total -= size
                removed.append(path)
                log.info("model cache: evicted %s (%d bytes, least recently used)", path.relative_to(self.root), size)
            if total > self.max_bytes:
                log.warning("model cache: %d bytes in use, over MODEL_CACHE_MAX_GB, by files jobs need now", total)
            return removed

    # --- internals ----------------------------------------------------------------------------
    def _usable(self, ref: ModelRef, path: Path) -> bool:
        """The one rule: a file there serves ``ref`` when it came from the same source (or was
        placed by hand, with no record of a source), or when ``ref`` names a checksum, when its
        checksum (computed once, then recorded) is that one."""
        if not path.is_file():
            return False
        meta = self._meta(path)
        if ref.sha256 is None:  # the same source, or a file placed there by hand
            return meta.get("url", redact(ref.url)) == redact(ref.url)
        if "sha256" not in meta:  # placed there by hand, or cached without a checksum: hash it once
            meta["sha256"] = sha256_of(path)
            self._write_meta(path, meta)
        return meta["sha256"] == ref.sha256

    def _download(self, ref: ModelRef, path: Path, s3: S3Settings | None,
                  on_progress: Callable[[int, int | None], None] | None, cancel: threading.Event | None) -> None:
        self.sweep()
        incoming = self.root / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        temporary = incoming / uuid.uuid4().hex
        digest = hashlib.sha256()
        try:
            size = self.fetcher.download(ref.url, temporary, what=f"Model {ref.folder}/{ref.filename}", s3=s3,
                                         on_progress=on_progress, cancel=cancel, digest=digest)
            if ref.sha256 is not None and digest.hexdigest() != ref.sha256:
                raise FetchError(f"Model {ref.folder}/{ref.filename}: its sha256 is {digest.hexdigest()}, not the "
                                 f"{ref.sha256} asked for (nothing was cached)")
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_meta(path, {"url": redact(ref.url), "sha256": digest.hexdigest()})
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        log.info("model cache: fetched %s/%s (%d bytes)", ref.folder, ref.filename, size)

    def _files(self) -> list[Path]:
        return [p for folder in self.root.iterdir() if folder.is_dir() and not folder.name.startswith(".")
                for p in folder.rglob("*") if p.is_file()] if self.root.is_dir() else []

    def _hidden(self, kind: str, ref: ModelRef, suffix: str) -> Path:
        path = self.root / kind / ref.folder / f"{ref.filename}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _meta_path(self, path: Path) -> Path:
        return self.root / META / path.relative_to(self.root).parent / f"{path.name}.json"

    def _meta(self, path: Path) -> dict[str, str]:
        try:
            meta = json.loads(self._meta_path(path).read_text())
            return meta if isinstance(meta, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_meta(self, path: Path, meta: dict[str, str]) -> None:
        target = self._meta_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(meta))

    @staticmethod
    def _touch(path: Path) -> Path:
        try:
            os.utime(path)  # its place in the least-recently-used order
        except OSError:
            pass  # a file another user owns: used, not moved up the order
        return path
