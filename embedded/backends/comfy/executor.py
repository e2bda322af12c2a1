"""The embedded backend: ComfyUI's ``PromptExecutor`` on a dedicated thread with its own event loop.

Owns: the runner thread and its asyncio loop (boot runs there too), the one ``PromptExecutor``
(caches, loaded models), one-job-at-a-time ordering, each job's folders, validation, execution,
interrupt and timeout, and reading the results back as ``Output`` objects.

Per job: the workflow is deep-copied, gets a fresh prompt id, and runs with the job's own input,
output and temp folders (``<work>/jobs/<prompt id>/``). Once its outputs are read the folder is
moved to ``<work>/trash/`` (one rename) and the caller is answered; the trash is deleted by a
thread of its own (``TrashCan``), off the runner's path; before the next job starts, tasks the
job's nodes started and left running are cancelled (as
``asyncio.run``, under which ComfyUI's own worker runs each prompt, cancels them: nothing from an
ended job runs on), and ``housekeeping`` does what ComfyUI's ``prompt_worker`` does after it has
sent a prompt's end (cache type from the arguments, gc, ``/free``). A job that asks to unload models
or free memory is answered after that, once the memory is free. Each clean-up step runs on its
own, whatever failed before it.

A job whose node does not stop within the grace period (see ``jobcontrol``) is abandoned: its task
is cancelled, which frees the runner when the node awaits something; a synchronous node keeps the
runner thread until it returns, and the runner refuses jobs meanwhile.

Repeat jobs, as in ComfyUI's server: ComfyUI caches every node's result between prompts, and an
identical job runs no node again (a changed one re-runs what ComfyUI re-runs). A cached output
node writes no file, and each job's folders are removed after it: the files an output node wrote
are kept (``kept.KeptOutputs``, under the node's cache key) while ComfyUI's cache holds its result,
and a cache hit returns them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from ...config import Config
from .. import preflight, translate
from ...job.errors import BootError, InputError, JobInterrupted, ValidationError
from ...job.events import PREVIEWS_PER_SECOND, ExecutedEvent, OutputEvent, from_comfy, message_event, preview_event
from ...job.inputs import (check_file_inputs, check_output_targets, check_workflow, file_inputs,
                           prepare_input_folder, write_inputs)
from ..jobcontrol import JobControl, Running, Ticket
from ..kept import KeptOutputs
from ...job.outputs import collect
from ...job.types import BootInfo, Job, Result, Timings
from . import boot as _boot
from .housekeeping import Housekeeping, runner_cache_settings

log = logging.getLogger("embedded.backends.comfy")

#: ComfyUI's folders, caches of loaded models and interrupt flag are process-wide: however many
#: runners a process has, one job runs at a time (held by the runner thread running it).
_one_job_per_process = threading.Lock()


class ComfyRunner(JobControl):
    """Runs jobs on the booted ComfyUI, one at a time, on its own thread.

    ``submit`` may be called from any thread; ``run_async`` from any event loop.
    """

    def __init__(self, config: Config | None = None):
        self.config = config or Config.from_env()
        super().__init__(self.config.job_stop_grace_s)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = None  # execution.PromptExecutor, created on the runner thread
        self._housekeeping: Housekeeping | None = None
        self._job_lock: asyncio.Lock | None = None
        self._checks: set[concurrent.futures.Future] = set()
        self._preview_method = None  # --preview-method as parsed at boot: a job without previews gets it
        self._kept = KeptOutputs()  # files of cached output nodes (see the module doc)
        self._trash = TrashCan(self.config.trash_dir)
        self.booted: BootInfo | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def prepare(self) -> "ComfyRunner":
        """Parse ComfyUI's arguments on this thread (see ``Backend.prepare``); raises BootError."""
        _boot.parse_arguments(self.config)
        return self

    def start(self) -> "ComfyRunner":
        """Start the runner thread and boot ComfyUI there (blocks until ready; raises BootError)."""
        if self._thread is not None:
            return self
        self.prepare()
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="comfy-runner", daemon=True)
        self._thread.start()
        try:
            self.booted = ready.result()
        except BaseException:
            self._thread.join(timeout=5)
            self._thread = None
            raise
        return self

    def _thread_main(self, ready: concurrent.futures.Future) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            booted = _boot.boot(self.config, loop)
            import comfy.cli_args
            import execution
            cache_type, cache_args = runner_cache_settings(comfy.cli_args, self.config.extra_args, execution.CacheType)
            self._preview_method = comfy.cli_args.args.preview_method
            self._executor = execution.PromptExecutor(_boot.shim(), cache_type=cache_type, cache_args=cache_args)
            self._job_lock = asyncio.Lock()
            self._housekeeping = Housekeeping(self._executor, loop, idle=lambda: not self._job_lock.locked(),
                                              process_lock=_one_job_per_process)
        except BaseException as exc:
            loop.close()
            ready.set_exception(exc if isinstance(exc, BootError) else BootError(f"{type(exc).__name__}: {exc}"))
            return
        self._loop = loop
        ready.set_result(booted)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the runner thread (after interrupting a running job). ComfyUI stays booted."""
        if self._thread is None:
            return
        self.interrupt()
        self._fail_queued(JobInterrupted("The executor was closed before the job started"))
        for pending in list(self._checks):  # a check waiting for the job lock
            pending.cancel()
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=timeout)
        self._thread = self._loop = None

    @property
    def started(self) -> bool:
        return self._thread is not None and self._loop is not None

    # --- jobs -----------------------------------------------------------------------------------
    def _enqueue(self, ticket: Ticket) -> concurrent.futures.Future:
        if not self.started:
            raise BootError("The runner is not started (call start() first)")
        return asyncio.run_coroutine_threadsafe(self._run(ticket), self._loop)

    def _stop(self, running: Running) -> None:
        import comfy.model_management
        with self._state_lock:  # the flag is process-wide: never raise it for the job after this one
            if self._running is running:
                comfy.model_management.interrupt_current_processing(True)

    def _abandon(self, running: Running) -> str | None:
        """Cancel the job's task: a node awaiting something lets go at once. A synchronous node
        blocks the runner's loop (the cancel waits for it to return): the runner stays stuck."""
        task, loop = running.task, self._loop
        if task is None or loop is None:
            return None
        loop_runs = threading.Event()

        def cancel() -> None:
            loop_runs.set()
            task.cancel()

        loop.call_soon_threadsafe(cancel)
        if not loop_runs.wait(0.25):
            return None  # a synchronous node holds the loop
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if self._running is not running:  # the job has ended (its clean-up may still run)
                return "its task was cancelled"
            time.sleep(0.02)
        return None

    async def _run(self, ticket: Ticket) -> Result:
        async with self._job_lock:
            _one_job_per_process.acquire()  # blocks only this runner's own thread
            before = asyncio.all_tasks()
            # a job that frees memory is answered once it is freed (the caller counts on it then)
            answer_first = not (ticket.job.unload_models or ticket.job.free_memory)
            try:
                result = await self._run_alone(ticket)
                if answer_first:
                    self._answer(ticket, result)  # the caller goes on while the clean-up below runs
                return result
            except Exception as exc:
                if answer_first:
                    self._answer(ticket, error=exc)
                raise
            finally:
                try:
                    self._trash.empty_soon()
                    await _cancel_leftover_tasks(before, self.stop_grace)
                    if ticket.started:
                        self._between_jobs(ticket)
                finally:
                    _one_job_per_process.release()

    def check(self, job: Job) -> preflight.Preflight:
        """Validate ``job`` as a run would (its input files in place), without running a node."""
        if not self.started:
            raise BootError("The runner is not started (call start() first)")
        if self.stuck:
            raise self._stuck_error()
        pending = asyncio.run_coroutine_threadsafe(self._check(job), self._loop)
        self._checks.add(pending)
        try:
            return pending.result()
        finally:
            self._checks.discard(pending)

    async def _check(self, job: Job) -> preflight.Preflight:
        import folder_paths

        async with self._job_lock:
            with _one_job_per_process:
                missing, models = await self._unknown_nodes_and_missing_models(job.workflow)
                if missing:  # ComfyUI's validation would stop at the first
                    return preflight.report(missing, models, None)
                prompt_id = str(uuid.uuid4())
                job_dir = self.config.jobs_dir / prompt_id
                folders = {"input": job_dir / "input", "output": job_dir / "output", "temp": job_dir / "temp"}
                try:
                    _, _, warnings, _ = await self._validate(job, prompt_id, folders)
                    return preflight.report([], models, None, warnings)
                except ValidationError as exc:
                    return preflight.report([], models, exc)
                finally:
                    _cleanup_step("point ComfyUI at the idle folders", _point_folders, folder_paths,
                                  {k: self.config.idle_dir / k for k in folders})
                    _cleanup_step("remove the job's folder", shutil.rmtree, job_dir, ignore_errors=True)

    async def _unknown_nodes_and_missing_models(self, workflow: dict[str, Any]) -> tuple[list, list]:
        """What a preflight finds beside ComfyUI's validation: every node type nobody defines, and
        every model input whose file is not in its folders."""
        import folder_paths
        import nodes

        await _import_used_packs(check_workflow(workflow))
        known = nodes.NODE_CLASS_MAPPINGS.__contains__
        missing = preflight.unknown_nodes(check_workflow(workflow), known, self.booted.failed_packs)
        models = preflight.missing_models(workflow, known, _combo_options, preflight.model_folders(
            lambda: {kind: (folder_paths.get_filename_list(kind), folder_paths.get_folder_paths(kind))
                     for kind in folder_paths.folder_names_and_paths}), _file_inputs)
        return missing, models

    async def _diagnose(self, job: Job, error: ValidationError) -> None:
        """Attach to a job's validation error the preflight's report of it (``error.diagnosis``),
        found now, while this job still holds the runner: a caller that explains the refusal
        never waits behind the next job."""
        try:
            missing, models = await self._unknown_nodes_and_missing_models(job.workflow)
            error.diagnosis = preflight.report(missing, models, None if missing else error)
        except Exception:  # noqa: BLE001 - the refusal stands without the details
            log.warning("could not diagnose a refused workflow", exc_info=True)

    async def _validate(self, job: Job, prompt_id: str,
                        folders: dict[str, Path]) -> tuple[dict, list, list[str], dict[str, Any]]:
        """The job's own workflow copy, passed through the custom nodes' on-prompt handlers, checked
        and validated by ComfyUI with its input files in place: ``(prompt, outputs to run,
        warnings, extra_data)``; raises ``ValidationError`` / ``InputError``."""
        import execution
        import folder_paths

        prompt = copy.deepcopy(check_workflow(job.workflow))
        prompt, targets, extra_data = _on_prompt(job, prompt, prompt_id)
        check_workflow(prompt)  # what a handler made of it
        await _import_used_packs(prompt)
        check_file_inputs(prompt, _file_inputs)
        check_output_targets(prompt, targets, _is_output_node)
        try:
            _make_folders(folders)
            prepare_input_folder(folders["input"], self.config.static_inputs, job.images)
            write_inputs(job.images, folders["input"])
        except OSError as exc:
            raise InputError(f"Could not write the job's input files: {exc.strerror or type(exc).__name__}") from None
        _point_folders(folder_paths, folders)
        try:
            ok, error, good_outputs, node_errors = await execution.validate_prompt(
                prompt_id, prompt, None if targets is None else list(targets))
        except RecursionError:
            raise _too_deep() from None
        if not ok:
            raise translate.validation_error(error, node_errors, prompt, _combo_options, self.booted.failed_packs,
                                             known_classes=_known_classes, kind_of=_model_kinds())
        return (prompt, good_outputs, [e.line() for e in translate.node_errors(node_errors, prompt, _combo_options)],
                extra_data)

    def _between_jobs(self, ticket: Ticket) -> None:
        try:
            if ticket.job.free_memory:  # every cached result goes: so do the files kept for them
                self._kept.clear()
            self._housekeeping.after_job(ticket.job.unload_models, ticket.job.free_memory)
        except Exception:  # noqa: BLE001 - the next job must still run
            log.exception("clean-up between jobs failed")

    async def _run_alone(self, ticket: Ticket) -> Result:
        timings = Timings(wait=time.perf_counter() - ticket.submitted)
        running = self._begin(ticket)
        running.task = asyncio.current_task()
        try:
            return await self._run_locked(running, timings)
        finally:
            self._end(running)
            import nodes
            nodes.interrupt_processing(False)

    async def _run_locked(self, running: Running, timings: Timings) -> Result:
        import comfy.cli_args
        import folder_paths

        job = running.job
        shim = _boot.shim()
        dispatch = self._dispatcher(running, self.config.websocket_trace)
        prompt_id = running.prompt_id = str(uuid.uuid4())
        job_dir = self.config.jobs_dir / prompt_id  # never the caller's job id: it could hold "../"
        folders = {"input": job_dir / "input", "output": job_dir / "output", "temp": job_dir / "temp"}
        prompt: dict[str, Any] = {}
        # Process-wide, read by save nodes at run time: this runner's own setting for its jobs.
        comfy.cli_args.args.disable_metadata = bool(self.config.disable_metadata)
        _set_previews(comfy.cli_args.args, shim, job, self._preview_method)
        ran = False  # execute_async saw this prompt: its caches hold the prompt's output nodes
        t = time.perf_counter()
        try:
            # --- validate ------------------------------------------------------------------------
            try:
                prompt, good_outputs, warnings, extra_data = await self._validate(job, prompt_id, folders)
            except ValidationError as refused:
                await self._diagnose(job, refused)
                raise
            timings.validate = time.perf_counter() - t

            # --- execute -------------------------------------------------------------------------
            t = time.perf_counter()

            def sink(event: str, data: Any) -> None:
                if running.stop_reason is not None:
                    # execute_async clears the interrupt flag when it starts: raise it again.
                    import comfy.model_management
                    if not comfy.model_management.processing_interrupted():
                        comfy.model_management.interrupt_current_processing(True)
                if event == "embedded_preview":  # a sampler preview (only a job with previews gets them)
                    now = time.monotonic()
                    if now - running.last_preview >= 1 / PREVIEWS_PER_SECOND:
                        running.last_preview = now
                        dispatch(preview_event(prompt_id, data.get("node"), data["image"]))
                    return
                ev = from_comfy(event, data) or message_event(prompt_id, event, data)
                if ev is not None:
                    dispatch(ev)
                if isinstance(ev, ExecutedEvent) and job.stream_outputs:
                    early, _ = collect({ev.node_id: ev.output or {}},
                                       lambda ftype, sub, name: _read(folders, ftype, sub, name),
                                       kept=self._kept_for(running))
                    for output in early:
                        dispatch(OutputEvent(prompt_id, output))

            shim.attach(sink)
            shim.last_prompt_id = prompt_id
            item, extra_data = _queue_item(shim.number, prompt_id, prompt, {**extra_data, "client_id": job.client_id},
                                           good_outputs)
            if running.stop_reason is not None:
                raise translate.stopped(running.stop_reason, job.timeout)
            ran = True
            shim.running(item)
            try:
                await self._executor.execute_async(prompt, prompt_id, extra_data, good_outputs)
            except RecursionError:
                raise _too_deep() from None
            finally:
                shim.attach(None)
                shim.running(None)
            timings.execute = time.perf_counter() - t

            # --- collect -------------------------------------------------------------------------
            t = time.perf_counter()
            outputs, problems = self._finish(running, self._executor.status_messages, dispatch,
                                             lambda: self._collect(running, folders, prompt))
            return Result(job.job_id, prompt_id, outputs, timings, warnings + problems, running.node_timings())
        finally:
            # Each step on its own: one that fails must not skip the others.
            _cleanup_step("point ComfyUI at the idle folders", _point_folders, folder_paths,
                          {k: self.config.idle_dir / k for k in folders})
            shim.sockets_metadata.pop(job.client_id, None)
            comfy.cli_args.args.preview_method = self._preview_method
            if ran:
                _cleanup_step("forget the output nodes' instances", self._forget_output_node_instances, prompt)
                _cleanup_step("drop kept files of results no longer cached", self._kept.retain,
                              lambda key: key in getattr(self._executor.caches.outputs, "cache", ()))
            _cleanup_step("set the job's folder aside", _set_aside, job_dir, self.config.trash_dir)
            timings.collect = time.perf_counter() - t

    def _forget_output_node_instances(self, prompt: dict[str, Any]) -> None:
        """Drop the node instances of the prompt's output nodes (ComfyUI keeps them between
        prompts): a save or preview node reads its folder when it is made, and that folder was
        this job's. Their cached results stay (see the module doc)."""
        import nodes
        for node_id, node in prompt.items():
            class_def = nodes.NODE_CLASS_MAPPINGS.get(node.get("class_type")) if isinstance(node, dict) else None
            if class_def is None or getattr(class_def, "OUTPUT_NODE", False) is not True:
                continue
            _remove_entry(self._executor.caches.objects, node_id)

    def _collect(self, running: Running, folders: dict[str, Path], prompt: dict[str, Any]) -> tuple[list, list[str]]:
        """The job's outputs with their bytes (a cached output node's from the kept files); the files
        of the output nodes that ran are kept while ComfyUI caches their results."""
        outputs, problems = collect(self._executor.history_result.get("outputs", {}),
                                    lambda ftype, sub, name: _read(folders, ftype, sub, name), order=prompt,
                                    kept=self._kept_for(running))
        self._kept.remember(outputs, set(running.node_ms) - set(running.cached), self._cache_key)
        return outputs, problems

    def _kept_for(self, running: Running) -> Callable[[str], Any]:
        """The kept files of a node this job got from ComfyUI's cache (None for one that ran)."""
        return lambda node_id: self._kept.files_of(self._cache_key(node_id)) if node_id in running.cached else None

    def _cache_key(self, node_id: str) -> Any:
        """The key ComfyUI's output cache holds ``node_id``'s result under, in the prompt it last
        set (None: not cached, or a cache that keeps nothing)."""
        cache = self._executor.caches.outputs
        key_set = getattr(cache, "cache_key_set", None) if getattr(cache, "initialized", False) else None
        if key_set is None:
            return None
        key = key_set.get_data_key(node_id)
        return key if key is not None and key in cache.cache else None


