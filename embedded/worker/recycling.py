"""Leak-aware recycling: ask RunPod for a fresh worker once this one has grown too much.

Owns: measuring the resident memory of the worker's process tree (this process and its children:
ComfyUI's server in server mode) from ``/proc``, the baseline taken after boot and warm-up, and
the decision ``MAX_RSS_GROWTH_PCT`` asks for. Off where ``/proc`` is missing (not Linux).

Must not import ComfyUI, the backends or RunPod.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("embedded.worker")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss(pid: int, proc: Path) -> int:
    try:
        return int((proc / str(pid) / "statm").read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _children(proc: Path) -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:  # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_rss(pid: int | None = None, proc: Path = Path("/proc")) -> int | None:
    """Resident bytes of ``pid`` (default: this process) and all its descendants; None without /proc."""
    if not (proc / "self" / "statm").is_file():
        return None
    root = os.getpid() if pid is None else pid
    children = _children(proc)
    total, todo, seen = 0, [root], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _rss(current, proc)
        todo.extend(children.get(current, ()))
    return total


class RssWatch:
    """``exceeded()`` says whether the tree grew more than ``max_growth_pct`` over its baseline."""

    def __init__(self, max_growth_pct: float | None):
        self.max_growth_pct = max_growth_pct
        self.baseline: int | None = None

    def set_baseline(self) -> None:
        if self.max_growth_pct is None:
            return
        self.baseline = tree_rss()
        if self.baseline is None:
            log.warning("worker: MAX_RSS_GROWTH_PCT is set, but this system has no /proc to measure memory with")
        else:
            log.info("worker: memory after boot and warm-up %.0f MiB; a worker above %.0f MiB asks to be replaced",
                     self.baseline / 2 ** 20, self.limit / 2 ** 20)

    @property
    def limit(self) -> float:
        return (self.baseline or 0) * (1 + (self.max_growth_pct or 0) / 100)

    def exceeded(self) -> bool:
        if self.max_growth_pct is None or not self.baseline:
            return False
        now = tree_rss()
        if now is None or now <= self.limit:
            return False
        log.warning("worker: memory grew from %.0f MiB to %.0f MiB (more than MAX_RSS_GROWTH_PCT=%g %%); "
                    "asking RunPod for a fresh worker", self.baseline / 2 ** 20, now / 2 ** 20, self.max_growth_pct)
        return True
