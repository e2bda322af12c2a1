"""Every environment variable of this package, parsed once into one typed object.

Owns: names, defaults and meaning of the configuration (README's table mirrors this file), and the
folders derived from them.

Must not import ComfyUI or any other module of this package.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _path(value: str | None, default: Path) -> Path:
    return Path(value).expanduser().resolve() if value else default


@dataclass(frozen=True)
class Config:
    #: ComfyUI tree (COMFYUI_PATH; default: the pinned tree in vendor/ComfyUI)
    comfyui_path: Path = REPO_ROOT / "vendor" / "ComfyUI"
    #: our work folder (COMFY_WORK_DIR): per-job folders, temp, idle input/output
    work_dir: Path = REPO_ROOT / "work"
    #: model folders root (COMFY_MODELS_DIR; default <work_dir>/models), one sub-folder per kind
    models_dir: Path | None = None
    #: ComfyUI's user folder (COMFY_USER_DIR; default <work_dir>/user)
    user_dir: Path | None = None
    #: a ComfyUI-format extra_model_paths.yaml (COMFY_EXTRA_MODEL_PATHS): model folders, custom_nodes
    extra_model_paths: tuple[Path, ...] = ()
    #: ComfyUI's log level (COMFY_LOG_LEVEL)
    log_level: str = "DEBUG"
    #: log every websocket-compat frame (WEBSOCKET_TRACE)
    websocket_trace: bool = False
    #: True: --cpu; False: never; None: when CUDA is absent (COMFY_FORCE_CPU)
    force_cpu: bool | None = None
    #: write the workflow into PNG metadata, as ComfyUI does by default (COMFY_DISABLE_METADATA)
    disable_metadata: bool = False
    #: more ComfyUI arguments, e.g. "--highvram --fast" (COMFY_ARGS)
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Config":
        env = os.environ if env is None else env
        work = _path(env.get("COMFY_WORK_DIR"), REPO_ROOT / "work")
        level = (env.get("COMFY_LOG_LEVEL") or "DEBUG").strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"COMFY_LOG_LEVEL={level!r}: expected one of {', '.join(LOG_LEVELS)}")
        cpu = env.get("COMFY_FORCE_CPU")
        extra = env.get("COMFY_EXTRA_MODEL_PATHS") or ""
        return cls(
            comfyui_path=_path(env.get("COMFYUI_PATH"), REPO_ROOT / "vendor" / "ComfyUI"),
            work_dir=work,
            models_dir=_path(env.get("COMFY_MODELS_DIR"), work / "models"),
            user_dir=_path(env.get("COMFY_USER_DIR"), work / "user"),
            extra_model_paths=tuple(Path(p).expanduser().resolve() for p in extra.split(os.pathsep) if p),
            log_level=level,
            websocket_trace=_flag(env.get("WEBSOCKET_TRACE")),
            force_cpu=None if cpu is None or cpu.strip() == "" else _flag(cpu),
            disable_metadata=_flag(env.get("COMFY_DISABLE_METADATA")),
            extra_args=tuple(shlex.split(env.get("COMFY_ARGS") or "")),
        )

    # --- derived folders ---------------------------------------------------------------------
    @property
    def models(self) -> Path:
        return self.models_dir or self.work_dir / "models"

    @property
    def user(self) -> Path:
        return self.user_dir or self.work_dir / "user"

    @property
    def jobs_dir(self) -> Path:
        return self.work_dir / "jobs"

    @property
    def idle_dir(self) -> Path:
        """Input/output/temp folders ComfyUI points at between jobs (kept empty)."""
        return self.work_dir / "idle"
