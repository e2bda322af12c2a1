"""What ``COMFY_DEVICES`` names and what runs it: the devices, the environment that pins a device's
process to one before torch loads, and the backend chosen (nothing is started here)."""

from __future__ import annotations

import dataclasses

import pytest

from embedded import BootError, Config, Executor
from embedded.backends import create
from embedded.backends.pool.devices import Device, child_env, resolve, visible_cuda_count


@pytest.mark.parametrize("value, parsed", [(None, None), ("", None), ("all", ("all",)), (" ALL ", ("all",)),
                                           ("0,1,3", ("0", "1", "3")), ("cpu,cpu", ("cpu", "cpu")),
                                           ("cpu", ("cpu",)), ("0, cpu", ("0", "cpu"))])
def test_comfy_devices_is_parsed(value, parsed):
    env = {} if value is None else {"COMFY_DEVICES": value}
    assert Config.from_env(env).devices == parsed


@pytest.mark.parametrize("value", ["gpu0", "0,0", "all,0", "-1", "cuda:0", "0,,1"])
def test_a_device_list_that_names_nothing_runnable_is_refused_with_what_is_expected(value):
    with pytest.raises(ValueError, match="COMFY_DEVICES=.*(expected 'all', CUDA device indices|listed twice)"):
        Config.from_env({"COMFY_DEVICES": value})


def test_cpu_entries_are_numbered_slots():
    assert resolve(("cpu", "cpu")) == [Device("cpu", 0), Device("cpu", 1)]
    assert [d.label for d in resolve(("1", "cpu", "0"))] == ["cuda:1", "cpu:0", "cuda:0"]


def test_all_counts_the_visible_cuda_devices_without_torch(tmp_path):
    assert visible_cuda_count({"CUDA_VISIBLE_DEVICES": "2,5,7"}) == 3
    assert visible_cuda_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_cuda_count({"CUDA_VISIBLE_DEVICES": "3,-1,4"}) == 1  # CUDA stops at an invalid entry
    for name in ("nvidiactl", "nvidia0", "nvidia3", "nvidia-uvm"):
        (tmp_path / name).touch()
    env = {"PATH": str(tmp_path / "no-nvidia-smi-here")}
    assert visible_cuda_count(env, dev=tmp_path) == 2
    assert resolve(("all",), env, dev=tmp_path) == [Device("cuda", 0), Device("cuda", 1)]


def test_all_on_a_machine_without_cuda_says_what_to_do_instead(tmp_path):
    with pytest.raises(ValueError, match="no CUDA device .* COMFY_DEVICES=cpu,cpu"):
        resolve(("all",), {"PATH": str(tmp_path)}, dev=tmp_path)


def test_a_device_process_sees_only_its_device():
    base = {"COMFY_DEVICES": "0,1", "HOME": "/h"}
    assert child_env(Device("cuda", 1), base) == {"CUDA_VISIBLE_DEVICES": "1", "HOME": "/h"}
    # indices are among the devices this process sees
    assert child_env(Device("cuda", 1), {"CUDA_VISIBLE_DEVICES": "4,6"})["CUDA_VISIBLE_DEVICES"] == "6"
    assert child_env(Device("cpu", 0), {"CUDA_VISIBLE_DEVICES": "4,6"})["CUDA_VISIBLE_DEVICES"] == ""
    with pytest.raises(ValueError, match="shows 2"):
        child_env(Device("cuda", 2), {"CUDA_VISIBLE_DEVICES": "4,6"})
    with pytest.raises(ValueError, match="shows 0"):
        child_env(Device("cuda", 0), {"CUDA_VISIBLE_DEVICES": "-1,0"})


def backend_for(tmp_path, **changes):
    return create(dataclasses.replace(Config.from_env({"COMFY_WORK_DIR": str(tmp_path)}), **changes))


def test_without_devices_one_executor_runs_in_this_process(tmp_path):
    backend = backend_for(tmp_path)
    assert type(backend).__name__ == "ComfyRunner" and backend.capacity == 1


def test_several_devices_make_a_pool_of_processes(tmp_path):
    backend = backend_for(tmp_path, devices=("cpu", "cpu"))
    assert type(backend).__name__ == "DevicePool" and backend.capacity == 2


def test_one_cpu_device_stays_in_this_process_on_the_cpu(tmp_path):
    backend = backend_for(tmp_path, devices=("cpu",))
    assert type(backend).__name__ == "ComfyRunner" and backend.config.force_cpu is True


def test_one_named_cuda_device_gets_a_process_pinned_to_it(tmp_path):
    backend = backend_for(tmp_path, devices=("1",))
    assert type(backend).__name__ == "DevicePool" and backend.capacity == 1


def test_the_legacy_server_mode_runs_one_device_and_says_so(tmp_path, monkeypatch):
    with pytest.raises(BootError, match="legacy server mode .* one device"):
        backend_for(tmp_path, devices=("cpu", "cpu"), execution_mode="server")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pinned = backend_for(tmp_path, devices=("1",), execution_mode="server")
    assert pinned.config.extra_args[-2:] == ("--cuda-device", "1")  # main.py pins it before torch loads


def test_the_python_api_takes_devices_as_a_list_or_a_string(tmp_path):
    config = Config.from_env({"COMFY_WORK_DIR": str(tmp_path)})
    assert Executor(config, devices=[0, 1]).config.devices == ("0", "1")
    assert Executor(config, devices="cpu,cpu").capacity == 2
    with pytest.raises(ValueError, match="COMFY_DEVICES"):
        Executor(config, devices="gpu")


def test_a_cuda_device_this_process_cannot_see_is_refused_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    pool = backend_for(tmp_path, devices=("0", "3"))
    with pytest.raises(BootError, match="names CUDA device 3, but CUDA_VISIBLE_DEVICES='0,1' shows 2"):
        pool.start()
    assert pool.ready == 0 and not pool._children and pool._forks is None
