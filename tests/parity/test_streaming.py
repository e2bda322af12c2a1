"""Results as they happen, in both modes: ``stream`` / ``astream`` yield each output (with its
bytes) as soon as its node finished, then the result; the worker's generator handler
(``STREAM_OUTPUTS=true``) yields progress, output and result items."""

import asyncio
import dataclasses
import time

import pytest

from embedded import ExecutionError
from embedded.events import ExecutingEvent, OutputEvent, ResultEvent
from embedded.worker.handler import Worker

from ..helpers import open_image, workflow


def _timed(items):
    return [(time.monotonic(), item) for item in items]


_runs = iter(range(1, 10 ** 6))


def fresh(name: str) -> dict:
    """The workflow with a colour no earlier job used: nothing comes from ComfyUI's cache."""
    wf = workflow(name)
    wf["1"]["inputs"]["color"] = next(_runs)
    return wf


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_stream_yields_an_output_as_soon_as_its_node_finished(backends, mode):
    timed = _timed(backends[mode].stream(fresh("output_then_slow_node")))
    outputs = [(t, ev.output) for t, ev in timed if isinstance(ev, OutputEvent)]
    assert [o.filename for _, o in outputs] == ["early_00001_.png", "late_00001_.png"]
    assert open_image(outputs[0][1].data).size == (8, 8)
    end, last = timed[-1]
    assert isinstance(last, ResultEvent)
    assert [o.filename for o in last.result.outputs] == ["early_00001_.png", "late_00001_.png"]
    assert end - outputs[0][0] >= 1.2, "the first output came before the 1.5 s node ran"
    slow_started = next(t for t, ev in timed if isinstance(ev, ExecutingEvent) and ev.node_id == "3")
    assert outputs[0][0] <= slow_started + 0.1


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_astream_yields_the_same_items_and_raises_the_jobs_error_at_the_end(backends, mode):
    async def collect(wf):
        return [item async for item in backends[mode].astream(wf)]

    items = asyncio.run(collect(fresh("output_then_slow_node")))
    assert [ev.output.filename for ev in items if isinstance(ev, OutputEvent)] == [
        "early_00001_.png", "late_00001_.png"]
    assert isinstance(items[-1], ResultEvent)
    with pytest.raises(ExecutionError):
        asyncio.run(collect(workflow("node_raises_after_output")))


def test_leaving_a_stream_early_interrupts_the_job(executor):
    started = time.monotonic()
    for ev in executor.stream(workflow("slow_node")):
        if isinstance(ev, ExecutingEvent) and ev.node_id == "2":
            break
    assert executor.run(workflow("solid_red_image")).outputs
    assert time.monotonic() - started < 10, "the 30 s node was interrupted"


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_the_generator_handler_yields_progress_outputs_then_the_result(backends, mode, test_config):
    worker = Worker(dataclasses.replace(backends[mode].config, stream_outputs=True), executor=backends[mode])

    async def drive():
        return [(time.monotonic(), item) async for item in worker.stream(
            {"id": "stream-1", "input": {"workflow": fresh("output_then_slow_node")}})]

    timed = asyncio.run(drive())
    kinds = [item["type"] for _, item in timed]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert "progress" in kinds
    outputs = [(t, item) for t, item in timed if item["type"] == "output"]
    assert [(item["key"], item["output"]["filename"], item["output"]["type"]) for _, item in outputs] == [
        ("images", "early_00001_.png", "base64"), ("images", "late_00001_.png", "base64")]
    end, result = timed[-1]
    assert end - outputs[0][0] >= 1.2
    assert [i["filename"] for i in result["images"]] == ["early_00001_.png", "late_00001_.png"]
    assert result["images"][0]["data"] == outputs[0][1]["output"]["data"]
