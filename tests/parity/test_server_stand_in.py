"""The PromptServer stand-in offers what popular packs reach for, and does what ComfyUI's server
does where it has a meaning in-process (issue 17, items 5, 7 and 8), in both modes, with a pack
of ours that uses each member the way those packs do (``tests/custom_nodes/embedded_server_api_pack.py``):
on-prompt handlers rewrite the prompt before validation (one that raises is logged and skipped),
``prompt_queue`` exists at import and holds the running job, ``client_id`` / ``last_node_id`` /
``number`` are set while a node runs, a node's own messages reach the job's events, and a UI
``text`` that is a plain string is one output."""

import json

import pytest

from embedded.job.events import MessageEvent, ProgressTextEvent, to_frames

MODES = ["embedded", "server"]


def probe(label: str) -> dict:
    return {"1": {"class_type": "EmbeddedServerProbe", "inputs": {"label": label}}}


def seen(ex, wf) -> tuple[dict, list]:
    events = []
    result = ex.run(wf, on_event=events.append)
    [out] = [o for o in result.outputs if o.node_id == "1"]
    return json.loads(out.text), events


@pytest.mark.parametrize("mode", MODES)
def test_on_prompt_handlers_rewrite_the_prompt_before_it_runs_and_a_failing_one_is_skipped(backends, mode):
    report, _ = seen(backends[mode], probe("one __colour__ two"))
    assert report["label"] == "one teal two"


@pytest.mark.parametrize("mode", MODES)
def test_a_running_node_sees_the_server_as_in_comfyui(backends, mode):
    report, _ = seen(backends[mode], probe("plain"))
    assert report == {"label": "plain", "client_id_set": True, "last_node_id": "1", "unique_id": "1",
                      "same_queue_as_at_import": True, "running": 1, "running_prompt_is_this_one": True,
                      "number_is_int": True, "builtin_seen_at_import": True}


def test_the_running_queue_item_is_shaped_as_comfyuis_own_with_secrets_apart(backends):
    """``currently_running``'s item: ``(number, prompt_id, prompt, extra_data, outputs, sensitive)``,
    the Comfy.org key in item 5 only, ``create_time`` (milliseconds) in item 3, as ComfyUI's server."""
    items = {}
    for mode in MODES:
        result = backends[mode].run(probe("queue item"), extra_data={"api_key_comfy_org": "test-key-not-secret",
                                                                     "extra_pnginfo": {"workflow": {}}})
        [out] = [o for o in result.outputs if o.node_id == "1"]
        items[mode] = json.loads(out.text)["item"]
    assert items["embedded"] == items["server"]
    assert items["embedded"] == {"length": 6, "extra_data": ["client_id", "create_time", "extra_pnginfo"],
                                 "sensitive": ["api_key_comfy_org"], "create_time_ms": True}


@pytest.mark.parametrize("mode", MODES)
def test_a_nodes_own_messages_reach_the_jobs_events_with_comfyuis_frames(backends, mode):
    _, events = seen(backends[mode], probe("sent"))
    messages = [e for e in events if isinstance(e, MessageEvent)]
    assert [(m.name, m.data) for m in messages] == [("embedded-probe-feedback", {"node_id": "1", "value": "sent"}),
                                                    ("embedded-probe-broadcast", {"node_id": "1"})]
    assert to_frames(messages[0]) == [{"type": "embedded-probe-feedback", "data": {"node_id": "1", "value": "sent"}}]
    assert [e.text for e in events if isinstance(e, ProgressTextEvent)] == ["probe sent"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape, texts", [("string", ["hello"]), ("strings", ["hello", "HELLO"]),
                                          ("dicts", ['{"text": "hello"}'])])
def test_ui_text_comes_back_as_the_frontend_reads_it_whatever_its_shape(backends, mode, shape, texts):
    wf = {"1": {"class_type": "EmbeddedUiText", "inputs": {"shape": shape, "text": "hello"}}}
    assert [o.text for o in backends[mode].run(wf).outputs] == texts
