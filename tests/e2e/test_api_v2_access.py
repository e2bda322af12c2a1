"""No web page gets in: the API server, bound to loopback without a token (its default), refuses
what a page of another site can make a browser send (a ``text/plain`` POST needs no preflight),
and answers only to its own host names (DNS rebinding sends another name), as ComfyUI's own
server refuses both. Shown with raw requests and in a real headless Chromium.
"""

from __future__ import annotations

import json
import os

import pytest

from ..browser import chromium_path, load_page
from ..helpers import workflow
from ..servers import worker_env
from .apiv2 import ApiServer

pytestmark = pytest.mark.timeout(180)
ALLOWED = "api.example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory, extra_paths):
    work = tmp_path_factory.mktemp("api-v2-access")
    srv = ApiServer(worker_env(work, extra_paths, SERVE_ALLOWED_HOSTS=ALLOWED), work.parent / "api-v2-access.log")
    yield srv
    srv.stop()


def job_ids(server) -> set[str]:
    return {j["id"] for j in server.raw("GET", "/jobs?limit=100", token=None).json()["jobs"]}


def post_text(server, **headers):
    """The request a page's ``fetch(url, {method: "POST", mode: "no-cors", body})`` makes."""
    return server.raw("POST", "/jobs", token=None, data=json.dumps({"workflow": workflow("solid_red_image")}),
                      headers={"Content-Type": "text/plain;charset=UTF-8", **headers})


def test_a_post_whose_origin_is_another_site_is_refused_and_makes_no_job(server):
    before = job_ids(server)
    for origin in ("http://evil.example", "http://localhost:1", "null", "http://localhost", "https://127.0.0.1"):
        refused = post_text(server, Origin=origin)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "cross_site_refused"), origin
    marked = post_text(server, **{"Sec-Fetch-Site": "cross-site"})
    assert (marked.status_code, marked.json()["error"]["code"]) == (403, "cross_site_refused")
    assert job_ids(server) == before


def test_a_post_from_the_servers_own_origin_or_with_no_origin_is_accepted(server):
    port = server.url.rsplit(":", 1)[1]
    for headers in ({"Origin": server.url}, {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
                    {}):
        assert post_text(server, **headers).status_code == 201, headers


def test_a_host_the_server_does_not_answer_to_is_refused_on_every_route_but_health(server):
    port = server.url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", f"rebind.test:{port}", "10.1.2.3"):
        for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/nowhere")):
            refused = server.raw(method, path, token=None, headers={"Host": host})
            assert (refused.status_code, refused.json()["error"]["code"]) == (403, "host_not_allowed"), (host, path)
        assert server.raw("GET", "/health", token=None, headers={"Host": host}).status_code in (200, 503)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", ALLOWED, f"{ALLOWED}:{port}"):
        assert server.raw("GET", "/jobs", token=None, headers={"Host": host}).status_code == 200, host
    listed = post_text(server, Host=ALLOWED, Origin=f"https://{ALLOWED}")  # a page of an allowed name
    assert listed.status_code == 201


@pytest.mark.skipif(chromium_path() is None and not os.environ.get("CI"),
                    reason="needs Debian's chromium (.ci/run installs it)")
def test_in_a_real_browser_a_page_of_another_loopback_origin_cannot_queue_a_job(server):
    before = job_ids(server)
    body = json.dumps({"workflow": workflow("solid_red_image")})
    page = f"""<!doctype html><div id="out"></div><script>
      fetch({json.dumps(server.api + "/jobs")}, {{method: "POST", mode: "no-cors",
            headers: {{"Content-Type": "text/plain"}}, body: {json.dumps(body)}}})
        .then(r => "sent " + r.type, e => "failed " + e)
        .then(t => {{ const r = document.createElement("p"); r.id = "result"; r.textContent = t;
                      document.body.appendChild(r); }});
    </script>"""
    for host in ("localhost", "127.0.0.1"):  # another site; the same site on another port
        assert load_page(page, host=host).startswith("sent"), "the browser sent it"
    assert job_ids(server) == before, "no job was made"
