"""Downloads through the guard, against real HTTP and S3 servers on loopback: what is refused
(without a request reaching the server), redirects, retries, timeouts, size caps, and what an
error may show."""

from __future__ import annotations

import threading

import pytest

from embedded.config import Config
from embedded.staging.downloads import Fetcher, FetchError, FetchSettings, S3Settings, token_for
from embedded.staging.stage import fetcher_for
from embedded.staging.guard import Allowlist, FetchRefused, Guard

from ..servers import FileServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def files():
    server = FileServer()
    yield server
    server.close()


def fetcher(*allowed: FileServer, **settings) -> Fetcher:
    allow = Allowlist.parse(",".join(s.allow for s in allowed))
    return Fetcher(FetchSettings(Guard(allow), **{"connect_timeout": 5, "read_timeout": 5, "retries": 2, **settings}))


def test_a_loopback_server_is_refused_by_default_and_receives_no_request(files, tmp_path):
    files.files["/a.png"] = b"x"
    with pytest.raises(FetchRefused, match="loopback"):
        fetcher().download(files.url("/a.png"), tmp_path / "a", what="Input 'a.png'")
    assert files.requests == []
    assert not (tmp_path / "a").exists()


def test_fetch_allow_host_port_lets_the_download_through(files, tmp_path):
    files.files["/a.bin"] = b"0123456789" * 1000
    size = fetcher(files).download(files.url("/a.bin"), tmp_path / "a", what="Input 'a.bin'")
    assert size == 10000 and (tmp_path / "a").read_bytes() == files.files["/a.bin"]


def test_a_redirect_to_another_loopback_port_is_refused(files, tmp_path):
    other = FileServer()
    try:
        other.files["/secret"] = b"internal"
        files.redirects["/a.png"] = other.url("/secret")
        with pytest.raises(FetchRefused, match=f"127.0.0.1:{other.port}"):
            fetcher(files).download(files.url("/a.png"), tmp_path / "a", what="Input 'a.png'")
        assert files.hits("/a.png") == 1
        assert other.requests == []
    finally:
        other.close()


def test_a_redirect_within_the_allowed_server_is_followed(files, tmp_path):
    files.files["/real.bin"] = b"payload"
    files.redirects["/moved.bin"] = "/real.bin"
    fetcher(files).download(files.url("/moved.bin"), tmp_path / "a", what="Input 'a'")
    assert (tmp_path / "a").read_bytes() == b"payload"


def test_5xx_answers_are_retried_with_backoff(files, tmp_path):
    files.files["/flaky.bin"] = b"finally"
    files.failures["/flaky.bin"] = 2
    fetcher(files, retries=2).download(files.url("/flaky.bin"), tmp_path / "a", what="Input 'a'")
    assert files.hits("/flaky.bin") == 3
    assert (tmp_path / "a").read_bytes() == b"finally"


def test_a_server_still_failing_after_the_retries_is_an_error_with_its_status(files, tmp_path):
    files.files["/down.bin"] = b"never"
    files.failures["/down.bin"] = 10
    with pytest.raises(FetchError, match=r"Input 'a' from 127.0.0.1:\d+: HTTP 503"):
        fetcher(files, retries=1).download(files.url("/down.bin"), tmp_path / "a", what="Input 'a'")
    assert files.hits("/down.bin") == 2


