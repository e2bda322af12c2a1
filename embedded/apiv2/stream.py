"""The event stream of a job (``GET /api/v2/jobs/{id}/events``, ``text/event-stream``).

Owns the stream: on connect the outputs stored so far and the ``status``, then ``status`` at each
transition, ``progress`` about twice a second while it changes, ``output`` as each output is
stored, always before the terminal ``status`` (then the stream ends), and a ``: keepalive``
comment every KEEPALIVE_S. Must not import the backends or ComfyUI.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from .keys import JOBS, base_url
from .wire import TERMINAL

KEEPALIVE_S = 15.0
PROGRESS_EVERY_S = 0.5


async def job_events(request: web.Request) -> web.StreamResponse:
    jobs = request.app[JOBS]
    job = jobs.get(request.match_info["job_id"])
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
            if time.monotonic() - last_write >= KEEPALIVE_S:
                await response.write(b": keepalive\n\n")
                last_write = time.monotonic()
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client left
    finally:
        job.listeners.discard(queue)
    return response
