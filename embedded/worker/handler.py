"""The RunPod serverless worker's life and handler (``python -m embedded.handler``).

Owns: the worker's life (boot ComfyUI when the process starts, in a background thread while the
runpod SDK starts and answers; a job that arrives meanwhile waits for the boot; the warm-up
workflow's model files read ahead while ComfyUI imports, then the warm-up itself; a boot failure
reported on every job instead of a crash loop), the async handler
(parse the input, run the job in the executor's thread so that a RunPod cancel interrupts ComfyUI
and waits for it to stop, report progress, deliver the outputs, shape the response), when to ask
RunPod for a fresh worker (``refresh_worker``: ``REFRESH_WORKER``, a stopped job whose node never
returned, memory grown past ``MAX_RSS_GROWTH_PCT``), how many jobs it takes at once (the SDK's
concurrency: one per device of ``COMFY_DEVICES``, 0 while a node holds the process), and the entry point (``SERVE_API_LOCALLY``, the SDK's own
``--rp_*`` flags, ``test_input.json``, ``--require-gpu`` from the image's start script).

Talks to ComfyUI only through the public API (``Executor``).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, AsyncIterator, Callable

from . import diagnostics, readahead, request, response
from ..backends import nvidia_devices
from .. import logs
from ..api import Executor
from ..config import Config
from .delivery import Delivery, NotDelivered, RememberingDelivery
from ..job.errors import BootError, EmbeddedError, ExecutionError, JobInterrupted, WorkerStuck
from ..job.events import OutputEvent
from .recycling import RssWatch
from ..staging.stage import fetcher_for
from .reporting import ProgressReporter
from ..job.streams import Finished, pump

log = logging.getLogger("embedded.worker")


class Worker:
    """One worker process: a booted executor and the handler RunPod calls for each job."""

    def __init__(self, config: Config | None = None, executor: Executor | None = None, require_gpu: bool = False):
        config = config or Config.from_env()
        if config.disable_metadata is None:  # as worker-comfyui: no workflow in outputs unless asked
            config = dataclasses.replace(config, disable_metadata=True)
        self.config = config
        self.executor = executor or Executor(self.config)
        self.fetcher = fetcher_for(self.config)
        self.boot_error: BaseException | None = None
        self.memory = RssWatch(self.config.max_rss_growth_pct)
        #: grown past MAX_RSS_GROWTH_PCT: it asked to be replaced and takes no new job
        self.retiring = False
        #: exit at once when ComfyUI boots without a GPU (``--require-gpu``, the image's start script)
        self.require_gpu = require_gpu
        #: set once the backend started (or failed to); jobs wait for it, not for the warm-up
        self._started = threading.Event()
        self._started.set()
        #: jobs it takes at once: one per device (``COMFY_DEVICES``), known once the executor is prepared
        self.capacity = 1
        #: jobs being handled now (on the SDK's event loop)
        self._in_flight = 0
        #: with several devices, a job ended that asked for a fresh worker (``REFRESH_WORKER``, memory):
        #: no new job is taken, and the last one in flight asks RunPod to replace the worker
        self._draining = False
        #: what is given to ``runpod.serverless.start`` (the SDK reads its ``refresh_worker`` after each
        #: job of a generator handler: with several devices it is set once the last job in flight ends)
        self.sdk_config: dict[str, Any] = {}

    def start_boot(self) -> None:
        """``boot`` in a background thread; jobs wait for it (``handle``). What must happen on
        this thread (ComfyUI's arguments read from a swapped ``sys.argv``, which the runpod SDK
        reads when it starts) happens before this returns."""
        try:
            self.executor.prepare()
            self.capacity = self.executor.capacity
        except Exception as exc:  # BootError: every job reports it
            self._failed(exc)
            return
        self._started.clear()
        threading.Thread(target=self.boot, name="embedded-boot", daemon=True).start()

    def boot(self) -> None:
        """Boot ComfyUI and run the warm-up workflow; never raises (a failure is kept for every job)."""
        if self.config.network_volume_debug:
            try:
                diagnostics.log_report(self.config.network_volume)
            except Exception:  # noqa: BLE001 - a report, not a reason to fail jobs
                log.exception("worker: the network volume report failed")
        try:
            warmup = self._warmup_workflow()
            if warmup is not None:
                readahead.start(self.config, warmup)
            self.executor.start()
        except Exception as exc:  # BootError, or anything a broken install raises
            self._failed(exc)
            return
        finally:
            self._started.set()
        info = self.executor.boot_info
        log.info("worker: ComfyUI ready in %.1f s (%d node classes, %s)", info.seconds, info.node_classes,
                 "CPU" if info.cpu else "GPU")
        if self.require_gpu and info.cpu:  # CUDA unusable (a driver torch cannot use, say): as upstream
            log.error("worker: no usable CUDA GPU (torch.cuda.is_available() is false); exiting so that RunPod "
                      "replaces this worker (COMFY_FORCE_CPU=true runs on the CPU)")
            logging.shutdown()
            os._exit(1)
        self.warm_up()
        self.memory.set_baseline()

    def _failed(self, exc: Exception) -> None:
        self.boot_error = exc if isinstance(exc, BootError) else BootError(f"{type(exc).__name__}: {exc}")
        log.error("ComfyUI failed to start; every job will report it: %s", self.boot_error)

    def _warmup_workflow(self) -> Any:
        path = self.config.warmup_workflow
        if path is None:
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("worker: warm-up workflow %s is unreadable (not fatal): %s", path, exc)
            return None

    def warm_up(self) -> None:
        workflow = self._warmup_workflow()
        if workflow is None:
            return
        path = self.config.warmup_workflow
        # once per device: with several, the jobs go one to each idle device's process
        runs = [self.executor.submit(workflow, timeout=self.config.job_timeout) for _ in range(self.capacity)]
        for run in runs:
            try:
                result = run.result()
                log.info("worker: warm-up workflow %s ran in %.2f s", path, result.timings.total)
            except Exception as exc:  # noqa: BLE001 - an EmbeddedError, or a bug: the worker serves jobs anyway
                log.warning("worker: warm-up workflow %s failed (not fatal): %s", path, exc)

    async def handle(self, job: dict[str, Any], forward: Callable[[Any], None] | None = None,
                     delivery: type[Delivery] = Delivery) -> dict[str, Any]:
        """The RunPod handler: one job in, worker-comfyui's response out. Never raises but for a
        cancel (``asyncio.CancelledError``), which interrupts the running ComfyUI job and waits
        for it to stop; a job whose node does not stop is answered, with ``refresh_worker``.
        ``forward`` (``stream``) receives progress reports and ``OutputEvent``s as they come;
        ``delivery`` is the kind of the job's ``Delivery``. A job that arrives while ComfyUI boots
        waits for it to start (not for the warm-up: it queues behind it)."""
        if not self._started.is_set():
            try:  # a request that cannot run is answered now, not after the boot
                request.parse(job.get("input"), self.config.input_limits)
            except (request.RequestError, EmbeddedError) as exc:
                return response.failure(exc)
            await asyncio.to_thread(self._started.wait, self.config.server_start_timeout_s)
            if not self._started.is_set():
                body = response.failure(BootError(f"ComfyUI did not start within "
                                                  f"{self.config.server_start_timeout_s:g} s "
                                                  f"(COMFY_SERVER_START_TIMEOUT_S)"))
                return {**body, "refresh_worker": True}
        self._in_flight += 1
        try:
            result = await self._handle(job, forward, delivery)
        except asyncio.CancelledError:
            self._in_flight -= 1
            if self._draining and self._others_in_flight() == 0:  # no job is left to ask for the fresh
                self._draining = self.retiring = False           # worker: take jobs again, the next asks
            raise
        self._in_flight -= 1
        if not self.retiring and self.memory.exceeded():
            self.retiring = True
        refresh = self.config.refresh_worker or self.retiring
        if self.capacity > 1 and refresh:  # the jobs still running on the other devices end first
            self._draining = True
            refresh = self._others_in_flight() == 0
        if refresh or self.executor.stuck:
            result["refresh_worker"] = True
        return result

    def _others_in_flight(self) -> int:
        """This worker's jobs besides the one ending: handled now, or taken by the SDK and not handed
        over yet (its job-take may have been under way as the others ended)."""
        count = self._in_flight
        try:
            from runpod.serverless.modules.worker_state import JobsProgress

            count = max(count, JobsProgress().get_job_count() - 1)  # the SDK counts the ending job too
        except Exception:  # noqa: BLE001 - an SDK without it: our own count
            pass
        return count

    def concurrency(self, current: int) -> int:
        """The SDK's ``concurrency_modifier``: one job per device; none while a stopped job's node
        holds the process, nor once the worker asked to be replaced for its memory (a streaming worker
        cannot send ``refresh_worker``: the SDK reads it from plain handlers only), nor, with several
        devices, once a job ended that asks for a fresh worker (``REFRESH_WORKER``)."""
        if self.executor.stuck or self.retiring or self._draining:
            return 0
        return self.capacity

    async def stream(self, job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The generator handler (``STREAM_OUTPUTS=true``): ``{"type": "progress", ...}`` items,
        ``{"type": "download", ...}`` items while its files are fetched, one ``{"type": "output",
        "key", "output"}`` item per output as soon as its node finished
        (``output`` as the response lists it under ``key``, with ``node_id`` and ``mime_type``:
        base64 or the S3 URL; temp outputs skipped), and last ``{"type": "result", ...}`` holding
        the same dict ``handle`` returns (an output is uploaded once)."""
        job_id = str(job.get("id") or "")
        made: list[Delivery] = []  # the job's delivery, made once its request is read

        class Remembered(RememberingDelivery):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        async for item in pump(lambda forward: self.handle(job, forward=forward, delivery=Remembered)):
            if isinstance(item, Finished):
                if item.value.get("refresh_worker") and self.capacity > 1:
                    self.sdk_config["refresh_worker"] = True  # the SDK reads it as this generator ends
                yield {"type": "result", **item.value}
            elif isinstance(item, OutputEvent):
                if item.output.type == "temp":
                    continue
                errors: list[str] = []
                try:
                    sent = await asyncio.to_thread(response.output_item, job_id, item.output, made[0], errors)
                except NotDelivered:
                    continue  # too large to send inline: the result says so
                yield {"type": "output", "key": sent.pop("key"), "output": sent,
                       **({"errors": errors} if errors else {})}
            elif "preview" in item:
                yield {"type": "preview", "node_id": item["node_id"], "image": item["preview"]}
            elif "download" in item:
                yield {"type": "download", **item["download"]}
            else:
                yield {"type": "progress", **item}

    async def _handle(self, job: dict[str, Any], forward: Callable[[Any], None] | None,
                      delivery_kind: type[Delivery]) -> dict[str, Any]:
        job_id = str(job.get("id") or "")
        if self.boot_error is not None:
            return response.failure(self.boot_error)
        try:
            req = request.parse(job.get("input"), self.config.input_limits)
            delivery = delivery_kind(self.config.s3_enabled, req.s3, self.fetcher, self.config.output_max_inline_bytes,
                                     self.config.upload_deadline_s, prefix=self.config.bucket_prefix)
            extra = {}
            key = req.comfy_org_api_key or self.config.comfy_org_api_key
            if key:
                extra["api_key_comfy_org"] = key
            if req.dry_run:  # a preflight: nothing runs, nothing is fetched
                return (await asyncio.to_thread(self.executor.check, req.workflow, files=req.images,
                                                models=req.models, outputs=req.outputs)).to_dict()
            reporter = ProgressReporter(req.workflow, forward or _progress_sender(job))

            def on_event(ev) -> None:
                reporter(ev)
                if forward is not None and isinstance(ev, OutputEvent):
                    forward(ev)

            result = await self.executor.run_async(req.workflow, files=req.images, models=req.models,
                                                   s3=req.s3, on_event=on_event,
                                                   timeout=self.config.job_timeout, job_id=job_id or None,
                                                   extra_data=extra, unload_models=req.unload_models,
                                                   free_memory=req.free_memory, stream_outputs=forward is not None,
                                                   previews=req.previews, outputs=req.outputs)
        except ExecutionError as exc:
            log.warning("job %s failed: %s", job_id, exc)
            return await asyncio.to_thread(response.execution_failure, job_id, exc, delivery)
        except (request.RequestError, EmbeddedError) as exc:
            log.warning("job %s failed: %s", job_id, " ".join(str(exc).split()))
            body = response.failure(exc)
            if isinstance(exc, WorkerStuck) or (isinstance(exc, JobInterrupted) and exc.refresh_worker):
                body["refresh_worker"] = True  # a node holds this process: RunPod must replace it
            return body
        except Exception as exc:  # a bug of ours: the worker must stay up for the next job
            log.exception("job %s failed unexpectedly", job_id)
            return response.failure(exc)
        # S3 uploads block: keep the SDK's event loop (heartbeats, stop signals) free.
        return await asyncio.to_thread(response.success, result, delivery, req.timings)


