"""Jobs are independent: an identical job is served from ComfyUI's cache with its outputs, no job sees or returns another's
files, the caller's workflow is never modified, and events arrive in ComfyUI's order."""

import copy
import threading

import pytest

from embedded import ExecutionError, ValidationError
from embedded.job import events as ev

from ..helpers import open_image, png_bytes, workflow
from ..servers import wait_until


def test_the_same_job_twice_returns_its_outputs_both_times(executor):
    first = executor.run(workflow("save_and_preview"))
    second = executor.run(workflow("save_and_preview"))
    assert [(o.node_id, o.type, o.data) for o in first.outputs] == \
           [(o.node_id, o.type, o.data) for o in second.outputs]
    assert len(second.outputs) == 2
    # PreviewImage names temp files with a random part, as in ComfyUI; saved files keep their name
    assert [o.filename for o in first.outputs if o.type == "output"] == ["kept_00001_.png"]
    assert [o.filename for o in second.outputs if o.type == "output"] == ["kept_00001_.png"]


def test_an_identical_job_runs_no_node_and_returns_the_cached_outputs_with_their_bytes(executor):
    first = executor.run(workflow("progress_steps"))
    events = []
    result = executor.run(workflow("progress_steps"), on_event=events.append)
    [cached] = [e for e in events if isinstance(e, ev.CachedEvent)]
    assert set(cached.nodes) == {"1", "2", "3"}
    assert [e.node_id for e in events if isinstance(e, ev.ExecutingEvent)] == []
    assert [(o.filename, o.data) for o in result.outputs] == [(o.filename, o.data) for o in first.outputs]
    assert result.outputs[0].filename == "progress_00001_.png"


def test_a_changed_job_reruns_what_comfyui_reruns_and_writes_into_its_own_folder(executor):
    wf = uncached("save_and_preview", 101)
    executor.run(wf)
    wf["2"]["inputs"]["filename_prefix"] = "changed"
    events = []
    result = executor.run(wf, on_event=events.append)
    [cached] = [e for e in events if isinstance(e, ev.CachedEvent)]
    assert set(cached.nodes) == {"1", "3"}, "only the save node changed"
    assert [e.node_id for e in events if isinstance(e, ev.ExecutingEvent)] == ["2"]
    assert sorted(o.filename for o in result.outputs if o.type == "output") == ["changed_00001_.png"]
    assert len(result.outputs) == 2 and all(o.data for o in result.outputs)


def test_every_job_numbers_its_files_from_one(executor):
    names = [executor.run(workflow("solid_red_image")).outputs[0].filename for _ in range(3)]
    assert names == ["ComfyUI_00001_.png"] * 3


def test_a_job_never_sees_input_images_of_an_earlier_job(executor):
    executor.run(workflow("load_and_invert_input"), {"in.png": png_bytes()})
    with pytest.raises(ValidationError) as info:
        executor.run(workflow("load_and_invert_input"))
    assert "Invalid image file: in.png" in str(info.value)


def test_two_jobs_with_the_same_input_name_get_their_own_bytes(executor):
    wf = workflow("load_and_invert_input")
    black = executor.run(wf, {"in.png": png_bytes((4, 4), (0, 0, 0))}).outputs[0]
    white = executor.run(wf, {"in.png": png_bytes((4, 4), (255, 255, 255))}).outputs[0]
    assert open_image(black.data).convert("RGB").getpixel((0, 0)) == (255, 255, 255)
    assert open_image(white.data).convert("RGB").getpixel((0, 0)) == (0, 0, 0)


def test_concurrent_submissions_run_one_at_a_time_with_their_own_outputs(executor):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
    wf = workflow("load_and_invert_input")
    futures = [executor.submit(wf, {"in.png": png_bytes((4, 4), c)}) for c in colours]
    for colour, future in zip(colours, futures):
        [out] = future.result(timeout=60).outputs
        assert out.filename == "inverted_00001_.png"
        assert open_image(out.data).convert("RGB").getpixel((0, 0)) == tuple(255 - v for v in colour)


def test_the_callers_workflow_is_left_unchanged(executor):
    wf = workflow("progress_steps")
    before = copy.deepcopy(wf)
    executor.run(wf)
    assert wf == before


def uncached(name: str, colour: int) -> dict:
    """The fixture with a colour no other test uses, so that no node of it is cached yet."""
    wf = workflow(name)
    wf["1"]["inputs"]["color"] = colour
    return wf


