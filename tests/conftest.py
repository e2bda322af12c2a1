"""Session fixtures. ``executor`` boots the real vendored ComfyUI once per test session, with the
test-only custom nodes loaded through the custom-nodes configuration and a throw-away work folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from embedded import Config, Executor

from .helpers import CUSTOM_NODES, EXAMPLES


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def network_volume(tmp_path_factory):
    """Stands in for /runpod-volume: examples/extra_model_paths.runpod.yaml with this base path."""
    return tmp_path_factory.mktemp("runpod-volume")


@pytest.fixture(scope="session")
def static_input(tmp_path_factory):
    """The static input folder every job sees (COMFY_INPUT_DIRS), as /comfyui/input in the image."""
    return tmp_path_factory.mktemp("static-input")


@pytest.fixture(scope="session")
def file_server():
    """An HTTP file server on loopback that the session's executor may fetch from (FETCH_ALLOW)."""
    from .servers import FileServer

    server = FileServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def test_config(work_dir, network_volume, static_input, file_server, tmp_path_factory) -> Config:
    config_dir = tmp_path_factory.mktemp("config")
    volume = config_dir / "runpod.yaml"
    volume.write_text(EXAMPLES.joinpath("extra_model_paths.runpod.yaml").read_text()
                      .replace("base_path: /runpod-volume", f"base_path: {network_volume}"))
    paths = config_dir / "extra_model_paths.yaml"
    paths.write_text(f"tests:\n  custom_nodes: {CUSTOM_NODES}\n")
    return Config.from_env({"COMFY_WORK_DIR": str(work_dir), "COMFY_EXTRA_MODEL_PATHS": f"{paths}:{volume}",
                            "COMFY_LOG_LEVEL": "INFO", "COMFY_DISABLE_METADATA": "true",
                            "COMFY_INPUT_DIRS": str(static_input), "FETCH_ALLOW": file_server.allow,
                            "MODEL_CACHE_DIR": str(tmp_path_factory.mktemp("model-cache")),
                            "FETCH_READ_TIMEOUT_S": "5", "FETCH_RETRIES": "1"})


@pytest.fixture(scope="session")
def executor(test_config):
    """The session's executor, with ComfyUI's own node packs imported on first use (the index is
    built first, as the image does; tests/parity/test_node_loading.py compares both ways)."""
    subprocess.run([sys.executable, "-m", "embedded.backends.comfy.build_index"], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "COMFY_WORK_DIR": str(test_config.work_dir), "COMFY_LOG_LEVEL": "ERROR"})
    ex = Executor(test_config).start()
    assert "ComfyUI's own packs: on first use" in dict(ex.boot_info.phases)
    yield ex
    ex.close()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS) on loopback, with a bucket named ``outputs``."""
    from .servers import SeaweedS3

    folder = tmp_path_factory.mktemp("seaweedfs")
    server = SeaweedS3(folder, folder / "weed.log")
    server.create_bucket("outputs")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def models(executor, test_config):
    """Random-weight model files (tiny SD3 checkpoint, tiny SD1.5 checkpoint with CLIP-L, the
    split SD3 files), generated once per cache and linked into the test models folder."""
    from embedded.tooling import modelgen

    cache = modelgen.default_cache_dir()
    installed = {}
    for recipe in ("tiny-sd3", "tiny-sd15", "tiny-sd3-split"):
        installed[recipe] = modelgen.install(recipe, test_config.models, cache, seed=0)
    return installed


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A real PostgreSQL server (Debian's) in a temporary folder on loopback, for the session; each
    user takes a database of its own (``postgres.database()``)."""
    from .servers import Postgres

    pg = Postgres(tmp_path_factory.mktemp("postgres") / "postgres.log")
    yield pg
    pg.stop()
