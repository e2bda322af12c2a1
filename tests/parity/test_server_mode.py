"""The legacy server mode on its own: reconnects when the websocket drops (through a loopback TCP
proxy the test cuts), a clear error when ComfyUI dies mid-job, then a restart for the next job;
interrupt and timeout over HTTP; samplers at any log level."""

import dataclasses
import random
import threading
import time

import pytest

from embedded import Executor, JobInterrupted, JobTimeout, ServerCrashed
from embedded.job.events import ExecutedEvent, ExecutingEvent
from embedded.backends.server import ServerRunner
from embedded.job.types import Job

from ..helpers import workflow
from ..servers import TcpProxy


@pytest.fixture(scope="module")
def proxied(server_config, tmp_path_factory):
    """A server runner whose client talks to ComfyUI through a proxy the tests can cut."""
    config = dataclasses.replace(server_config, work_dir=tmp_path_factory.mktemp("proxied-work"),
                                 websocket_reconnect_attempts=3, websocket_reconnect_delay_s=0.3)
    runner = ServerRunner(config).start()
    proxy = TcpProxy((runner.server.host, runner.server.port))
    runner.address = proxy.address
    runner.proxy = proxy
    yield runner
    proxy.close()
    runner.close()


def fresh(name: str) -> dict:
    wf = workflow(name)
    wf["1"]["inputs"]["color"] = random.randrange(1 << 24)
    return wf


def when_node_runs(node_id: str):
    started = threading.Event()
    return started, lambda ev: started.set() if isinstance(ev, ExecutingEvent) and ev.node_id == node_id else None


def test_a_dropped_websocket_reconnects_and_the_job_completes(proxied):
    started, on_event = when_node_runs("2")
    future = proxied.submit(Job(fresh("short_sleep")), on_event)
    assert started.wait(30)
    before = proxied.proxy.connections
    assert proxied.proxy.cut() >= 1
    result = future.result(timeout=30)
    assert [o.filename for o in result.outputs] == ["after_sleep_00001_.png"]
    assert proxied.proxy.connections > before  # it came back through the proxy


def test_a_completion_while_disconnected_is_not_missed(proxied):
    config = proxied.config
    proxied.config = dataclasses.replace(config, websocket_reconnect_delay_s=2.5)  # back after the job ends
    try:
        started, on_event = when_node_runs("2")
        future = proxied.submit(Job(fresh("short_sleep")), on_event)
        assert started.wait(30)
        proxied.proxy.cut()
        result = future.result(timeout=30)
    finally:
        proxied.config = config
    assert [o.filename for o in result.outputs] == ["after_sleep_00001_.png"]


def test_interrupt_and_timeout_go_through_the_http_api(proxied):
    """Both stop the 30 s node inside it (it never reports ``executed``): events, not a clock."""
    started, on_event = when_node_runs("2")
    events = []
    future = proxied.submit(Job(fresh("slow_node"), job_id="srv-slow"), lambda ev: (events.append(ev), on_event(ev)))
    assert started.wait(30)
    proxied.interrupt("srv-slow")
    with pytest.raises(JobInterrupted) as info:
        future.result(timeout=60)
    assert (info.value.node_id, info.value.node_type) == ("2", "EmbeddedTestSleep")
    assert not any(isinstance(e, ExecutedEvent) and e.node_id == "2" for e in events)
    events.clear()
    with pytest.raises(JobTimeout):
        proxied.run(Job(fresh("slow_node"), timeout=1.0), events.append)
    assert any(isinstance(e, ExecutingEvent) and e.node_id == "2" for e in events)
    assert not any(isinstance(e, ExecutedEvent) and e.node_id == "2" for e in events)
    assert proxied.run(Job(fresh("solid_red_image"))).outputs


def test_comfyui_killed_mid_job_is_a_clear_error_then_the_next_job_restarts_it(proxied):
    started, on_event = when_node_runs("2")
    future = proxied.submit(Job(fresh("slow_node")), on_event)
    assert started.wait(30)
    killed = time.monotonic()
    old_pid = proxied.server.proc.pid
    proxied.server.kill()
    with pytest.raises(ServerCrashed) as info:
        future.result(timeout=30)
    attempts, delay = proxied.config.websocket_reconnect_attempts, proxied.config.websocket_reconnect_delay_s
    assert time.monotonic() - killed < attempts * delay + 30, "no hang: bounded by the reconnect settings"
    assert "ComfyUI's server exited with code" in str(info.value) and "during the job" in str(info.value)
    # the next job starts a new ComfyUI server (the proxy still points at the old port: go direct)
    proxied.address = None
    result = proxied.run(Job(fresh("solid_red_image")))
    assert result.outputs and proxied.server.proc.pid != old_pid


def test_websocket_trace_logs_every_server_frame(proxied, caplog):
    import logging
    config = proxied.config
    proxied.config = dataclasses.replace(config, websocket_trace=True)
    try:
        with caplog.at_level(logging.INFO, logger="embedded.job.events"):
            result = proxied.run(Job(fresh("solid_red_image")))
    finally:
        proxied.config = config
    lines = [r.getMessage() for r in caplog.records if r.name == "embedded.job.events"]
    assert any(line.startswith("websocket trace [server]") and '"type": "execution_start"' in line for line in lines)
    assert any('"node": null, "prompt_id": "%s"' % result.prompt_id in line for line in lines)


def test_the_server_listens_on_loopback_with_the_embedded_arguments(proxied, server_config):
    from embedded.backends.launch import comfy_args
    args = list(proxied.booted.args)
    assert args[args.index("--listen") + 1] == "127.0.0.1"
    assert args[:len(comfy_args(proxied.config, proxied.booted.cpu))] == comfy_args(proxied.config,
                                                                                      proxied.booted.cpu)
    assert proxied.booted.mode == "server" and proxied.booted.node_classes > 500


def test_samplers_run_when_comfyuis_log_level_leaves_its_log_buffer_empty(server_config, models, tmp_path_factory):
    # ComfyUI's log interceptor reads the buffer's last line on tqdm's first "\r" write; at ERROR
    # nothing was logged before the first sampler (embedded_log_buffer keeps it from being empty)
    config = dataclasses.replace(server_config, log_level="ERROR", work_dir=tmp_path_factory.mktemp("quiet-server"))
    with Executor(config) as quiet:
        result = quiet.run(workflow("txt2img_checkpoint"))
    assert [o.filename for o in result.outputs] == ["txt2img_00001_.png"]