def test_a_missing_file_is_not_retried(files, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404"):
        fetcher(files).download(files.url("/nothing.png"), tmp_path / "a", what="Input 'a'")
    assert files.hits("/nothing.png") == 1


def test_a_silent_server_hits_the_read_timeout(files, tmp_path):
    files.files["/slow.bin"] = b"late"
    files.stall["/slow.bin"] = 3
    with pytest.raises(FetchError, match="sent nothing for 1 s"):
        fetcher(files, read_timeout=1, retries=0).download(files.url("/slow.bin"), tmp_path / "a", what="Input 'a'")


def test_an_oversize_file_is_refused_from_its_content_length(files, tmp_path):
    files.files["/big.bin"] = b"x" * 5000
    with pytest.raises(FetchError, match="5000 bytes is over the limit of 4096"):
        fetcher(files).download(files.url("/big.bin"), tmp_path / "a", what="Input 'a'", max_bytes=4096)


def test_an_oversize_file_without_a_length_is_cut_off_while_streaming(files, tmp_path):
    files.files["/big.bin"] = b"x" * (3 * 1024 * 1024)
    files.unsized.add("/big.bin")
    with pytest.raises(FetchError, match="more than the limit of 1048576 bytes"):
        fetcher(files).download(files.url("/big.bin"), tmp_path / "a", what="Input 'a'", max_bytes=1024 * 1024)


def test_errors_never_show_the_query_string_or_user_info(files, tmp_path):
    url = files.url("/gone.png") + "?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeefcafe"
    with pytest.raises(FetchError) as failed:
        fetcher(files).download(url, tmp_path / "a", what="Input 'a'")
    assert "deadbeef" not in str(failed.value) and "AKIAEXAMPLE" not in str(failed.value)
    assert files.requests[0]["query"].startswith("X-Amz-Credential")  # the server got it all


def test_a_cancel_stops_a_download_between_chunks(files, tmp_path):
    from embedded.staging.downloads import Cancelled

    files.files["/long.bin"] = b"x" * (4 * 256 * 1024)
    files.delay["/long.bin"] = 0.5
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(Cancelled):
        fetcher(files).download(files.url("/long.bin"), tmp_path / "a", what="Input 'a'", cancel=cancel)


def test_tokens_go_to_their_own_hosts_only_and_only_over_https():
    tokens = {"HF_TOKEN": "hf_abc", "CIVITAI_TOKEN": "civ_xyz"}
    assert token_for("https://huggingface.co/org/repo/resolve/main/x.safetensors", tokens) == "hf_abc"
    assert token_for("https://cdn-lfs.hf.co/x", tokens) == "hf_abc"
    assert token_for("https://civitai.com/api/download/models/1", tokens) == "civ_xyz"
    assert token_for("http://huggingface.co/org/repo/resolve/main/x.safetensors", tokens) is None
    assert token_for("https://evilhuggingface.co/x", tokens) is None
    assert token_for("https://huggingface.co.evil.com/x", tokens) is None
    assert token_for("https://example.com/x", tokens) is None


def test_no_token_is_sent_over_plain_http(files, tmp_path, monkeypatch):
    import embedded.staging.downloads as fetching

    monkeypatch.setattr(fetching, "TOKENS", (("HF_TOKEN", ("127.0.0.1",)),))  # the loopback server as "its" host
    files.files["/model.bin"] = b"weights"
    fetcher(files, tokens={"HF_TOKEN": "hf_secret_token"}).download(files.url("/model.bin"), tmp_path / "a",
                                                                   what="Model m")
    assert "Authorization" not in files.requests[-1]["headers"]


def test_more_than_ten_redirects_is_an_error(files, tmp_path):
    for hop in range(12):
        files.redirects[f"/loop{hop}"] = f"/loop{hop + 1}"
    with pytest.raises(FetchError, match="more than 10 redirects"):
        fetcher(files).download(files.url("/loop0"), tmp_path / "a", what="Input 'a'")
    assert files.hits("/loop11") == 0


def test_a_retry_after_header_does_not_make_the_worker_wait(files, tmp_path):
    files.files["/busy.bin"] = b"ok"
    files.failures["/busy.bin"] = 1
    files.retry_after["/busy.bin"] = "3600"  # honoured, it would hold the job for an hour
    fetcher(files, retries=1).download(files.url("/busy.bin"), tmp_path / "a", what="Input 'a'")
    assert (tmp_path / "a").read_bytes() == b"ok"


def test_s3_urls_are_fetched_with_the_configured_bucket(s3, tmp_path):
    s3.client().put_object(Bucket="outputs", Key="in/pic.png", Body=b"from s3")
    # worker-comfyui's users often end the endpoint with their bucket: the service is what counts
    env = {"BUCKET_ENDPOINT_URL": f"{s3.endpoint}/outputs", "BUCKET_ACCESS_KEY_ID": s3.ACCESS_KEY,
           "BUCKET_SECRET_ACCESS_KEY": s3.SECRET_KEY}
    config = Config.from_env(env)  # the configured endpoint is allowed although it is loopback
    fetcher_for(config).download("s3://outputs/in/pic.png", tmp_path / "a", what="Input 'pic.png'",
                                 s3=S3Settings.from_env(env))
    assert (tmp_path / "a").read_bytes() == b"from s3"


def test_a_jobs_own_bucket_on_a_private_address_is_refused_unless_allowed(s3, tmp_path):
    s3.client().put_object(Bucket="outputs", Key="in/pic.png", Body=b"from s3")
    own = S3Settings(s3.endpoint, s3.ACCESS_KEY, s3.SECRET_KEY, "outputs")
    with pytest.raises(FetchRefused, match="loopback"):
        fetcher_for(Config.from_env({})).download("s3://outputs/in/pic.png", tmp_path / "a", what="Input", s3=own)
    allowed = Config.from_env({"FETCH_ALLOW": s3.endpoint.split("//")[1]})
    fetcher_for(allowed).download("s3://outputs/in/pic.png", tmp_path / "a", what="Input", s3=own)
    assert (tmp_path / "a").read_bytes() == b"from s3"


def test_an_aws_virtual_hosted_endpoint_gives_its_service_endpoint_and_region():
    own = S3Settings("https://my-bucket.s3.eu-west-3.amazonaws.com", "k", "s")
    assert own.for_bucket("my-bucket").endpoint_url == "https://s3.eu-west-3.amazonaws.com"
    assert own.for_bucket("my-bucket").region == "eu-west-3"
    assert S3Settings("https://minio.example:9000/bucket", "k", "s").for_bucket("b").endpoint_url == \
        "https://minio.example:9000"


def test_an_s3_url_without_credentials_says_how_to_give_them(tmp_path):
    with pytest.raises(FetchError, match="no bucket credentials"):
        fetcher().download("s3://bucket/key.png", tmp_path / "a", what="Input 'a'")
