"""One pattern for the async streams (``Executor.astream``, the streaming RunPod worker): a job
that pushes items from any thread, read as they come, then its outcome; leaving early cancels it.

Owns ``pump``. Must not import ComfyUI or the backends.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable


@dataclass(frozen=True)
class Finished:
    """The last item ``pump`` yields: what the job returned (its error is raised instead)."""

    value: Any


#: marks the end of a job's items
_END = object()


async def pump(start: Callable[[Callable[[Any], None]], Awaitable[Any]]) -> AsyncIterator[Any]:
    """Run ``start(push)`` (``push`` may be called from any thread) and yield each item pushed,
    then ``Finished(its result)``. Closing the iterator early, or cancelling the task that reads
    it, cancels the job and waits for it to end."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()
    run = asyncio.ensure_future(start(lambda item: loop.call_soon_threadsafe(items.put_nowait, item)))
    run.add_done_callback(lambda _: items.put_nowait(_END))
    try:
        while (item := await items.get()) is not _END:
            yield item
        yield Finished(await run)
    finally:
        if not run.done():
            run.cancel()
            with contextlib.suppress(BaseException):
                await run


__all__ = ["Finished", "pump"]