def _queue_item(number: int, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
                outputs: list) -> tuple[tuple, dict[str, Any]]:
    """The job as ComfyUI's queue holds it (``POST /prompt``'s item, which packs read in
    ``prompt_queue.currently_running``): ``(number, prompt_id, prompt, extra_data, outputs,
    sensitive)``, the sensitive keys (the Comfy.org key) out of item 3 into item 5, and
    ``create_time`` (milliseconds) in item 3; and the extra data the prompt runs with (both, as
    ComfyUI's worker merges them back)."""
    import execution

    public = dict(extra_data)
    sensitive = {key: public.pop(key) for key in execution.SENSITIVE_EXTRA_DATA_KEYS if key in public}
    public["create_time"] = int(time.time() * 1000)
    return (number, prompt_id, prompt, public, outputs, sensitive), {**public, **sensitive}


def _remove_entry(cache: Any, node_id: str) -> None:
    """Drop the entry of ``node_id`` (a node of the prompt itself, so at the top level of the cache:
    output nodes are never inside an expanded subgraph's sub-cache) from one of ComfyUI's caches:
    ``BasicCache`` and its subclasses keep entries in ``cache`` by the prompt's data key, LRU and
    RAM-pressure caches keep bookkeeping by the same key, ``NullCache`` keeps nothing."""
    if not getattr(cache, "initialized", False):
        return  # NullCache, or no prompt was ever set on it
    key = cache.cache_key_set.get_data_key(node_id)
    if key is None:
        return
    cache.cache.pop(key, None)
    for table in ("used_generation", "timestamps", "children"):
        getattr(cache, table, {}).pop(key, None)


