"""ComfyUI's own node packs imported on first use (and torch._dynamo, scipy.stats and scipy.integrate
left until needed) behave as
when everything is imported at boot:
the same node set, the same preflight and validation errors, the same outputs, on every workflow
of the tests and examples (``tests/probes/node_loading_probe.py`` runs each way in its own
process: ComfyUI boots once per process)."""

import os
import subprocess
import sys

import pytest

from ..helpers import TESTS, probe, probe_reports

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    lazy_work, eager_work = tmp_path_factory.mktemp("lazy-nodes"), tmp_path_factory.mktemp("eager-nodes")
    env = {k: v for k, v in os.environ.items() if k not in ("EAGER_NODES", "COMFY_ARGS")}
    # the index, as the image builds it
    subprocess.run([sys.executable, "-m", "embedded.backends.comfy.build_index"], cwd=TESTS.parent, check=True,
                   env={**env, "COMFY_WORK_DIR": str(lazy_work), "COMFY_LOG_LEVEL": "ERROR"},
                   capture_output=True, timeout=300)
    running = {
        "lazy": probe("node_loading_probe", str(lazy_work), env=env),
        "eager": probe("node_loading_probe", str(eager_work), env={**env, "EAGER_NODES": "true"})}
    return probe_reports(running, timeout=800)


def test_the_probes_really_ran_each_way(probes):
    assert probes["lazy"]["lazy"] is True and probes["eager"]["lazy"] is False
    assert len(probes["lazy"]["workflows"]) >= 40


def test_torch_dynamo_waits_until_something_needs_it_and_then_works(probes):
    assert probes["lazy"]["dynamo_after_boot"] is False and probes["eager"]["dynamo_after_boot"] is True
    assert probes["lazy"]["dynamo_works"] == probes["eager"]["dynamo_works"] == [[1, 1, 2, 2], True, [2.0, 2.0],
                                                                                  "module", True]


def test_scipy_stats_and_integrate_wait_for_their_first_use_which_four_threads_share(probes):
    assert probes["lazy"]["scipy_after_boot"] == ["_LazyModule", "_LazyModule"]
    assert probes["eager"]["scipy_after_boot"] == ["module", "module"]
    assert probes["lazy"]["scipy_works"] == probes["eager"]["scipy_works"] == [[0.5, 0.5], True, ["module", "module"]]


def test_the_runner_runs_the_deferred_imports_once_idle_after_a_job_never_during_it(tmp_path):
    from ..helpers import probe, probe_reports

    env = {k: v for k, v in os.environ.items() if k not in ("EAGER_NODES", "COMFY_ARGS")}
    report = probe_reports({"run": probe("deferred_probe", str(tmp_path), env=env)}, timeout=300)["run"]
    assert report == {"after_boot": ["scipy.stats", "scipy.integrate"],
                      "after_a_job": ["scipy.stats", "scipy.integrate"], "once_idle": [], "works": 0.5}


def test_lazy_loading_gives_the_same_node_set(probes):
    assert probes["lazy"]["nodes"] == probes["eager"]["nodes"] == probes["eager"]["nodes_after"]
    assert probes["lazy"]["nodes_after"] == probes["eager"]["nodes"]
    assert {"SaveAnimatedWEBP", "GetImageSize", "ImageBlur", "KSampler"} <= set(probes["lazy"]["nodes"])


def test_every_class_comes_from_the_same_file_with_the_same_display_name(probes):
    assert probes["lazy"]["modules"] == probes["eager"]["modules"]
    assert probes["lazy"]["import_failures"] == probes["eager"]["import_failures"] == []


def test_lazy_loading_gives_the_same_preflight_and_validation_errors(probes):
    for name, eager in probes["eager"]["workflows"].items():
        assert probes["lazy"]["workflows"][name]["check"] == eager["check"], name


def test_lazy_loading_gives_the_same_outputs_and_errors(probes):
    ran = 0
    for name, eager in probes["eager"]["workflows"].items():
        if "run" in eager:
            ran += 1
            assert probes["lazy"]["workflows"][name]["run"] == eager["run"], name
    assert ran >= 30
    assert isinstance(probes["lazy"]["workflows"]["animated_webp"]["run"], list)  # an extras node ran
