"""The messages between the pool and a device's child process (pickled over a pipe).

Owns the message types; each is small and carries our own types only (``Job``, ``Result``,
``Event``, ``Preflight`` and ``EmbeddedError``s, which pickle as their attributes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config
from ...job.types import BootInfo, Job


# --- to the child ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Boot:
    """The first message: the child's configuration (its device already pinned by its environment)
    and its device's label (``cuda:1``), which starts its log lines."""
    config: Config
    label: str = ""


@dataclass(frozen=True)
class Run:
    job: Job


@dataclass(frozen=True)
class Interrupt:
    job_id: str
    #: "interrupt", or "timeout": the pool times its jobs (the child then ends it with ``JobTimeout``)
    reason: str = "interrupt"


@dataclass(frozen=True)
class Check:
    ref: int
    job: Job


@dataclass(frozen=True)
class Close:
    pass


# --- from the child ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Booted:
    info: BootInfo


@dataclass(frozen=True)
class BootFailed:
    error: BaseException


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    event: Any


@dataclass(frozen=True)
class Done:
    job_id: str
    result: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Checked:
    ref: int
    preflight: Any = None
    error: BaseException | None = None
