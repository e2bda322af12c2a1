"""Limits that agree: a cap on JSON bodies (413), ``--max-queue 0`` meaning no job waits, a bound on live
event streams (429), an upload bound no higher than what a job takes (INPUT_MAX_BYTES), names and content types without control
characters or other types, and ``Content-Disposition`` as RFC 6266 says.

One server for the module: SERVE_MAX_JSON_BYTES=64 KiB, --max-queue 0, INPUT_MAX_BYTES=200000 (so
SERVE_MAX_UPLOAD_BYTES defaults to it), SERVE_MAX_STREAMS=2.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from email.message import Message
from urllib.parse import unquote

import pytest

from ..helpers import png_bytes, workflow
from ..servers import wait_until, worker_env
from .apiv2 import ApiServer, wait_status

comfy_sdk = pytest.importorskip("comfy_sdk")

pytestmark = pytest.mark.timeout(180)
MAX_JSON, MAX_INPUT = 64 * 1024, 200_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, extra_paths):
    work = tmp_path_factory.mktemp("api-v2-limits")
    srv = ApiServer(worker_env(work, extra_paths, SERVE_MAX_JSON_BYTES=str(MAX_JSON), INPUT_MAX_BYTES=str(MAX_INPUT),
                                     SERVE_MAX_STREAMS="2"),
                    work.parent / "api-v2-limits.log", "--max-queue", "0").wait_healthy()
    yield srv
    srv.stop()


def error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_a_json_body_over_the_cap_is_413_and_leaves_its_key_unused(server):
    big = workflow("solid_red_image")
    big["2"]["inputs"]["filename_prefix"] = "x" * MAX_JSON
    refused = server.raw("POST", "/jobs", token=None, json={"workflow": big}, headers={"Idempotency-Key": "big"})
    assert error(refused) == (413, "payload_too_large") and "SERVE_MAX_JSON_BYTES" in refused.json()["error"]["message"]
    hashed = server.raw("POST", "/assets/from-hash", token=None, data=b"{" + b" " * MAX_JSON + b"}")
    assert error(hashed) == (413, "payload_too_large")
    accepted = server.raw("POST", "/jobs", token=None, json={"workflow": workflow("solid_red_image")},
                          headers={"Idempotency-Key": "big"})
    assert accepted.status_code == 201


def test_max_queue_0_takes_a_job_when_the_runner_is_free_and_refuses_one_that_would_wait(server, monkeypatch):
    monkeypatch.setenv("COMFY_BASE_URL", server.url)
    with comfy_sdk.Comfy() as client:
        running = client.submit(client.workflows.from_json(workflow("slow_node")))
        wait_status(client, running, "running")
        full = server.raw("POST", "/jobs", token=None, json={"workflow": workflow("solid_red_image")})
        assert error(full) == (429, "queue_full") and "--max-queue 0" in full.json()["error"]["message"]
        running.cancel()
        running.wait(timeout=60)
        assert client.run(client.workflows.from_json(workflow("solid_red_image"))).status == "succeeded"


def test_an_upload_is_bounded_by_what_a_job_takes(server):
    over = server.raw("POST", "/assets", token=None, files={"file": ("big.bin", b"\0" * (MAX_INPUT + 1),
                                                                     "application/octet-stream")})
    assert error(over) == (413, "payload_too_large")
    at = server.raw("POST", "/assets", token=None, files={"file": ("fits.bin", b"\1" * MAX_INPUT,
                                                                   "application/octet-stream")})
    assert at.status_code == 201


def test_a_server_whose_upload_bound_is_above_what_a_job_takes_is_refused_at_start(tmp_path, extra_paths):
    proc = subprocess.run([sys.executable, "-m", "embedded", "serve", "--port", "0"],
                          env=worker_env(tmp_path, extra_paths, SERVE_MAX_UPLOAD_BYTES="300000",
                                         INPUT_MAX_BYTES="200000"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "INPUT_MAX_BYTES" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fields", [
    {"file_path": "a\r\nX-Injected: 1.png"},
    {"file_path": "tab\there.png"},
    {"content_type": "image/png\r\nX-Injected: 1"},
    {"content_type": "not a type"},
])
def test_control_characters_or_a_bad_media_type_in_an_upload_are_refused(server, fields):
    parts = {"file": ("ok.png", png_bytes(), "image/png"), **{k: (None, v) for k, v in fields.items()}}
    assert error(server.raw("POST", "/assets", token=None, files=parts)) == (422, "invalid_request")


def test_a_malformed_multipart_body_is_422(server):
    cut_short = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\nabc"
    for body, content_type in ((cut_short, "multipart/form-data; boundary=b"),
                               (b"no parts at all", "multipart/form-data; boundary=b"),
                               (b"x", "multipart/form-data")):
        refused = server.raw("POST", "/assets", token=None, data=body, headers={"Content-Type": content_type})
        assert error(refused) == (422, "invalid_request"), body


def test_from_hash_refuses_fields_that_are_not_strings(server):
    made = server.raw("POST", "/assets", token=None, files={"file": ("one.png", png_bytes(), "image/png")}).json()
    for body in ({"hash": made["hash"], "content_type": 5}, {"hash": made["hash"], "file_path": ["x"]},
                 {"hash": made["hash"], "file_path": "a\nb"}, {"hash": 7}):
        refused = server.raw("POST", "/assets/from-hash", token=None, data=json.dumps(body))
        assert refused.status_code in (404, 422) and "error" in refused.json(), body
    good = server.raw("POST", "/assets/from-hash", token=None,
                      data=json.dumps({"hash": made["hash"], "content_type": "image/png", "file_path": "two.png"}))
    assert good.status_code == 201
    assert server.raw("GET", f"/assets/{good.json()['id']}/content", token=None).content == png_bytes()


def test_content_disposition_names_the_file_as_rfc_6266_says(server):
    name = 'été "quoted"; x=1.png'
    made = server.raw("POST", "/assets", token=None, files={"file": (None, png_bytes(), "image/png"),
                                                            "file_path": (None, name)}).json()
    header = server.raw("GET", f"/assets/{made['id']}/content", token=None).headers["Content-Disposition"]
    parsed = Message()
    parsed["Content-Disposition"] = header
    assert parsed.get_content_disposition() == "inline"
    assert parsed.get_filename().isascii(), "a plain filename for old clients"
    charset, _, encoded = re.search(r"filename\*=([^;]+)", header).group(1).split("'", 2)
    assert unquote(encoded, encoding=charset) == name, "filename* (RFC 5987), which clients prefer"
    assert "\r" not in header and "\n" not in header


def test_past_the_bound_on_live_event_streams_a_stream_is_429_until_one_closes(server):
    import requests

    job = server.raw("POST", "/jobs", token=None, json={"workflow": workflow("slow_node")}).json()["id"]
    url = f"{server.api}/jobs/{job}/events"
    open_ = [requests.get(url, stream=True, timeout=30) for _ in range(2)]
    try:
        assert [r.status_code for r in open_] == [200, 200]
        refused = requests.get(url, timeout=30)
        assert error(refused) == (429, "too_many_streams") and int(refused.headers["Retry-After"]) >= 1
        open_.pop().close()  # the server notices the client left
        again = wait_until(lambda: (r := requests.get(url, stream=True, timeout=30)).status_code == 200 and r, 30,
                           "a stream's place to free")
        again.close()
    finally:
        for response in open_:
            response.close()
        server.raw("POST", f"/jobs/{job}/cancel", token=None)
