"""Both backends side by side: the session's embedded executor and a legacy server-mode executor
(ComfyUI's main.py as a subprocess) with the same arguments, custom nodes and metadata setting."""

import dataclasses

import pytest

from embedded import Executor


@pytest.fixture(scope="session")
def server_config(test_config, tmp_path_factory):
    return dataclasses.replace(test_config, execution_mode="server",
                               work_dir=tmp_path_factory.mktemp("server-work"), models_dir=test_config.models,
                               user_dir=None, websocket_reconnect_attempts=3, websocket_reconnect_delay_s=0.5)


@pytest.fixture(scope="session")
def server_executor(server_config):
    ex = Executor(server_config).start()
    yield ex
    ex.close()


@pytest.fixture(scope="session")
def backends(executor, server_executor):
    return {"embedded": executor, "server": server_executor}


@pytest.fixture(scope="session")
def backends_with_metadata(test_config, server_config, tmp_path_factory):
    """Both backends again, writing the workflow into saved files (ComfyUI's default)."""
    embedded = Executor(dataclasses.replace(test_config, disable_metadata=False)).start()
    server = Executor(dataclasses.replace(server_config, disable_metadata=False,
                                          work_dir=tmp_path_factory.mktemp("server-work-metadata"))).start()
    yield {"embedded": embedded, "server": server}
    server.close()
    embedded.close()


@pytest.fixture(params=["metadata off", "metadata on"])
def backends_both_ways(request, backends):
    """The parity pair with metadata off (the session's), then with metadata on."""
    if request.param == "metadata off":
        return backends
    return request.getfixturevalue("backends_with_metadata")