def _progress_sender(job: dict[str, Any]):
    """``progress_update`` for this job, or nothing where there is no RunPod endpoint to send to
    (locally the SDK would only log an error per update)."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return lambda data: None
    from runpod.serverless import progress_update

    return lambda data: progress_update(job, data)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _local_api_args(argv: list[str], serve_locally: bool) -> list[str]:
    """``SERVE_API_LOCALLY=true`` serves the SDK's local API on 0.0.0.0, as worker-comfyui does."""
    if not serve_locally or "--rp_serve_api" in argv:
        return argv
    extra = ["--rp_serve_api"]
    if not any(a == "--rp_api_host" or a.startswith("--rp_api_host=") for a in argv):
        extra += ["--rp_api_host", "0.0.0.0"]
    return argv + extra


def main() -> None:
    # The SDK logs whole job inputs (API keys included) and outputs at DEBUG: INFO unless asked.
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    os.environ.setdefault("COMFY_LOG_LEVEL", "DEBUG")  # the worker's default, as worker-comfyui's
    config = Config.from_env()
    logs.setup(config.log_level)
    # --require-gpu (the image's start script): as worker-comfyui's image, a worker without a usable
    # GPU exits at once so that RunPod replaces it: no NVIDIA device now, or CUDA unusable to torch
    # once ComfyUI booted (Worker.boot); COMFY_FORCE_CPU=true runs on the CPU instead.
    require_gpu = "--require-gpu" in sys.argv and not config.force_cpu
    if require_gpu and not nvidia_devices():
        print("worker: no usable CUDA GPU (no NVIDIA device in this container); set COMFY_FORCE_CPU=true to run "
              "on the CPU", file=sys.stderr)
        raise SystemExit(1)
    argv = [a for a in sys.argv if a != "--require-gpu"]
    sys.argv = _local_api_args(argv, config.serve_api_locally)
    worker = Worker(config, require_gpu=require_gpu)
    # RunPod (or anyone) stops the worker with SIGTERM: leave through Python, so that the executor
    # closes (in server mode that stops ComfyUI's server, which runs in its own session).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    atexit.register(worker.executor.close)
    worker.start_boot()  # the SDK starts (and answers health checks) while ComfyUI boots
    import runpod

    if config.stream_outputs:  # /runsync answers the list of items; /stream/<id> shows them as they come
        # with several devices, REFRESH_WORKER is set here once the last job in flight ends (``stream``)
        worker.sdk_config.update({"handler": worker.stream, "return_aggregate_stream": True,
                                  "refresh_worker": config.refresh_worker and worker.capacity == 1,
                                  "concurrency_modifier": worker.concurrency})
    else:
        worker.sdk_config.update({"handler": worker.handle, "concurrency_modifier": worker.concurrency})
    runpod.serverless.start(worker.sdk_config)


if __name__ == "__main__":
    main()
