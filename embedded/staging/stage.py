"""What a job fetches before its workflow runs: input files by reference, and models on demand.

Owns: telling a job's input files apart (bytes stay bytes; a ``Path``, or a string that is not a
URL, is a local file; ``http(s)://`` and ``s3://`` strings are fetched), fetching them in
parallel into the job's own download folder (each within ``INPUT_MAX_BYTES``, all together
within ``INPUT_MAX_TOTAL_BYTES``, each checked as any input), the job's models through the model
cache, ``DownloadEvent`` progress (at most four a second per file, and when it is in place), a
cancel between chunks, and removing the download folder when the job is over. ``plan`` says
what a job would fetch without fetching it (preflight's ``inputs_to_fetch``).

Must not import ComfyUI or the backends.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..config import Config
from ..job.errors import InputError, JobTimeout
from ..job.events import DownloadEvent, EventCallback
from .downloads import Cancelled, Fetcher, FetchError, FetchSettings, S3Settings
from ..job.inputs import check_input_bytes, check_input_name, check_names_together
from .modelcache import ModelCache, ModelRef
from .guard import Guard, is_url, redact

log = logging.getLogger("embedded.staging.stage")

#: how often one file's download is reported (seconds)
REPORT_EVERY_S = 0.25
#: downloads of one job at a time
PARALLEL = 8


def fetcher_for(config: Config) -> Fetcher:
    """The configured fetcher: ``FETCH_ALLOW`` plus the configured bucket's endpoint (set by the
    operator), the timeouts, deadlines, retries and tokens. One per set of those settings in a
    process: the API and the RunPod worker of one configuration share it (and its sessions)."""
    tokens = tuple((k, v) for k, v in (("HF_TOKEN", config.hf_token), ("CIVITAI_TOKEN", config.civitai_token)) if v)
    key = (config.fetch_allow.with_url(config.bucket_endpoint_url), config.fetch_connect_timeout_s,
           config.fetch_read_timeout_s, config.fetch_retries, tokens, config.fetch_deadline_s, config.upload_deadline_s)
    with _fetchers_lock:
        fetcher = _fetchers.get(key)
        if fetcher is None:
            allow, connect, read, retries, _, deadline, upload_deadline = key
            fetcher = _fetchers[key] = Fetcher(FetchSettings(Guard(allow), connect, read, retries, dict(tokens),
                                                             deadline=deadline, upload_deadline=upload_deadline))
        return fetcher


#: the fetchers of this process, by their settings (see ``fetcher_for``)
_fetchers: dict[tuple, Fetcher] = {}
_fetchers_lock = threading.Lock()


def model_cache_for(config: Config, fetcher: Fetcher) -> ModelCache:
    limit = None if config.model_cache_max_gb is None else int(config.model_cache_max_gb * 1e9)
    return ModelCache(config.model_cache, limit, fetcher)


@dataclass(frozen=True)
class ToFetch:
    """One file a job would fetch (preflight's ``inputs_to_fetch``)."""

    kind: str  # "input" or "model"
    name: str
    url: str  # redacted
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "url": self.url,
                **({"cached": self.cached} if self.kind == "model" else {})}


