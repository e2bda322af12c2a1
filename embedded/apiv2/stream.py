"""The event stream of a job (``GET /api/v2/jobs/{id}/events``, ``text/event-stream``).

Owns the stream: on connect the outputs stored so far, the ``status``, the progress and the latest
``preview``; then ``status`` at each transition, ``progress`` about twice a second while it
changes, ``preview`` as the executor makes them (a JPEG, at most PREVIEWS_PER_SECOND), ``output``
as each output is stored, always before the terminal ``status`` (then the stream ends), and a
``: keepalive`` comment every KEEPALIVE_S. Live streams are bounded (``Streams``). Must not import the backends or ComfyUI.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .keys import JOBS, base_url
from .wire import TERMINAL, ApiError

KEEPALIVE_S = 15.0
PROGRESS_EVERY_S = 0.5


@dataclass
class Streams:
    """The live event streams of the server, at most ``limit`` at once (SERVE_MAX_STREAMS): past it
    429 ``too_many_streams`` (a client polls ``GET /jobs/{id}`` instead, as comfy-sdk does)."""

    limit: int
    open: int = 0


STREAMS = web.AppKey("streams", Streams)


async def job_events(request: web.Request) -> web.StreamResponse:
    jobs = request.app[JOBS]
    job = jobs.get(request.match_info["job_id"])
    streams = request.app[STREAMS]
    if streams.open >= streams.limit:
        raise ApiError(429, "too_many_streams", f"{streams.open} event streams are open, this server's bound "
                                                "(SERVE_MAX_STREAMS): poll GET /api/v2/jobs/{id} instead",
                       headers={"Retry-After": "5"})
    streams.open += 1
    try:
        return await _stream(request, jobs, job)
    finally:
        streams.open -= 1


async def _stream(request: web.Request, jobs, job) -> web.StreamResponse:
    base = base_url(request)
    queue: asyncio.Queue = asyncio.Queue()
    job.listeners.add(queue)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        last_write = time.monotonic()

        sent_outputs: set[str] = set()

        async def send(event: str, data: dict[str, Any]) -> None:
            nonlocal last_write
            if event == "output":
                if data["id"] in sent_outputs:
                    return
                sent_outputs.add(data["id"])
                if data["url"].startswith("/"):  # served here (not a bucket's presigned URL)
                    data = {**data, "url": base + data["url"]}
            await response.write(f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())
            last_write = time.monotonic()

        terminal = job.terminal
        for asset in list(job.outputs):  # the outputs so far, then the live ones
            await send("output", asset.output_json(""))
        await send("status", {"status": job.status, "queue_position": jobs.queue_position(job)})
        if terminal:
            return response
        sent_version = -1
        if job.progress() is not None:
            await send("progress", job.progress())
            sent_version = job.progress_version
        if job.preview is not None:  # the latest, as soon as a client connects
            await send("preview", job.preview)
        while True:
            try:
                event, data = await asyncio.wait_for(queue.get(), timeout=PROGRESS_EVERY_S)
            except asyncio.TimeoutError:
                event = data = None
            if event == "status" and data["status"] in TERMINAL:
                await send(event, data)
                break
            if event is not None:
                await send(event, data)
            if job.progress_version != sent_version and job.progress() is not None:
                await send("progress", job.progress())
                sent_version = job.progress_version
            if request.transport is None or request.transport.is_closing():
                break  # the client left (aiohttp does not cancel a handler whose client went)
            if time.monotonic() - last_write >= KEEPALIVE_S:
                await response.write(b": keepalive\n\n")
                last_write = time.monotonic()
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client left
    finally:
        job.listeners.discard(queue)
    return response
