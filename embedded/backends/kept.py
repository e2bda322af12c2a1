"""The files of output nodes whose results ComfyUI still caches, so that a cache hit still has them.

Owns: ``KeptOutputs``. ComfyUI serves an output node of an identical job from its cache: the node
does not run again, and its UI output (what ``/history`` lists) names the files it wrote when it
ran. This package removes each job's folders after the job, so those files would be gone; ComfyUI's
own server keeps them in its output folder. Here the bytes of what an output node wrote are kept,
under the node's cache key (given by the backend: ComfyUI's input-signature key in-process, an id of
that key from the server's process in server mode), for as long as ComfyUI's cache holds that
key: a cached node's outputs come back with their bytes, and nothing is kept for a result ComfyUI
has dropped (``retain`` after every job). Memory: what the cache keeps alive anyway holds the
images these files were made from.

Jobs stay apart: a job gets another job's files only where ComfyUI itself served that job's node
from its cache, that is for a node whose class, inputs and ``IS_CHANGED`` value are the same.

Must not import ComfyUI or the backends.
"""

from __future__ import annotations

import threading
from typing import Callable, Hashable, Iterable, Mapping

from ..job.types import Output

#: (folder type, subfolder, filename) of a file an output node wrote
FileKey = tuple[str, str, str]


class KeptOutputs:
    def __init__(self) -> None:
        self._files: dict[Hashable, dict[FileKey, bytes]] = {}
        self._lock = threading.Lock()

    def remember(self, outputs: Iterable[Output], ran: Iterable[str],
                 key_of: Callable[[str], Hashable | None]) -> None:
        """Keep the files of the output nodes in ``ran`` (they ran in this job: not cache hits),
        under their cache key (``None``: not cached, nothing kept)."""
        ran = set(ran)
        found: dict[Hashable, dict[FileKey, bytes]] = {}
        for out in outputs:
            if out.node_id not in ran or out.key == "text":  # text lives in the UI output itself
                continue
            key = key_of(out.node_id)
            if key is not None:
                found.setdefault(key, {})[(out.type, out.subfolder, out.filename)] = out.data
        with self._lock:
            self._files.update(found)

    def files_of(self, key: Hashable | None) -> Mapping[FileKey, bytes] | None:
        """The files kept for a cache key, or None."""
        if key is None:
            return None
        with self._lock:
            return self._files.get(key)

    def retain(self, alive: Callable[[Hashable], bool]) -> None:
        """Forget the files of every key ComfyUI's cache no longer holds."""
        with self._lock:
            for key in [k for k in self._files if not alive(k)]:
                del self._files[key]

    def clear(self) -> None:
        with self._lock:
            self._files.clear()

    def __len__(self) -> int:
        return len(self._files)


__all__ = ["KeptOutputs"]
