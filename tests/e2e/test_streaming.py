"""STREAM_OUTPUTS=true end to end: the SDK's real local API (``/runsync`` answers the list of items,
``/run`` then ``/stream/<id>`` shows them) and the SDK's production loop against the control plane
simulated on loopback, which records when each streamed item arrives: outputs before the job ends,
a cancel, previews of a real KSampler, a preflight, timings."""

import time

import pytest
import requests

from ..helpers import workflow
from ..servers import FakeJobApi, LocalApiWorker, start_loop_worker, worker_env

_runs = iter(range(1, 10 ** 6))


def fresh(name: str) -> dict:
    wf = workflow(name)
    wf["1"]["inputs"]["color"] = 1000 + next(_runs)
    return wf


@pytest.fixture(scope="module")
def streaming_api(tmp_path_factory, extra_paths):
    work = tmp_path_factory.mktemp("stream-local-work")
    worker = LocalApiWorker(worker_env(work, extra_paths, STREAM_OUTPUTS="true"),
                            work.parent / "stream-local.log").wait_ready(timeout=180)
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def streaming_loop(tmp_path_factory, extra_paths, models, test_config):
    api = FakeJobApi()
    work = tmp_path_factory.mktemp("stream-loop-work")
    worker = start_loop_worker(api, work, extra_paths, work.parent / "stream-loop.log", STREAM_OUTPUTS="true",
                               COMFY_MODELS_DIR=str(test_config.models))
    yield api
    worker.stop()
    api.close()


def test_runsync_answers_every_item_ending_with_the_result(streaming_api):
    body = streaming_api.runsync({"workflow": fresh("output_then_slow_node")})
    assert body["status"] == "COMPLETED"
    items = body["output"]
    assert [i["type"] for i in items if i["type"] != "progress"] == ["output", "output", "result"]
    assert [i["output"]["filename"] for i in items if i["type"] == "output"] == ["early_00001_.png", "late_00001_.png"]
    assert [i["filename"] for i in items[-1]["images"]] == ["early_00001_.png", "late_00001_.png"]


def test_run_then_stream_shows_the_items(streaming_api):
    job_id = requests.post(f"{streaming_api.url}/run", json={"input": {"workflow": fresh("output_then_slow_node")}},
                           timeout=30).json()["id"]
    seen: list[dict] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = requests.post(f"{streaming_api.url}/stream/{job_id}", timeout=60).json()
        seen += [entry["output"] for entry in body.get("stream", [])]
        if body.get("status") == "COMPLETED":
            break
    assert [i["type"] for i in seen if i["type"] != "progress"] == ["output", "output", "result"]


def test_an_output_reaches_runpod_before_the_job_ends(streaming_loop):
    streaming_loop.submit("stream-1", {"workflow": fresh("output_then_slow_node")})
    result = streaming_loop.result("stream-1", timeout=60)
    streamed = streaming_loop.streamed("stream-1")
    outputs = [(at, item) for at, item in streamed if item["type"] == "output"]
    assert [item["output"]["filename"] for _, item in outputs] == ["early_00001_.png", "late_00001_.png"]
    assert result["received_at"] - outputs[0][0] >= 1.2, "the early output arrived while the 1.5 s node ran"
    assert streamed[-1][1]["type"] == "result"
    assert [i["type"] for i in result["output"]][-1] == "result", "the final post aggregates the items"


def test_a_cancelled_streamed_job_stops_and_the_next_job_runs(streaming_loop):
    streaming_loop.submit("stream-cancel", {"workflow": workflow("slow_node")})
    streaming_loop.wait_for_node("stream-cancel", "2")
    streaming_loop.stop("stream-cancel")
    stopped = time.monotonic()
    streaming_loop.submit("after-stream-cancel", {"workflow": fresh("output_then_slow_node")})
    result = streaming_loop.result("after-stream-cancel", timeout=60)
    assert result["output"][-1]["type"] == "result"
    assert time.monotonic() - stopped < 30, "the 30 s node was interrupted (the node's own length is the bound)"


def test_previews_of_a_real_ksampler_reach_runpod_as_preview_items(streaming_loop):
    wf = workflow("txt2img_checkpoint")
    wf["4"]["inputs"].update(width=256, height=256)
    wf["5"]["inputs"].update(steps=4, seed=next(_runs))
    streaming_loop.submit("previews-1", {"workflow": wf, "previews": True})
    result = streaming_loop.result("previews-1", timeout=60)
    previews = [item for _, item in streaming_loop.streamed("previews-1") if item["type"] == "preview"]
    assert previews and previews[0]["node_id"] == "5"
    assert previews[0]["image"].startswith("data:image/jpeg;base64,")
    assert result["output"][-1]["images"]


def test_a_preflight_answers_missing_models_and_unknown_nodes_through_runpod(streaming_loop):
    streaming_loop.submit("dry-1", {"workflow": workflow("preflight_missing_model_and_unknown_node"),
                                    "dry_run": True})
    [result_item] = [i for i in streaming_loop.result("dry-1", timeout=60)["output"] if i["type"] == "result"]
    assert result_item["ok"] is False
    assert [n["class_type"] for n in result_item["missing_nodes"]] == ["NoSuchUpscaler", "EmbeddedTestBrokenNode"]
    assert result_item["missing_models"][0]["value"] == "does-not-exist.safetensors"


def test_timings_that_add_up_reach_runpod(streaming_loop):
    streaming_loop.submit("timings-1", {"workflow": fresh("output_then_slow_node"), "timings": True})
    timings = streaming_loop.result("timings-1", timeout=60)["output"][-1]["timings"]
    nodes = timings["nodes"]
    assert set(nodes) == {"1", "2", "3", "4"}
    assert nodes["3"]["ms"] >= 1450  # the node sleeps 1.5 s: it cannot take less
    assert sum(n["ms"] for n in nodes.values()) <= timings["total_ms"]
