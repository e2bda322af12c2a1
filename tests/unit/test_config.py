"""Environment variables parse into one typed configuration, and both backends get the same
ComfyUI arguments from it."""

import pytest
import yaml

from embedded.config import Config
from embedded.backends.launch import MODEL_FOLDERS, comfy_args


def test_defaults_match_upstream_and_stay_outside_vendor(tmp_path):
    config = Config.from_env({"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert config.log_level == "WARNING" and config.websocket_trace is False  # quiet where a person reads
    assert config.force_cpu is None and config.extra_model_paths == ()
    assert config.work_dir == tmp_path / "cache" / "comfy-embedded" / "work"  # per user, never the current folder
    assert "vendor" not in config.work_dir.parts
    assert config.models == config.work_dir / "models"


def test_every_variable_is_read(tmp_path):
    config = Config.from_env({"COMFY_WORK_DIR": str(tmp_path), "COMFY_MODELS_DIR": str(tmp_path / "m"),
                              "COMFY_USER_DIR": str(tmp_path / "u"), "COMFY_LOG_LEVEL": "info",
                              "WEBSOCKET_TRACE": "TRUE", "COMFY_FORCE_CPU": "false",
                              "COMFY_DISABLE_METADATA": "1", "COMFY_ARGS": "--fast --reserve-vram 1.5",
                              "COMFY_EXTRA_MODEL_PATHS": f"{tmp_path}/a.yaml:{tmp_path}/b.yaml",
                              "COMFYUI_PATH": str(tmp_path / "tree")})
    assert (config.work_dir, config.models, config.user) == (tmp_path, tmp_path / "m", tmp_path / "u")
    assert (config.log_level, config.websocket_trace, config.force_cpu, config.disable_metadata) == \
           ("INFO", True, False, True)
    assert config.extra_args == ("--fast", "--reserve-vram", "1.5")
    assert config.extra_model_paths == (tmp_path / "a.yaml", tmp_path / "b.yaml")
    assert config.comfyui_path == tmp_path / "tree"


def test_an_unknown_log_level_is_refused():
    with pytest.raises(ValueError, match="COMFY_LOG_LEVEL"):
        Config.from_env({"COMFY_LOG_LEVEL": "LOUD"})


def test_comfy_args_point_every_folder_at_the_work_folder(tmp_path):
    config = Config.from_env({"COMFY_WORK_DIR": str(tmp_path), "COMFY_EXTRA_MODEL_PATHS": "/v/x.yaml",
                              "COMFY_ARGS": "--highvram", "COMFY_LOG_LEVEL": "WARNING"})
    args = comfy_args(config, cpu=True)
    assert args[args.index("--base-directory") + 1] == str(tmp_path)
    assert args[args.index("--verbose") + 1] == "WARNING"
    assert "--cpu" in args and args[-1] == "--highvram"
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--extra-model-paths-config"]
    assert configs == [str(tmp_path / "extra_model_paths.embedded.yaml"), "/v/x.yaml"]
    generated = yaml.safe_load((tmp_path / "extra_model_paths.embedded.yaml").read_text())
    assert generated["embedded_models"]["base_path"] == str(tmp_path / "models")
    assert set(generated["embedded_models"]) - {"base_path", "is_default"} == set(MODEL_FOLDERS)
    assert all((tmp_path / "models" / subs[0]).is_dir() for subs in MODEL_FOLDERS.values())
    assert "--cpu" not in comfy_args(config, cpu=False)


def test_execution_mode_and_websocket_settings():
    config = Config.from_env({"EXECUTION_MODE": "Server", "WEBSOCKET_RECONNECT_ATTEMPTS": "2",
                              "WEBSOCKET_RECONNECT_DELAY_S": "0.5"})
    assert (config.execution_mode, config.websocket_reconnect_attempts, config.websocket_reconnect_delay_s) == \
           ("server", 2, 0.5)
    defaults = Config.from_env({})
    assert (defaults.execution_mode, defaults.websocket_reconnect_attempts,
            defaults.websocket_reconnect_delay_s) == ("embedded", 5, 3.0)
    with pytest.raises(ValueError, match="EXECUTION_MODE"):
        Config.from_env({"EXECUTION_MODE": "cloud"})
    with pytest.raises(ValueError, match="WEBSOCKET_RECONNECT_ATTEMPTS"):
        Config.from_env({"WEBSOCKET_RECONNECT_ATTEMPTS": "many"})


def test_the_backend_follows_execution_mode():
    from embedded.backends import interface as backend
    from embedded.backends.comfy import ComfyRunner
    from embedded.backends.server import ServerRunner
    assert isinstance(backend.create(Config.from_env({"EXECUTION_MODE": "server"})), ServerRunner)
    assert isinstance(backend.create(Config.from_env({})), ComfyRunner)


def test_job_end_and_input_limits_have_documented_defaults_and_are_read():
    default = Config.from_env({})
    assert (default.job_stop_grace_s, default.input_max_bytes, default.input_max_pixels,
            default.max_rss_growth_pct) == (10.0, 100 * 1024 * 1024, 100_000_000, None)
    config = Config.from_env({"JOB_STOP_GRACE_S": "2.5", "INPUT_MAX_BYTES": "1048576", "INPUT_MAX_PIXELS": "4000000",
                              "MAX_RSS_GROWTH_PCT": "15"})
    assert (config.job_stop_grace_s, config.input_limits.max_bytes, config.input_limits.max_pixels,
            config.max_rss_growth_pct) == (2.5, 1048576, 4000000, 15.0)


@pytest.mark.parametrize("name, value", [("JOB_STOP_GRACE_S", "0"), ("INPUT_MAX_BYTES", "-1"), ("INPUT_MAX_BYTES", "0.5"),
                                         ("INPUT_MAX_PIXELS", "lots"), ("MAX_RSS_GROWTH_PCT", "0")])
def test_limits_that_cannot_work_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        Config.from_env({name: value})


def test_fetching_settings_have_documented_defaults_and_are_read(tmp_path):
    default = Config.from_env({"COMFY_WORK_DIR": str(tmp_path), "NETWORK_VOLUME_PATH": str(tmp_path / "no-volume")})
    assert (default.input_max_total_bytes, default.fetch_connect_timeout_s, default.fetch_read_timeout_s,
            default.fetch_retries, default.model_cache_max_gb, default.output_max_inline_bytes) == \
           (1024 ** 3, 10.0, 60.0, 3, None, 10_000_000)
    assert not default.fetch_allow and default.hf_token is None
    config = Config.from_env({"FETCH_ALLOW": "127.0.0.1:9000", "FETCH_READ_TIMEOUT_S": "5", "FETCH_RETRIES": "0",
                              "MODEL_CACHE_DIR": str(tmp_path / "c"), "MODEL_CACHE_MAX_GB": "1.5",
                              "HF_TOKEN": "hf_x", "CIVITAI_TOKEN": "cv_y", "OUTPUT_MAX_INLINE_BYTES": "5000000",
                              "INPUT_MAX_TOTAL_BYTES": "2000"})
    assert config.fetch_allow.allows("127.0.0.1", 9000) and not config.fetch_allow.allows("127.0.0.1", 9001)
    assert (config.fetch_read_timeout_s, config.fetch_retries, config.model_cache, config.model_cache_max_gb) == \
           (5.0, 0, tmp_path / "c", 1.5)
    assert (config.output_max_inline_bytes, config.input_max_total_bytes) == (5_000_000, 2000)
    assert "hf_x" not in repr(config) and "cv_y" not in repr(config)


def test_the_model_cache_is_on_the_network_volume_when_one_is_mounted(tmp_path):
    volume = tmp_path / "runpod-volume"
    work = {"COMFY_WORK_DIR": str(tmp_path / "work"), "NETWORK_VOLUME_PATH": str(volume)}
    assert Config.from_env(work).model_cache == tmp_path / "work" / "model-cache"
    volume.mkdir()
    assert Config.from_env(work).model_cache == volume / "model-cache"


def test_the_model_cache_is_one_of_comfyuis_model_folders(tmp_path):
    config = Config.from_env({"COMFY_WORK_DIR": str(tmp_path), "MODEL_CACHE_DIR": str(tmp_path / "cache")})
    comfy_args(config, cpu=True)
    generated = yaml.safe_load((tmp_path / "extra_model_paths.embedded.yaml").read_text())
    assert generated["embedded_model_cache"] == {"base_path": str(tmp_path / "cache"),
                                                 **{name: name for name in MODEL_FOLDERS}}


@pytest.mark.parametrize("name, value", [("FETCH_ALLOW", "10.0.0.0/40"), ("FETCH_RETRIES", "-1"),
                                         ("MODEL_CACHE_MAX_GB", "0"), ("OUTPUT_MAX_INLINE_BYTES", "0")])
def test_fetching_settings_that_cannot_work_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        Config.from_env({name: value})


def test_node_packs_are_imported_on_first_use_unless_eager_nodes(tmp_path):
    default = Config.from_env({"COMFY_WORK_DIR": str(tmp_path)})
    assert default.eager_nodes is False and default.node_index == tmp_path / "node-index.json"
    assert Config.from_env({"EAGER_NODES": "true"}).eager_nodes is True


def test_nvidia_gpus_are_seen_from_their_device_nodes_without_torch(tmp_path):
    from embedded.backends.launch import nvidia_devices, use_cpu

    assert not nvidia_devices(tmp_path)
    (tmp_path / "nvidiactl").touch()
    (tmp_path / "nvidia-uvm").touch()
    assert not nvidia_devices(tmp_path)  # the driver without a GPU passed through
    (tmp_path / "nvidia0").touch()
    assert nvidia_devices(tmp_path)
    assert use_cpu(Config.from_env({"COMFY_FORCE_CPU": "false"}), import_torch=False) is False
    assert use_cpu(Config.from_env({"COMFY_FORCE_CPU": "true"}), import_torch=False) is True


def test_bucket_prefix_is_read_without_its_slashes():
    from embedded.staging.downloads import S3Settings

    env = {"BUCKET_ENDPOINT_URL": "http://127.0.0.1:9/b", "BUCKET_ACCESS_KEY_ID": "k", "BUCKET_SECRET_ACCESS_KEY": "s",
           "BUCKET_PREFIX": "/team-a/renders/"}
    assert Config.from_env(env).bucket_prefix == "team-a/renders"
    assert S3Settings.from_env(env).prefix == "team-a/renders"  # the API v2 server's outputs go under it too


def test_the_configuration_page_documents_every_variable_the_configuration_reads():
    """docs/configuration.md is the one table of every setting: each variable ``Config.from_env``
    reads is a row of it (the first cell names it)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    read = set(re.findall(r'env\.get\("([A-Z][A-Z0-9_]+)"', (root / "embedded" / "config.py").read_text()))
    read.discard("XDG_CACHE_HOME")  # the system's cache folder, named in COMFY_WORK_DIR's default
    rows = set()
    for line in (root / "docs" / "configuration.md").read_text().splitlines():
        if line.startswith("| `"):
            rows |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    assert len(read) > 40 and read <= rows, f"not documented in docs/configuration.md: {sorted(read - rows)}"
