"""Cache hits as ComfyUI (issue 17, item 4): an identical job runs no node again and still returns
its outputs with their bytes (as ComfyUI's history still lists a cached output node's files); a
changed job re-runs exactly what ComfyUI re-runs; nothing of one job reaches another unless
ComfyUI would serve it from its cache. Both modes, streamed outputs too."""

import pytest

from embedded.job.events import CachedEvent, ExecutingEvent, OutputEvent

from ..helpers import open_image, png_bytes, workflow

MODES = ["embedded", "server"]


def chain(color: int, prefix: str = "chain") -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


def run(ex, wf, **options):
    events = []
    result = ex.run(wf, on_event=events.append, **options)
    cached = sorted(n for e in events if isinstance(e, CachedEvent) for n in e.nodes)
    return result, sorted(e.node_id for e in events if isinstance(e, ExecutingEvent)), cached, events


@pytest.mark.parametrize("mode", MODES)
def test_an_identical_job_runs_no_node_and_returns_the_same_outputs_with_their_bytes(backends, mode):
    wf = chain(2000 + MODES.index(mode))
    first, ran_first, _, _ = run(backends[mode], wf)
    second, ran_second, cached, _ = run(backends[mode], wf)
    assert ran_first == ["1", "2", "3", "4"] and ran_second == [] and cached == ["1", "2", "3", "4"]
    assert [(o.node_id, o.filename, o.type, o.data) for o in second.outputs] == \
           [(o.node_id, o.filename, o.type, o.data) for o in first.outputs]
    assert all(t.cached for t in second.node_timings.values())


@pytest.mark.parametrize("mode", MODES)
def test_a_changed_job_reruns_exactly_what_comfyui_reruns(backends, mode):
    wf = chain(2100 + MODES.index(mode))
    run(backends[mode], wf)
    wf["3"]["inputs"]["filename_prefix"] = "renamed"
    result, ran, cached, _ = run(backends[mode], wf)
    assert (ran, cached) == (["3"], ["1", "2", "4"])
    assert sorted(o.filename for o in result.outputs if o.type == "output") == ["renamed_00001_.png"]
    assert all(o.data for o in result.outputs)


@pytest.mark.parametrize("mode", MODES)
def test_a_streamed_cache_hit_still_streams_its_outputs(backends, mode):
    wf = chain(2200 + MODES.index(mode))
    backends[mode].run(wf)
    streamed = [item.output for item in backends[mode].stream(wf) if isinstance(item, OutputEvent)]
    assert sorted(o.node_id for o in streamed) == ["3", "4"] and all(o.data for o in streamed)


@pytest.mark.parametrize("mode", MODES)
def test_another_input_file_under_the_same_name_is_not_a_cache_hit(backends, mode):
    wf = workflow("load_and_invert_input")
    black = backends[mode].run(wf, {"in.png": png_bytes((4, 4), (0, 0, 0))}).outputs[0]
    white, ran, _, _ = run(backends[mode], wf, files={"in.png": png_bytes((4, 4), (255, 255, 255))})
    assert ran, "LoadImage's IS_CHANGED (the file's hash) differs: the nodes run again"
    assert open_image(black.data).convert("RGB").getpixel((0, 0)) == (255, 255, 255)
    assert open_image(white.outputs[0].data).convert("RGB").getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
def test_after_free_memory_nothing_is_kept_and_the_next_job_runs_everything(backends, mode):
    wf = chain(2300 + MODES.index(mode))
    run(backends[mode], wf)
    run(backends[mode], wf, free_memory=True)
    result, ran, cached, _ = run(backends[mode], wf)
    assert (ran, cached) == (["1", "2", "3", "4"], [])
    assert len(result.outputs) == 2
