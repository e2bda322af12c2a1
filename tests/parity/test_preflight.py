"""Preflight (``Executor.check``, a request's ``"dry_run": true``, ``python -m embedded check``):
what a workflow would need, found without running a node, the same in both modes."""

import asyncio
import dataclasses

import pytest

from embedded.worker.handler import Worker

from ..helpers import png_bytes, workflow


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_a_missing_model_and_unknown_nodes_are_all_reported_without_running_anything(backends, mode, test_config):
    report = backends[mode].check(workflow("preflight_missing_model_and_unknown_node"))
    assert report.ok is False
    assert [(n.class_type, n.pack_failed) for n in report.missing_nodes] == [
        ("NoSuchUpscaler", None), ("EmbeddedTestBrokenNode", "embedded_broken_pack")]
    [model] = report.missing_models
    assert (model.node_id, model.input, model.value) == ("1", "ckpt_name", "does-not-exist.safetensors")
    assert str(test_config.models / "checkpoints") in model.folders_searched
    assert report.errors[:2] == ["Node type NoSuchUpscaler does not exist",
                                 "Node type EmbeddedTestBrokenNode does not exist (node pack 'embedded_broken_pack', "
                                 "which defines it, failed to import at boot)"]


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_comfyuis_validation_errors_are_the_preflights_errors(backends, mode):
    report = backends[mode].check(workflow("missing_model"))
    assert report.ok is False and report.missing_nodes == []
    assert [m.value for m in report.missing_models] == ["does-not-exist.safetensors"]
    assert any("ckpt_name" in line and "does-not-exist.safetensors" in line for line in report.errors)
    out_of_range = backends[mode].check(workflow("invalid_out_of_range"))
    assert out_of_range.errors == ["Node 1 (EmptyImage), input 'width': Value 0 smaller than min of 1: width"]


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_a_valid_workflow_passes_and_no_node_runs(backends, mode, test_config):
    wf = workflow("load_and_invert_input")
    report = backends[mode].check(wf, {wf["1"]["inputs"]["image"]: png_bytes()})
    assert report.ok is True and report.errors == [] and report.missing_models == []
    work = backends[mode].config.work_dir
    assert not list(work.rglob("*.png")), "nothing was saved, and the input file is gone"
    missing_input = backends[mode].check(wf)
    assert missing_input.ok is False and "Invalid image file" in " ".join(missing_input.errors)


def test_dry_run_through_the_handler_answers_the_report(executor, test_config):
    worker = Worker(dataclasses.replace(test_config), executor=executor)
    job = {"id": "dry-1", "input": {"workflow": workflow("preflight_missing_model_and_unknown_node"),
                                    "dry_run": True}}
    body = asyncio.run(worker.handle(job))  # how fast: make bench reports it
    assert set(body) == {"ok", "errors", "missing_models", "missing_nodes", "inputs_to_fetch"}
    assert body["inputs_to_fetch"] == []
    assert body["ok"] is False
    assert body["missing_nodes"] == [{"class_type": "NoSuchUpscaler"},
                                     {"class_type": "EmbeddedTestBrokenNode", "pack_failed": "embedded_broken_pack"}]
    assert body["missing_models"][0]["value"] == "does-not-exist.safetensors"
    ok = asyncio.run(worker.handle({"id": "dry-2", "input": {"workflow": workflow("solid_red_image"),
                                                              "dry_run": True}}))
    assert ok == {"ok": True, "errors": [], "missing_models": [], "missing_nodes": [], "inputs_to_fetch": []}