class Staging:
    """One job's downloads. ``fetch`` once; ``close`` when the job is over (its files go)."""

    def __init__(self, config: Config, fetcher: Fetcher, cache: ModelCache):
        self.config = config
        self.fetcher = fetcher
        self.cache = cache
        self.folder = config.downloads_dir / uuid.uuid4().hex
        self.cancel = threading.Event()
        self.timed_out = False

    def plan(self, files: Mapping[str, Any] | None, models: Iterable[ModelRef]) -> list[ToFetch]:
        """What ``fetch`` would download; checks each URL's form (``FetchRefused``), fetches nothing."""
        planned = []
        for name, value in (files or {}).items():
            if is_url(value):
                self.fetcher.settings.guard.check_url(value)
                planned.append(ToFetch("input", name, redact(value)))
        for ref in models:
            self.fetcher.settings.guard.check_url(ref.url)
            planned.append(ToFetch("model", f"{ref.folder}/{ref.filename}", redact(ref.url), self.cache.cached(ref)))
        return planned

    def fetch(self, files: Mapping[str, Any] | None, models: Iterable[ModelRef] = (), s3: S3Settings | None = None,
              on_event: EventCallback | None = None, timeout: float | None = None) -> dict[str, bytes | Path]:
        """The job's input files, every reference fetched, and its models in the cache, within
        ``timeout`` seconds (the job's). Raises ``InputError`` (``FetchError``, ``FetchRefused``)
        naming every file that failed, ``JobTimeout`` or ``Cancelled``."""
        models = list(models)
        local: dict[str, bytes | Path] = {}
        remote: dict[str, str] = {}
        for name, value in (files or {}).items():
            check_input_name(name)
            if is_url(value):
                remote[name] = self.fetcher.settings.guard.check_url(value)
            elif isinstance(value, (str, Path)):
                local[name] = Path(value).expanduser()
            else:
                local[name] = value
        check_names_together([*local, *remote])
        if not remote and not models:
            return local
        report = _Reporter(on_event)
        budget = _Budget(self.config.input_max_total_bytes)
        tasks: dict[str, Callable[[], Any]] = {}
        if remote:
            self.folder.mkdir(parents=True, exist_ok=True)
        for index, (name, url) in enumerate(remote.items()):
            tasks[f"Input {name!r}"] = self._input_task(name, url, self.folder / str(index), s3, report, budget)
        for ref in models:
            tasks[f"Model {ref.folder}/{ref.filename}"] = self._model_task(ref, s3, report)
        timer = threading.Timer(timeout, self._time_out) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            results = self._run_all(tasks)
        except Cancelled:
            if self.timed_out:
                raise JobTimeout(timeout).fetching() from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        fetched = {name: results[f"Input {name!r}"] for name in remote}
        self.cache.evict(keep=[self.cache.path_of(ref) for ref in models])
        return {**local, **fetched}

    def close(self) -> None:
        self.cancel.set()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _time_out(self) -> None:
        self.timed_out = True
        self.cancel.set()

    # --- internals ----------------------------------------------------------------------------
    def _input_task(self, name: str, url: str, dest: Path, s3: S3Settings | None, report: "_Reporter",
                    budget: "_Budget") -> Callable[[], Path]:
        def task() -> Path:
            limit = self.config.input_max_bytes
            counted = [0]

            def progress(received: int, total: int | None) -> None:
                budget.add(received - counted[0], name)
                counted[0] = received
                report(DownloadEvent("input", name, received, total))

            size = self.fetcher.download(url, dest, what=f"Input {name!r}", max_bytes=limit, s3=s3,
                                         on_progress=progress, cancel=self.cancel)
            checked = check_input_bytes(name, dest, self.config.input_limits)
            report(DownloadEvent("input", name, size, size, done=True), force=True)
            return checked
        return task

    def _model_task(self, ref: ModelRef, s3: S3Settings | None, report: "_Reporter") -> Callable[[], Path]:
        name = f"{ref.folder}/{ref.filename}"

        def task() -> Path:
            path = self.cache.ensure(ref, s3=s3, cancel=self.cancel,
                                     on_progress=lambda got, total: report(DownloadEvent("model", name, got, total)))
            size = path.stat().st_size
            report(DownloadEvent("model", name, size, size, done=True), force=True)
            return path
        return task

    def _run_all(self, tasks: dict[str, Callable[[], Any]]) -> dict[str, Any]:
        results: dict[str, Any] = {}
        problems: list[InputError] = []
        with concurrent.futures.ThreadPoolExecutor(min(PARALLEL, len(tasks)), "embedded-fetch") as pool:
            futures = {pool.submit(task): what for what, task in tasks.items()}
            try:
                for future in concurrent.futures.as_completed(futures):
                    what = futures[future]
                    try:
                        results[what] = future.result()
                    except _OverBudget as exc:
                        self.cancel.set()  # the others stop at their next chunk
                        problems.append(FetchError(str(exc)))
                    except InputError as exc:  # FetchError, FetchRefused, a fetched file that is unusable
                        named = exc.message.startswith(("Input", "Model"))
                        problems.append(exc if named else type(exc)(f"{what}: {exc.message}"))
                    except Cancelled:
                        pass
                    except OSError as exc:  # the cache's folder or lock: no path in the message
                        reason = exc.strerror or type(exc).__name__
                        problems.append(FetchError(f"{what} could not be stored ({reason})"))
                    except Exception as exc:  # boto3 refusing a bucket name, say
                        log.warning("%s could not be fetched", what, exc_info=True)
                        problems.append(FetchError(f"{what} could not be fetched ({type(exc).__name__})"))
            except BaseException:  # an interrupt of the caller: the downloads stop too
                self.cancel.set()
                raise
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise FetchError(f"{len(problems)} files could not be fetched: "
                             + "; ".join(sorted(p.message for p in problems)))
        if len(results) < len(tasks):
            raise Cancelled()
        return results


class _OverBudget(Exception):
    pass


class _Budget:
    """The bytes all of a job's inputs may take together."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def add(self, count: int, name: str) -> None:
        with self._lock:
            self.used += count
            if self.used > self.limit:
                raise _OverBudget(f"The job's input files are over {self.limit} bytes together "
                                  f"(INPUT_MAX_TOTAL_BYTES; reached while fetching {name!r})")


class _Reporter:
    """Download events from every download thread, one at a time, each file at most every
    ``REPORT_EVERY_S``."""

    def __init__(self, on_event: EventCallback | None):
        self.on_event = on_event
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}

    def __call__(self, event: DownloadEvent, force: bool = False) -> None:
        if self.on_event is None:
            return
        with self._lock:
            now = time.monotonic()
            key = (event.kind, event.name)
            if not force and now - self._last.get(key, float("-inf")) < REPORT_EVERY_S:
                return
            self._last[key] = now
            try:
                self.on_event(event)
            except Exception:  # a broken callback must not break the downloads
                log.exception("on_event callback raised for a DownloadEvent; ignored")