def _on_prompt(job: Job, prompt: dict[str, Any], prompt_id: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """The custom nodes' on-prompt handlers (``PromptServer.instance.add_on_prompt_handler``: a
    wildcard pack rewriting the prompt, say), run as ComfyUI's ``POST /prompt`` runs them before it
    validates: on the request's JSON, each handler's answer given to the next, one that raises
    logged and skipped. Returns the prompt, output targets and extra data to go on with."""
    request = {"prompt": prompt, "client_id": job.client_id, "prompt_id": prompt_id,
               "extra_data": dict(job.extra_data)}
    if job.outputs is not None:
        request["partial_execution_targets"] = list(job.outputs)
    shim = _boot.shim()
    if not shim.on_prompt_handlers:
        return prompt, job.outputs, request["extra_data"]
    answer = shim.trigger_on_prompt(request)
    if not isinstance(answer, dict) or not isinstance(answer.get("prompt"), dict):
        raise ValidationError("No prompt provided", "no_prompt",
                              extra="a custom node's on-prompt handler left no prompt in the request")
    targets = answer.get("partial_execution_targets")
    return (answer["prompt"], None if targets is None else tuple(str(t) for t in targets),
            dict(answer.get("extra_data") or {}))


async def _import_used_packs(workflow: dict[str, Any]) -> None:
    """Import the files of ComfyUI's own packs that define the workflow's nodes, if not yet done
    (a class still unknown afterwards is unknown, as in an eager import)."""
    lazy = _boot.lazy_packs()
    if lazy is not None:
        await lazy.ensure(node.get("class_type") for node in workflow.values() if isinstance(node, dict))


def _make_folders(folders: dict[str, Path]) -> None:
    """A job's input, output and temp folders, under its own folder: one system call each, in the
    common case (each one costs, and more so while the event loop's thread wants the GIL)."""
    try:
        folders["input"].parent.mkdir()
        for folder in folders.values():
            folder.mkdir()
    except (FileExistsError, FileNotFoundError):  # a second validation of this prompt; the jobs folder gone
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)


