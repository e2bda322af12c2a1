"""The RunPod serverless worker's life and handler (``python -m embedded.handler``).

Owns: the worker's life (boot ComfyUI when the process starts, before the first job; an optional
warm-up workflow; a boot failure reported on every job instead of a crash loop), the async handler
(parse the input, run the job in the executor's thread so that a RunPod cancel interrupts ComfyUI
and waits for it to stop, report progress, deliver the outputs, shape the response), when to ask
RunPod for a fresh worker (``refresh_worker``: ``REFRESH_WORKER``, a stopped job whose node never
returned, memory grown past ``MAX_RSS_GROWTH_PCT``), taking no job while a node holds the process
(the SDK's concurrency is 0 then), and the entry point (``SERVE_API_LOCALLY``, the SDK's own
``--rp_*`` flags, ``test_input.json``).

Talks to ComfyUI only through the public API (``Executor``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from typing import Any

from . import diagnostics, request, response
from .. import logs
from ..api import Executor
from ..config import Config
from .delivery import Delivery
from ..errors import BootError, EmbeddedError, ExecutionError, JobInterrupted, WorkerStuck
from .recycling import RssWatch
from .reporting import ProgressReporter

log = logging.getLogger("embedded.worker")


class Worker:
    """One worker process: a booted executor and the handler RunPod calls for each job."""

    def __init__(self, config: Config | None = None, executor: Executor | None = None):
        config = config or Config.from_env()
        if config.disable_metadata is None:  # as worker-comfyui: no workflow in outputs unless asked
            config = dataclasses.replace(config, disable_metadata=True)
        self.config = config
        self.executor = executor or Executor(self.config)
        self.delivery = Delivery(self.config.s3_enabled)
        self.boot_error: BaseException | None = None
        self.memory = RssWatch(self.config.max_rss_growth_pct)

    def boot(self) -> None:
        """Boot ComfyUI and run the warm-up workflow; never raises (a failure is kept for every job)."""
        if self.config.network_volume_debug:
            diagnostics.log_report(self.config.network_volume)
        try:
            self.executor.start()
        except Exception as exc:  # BootError, or anything a broken install raises
            self.boot_error = exc if isinstance(exc, BootError) else BootError(f"{type(exc).__name__}: {exc}")
            log.error("ComfyUI failed to start; every job will report it: %s", self.boot_error)
            return
        info = self.executor.boot_info
        log.info("worker: ComfyUI ready in %.1f s (%d node classes, %s)", info.seconds, info.node_classes,
                 "CPU" if info.cpu else "GPU")
        self.warm_up()
        self.memory.set_baseline()

    def warm_up(self) -> None:
        path = self.config.warmup_workflow
        if path is None:
            return
        try:
            workflow = json.loads(path.read_text())
            result = self.executor.run(workflow, timeout=self.config.job_timeout)
            log.info("worker: warm-up workflow %s ran in %.2f s", path, result.timings.total)
        except (OSError, ValueError, EmbeddedError) as exc:
            log.warning("worker: warm-up workflow %s failed (not fatal): %s", path, exc)

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        """The RunPod handler: one job in, worker-comfyui's response out. Never raises but for a
        cancel (``asyncio.CancelledError``), which interrupts the running ComfyUI job and waits
        for it to stop; a job whose node does not stop is answered, with ``refresh_worker``."""
        result = await self._handle(job)
        if self.config.refresh_worker or self.executor.stuck or self.memory.exceeded():
            result["refresh_worker"] = True
        return result

    def concurrency(self, current: int) -> int:
        """The SDK's ``concurrency_modifier``: no job while a stopped job's node holds the process."""
        return 0 if self.executor.stuck else 1

    async def _handle(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = str(job.get("id") or "")
        if self.boot_error is not None:
            return response.failure(self.boot_error)
        try:
            req = request.parse(job.get("input"), self.config.input_limits)
            extra = {}
            key = req.comfy_org_api_key or self.config.comfy_org_api_key
            if key:
                extra["api_key_comfy_org"] = key
            if req.dry_run:  # a preflight: nothing runs
                return (await asyncio.to_thread(self.executor.check, req.workflow, req.images)).to_dict()
            reporter = ProgressReporter(req.workflow, _progress_sender(job))
            result = await self.executor.run_async(req.workflow, req.images, on_event=reporter,
                                                   timeout=self.config.job_timeout, job_id=job_id or None,
                                                   extra_data=extra, unload_models=req.unload_models,
                                                   free_memory=req.free_memory)
        except ExecutionError as exc:
            log.warning("job %s failed: %s", job_id, exc)
            return await asyncio.to_thread(response.execution_failure, job_id, exc, self.delivery)
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
        return await asyncio.to_thread(response.success, result, self.delivery, req.timings)


def _progress_sender(job: dict[str, Any]):
    """``progress_update`` for this job, or nothing where there is no RunPod endpoint to send to
    (locally the SDK would only log an error per update)."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return lambda data: None
    from runpod.serverless import progress_update

    return lambda data: progress_update(job, data)


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
    config = Config.from_env()
    logs.setup(config.log_level)
    sys.argv = _local_api_args(sys.argv, config.serve_api_locally)
    worker = Worker(config)
    worker.boot()
    import runpod

    runpod.serverless.start({"handler": worker.handle, "concurrency_modifier": worker.concurrency})


if __name__ == "__main__":
    main()
