"""Deadlines that hold (issue 18, item 1): a download from a server that drips one byte every
0.2 s (each gap shorter than FETCH_READ_TIMEOUT_S) ends at the job's timeout, at an interrupt or
a closed stream, at a RunPod cancel, and otherwise at its per-file deadline (FETCH_DEADLINE_S):
the connection is closed (the server sees it hang up), whatever the server sends. An upload to a
bucket that accepts bytes slowly ends at UPLOAD_DEADLINE_S. Bounds are derived from the settings
under test with a generous margin, never from this machine's speed."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from embedded import Executor, FetchError, JobInterrupted, JobTimeout, ModelRef
from embedded.staging.downloads import WATCH_EVERY_S, Fetcher, FetchSettings, S3Settings
from embedded.staging.guard import Allowlist, Guard

from ..helpers import workflow
from ..servers import SlowSink, wait_until

pytestmark = pytest.mark.timeout(120)
#: how long after its cause a stopped transfer must have closed its connection: the watcher's
#: period, and a margin for a busy machine
HANG_UP_WITHIN = WATCH_EVERY_S + 10


def dripping(file_server, path: str) -> str:
    file_server.files[path] = b""
    file_server.drip[path] = 0.2
    return file_server.url(path)


def requested(file_server, path: str) -> None:
    wait_until(lambda: file_server.hits(path) >= 1, 60, f"a request for {path}")


def test_a_jobs_timeout_stops_a_dripping_download(executor, file_server):
    url = dripping(file_server, "/drip/timeout.png")
    with pytest.raises(JobTimeout):
        executor.run(workflow("load_and_invert_input"), files={"in.png": url}, timeout=1)
    assert file_server.hung_up("/drip/timeout.png", HANG_UP_WITHIN)


def test_an_interrupt_stops_a_dripping_download(executor, file_server):
    import threading

    url = dripping(file_server, "/drip/interrupt.png")
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(error=_error_of(
        lambda: executor.run(workflow("load_and_invert_input"), files={"in.png": url}, job_id="drip-1"))))
    runner.start()  # the run blocks while it fetches: beside the test
    requested(file_server, "/drip/interrupt.png")
    assert executor.interrupt("drip-1") is True
    runner.join(HANG_UP_WITHIN)
    assert isinstance(outcome.get("error"), JobInterrupted)
    assert file_server.hung_up("/drip/interrupt.png", HANG_UP_WITHIN)


def _error_of(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return exc
    return None


def test_a_stream_with_a_timeout_stops_a_dripping_download(executor, file_server):
    url = dripping(file_server, "/drip/stream.png")
    with pytest.raises(JobTimeout):
        for _ in executor.stream(workflow("load_and_invert_input"), files={"in.png": url}, timeout=1):
            pass
    assert file_server.hung_up("/drip/stream.png", HANG_UP_WITHIN)


def test_a_download_without_a_job_timeout_ends_at_its_deadline(executor, test_config, file_server):
    url = dripping(file_server, "/drip/deadline.png")
    with Executor(dataclasses.replace(test_config, fetch_deadline_s=1.0)) as ex:
        with pytest.raises(FetchError, match=r"not done within 1 s \(FETCH_DEADLINE_S\)"):
            ex.run(workflow("load_and_invert_input"), files={"in.png": url})
    assert file_server.hung_up("/drip/deadline.png", HANG_UP_WITHIN)


def test_a_dripping_model_download_is_stopped_by_the_jobs_timeout(executor, file_server):
    url = dripping(file_server, "/drip/model.safetensors")
    with pytest.raises(JobTimeout):
        executor.run(workflow("solid_red_image"), timeout=1,
                     models=[ModelRef(url, "loras", "dripped.safetensors")])
    assert file_server.hung_up("/drip/model.safetensors", HANG_UP_WITHIN)


def test_a_runpod_cancel_stops_a_dripping_download(make_worker, file_server):
    url = dripping(file_server, "/drip/runpod.png")

    async def main():
        task = asyncio.ensure_future(make_worker().handle(
            {"id": "drip-runpod", "input": {"workflow": workflow("load_and_invert_input"),
                                            "images": [{"name": "in.png", "image": url}]}}))
        await asyncio.to_thread(requested, file_server, "/drip/runpod.png")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(main())
    assert file_server.hung_up("/drip/runpod.png", HANG_UP_WITHIN)


def test_an_upload_to_a_bucket_that_takes_bytes_slowly_ends_at_its_deadline():
    sink = SlowSink(every=0.2)
    try:
        fetcher = Fetcher(FetchSettings(Guard(Allowlist.parse(f"127.0.0.1:{sink.port}")), connect_timeout=5,
                                        read_timeout=5, retries=0, upload_deadline=1.0))
        bucket = S3Settings(sink.endpoint, "key", "secret", "outputs")
        with pytest.raises(FetchError, match=r"not done within 1 s \(UPLOAD_DEADLINE_S\)"):
            fetcher.upload(bucket, "job/out.png", b"x" * (8 * 1024 * 1024), "image/png")
        assert sink.hung_up.wait(HANG_UP_WITHIN)
    finally:
        sink.close()


def test_an_upload_through_rp_upload_to_a_slow_bucket_is_answered_inline_at_its_deadline(monkeypatch):
    """The BUCKET_* path (runpod's rp_upload, boto3): late at UPLOAD_DEADLINE_S, the output comes
    back as base64 with the reason, as any failed upload (nothing lost)."""
    from embedded.job.types import Output
    from embedded.worker.delivery import Delivery

    sink = SlowSink(every=0.2)
    try:
        for name, value in (("BUCKET_ENDPOINT_URL", f"{sink.endpoint}/outputs"), ("BUCKET_ACCESS_KEY_ID", "key"),
                            ("BUCKET_SECRET_ACCESS_KEY", "secret")):
            monkeypatch.setenv(name, value)
        output = Output("9", "image", "big.png", "", "output", "image/png", b"x" * (8 * 1024 * 1024))
        errors: list[str] = []
        sent = Delivery(True, upload_deadline=1.0).deliver("job-slow", output, errors)
        assert sent.type == "base64"
        assert errors == ["S3 upload of big.png failed (the upload was not done within 1 s (UPLOAD_DEADLINE_S)); "
                          "returned as base64 instead"]
    finally:
        sink.close()
