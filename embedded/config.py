"""Every environment variable of this package, parsed once into one typed object.

Owns: names, defaults and meaning of the configuration (README's table mirrors this file), and the
folders derived from them.

Must not import ComfyUI or any module of this package but ``job.inputs`` and ``staging.guard`` (the
limits and allowlist it parses).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .job.inputs import InputLimits
from .staging.guard import Allowlist

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def default_work_dir(env: "dict[str, str] | os._Environ[str]") -> Path:
    """The per-user cache folder (``$XDG_CACHE_HOME/comfy-embedded/work``, else
    ``~/.cache/comfy-embedded/work``), never the current or the package's folder; the image sets
    ``COMFY_WORK_DIR=/app/work``."""
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().resolve() / "comfy-embedded" / "work"


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _optional_flag(value: str | None) -> bool | None:
    return None if value is None or value.strip() == "" else _flag(value)


def _path(value: str | None, default: Path | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else default


def _paths(value: str | None) -> tuple[Path, ...] | None:
    """A ``:``-separated list of paths; ``None`` when unset or empty."""
    paths = tuple(Path(p).expanduser().resolve() for p in (value or "").split(os.pathsep) if p)
    return paths or None


def _seconds(value: str | None, name: str, default: float | None = None, allow_zero: bool = False) -> float | None:
    if value is None or value.strip() == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a number of seconds") from None
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{name}={value!r}: expected a positive number of seconds")
    return seconds


def _count(value: str | None, default: int, name: str) -> int:
    if value is None or value.strip() == "":
        return default
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a whole number") from None
    if count < 0:
        raise ValueError(f"{name}={value!r}: expected zero or more")
    return count


def _size(value: str | None, default: int, name: str) -> int:
    """A whole number > 0 (bytes, pixels)."""
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a whole number") from None
    if number <= 0:
        raise ValueError(f"{name}={value!r}: expected a whole number above zero")
    return number


def _positive(value: str | None, default: float | None, name: str) -> float | None:
    """A number > 0 (a percentage); ``None`` when unset and no default."""
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a number") from None
    if not number > 0:
        raise ValueError(f"{name}={value!r}: expected a number above zero")
    return number


def parse_devices(value: str | None) -> tuple[str, ...] | None:
    """COMFY_DEVICES: ``all``, CUDA indices (``0,1,3``) or ``cpu`` entries (``cpu,cpu``); None when unset."""
    if value is None or value.strip() == "":
        return None
    entries = tuple(e.strip().lower() for e in value.split(","))
    if entries == ("all",):
        return entries
    for entry in entries:
        if entry != "cpu" and not entry.isdigit():
            raise ValueError(f"COMFY_DEVICES={value!r}: expected 'all', CUDA device indices such as '0,1,3', "
                             f"or 'cpu' entries such as 'cpu,cpu'")
    cuda = [e for e in entries if e != "cpu"]
    if len(set(cuda)) != len(cuda):
        raise ValueError(f"COMFY_DEVICES={value!r}: a CUDA device is listed twice")
    return entries


def _mode(value: str | None) -> str:
    mode = (value or "embedded").strip().lower()
    if mode not in ("embedded", "server"):
        raise ValueError(f"EXECUTION_MODE={value!r}: expected 'embedded' or 'server'")
    return mode


@dataclass(frozen=True)
class Config:
    #: ComfyUI tree (COMFYUI_PATH; default: the pinned tree in vendor/ComfyUI)
    comfyui_path: Path = REPO_ROOT / "vendor" / "ComfyUI"
    #: our work folder (COMFY_WORK_DIR; default ``default_work_dir``): per-job folders, temp, idle input/output
    work_dir: Path = field(default_factory=lambda: default_work_dir(os.environ))
    #: model folders root (COMFY_MODELS_DIR; default <work_dir>/models), one sub-folder per kind
    models_dir: Path | None = None
    #: ComfyUI's user folder (COMFY_USER_DIR; default <work_dir>/user)
    user_dir: Path | None = None
    #: a ComfyUI-format extra_model_paths.yaml (COMFY_EXTRA_MODEL_PATHS): model folders, custom_nodes
    extra_model_paths: tuple[Path, ...] = ()
    #: folders of static input files every job sees beside its own (COMFY_INPUT_DIRS, ``:``-separated;
    #: default: the tree's ``input`` and the network volume's ``input``); first one wins a name
    input_dirs: tuple[Path, ...] | None = None
    #: where RunPod mounts a network volume (NETWORK_VOLUME_PATH)
    network_volume: Path = Path("/runpod-volume")
    #: log a report of the network volume's model folders at boot (NETWORK_VOLUME_DEBUG)
    network_volume_debug: bool = False
    #: ComfyUI's log level (COMFY_LOG_LEVEL): warnings and errors unless asked; the RunPod worker's
    #: default is DEBUG, as worker-comfyui's
    log_level: str = "WARNING"
    #: log every websocket-compat frame (WEBSOCKET_TRACE)
    websocket_trace: bool = False
    #: True: --cpu; False: never; None: when CUDA is absent (COMFY_FORCE_CPU)
    force_cpu: bool | None = None
    #: True: write no workflow into saved files (ComfyUI's --disable-metadata); False: write it;
    #: None (unset): ComfyUI's default (write it) for the Python API and CLI, and no metadata in
    #: the RunPod worker, as worker-comfyui (COMFY_DISABLE_METADATA)
    disable_metadata: bool | None = None
    #: more ComfyUI arguments, e.g. "--highvram --fast" (COMFY_ARGS)
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    #: import every ComfyUI node pack at boot instead of on first use (EAGER_NODES)
    eager_nodes: bool = False

    #: the folder of this executor's job folders (default <work_dir>/jobs); not a variable: the pool
    #: gives each device's process its own, removed when that process ends
    jobs_folder: Path | None = None

    # --- backends -------------------------------------------------------------------------------
    #: "embedded" (ComfyUI in this process) or "server" (ComfyUI's main.py as a subprocess, driven
    #: over HTTP and a websocket, as worker-comfyui does) (EXECUTION_MODE)
    execution_mode: str = "embedded"
    #: the devices to run jobs on, one executor each (COMFY_DEVICES): ``("all",)`` for every visible
    #: CUDA device, CUDA indices (``("0", "1")``), ``cpu`` entries (``("cpu", "cpu")``); None: one
    #: executor in this process, as ComfyUI runs. More than one device: one child process per device
    devices: tuple[str, ...] | None = None
    #: server mode: reconnect attempts when the websocket drops mid-job (WEBSOCKET_RECONNECT_ATTEMPTS)
    websocket_reconnect_attempts: int = 5
    #: server mode: seconds between reconnect attempts (WEBSOCKET_RECONNECT_DELAY_S)
    websocket_reconnect_delay_s: float = 3.0
    #: server mode: seconds ComfyUI's server may take to answer after it starts; both modes: how
    #: long a job waits for a worker still booting (COMFY_SERVER_START_TIMEOUT_S)
    server_start_timeout_s: float = 300.0

    # --- the RunPod worker ------------------------------------------------------------------------
    #: ask RunPod to restart the worker after each job (REFRESH_WORKER)
    refresh_worker: bool = False
    #: serve the runpod SDK's local HTTP API on 0.0.0.0 (SERVE_API_LOCALLY)
    serve_api_locally: bool = False
    #: a generator handler: progress, each output as its node finishes, then the result (STREAM_OUTPUTS)
    stream_outputs: bool = False
    #: seconds a job may run before it is stopped; None = no limit (JOB_TIMEOUT_S)
    job_timeout: float | None = None
    #: seconds a job asked to stop may take before it is answered anyway (JOB_STOP_GRACE_S); a node
    #: still running then is abandoned: the server is restarted, or the worker asks to be replaced
    job_stop_grace_s: float = 10.0
    #: largest input file, in bytes (INPUT_MAX_BYTES)
    input_max_bytes: int = InputLimits.max_bytes
    #: largest input image, in pixels (INPUT_MAX_PIXELS)
    input_max_pixels: int = InputLimits.max_pixels
    #: largest sum of a job's fetched input files, in bytes (INPUT_MAX_TOTAL_BYTES)
    input_max_total_bytes: int = 1024 ** 3
    #: hosts, host:port and CIDRs the URL guard lets through although their address is private,
    #: loopback or link-local (FETCH_ALLOW, comma-separated)
    fetch_allow: Allowlist = field(default_factory=Allowlist)
    #: seconds to connect, and the longest silence while reading, of a download
    #: (FETCH_CONNECT_TIMEOUT_S, FETCH_READ_TIMEOUT_S)
    fetch_connect_timeout_s: float = 10.0
    fetch_read_timeout_s: float = 60.0
    #: retries of a download on connection errors and 5xx answers, with backoff (FETCH_RETRIES)
    fetch_retries: int = 3
    #: longest one download may take, whatever the server sends (FETCH_DEADLINE_S; a job's own
    #: timeout bounds its downloads too)
    fetch_deadline_s: float = 3600.0
    #: longest one upload of an output to a bucket may take (UPLOAD_DEADLINE_S)
    upload_deadline_s: float = 600.0
    #: where models fetched for jobs are kept (MODEL_CACHE_DIR; default <network volume>/model-cache
    #: when a volume is mounted, else <work_dir>/model-cache)
    model_cache_dir: Path | None = None
    #: the model cache's size limit in GB, least recently used files evicted (MODEL_CACHE_MAX_GB)
    model_cache_max_gb: float | None = None
    #: bearer tokens for Hugging Face and civitai.com downloads (HF_TOKEN, CIVITAI_TOKEN); never logged
    hf_token: str | None = field(default=None, repr=False)
    civitai_token: str | None = field(default=None, repr=False)
    #: largest response with outputs inline (base64): beyond it outputs go to S3, or the job gets
    #: an error that says so (OUTPUT_MAX_INLINE_BYTES; RunPod's /run payload limit)
    output_max_inline_bytes: int = 10_000_000
    #: ask to replace the worker once its processes have grown more than this percentage over their
    #: size after boot and warm-up; None = never (MAX_RSS_GROWTH_PCT)
    max_rss_growth_pct: float | None = None
    #: an API-format workflow run once after boot to load models (WARMUP_WORKFLOW)
    warmup_workflow: Path | None = None
    #: default key for Comfy.org API nodes (COMFY_ORG_API_KEY); never logged
    comfy_org_api_key: str | None = field(default=None, repr=False)
    #: S3 endpoint (BUCKET_ENDPOINT_URL); S3 is used only when the two BUCKET_* keys are set too
    bucket_endpoint_url: str | None = None
    #: a folder of the bucket that outputs go under: ``<prefix>/<job id>/<name>`` (BUCKET_PREFIX)
    bucket_prefix: str = ""
    #: whether BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY are both set (their values stay in
    #: the environment, where runpod's rp_upload reads them, and are never copied or logged)
    bucket_credentials_set: bool = False

    @property
    def input_limits(self) -> InputLimits:
        return InputLimits(self.input_max_bytes, self.input_max_pixels)

    @property
    def s3_enabled(self) -> bool:
        return bool(self.bucket_endpoint_url) and self.bucket_credentials_set

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Config":
        env = os.environ if env is None else env
        work = _path(env.get("COMFY_WORK_DIR"), default_work_dir(env))
        level = (env.get("COMFY_LOG_LEVEL") or "WARNING").strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"COMFY_LOG_LEVEL={level!r}: expected one of {', '.join(LOG_LEVELS)}")
        cpu = env.get("COMFY_FORCE_CPU")
        extra = env.get("COMFY_EXTRA_MODEL_PATHS")
        return cls(
            comfyui_path=_path(env.get("COMFYUI_PATH"), REPO_ROOT / "vendor" / "ComfyUI"),
            work_dir=work,
            models_dir=_path(env.get("COMFY_MODELS_DIR"), work / "models"),
            user_dir=_path(env.get("COMFY_USER_DIR"), work / "user"),
            extra_model_paths=_paths(extra) or (),
            input_dirs=_paths(env.get("COMFY_INPUT_DIRS")),
            network_volume=_path(env.get("NETWORK_VOLUME_PATH"), Path("/runpod-volume")),
            network_volume_debug=_flag(env.get("NETWORK_VOLUME_DEBUG")),
            log_level=level,
            websocket_trace=_flag(env.get("WEBSOCKET_TRACE")),
            force_cpu=_optional_flag(cpu),
            disable_metadata=_optional_flag(env.get("COMFY_DISABLE_METADATA")),
            extra_args=tuple(shlex.split(env.get("COMFY_ARGS") or "")),
            eager_nodes=_flag(env.get("EAGER_NODES")),
            execution_mode=_mode(env.get("EXECUTION_MODE")),
            devices=parse_devices(env.get("COMFY_DEVICES")),
            websocket_reconnect_attempts=_count(env.get("WEBSOCKET_RECONNECT_ATTEMPTS"), 5,
                                                "WEBSOCKET_RECONNECT_ATTEMPTS"),
            websocket_reconnect_delay_s=_seconds(env.get("WEBSOCKET_RECONNECT_DELAY_S"), "WEBSOCKET_RECONNECT_DELAY_S",
                                                 default=3.0, allow_zero=True),
            server_start_timeout_s=_seconds(env.get("COMFY_SERVER_START_TIMEOUT_S"), "COMFY_SERVER_START_TIMEOUT_S",
                                            default=300.0),
            refresh_worker=_flag(env.get("REFRESH_WORKER")),
            serve_api_locally=_flag(env.get("SERVE_API_LOCALLY")),
            stream_outputs=_flag(env.get("STREAM_OUTPUTS")),
            job_timeout=_seconds(env.get("JOB_TIMEOUT_S"), "JOB_TIMEOUT_S"),
            job_stop_grace_s=_seconds(env.get("JOB_STOP_GRACE_S"), "JOB_STOP_GRACE_S", default=10.0),
            input_max_bytes=_size(env.get("INPUT_MAX_BYTES"), InputLimits.max_bytes, "INPUT_MAX_BYTES"),
            input_max_pixels=_size(env.get("INPUT_MAX_PIXELS"), InputLimits.max_pixels, "INPUT_MAX_PIXELS"),
            input_max_total_bytes=_size(env.get("INPUT_MAX_TOTAL_BYTES"), 1024 ** 3, "INPUT_MAX_TOTAL_BYTES"),
            fetch_allow=Allowlist.parse(env.get("FETCH_ALLOW")),
            fetch_connect_timeout_s=_seconds(env.get("FETCH_CONNECT_TIMEOUT_S"), "FETCH_CONNECT_TIMEOUT_S",
                                             default=10.0),
            fetch_read_timeout_s=_seconds(env.get("FETCH_READ_TIMEOUT_S"), "FETCH_READ_TIMEOUT_S", default=60.0),
            fetch_retries=_count(env.get("FETCH_RETRIES"), 3, "FETCH_RETRIES"),
            fetch_deadline_s=_seconds(env.get("FETCH_DEADLINE_S"), "FETCH_DEADLINE_S", default=3600.0),
            upload_deadline_s=_seconds(env.get("UPLOAD_DEADLINE_S"), "UPLOAD_DEADLINE_S", default=600.0),
            model_cache_dir=_path(env.get("MODEL_CACHE_DIR"), None),
            model_cache_max_gb=_positive(env.get("MODEL_CACHE_MAX_GB"), None, "MODEL_CACHE_MAX_GB"),
            hf_token=env.get("HF_TOKEN") or None,
            civitai_token=env.get("CIVITAI_TOKEN") or None,
            output_max_inline_bytes=_size(env.get("OUTPUT_MAX_INLINE_BYTES"), 10_000_000, "OUTPUT_MAX_INLINE_BYTES"),
            max_rss_growth_pct=_positive(env.get("MAX_RSS_GROWTH_PCT"), None, "MAX_RSS_GROWTH_PCT"),
            warmup_workflow=_path(env.get("WARMUP_WORKFLOW"), None),
            comfy_org_api_key=env.get("COMFY_ORG_API_KEY") or None,
            bucket_endpoint_url=env.get("BUCKET_ENDPOINT_URL") or None,
            bucket_prefix=(env.get("BUCKET_PREFIX") or "").strip().strip("/"),
            bucket_credentials_set=bool(env.get("BUCKET_ACCESS_KEY_ID") and env.get("BUCKET_SECRET_ACCESS_KEY")),
        )

    # --- derived folders ---------------------------------------------------------------------
    @property
    def models(self) -> Path:
        return self.models_dir or self.work_dir / "models"

    @property
    def user(self) -> Path:
        return self.user_dir or self.work_dir / "user"

    @property
    def model_cache(self) -> Path:
        if self.model_cache_dir is not None:
            return self.model_cache_dir
        return self.network_volume / "model-cache" if self.network_volume.is_dir() else self.work_dir / "model-cache"

    @property
    def node_index(self) -> Path:
        """Which file defines each node class of ComfyUI's own packs (``backends.comfy.nodeindex``)."""
        return self.work_dir / "node-index.json"

    @property
    def downloads_dir(self) -> Path:
        """Per-job folders of fetched input files, until the job ends."""
        return self.work_dir / "downloads"

    @property
    def jobs_dir(self) -> Path:
        return self.jobs_folder or self.work_dir / "jobs"

    @property
    def trash_dir(self) -> Path:
        """Folders of ended jobs, moved here at once and deleted before the next job starts."""
        return self.work_dir / "trash"

    @property
    def static_inputs(self) -> tuple[Path, ...]:
        """The static input folders, in the order a name is looked up."""
        if self.input_dirs is not None:
            return self.input_dirs
        return (self.comfyui_path / "input", self.network_volume / "input")

    @property
    def idle_dir(self) -> Path:
        """Input/output/temp folders ComfyUI points at between jobs (kept empty)."""
        return self.work_dir / "idle"