def _set_aside(job_dir: Path, trash: Path) -> None:
    """Move an ended job's folder out of the jobs folder into ``trash`` (deleted by the
    ``TrashCan``'s thread), or delete it where it is when it cannot be moved."""
    try:
        try:
            job_dir.rename(trash / job_dir.name)
        except FileNotFoundError:
            if not job_dir.exists():
                return
            trash.mkdir(parents=True, exist_ok=True)
            job_dir.rename(trash / job_dir.name)
    except OSError:
        shutil.rmtree(job_dir, ignore_errors=True)


class TrashCan:
    """Deletes the folders of ended jobs (already out of ``jobs/``, in ``trash/``) in a thread of
    its own: a deletion is many system calls, each of which gives up the GIL, and under load each
    took it back late; on the runner's path that cost every job milliseconds. No job sees another's
    folder meanwhile: each job has its own, and an ended one is already moved aside."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def empty_soon(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="comfy-trash", daemon=True)
                self._thread.start()
        self._wake.set()

    def _main(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            _cleanup_step("delete the ended jobs' folders", _empty_trash, self.folder)


def _empty_trash(trash: Path) -> None:
    if trash.is_dir():
        for entry in trash.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _cleanup_step(what: str, step: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        step(*args, **kwargs)
    except Exception:  # noqa: BLE001 - clean-up goes on; the job's own answer stands
        log.exception("clean-up after a job: could not %s", what)


async def _cancel_leftover_tasks(before: set[asyncio.Task], grace: float) -> None:
    """Cancel the tasks a job's nodes started and left running, as ``asyncio.run`` does when a
    prompt ends in ComfyUI's own worker, and wait (at most ``grace`` s) until they are gone.
    Queued jobs and preflights are tasks too: they are left alone."""
    current = asyncio.current_task()
    ours = (ComfyRunner._run.__code__, ComfyRunner._check.__code__)  # queued jobs and preflights
    leftover = [t for t in asyncio.all_tasks() - before
                if t is not current and getattr(t.get_coro(), "cr_code", None) not in ours]
    if not leftover:
        return
    for task in leftover:
        task.cancel()
    _, pending = await asyncio.wait(leftover, timeout=grace)
    log.info("cancelled %d task(s) the job left running", len(leftover))
    if pending:
        log.warning("%d task(s) the job left running ignored their cancel", len(pending))


def _too_deep() -> ValidationError:
    return ValidationError("Prompt outputs failed validation", "invalid_prompt",
                           extra="The workflow is nested or chained too deeply for ComfyUI to process")


def _set_previews(args: Any, shim: Any, job: Job, default: Any) -> None:
    """Sampler previews for this job: ComfyUI's latent previewer (TAESD when a decoder is in
    ``vae_approx``, latent2rgb otherwise) and a client that reads preview metadata; else
    ``default``, the ``--preview-method`` of the arguments (none unless COMFY_ARGS says)."""
    import folder_paths
    from comfy.cli_args import LatentPreviewMethod

    if not job.previews:
        args.preview_method = default
        return
    args.preview_method = (LatentPreviewMethod.TAESD if folder_paths.get_filename_list("vae_approx")
                           else LatentPreviewMethod.Latent2RGB)
    shim.sockets_metadata[job.client_id] = {"feature_flags": {"supports_preview_metadata": True}}


def _point_folders(folder_paths, folders: dict[str, Path]) -> None:
    folder_paths.set_input_directory(str(folders["input"]))
    folder_paths.set_output_directory(str(folders["output"]))
    folder_paths.set_temp_directory(str(folders["temp"]))


def _read(folders: dict[str, Path], ftype: str, subfolder: str, filename: str) -> bytes:
    root = folders.get(ftype)
    if root is None:
        raise ValueError(f"unknown folder type {ftype!r}")
    root = root.resolve()
    path = (root / subfolder / filename).resolve()
    if root not in path.parents:
        raise ValueError("path escapes the job's folder")
    return path.read_bytes()


def _model_kinds():
    """Which model kind a model input's files are of (``preflight.model_kinds`` on ``folder_paths``)."""
    import folder_paths

    return preflight.model_kinds(lambda: {kind: (folder_paths.get_filename_list(kind), folder_paths.get_folder_paths(kind))
                                            for kind in folder_paths.folder_names_and_paths})


def _known_classes() -> list[str]:
    """Every registered node class (after a lookup of an unknown one, every pack's are imported)."""
    import nodes

    return list(dict.keys(nodes.NODE_CLASS_MAPPINGS))


def _combo_options(class_type: str, input_name: str) -> tuple[str, ...] | None:
    """The allowed values of a node's list input (for a model loader: the files of that kind)."""
    import nodes
    class_def = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    if class_def is None:
        return None
    try:
        return translate.options_from_input_spec(class_def.INPUT_TYPES(), input_name)
    except Exception:
        return None


def _file_inputs(class_type: str) -> frozenset[str]:
    """The inputs of a node class that pick a file of the input folder."""
    import nodes
    class_def = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    if class_def is None:
        return frozenset()
    try:
        return file_inputs(class_def.INPUT_TYPES())
    except Exception:
        return frozenset()


def _is_output_node(class_type: str) -> bool | None:
    """Whether a node class is an output node (None: no such class)."""
    import nodes
    class_def = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    return None if class_def is None else getattr(class_def, "OUTPUT_NODE", False) is True
