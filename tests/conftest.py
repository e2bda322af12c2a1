"""Session fixtures. ``executor`` boots the real vendored ComfyUI once per test session, with the
test-only custom nodes loaded through the custom-nodes configuration and a throw-away work folder."""

from __future__ import annotations

import pytest

from embedded import Config, Executor

from .helpers import CUSTOM_NODES


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def test_config(work_dir, tmp_path_factory) -> Config:
    paths = tmp_path_factory.mktemp("config") / "extra_model_paths.yaml"
    paths.write_text(f"tests:\n  custom_nodes: {CUSTOM_NODES}\n")
    return Config.from_env({"COMFY_WORK_DIR": str(work_dir), "COMFY_EXTRA_MODEL_PATHS": str(paths),
                            "COMFY_LOG_LEVEL": "INFO", "COMFY_DISABLE_METADATA": "true"})


@pytest.fixture(scope="session")
def executor(test_config):
    ex = Executor(test_config).start()
    yield ex
    ex.close()
