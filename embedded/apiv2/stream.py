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
#: a client that takes nothing of a write for this long is taken to be gone
WRITE_TIMEOUT_S = 30.0


@dataclass
class Streams:
    """The live event streams of the server, at most ``limit`` at once (SERVE_MAX_STREAMS): past it
    429 ``too_many_streams`` (a client polls ``GET /jobs/{id}`` instead, as comfy-sdk does)."""

    limit: int
    open: int = 0


STREAMS = web.AppKey("streams", Streams)


async def job_events(request: web.Request) -> web.StreamResponse:
    jobs = request.app[JOBS]
    job = await jobs.find(request.match_info["job_id"])
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
            if event == "output":
                if data["id"] in sent_outputs:
                    return
                sent_outputs.add(data["id"])
                if data["url"].startswith("/"):  # served here (not a bucket's presigned URL)
                    data = {**data, "url": base + data["url"]}
            await write(f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())

        async def write(chunk: bytes) -> None:
            """A client that reads nothing for WRITE_TIMEOUT_S is gone: its place is freed."""
            nonlocal last_write
            async with asyncio.timeout(WRITE_TIMEOUT_S):  # a context, not a task: cheap per write
                await response.write(chunk)
            last_write = time.monotonic()

        terminal = job.terminal
        for asset in list(job.outputs):  # the outputs so far, then the live ones
            await send("output", asset.output_json(""))
        await send("status", {"status": job.status, "queue_position": await jobs.position(job)})
        if terminal:
            return response
        sent_version = -1
        if job.progress() is not None:
            await send("progress", job.progress())
            sent_version = job.progress_version
        sent_preview = job.preview_version
        if job.preview is not None:  # the latest, as soon as a client connects
            await send("preview", job.preview)
        while True:
            try:  # (not wait_for: on Python 3.11 it swallows a cancel that comes as an event arrives)
                async with asyncio.timeout(PROGRESS_EVERY_S):
                    event, data = await queue.get()
            except TimeoutError:
                event = data = None
            if event == "status" and data["status"] in TERMINAL:
                await send(event, data)
                break
            if event is None and job.terminal:  # never left open, whatever was published
                await send("status", {"status": job.status, "queue_position": None})
                break
            if event not in (None, "preview"):
                await send(event, data)
            if job.preview_version != sent_preview and job.preview is not None:  # the latest, never a backlog
                await send("preview", job.preview)
                sent_preview = job.preview_version
            if job.progress_version != sent_version and job.progress() is not None:
                await send("progress", job.progress())
                sent_version = job.progress_version
            if request.transport is None or request.transport.is_closing():
                break  # the client left (aiohttp does not cancel a handler whose client went)
            if time.monotonic() - last_write >= KEEPALIVE_S:
                await write(b": keepalive\n\n")
    except (ConnectionResetError, asyncio.CancelledError, asyncio.TimeoutError):
        pass  # the client left, or reads nothing
    finally:
        job.listeners.discard(queue)
    return response