def test_events_follow_comfyui_order(executor):
    events = []
    result = executor.run(uncached("progress_steps", 0x010203), on_event=events.append)
    kinds = [type(e) for e in events if not isinstance(e, ev.ProgressStateEvent)]
    assert kinds[:2] == [ev.StartEvent, ev.CachedEvent]
    assert kinds[-1] is ev.SuccessEvent
    assert {e.prompt_id for e in events} == {result.prompt_id}
    executing = [e.node_id for e in events if isinstance(e, ev.ExecutingEvent)]
    assert executing.index("1") < executing.index("2") < executing.index("3")
    progress = [(e.node_id, e.value, e.max) for e in events if isinstance(e, ev.ProgressEvent)]
    assert progress == [("2", float(i), 5.0) for i in range(1, 6)] or progress == [("2", i, 5) for i in range(1, 6)]
    [text] = [e for e in events if isinstance(e, ev.ProgressTextEvent)]
    assert (text.node_id, text.text) == ("2", "did 5 steps")
    [executed] = [e for e in events if isinstance(e, ev.ExecutedEvent)]
    assert executed.node_id == "3" and executed.output["images"][0]["filename"] == "progress_00001_.png"


def test_error_events_carry_node_and_traceback(executor):
    events = []
    with pytest.raises(ExecutionError):
        executor.run(uncached("node_raises", 0x040506), on_event=events.append)
    error = events[-1]
    assert isinstance(error, ev.ErrorEvent)
    assert (error.node_id, error.node_type, error.exception_type) == ("2", "EmbeddedTestRaise", "RuntimeError")
    assert error.traceback and error.executed == ("1",)


def test_a_callback_that_raises_does_not_break_the_job(executor):
    def broken(_event):
        raise ValueError("callback bug")

    assert executor.run(workflow("solid_red_image"), on_event=broken).outputs


def test_websocket_compat_frames_for_a_known_workflow(executor):
    frames = []
    result = executor.run(uncached("solid_red_image", 0x070809), on_event=lambda e: frames.extend(ev.to_frames(e)))
    pid = result.prompt_id
    types = [f["type"] for f in frames]
    assert types == ["execution_start", "execution_cached",
                     "progress_state", "executing", "progress_state",
                     "progress_state", "executing", "executed", "progress_state",
                     "execution_success", "executing"]
    assert frames[0]["data"]["prompt_id"] == pid and isinstance(frames[0]["data"]["timestamp"], int)
    assert frames[3]["data"] == {"node": "1", "display_node": "1", "prompt_id": pid}
    assert frames[7]["data"]["node"] == "2"
    assert frames[7]["data"]["output"] == {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "",
                                                       "type": "output"}]}
    assert frames[-1] == {"type": "executing", "data": {"node": None, "prompt_id": pid}}


def test_websocket_trace_logs_every_frame(test_config, caplog):
    import dataclasses
    import logging

    from embedded.backends.comfy import ComfyRunner
    from embedded.job.types import Job

    traced = ComfyRunner(dataclasses.replace(test_config, websocket_trace=True)).start()
    try:
        with caplog.at_level(logging.INFO, logger="embedded.job.events"):
            traced.run(Job(workflow("solid_red_image")))
    finally:
        traced.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "embedded.job.events"]
    assert any('"type": "execution_start"' in line for line in lines)
    assert lines[-1].endswith('"node": null, "prompt_id": "%s"}}' % lines[0].split('"prompt_id": "')[1].split('"')[0])


def test_callbacks_run_on_the_runner_thread_not_the_callers(executor):
    threads = set()
    executor.run(workflow("solid_red_image"), on_event=lambda e: threads.add(threading.current_thread().name))
    assert threads == {"comfy-runner"}


def test_a_hostile_job_id_cannot_move_the_job_folder(executor, test_config):
    result = executor.run(workflow("solid_red_image"), job_id="../../escape")
    assert result.job_id == "../../escape" and result.outputs
    assert not (test_config.work_dir.parent / "escape").exists()


def test_an_ended_jobs_folder_is_out_of_the_jobs_folder_when_it_is_answered_and_deleted_off_the_runner(
        executor, test_config):
    """The caller is answered once the job's folder is moved aside (one rename); a thread of its own
    deletes it (never the runner, which takes the next job meanwhile), and the next job never sees
    it: its folder is its own, in the jobs folder alone."""
    executor.run(workflow("solid_red_image"))
    assert not list(test_config.jobs_dir.iterdir())
    wait_until(lambda: not list(test_config.trash_dir.iterdir()), 30, "the ended job's folder to be deleted")
    seen_at_start = []

    def at_start(event):
        if isinstance(event, ev.StartEvent):
            seen_at_start.append(len(list(test_config.jobs_dir.iterdir())))

    executor.run(uncached("solid_red_image", 0x0a0b0c), on_event=at_start)
    assert seen_at_start == [1], "the running job's folder alone"
    wait_until(lambda: not list(test_config.trash_dir.iterdir()), 30, "the second job's folder to be deleted")