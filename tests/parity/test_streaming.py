"""Results as they happen, in both modes: ``stream`` / ``astream`` yield each output (with its
bytes) as soon as its node finished, then the result; the worker's generator handler
(``STREAM_OUTPUTS=true``) yields progress, output and result items."""

import asyncio
import dataclasses
import time

import pytest

from embedded import ExecutionError
from embedded.job.events import ExecutingEvent, OutputEvent, ResultEvent
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
    node_s = workflow("slow_node")["2"]["inputs"]["seconds"]
    assert time.monotonic() - started < node_s, "the next job ran before the 30 s node could end: it was interrupted"


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


@pytest.fixture(scope="module")
def preview_server(server_config, tmp_path_factory):
    """A server-mode executor whose ComfyUI server makes previews (COMFY_ARGS=--preview-method ...)."""
    from embedded import Executor

    config = dataclasses.replace(server_config, extra_args=("--preview-method", "latent2rgb"),
                                 work_dir=tmp_path_factory.mktemp("preview-server"))
    with Executor(config) as ex:
        yield ex


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_previews_of_a_real_ksampler_come_in_both_modes_only_when_asked(backends, mode, models, request):
    import base64

    from embedded.job.events import PreviewEvent

    backends = {**backends, "server": request.getfixturevalue("preview_server")} if mode == "server" else backends

    wf = workflow("txt2img_checkpoint")
    wf["4"]["inputs"].update(width=256, height=256)
    wf["5"]["inputs"].update(steps=4, seed=next(_runs))
    items = list(backends[mode].stream(wf, previews=True))
    previews = [ev for ev in items if isinstance(ev, PreviewEvent)]
    assert previews and {ev.node_id for ev in previews} == {"5"}
    image = open_image(base64.b64decode(previews[0].image.split(",", 1)[1]))
    assert image.format == "JPEG" and max(image.size) <= 256
    assert isinstance(items[-1], ResultEvent) and items[-1].result.outputs
    wf["5"]["inputs"]["seed"] = next(_runs)
    assert not any(isinstance(ev, PreviewEvent) for ev in backends[mode].stream(wf))
