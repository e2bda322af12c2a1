"""Between jobs, both modes do what ComfyUI's own prompt_worker does: the cache type chosen by
COMFY_ARGS, an identical job served from the cache as ComfyUI serves it (its outputs still returned), ``unload_models``
and ``free_memory`` as ComfyUI's ``/free``, and the throttled clean-up (gc, hooks restored)."""

import os
import time

import pytest

from embedded.backends.comfy.housekeeping import GC_INTERVAL
from embedded.job.events import CachedEvent

from ..helpers import probe, probe_reports, workflow

#: cached nodes of runs A, A, B, A (tests/probes/cache_probe.py) per cache type
EXPECTED = {
    "": [[], ["1", "2", "3"], [], []],                              # classic: the last prompt's results only
    "--cache-lru 10": [[], ["1", "2", "3"], [], ["1", "2", "3"]],   # LRU keeps A's results through B
    "--cache-ram": [[], ["1", "2", "3"], [], ["1", "2", "3"]],      # RAM pressure: kept while RAM is plenty
    "--cache-none": [[], [], [], []],                               # nothing is cached
}


@pytest.fixture(scope="module")
def cache_probes(tmp_path_factory):
    """One probe process per cache type (ComfyUI parses its arguments once per process), all at once."""
    running = {}
    for args in EXPECTED:
        work = tmp_path_factory.mktemp("cache-probe")
        env = {**os.environ, "COMFY_ARGS": args}
        running[args] = probe("cache_probe", str(work), env=env)
    return probe_reports(running, timeout=600)


@pytest.mark.parametrize("args", list(EXPECTED), ids=lambda a: a or "classic")
def test_the_cache_type_follows_comfy_args_in_embedded_mode_exactly_as_in_server_mode(cache_probes, args):
    report = cache_probes[args]
    assert report["embedded"] == report["server"] == EXPECTED[args]
    # the output node (3) comes from the cache too, and every run returns its image (the probe checks)


def _cached(ex, wf, **options) -> list[str]:
    cached = []
    ex.run(wf, on_event=lambda ev: cached.extend(ev.nodes) if isinstance(ev, CachedEvent) else None, **options)
    return sorted(cached)


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_free_memory_drops_every_cached_result_as_comfyuis_free(backends, mode):
    ex = backends[mode]
    wf = workflow("save_and_preview")
    _cached(ex, wf)
    assert _cached(ex, wf), "a repeat job takes its upstream nodes from the cache"
    _cached(ex, wf, free_memory=True)
    assert _cached(ex, wf) == [], "after free_memory nothing was cached"


def test_unload_models_unloads_the_loaded_models(executor, models):
    import comfy.model_management

    wf = workflow("txt2img_checkpoint")
    executor.run(wf)
    assert comfy.model_management.current_loaded_models, "sampling loaded the model"
    executor.run(wf, unload_models=True)
    assert comfy.model_management.current_loaded_models == []
    assert "1" in _cached(executor, wf), "the loader's result stays cached: only memory was freed"


def test_functions_a_node_hooked_are_restored_between_jobs(executor):
    import comfy.model_management

    executor.run(workflow("node_hooks_cast_to"), free_memory=True)  # forces the clean-up now
    assert not hasattr(comfy.model_management.cast_to, "embedded_test_hook")
    executor.run(workflow("node_hooks_cast_to"))  # within 10 s of the last clean-up: done when idle
    deadline = time.monotonic() + GC_INTERVAL + 2
    while hasattr(comfy.model_management.cast_to, "embedded_test_hook"):
        assert time.monotonic() < deadline, "never restored while the runner was idle"
        time.sleep(0.1)
