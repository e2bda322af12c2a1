"""Custom-node packs that failed to import, and which of them a missing node type belongs to.

Owns: reading ComfyUI's "Cannot import <path> module for custom nodes: <error>" message (a log
record in-process, a log line of the server), and the hint a job gets when it uses a node type
that does not exist: the pack whose source names that type (or every failed pack, when none
does) and the reason it failed. Each failed pack is logged once, at boot, by the backend.

Must not import ComfyUI or the backends.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from ..job.types import FailedPack

_CANNOT_IMPORT = re.compile(r"Cannot import (?P<path>.+?) module for custom nodes: (?P<reason>.*)")
#: bounds on the source read to find which failed pack defines a node type
_MAX_FILES, _MAX_BYTES = 400, 2 << 20


def parse(message: str) -> FailedPack | None:
    """The failed pack a ComfyUI log message reports, if it reports one."""
    found = _CANNOT_IMPORT.search(message)
    if found is None:
        return None
    path = Path(found["path"].strip())
    return FailedPack(path.name, path, found["reason"].strip() or "unknown error")


def parse_lines(lines: Iterable[str]) -> tuple[FailedPack, ...]:
    """Every failed pack a log reports, once each."""
    packs: dict[Path, FailedPack] = {}
    for line in lines:
        pack = parse(line)
        if pack is not None:
            packs.setdefault(pack.path, pack)
    return tuple(packs.values())


def defines(pack: FailedPack, class_type: str) -> bool:
    """Whether the source of a failed ``pack`` names ``class_type`` (so it would have defined it)."""
    files = [pack.path] if pack.path.is_file() else sorted(pack.path.rglob("*.py"))[:_MAX_FILES]
    needles = (f'"{class_type}"', f"'{class_type}'", f"class {class_type}")
    for file in files:
        try:
            with open(file, encoding="utf-8", errors="replace") as fh:
                text = fh.read(_MAX_BYTES)
        except OSError:
            continue
        if any(n in text for n in needles):
            return True
    return False


def hint(class_type: str, failed: Iterable[FailedPack]) -> str:
    """What to tell a job that uses ``class_type``, which does not exist ("" when no pack failed)."""
    failed = list(failed)
    if not failed:
        return ""
    owners = [p for p in failed if defines(p, class_type)]
    if owners:
        return "; ".join(f"node pack '{p.name}', which defines it, failed to import at boot: {p.reason}"
                         for p in owners)
    return "node packs that failed to import at boot: " + "; ".join(f"'{p.name}' ({p.reason})" for p in failed)
