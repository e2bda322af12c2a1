"""ComfyUI messages become typed events, and events become the frames ComfyUI's websocket sends."""

import pytest

from embedded.job import events as ev

# Messages as ComfyUI's executor sends them (captured from the pinned tree's execution.py shapes).
MESSAGES = [
    ("execution_start", {"prompt_id": "p", "timestamp": 1}),
    ("execution_cached", {"nodes": ["1"], "prompt_id": "p", "timestamp": 2}),
    ("executing", {"node": "2", "display_node": "2", "prompt_id": "p"}),
    ("progress", {"value": 3, "max": 10, "prompt_id": "p", "node": "2"}),
    ("progress_state", {"prompt_id": "p", "nodes": {"2": {"value": 3, "max": 10, "state": "running"}}}),
    ("executed", {"node": "2", "display_node": "2", "output": {"images": []}, "prompt_id": "p"}),
    ("execution_success", {"prompt_id": "p", "timestamp": 3}),
]


@pytest.mark.parametrize("event, data", MESSAGES)
def test_a_message_round_trips_to_the_same_frame(event, data):
    typed = ev.from_comfy(event, data)
    assert typed.type == event
    assert ev.to_frames(typed)[0] == {"type": event, "data": data}


def test_error_event_keeps_what_a_user_needs_and_closes_the_prompt():
    data = {"prompt_id": "p", "node_id": "7", "node_type": "KSampler", "executed": ["1"],
            "exception_message": "bad", "exception_type": "ValueError", "traceback": ["tb"], "timestamp": 5}
    typed = ev.from_comfy("execution_error", dict(data, current_inputs={}, current_outputs=[]))
    assert (typed.node_id, typed.node_type, typed.exception_type, typed.exception_message) == \
           ("7", "KSampler", "ValueError", "bad")
    frames = ev.to_frames(typed)
    assert frames[0] == {"type": "execution_error", "data": data}
    assert frames[1] == {"type": "executing", "data": {"node": None, "prompt_id": "p"}}


@pytest.mark.parametrize("terminal", [ev.SuccessEvent("p"), ev.InterruptedEvent("p", "3", "X"),
                                      ev.ErrorEvent("p", "3", "X", "E", "m")])
def test_every_terminal_event_ends_with_executing_null(terminal):
    assert ev.to_frames(terminal)[-1] == {"type": "executing", "data": {"node": None, "prompt_id": "p"}}


@pytest.mark.parametrize("event, data", [("status", {"status": {}}), ("executing", {"node": None}),
                                         ("crystools.monitor", {}), (1, b"binary"), ("progress", "x")])
def test_messages_without_a_job_event_are_ignored(event, data):
    assert ev.from_comfy(event, data) is None


def test_dispatcher_survives_a_broken_callback_and_traces_frames(caplog):
    seen = []

    def callback(event):
        seen.append(event)
        raise RuntimeError("bug in user code")

    with caplog.at_level("INFO", logger="embedded.job.events"):
        ev.Dispatcher(callback, trace_frames=True)(ev.SuccessEvent("p"))
    assert len(seen) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any('"type": "execution_success"' in m for m in messages)
    assert any("callback raised" in m for m in messages)


def test_to_frames_is_on_the_public_face():
    """Users relaying a job to ComfyUI's websocket clients import it from the package or ``embedded.events``."""
    import embedded
    import embedded.events
    from embedded.job.events import to_frames

    assert embedded.to_frames is embedded.events.to_frames is to_frames
    assert embedded.to_frames(embedded.StartEvent("p1", 5)) == [
        {"type": "execution_start", "data": {"prompt_id": "p1", "timestamp": 5}}]
