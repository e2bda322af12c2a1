"""What ``COMFY_DEVICES`` names: the devices, and the environment that pins a child to one.

Owns: ``Device`` (one CUDA device or one CPU executor), ``resolve`` (``all`` counted without
importing torch: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``, else the GPU nodes under
``/dev``) and ``child_env`` (``CUDA_VISIBLE_DEVICES`` set to the one device, before torch loads in
the child; a CPU executor sees no GPU and runs with ``--cpu``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Device:
    #: "cuda" or "cpu"
    kind: str
    #: the CUDA index among this process's visible devices, or the CPU executor's slot (0, 1...)
    index: int

    @property
    def label(self) -> str:
        """``cuda:1``, ``cpu:0``: how errors, logs and health name it."""
        return f"{self.kind}:{self.index}"


def resolve(entries: tuple[str, ...], env: Mapping[str, str] | None = None, dev: Path = Path("/dev")) -> list[Device]:
    """The devices ``entries`` (``Config.devices``) name; ``all`` is every visible CUDA device (a
    ``ValueError`` when there is none)."""
    env = os.environ if env is None else env
    if entries == ("all",):
        count = visible_cuda_count(env, dev)
        if count == 0:
            raise ValueError("COMFY_DEVICES=all: this machine shows no CUDA device (set COMFY_DEVICES=cpu,cpu to "
                             "run several CPU executors, or leave it unset)")
        return [Device("cuda", i) for i in range(count)]
    devices, cpu_slots = [], 0
    for entry in entries:
        if entry == "cpu":
            devices.append(Device("cpu", cpu_slots))
            cpu_slots += 1
        else:
            devices.append(Device("cuda", int(entry)))
    return devices


def _visible(value: str) -> list[str]:
    """The devices ``CUDA_VISIBLE_DEVICES`` shows: its entries up to the first invalid one (CUDA's rule)."""
    shown = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        shown.append(entry)
    return shown


def visible_cuda_count(env: Mapping[str, str], dev: Path = Path("/dev")) -> int:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len(_visible(visible))
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
            return sum(1 for line in listing.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            pass
    return sum(1 for p in dev.glob("nvidia[0-9]*") if p.name[len("nvidia"):].isdigit())


def child_env(device: Device, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of ``device``'s child: ``env`` with ``CUDA_VISIBLE_DEVICES`` naming that one
    device (mapped through the parent's own ``CUDA_VISIBLE_DEVICES``), or none for a CPU executor."""
    out = dict(env)
    out.pop("COMFY_DEVICES", None)  # the child is one executor
    if device.kind == "cpu":
        out["CUDA_VISIBLE_DEVICES"] = ""
        return out
    visible = _visible(env.get("CUDA_VISIBLE_DEVICES", ""))
    if "CUDA_VISIBLE_DEVICES" in env:
        if device.index >= len(visible):
            raise ValueError(f"COMFY_DEVICES names CUDA device {device.index}, but CUDA_VISIBLE_DEVICES="
                             f"{env['CUDA_VISIBLE_DEVICES']!r} shows {len(visible)}")
        out["CUDA_VISIBLE_DEVICES"] = visible[device.index]
    else:
        out["CUDA_VISIBLE_DEVICES"] = str(device.index)
    return out
