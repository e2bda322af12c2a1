"""The API server loses nothing when its disk does: real faults on a small tmpfs (mounted by the
test, as root) that holds the server's state folder (its SQLite state and its assets).

- A full disk: an output that cannot be stored fails its job with ``storage_full`` (never
  ``succeeded`` with the output missing), an upload gets 507, and no temporary file stays.
- A state that cannot be written (the same full disk): every job's event stream still ends with
  its terminal status, and what the job reads afterwards is what the stream said.
- A read-only state folder: refused at start, saying what to do.
- A bucket (``BUCKET_*``) that takes bytes slowly: an output's upload ends at UPLOAD_DEADLINE_S and
  the output is kept here instead; a cancel stops the upload at once (the package's one upload path).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from ..helpers import png_bytes
from ..servers import SlowSink, worker_env
from .apiv2 import ApiServer, sdk_workflow

comfy_sdk = pytest.importorskip("comfy_sdk")

pytestmark = pytest.mark.timeout(180)


@pytest.fixture()
def small_disk(tmp_path):
    """A 16 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture()
def server_on_small_disk(small_disk, tmp_path, extra_paths, monkeypatch):
    srv = ApiServer(worker_env(tmp_path / "work", extra_paths), tmp_path / "server.log",
                    "--state-dir", str(small_disk / "state"))
    monkeypatch.setenv("COMFY_BASE_URL", srv.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    yield srv, small_disk
    srv.stop()


def fill(folder) -> None:
    """Write a file in ``folder`` until its disk says it is full."""
    with open(folder / "filler", "wb") as out:
        while True:
            try:
                out.write(b"\0" * (1 << 16))
                out.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return


def temporary_files(disk) -> list[str]:
    return [p.name for p in (disk / "state" / "assets" / "blobs").iterdir() if p.name.startswith(".")]


def no_traceback_of_ours(log: str) -> bool:
    """Nothing of the server's own failed unanswered (the test packs' broken pack is logged at boot)."""
    return "embedded/apiv2" not in log and "Task exception" not in log and "failed in the server" not in log


def coloured(client, color: int):
    return sdk_workflow(client, "solid_red_image", {("1", "color"): color})


def statuses(job) -> list[str]:
    """The job's event stream, followed to its end: the statuses it said."""
    return [e.status for e in job.events() if isinstance(e, comfy_sdk.StatusChange)]


def test_on_a_full_disk_an_output_fails_its_job_an_upload_gets_507_and_no_temporary_file_stays(
        server_on_small_disk):
    srv, disk = server_on_small_disk
    with comfy_sdk.Comfy() as client:
        assert client.run(coloured(client, 0x00FF00)).status == "succeeded"
        fill(disk)
        job = client.submit(coloured(client, 0x0000FF))  # new bytes: a blob to write
        said = statuses(job)
        assert said[-1] == "failed"
        read = client.jobs.get(job.id)
        assert read.status == "failed" and read.outputs == []
        assert read.error.code == "storage_full" and "disk is full" in read.error.message
        upload = srv.raw("POST", "/assets", token=None, files={"file": ("big.png", png_bytes((300, 300)), "image/png")})
        assert (upload.status_code, upload.json()["error"]["code"]) == (507, "storage_full")
        assert temporary_files(disk) == []
        (disk / "filler").unlink()
        assert client.run(coloured(client, 0x0000FF)).status == "succeeded", "the server goes on once there is room"
    assert no_traceback_of_ours(srv.log())


def test_when_the_state_cannot_be_written_the_stream_still_ends_and_the_job_reads_as_the_stream_said(
        server_on_small_disk):
    srv, disk = server_on_small_disk
    with comfy_sdk.Comfy() as client:
        first = client.run(coloured(client, 0x00FF00))
        assert first.status == "succeeded"
        fill(disk)
        again = client.submit(coloured(client, 0x00FF00))  # the same bytes: its blob is there already
        assert statuses(again)[-1] == "succeeded"
        read = client.jobs.get(again.id)
        assert read.status == "succeeded" and read.outputs[0].to_bytes() == first.outputs[0].to_bytes()
        assert "cannot be written" in srv.raw("GET", "/health", token=None).json()["state_error"]
        (disk / "filler").unlink()
        assert client.run(coloured(client, 0xFF00FF)).status == "succeeded"
        assert srv.raw("GET", "/health", token=None).json()["state_error"] is None
    assert "cannot be written" in srv.log() and "can be written again" in srv.log()
    assert no_traceback_of_ours(srv.log()) and str(disk) not in srv.log()


def test_a_read_only_state_folder_is_refused_at_start_with_what_to_do(small_disk, tmp_path, extra_paths):
    (small_disk / "state").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    proc = subprocess.run([sys.executable, "-m", "embedded", "serve", "--port", "0", "--state-dir",
                           str(small_disk / "state")], env=worker_env(tmp_path / "work", extra_paths),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "serving" not in proc.stdout
    assert "cannot be written" in proc.stderr and "SERVE_STATE_DIR" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture()
def slow_bucket():
    sink = SlowSink(every=0.2)
    yield sink
    sink.close()


def bucket_server(tmp_path, extra_paths, sink, monkeypatch, **env: str) -> ApiServer:
    srv = ApiServer(worker_env(tmp_path / "work", extra_paths, BUCKET_ENDPOINT_URL=f"{sink.endpoint}/outputs",
                               BUCKET_ACCESS_KEY_ID="key", BUCKET_SECRET_ACCESS_KEY="secret", FETCH_RETRIES="0",
                               **env), tmp_path / "server.log")
    monkeypatch.setenv("COMFY_BASE_URL", srv.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    return srv


def test_an_upload_to_a_slow_bucket_ends_at_its_deadline_and_the_output_is_kept_here(
        tmp_path, extra_paths, slow_bucket, monkeypatch):
    srv = bucket_server(tmp_path, extra_paths, slow_bucket, monkeypatch, UPLOAD_DEADLINE_S="1")
    try:
        with comfy_sdk.Comfy() as client:
            job = client.submit(coloured(client, 0x00FF00))
            job.wait(timeout=30)
            assert job.status == "succeeded" and slow_bucket.hung_up.is_set()
            [out] = job.outputs
            assert out.get_download_url().url.startswith(srv.url), "served by this server"
            assert out.to_bytes()[:4] == b"\x89PNG"
        assert "not done within 1 s (UPLOAD_DEADLINE_S)" in srv.log() and "secret" not in srv.log()
    finally:
        srv.stop()


def test_a_cancel_stops_an_output_upload_under_way(tmp_path, extra_paths, slow_bucket, monkeypatch):
    srv = bucket_server(tmp_path, extra_paths, slow_bucket, monkeypatch, UPLOAD_DEADLINE_S="600")
    try:
        with comfy_sdk.Comfy() as client:
            job = client.submit(coloured(client, 0x00FF00))
            assert slow_bucket.receiving.wait(30), "the output's upload started"
            assert client.jobs.get(job.id).status == "running", "a job ends once its outputs are stored"
            job.cancel()
            job.wait(timeout=30)
            assert job.status == "canceled" and slow_bucket.hung_up.wait(10)
    finally:
        srv.stop()
