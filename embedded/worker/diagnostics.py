"""``NETWORK_VOLUME_DEBUG=true``: a boot-time report of the network volume, as worker-comfyui's
network_volume.py prints one: is the volume mounted, the model folders and files found per kind,
and the usual mistakes (models under ``<volume>/ComfyUI/models`` or ``<volume>/comfyui/models``,
folders whose names are not ComfyUI's, files with extensions ComfyUI ignores).

Only names and sizes are logged: never file contents, never the environment. Must not import
ComfyUI or the backends.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

from ..staging.modelcache import MODEL_FOLDERS

log = logging.getLogger("embedded.worker.volume")

#: what ComfyUI's loaders list (folder_paths.supported_pt_extensions)
MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf"}
KNOWN_FOLDERS = sorted({sub for subs in MODEL_FOLDERS.values() for sub in subs})


def report(volume: Path) -> list[str]:
    """The report's lines for the volume mounted at ``volume``."""
    lines = [f"network volume diagnostics (NETWORK_VOLUME_DEBUG=true) for {volume}"]
    if not volume.is_dir():
        return lines + [f"  not mounted: {volume} does not exist; attach a network volume to the endpoint"]
    for nested in ("ComfyUI/models", "comfyui/models"):
        if (volume / nested).is_dir():
            lines.append(f"  mistake: models found under {volume / nested}; the worker reads {volume / 'models'}")
    models = volume / "models"
    if not models.is_dir():
        return lines + [f"  no {models} folder: put model files under {models}/<kind>/ (checkpoints, loras, vae...)"]
    found = 0
    for folder in sorted(p for p in models.iterdir() if p.is_dir()):
        if folder.name not in KNOWN_FOLDERS:
            close = difflib.get_close_matches(folder.name, KNOWN_FOLDERS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"  mistake: models/{folder.name}/ is not a ComfyUI model folder{hint}")
            continue
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        lines.append(f"  models/{folder.name}/: {len(files)} file(s)")
        for file in files:
            size = file.stat().st_size / 2**20
            ignored = "" if file.suffix.lower() in MODEL_EXTENSIONS else " (ignored: not a model file extension)"
            found += not ignored
            lines.append(f"    {file.relative_to(folder)} ({size:.1f} MiB){ignored}")
    lines.append(f"  {found} model file(s) found" if found else "  no model files found on the volume")
    return lines


def log_report(volume: Path) -> None:
    for line in report(volume):
        log.info(line)
