"""Input files by reference through the Python API: fetched in parallel before the workflow runs,
checked as any input, reported as downloads, removed with the job; refused and failing URLs are
clear errors; a preflight lists what would be fetched without fetching it."""

from __future__ import annotations

import dataclasses

import pytest

from embedded import InputError, JobInterrupted, JobTimeout
from embedded.config import Config
from embedded.job.events import DownloadEvent
from embedded.staging.downloads import Fetcher, FetchError
from embedded.staging.stage import Staging, fetcher_for, model_cache_for
from embedded.staging.guard import FetchRefused

from ..helpers import open_image, png_bytes, workflow

pytestmark = pytest.mark.timeout(120)


def serve(server, path: str, data: bytes) -> str:
    server.files[path] = data
    return server.url(path)


def test_an_input_image_given_by_url_is_fetched_and_loaded(executor, file_server, test_config):
    url = serve(file_server, "/in/red.png", png_bytes((16, 8), (255, 0, 0)))
    seen = []
    result = executor.run(workflow("load_and_invert_input"), files={"in.png": url}, on_event=seen.append)
    image = open_image(result.outputs[0].data)
    assert image.size == (16, 8) and image.getpixel((0, 0))[:3] == (0, 255, 255)
    done = [e for e in seen if isinstance(e, DownloadEvent) and e.done]
    assert [(e.kind, e.name, e.received) for e in done] == [("input", "in.png", len(file_server.files["/in/red.png"]))]
    assert list(test_config.downloads_dir.iterdir()) == []  # the job's downloads went with it


def test_input_files_are_one_mapping_of_bytes_local_paths_and_urls_fetched_side_by_side(executor, file_server,
                                                                                        tmp_path):
    urls = {f"in{i}.png": serve(file_server, f"/many/{i}.png", png_bytes((4, 4), (i, 0, 0))) for i in range(4)}
    local = tmp_path / "local.png"
    local.write_bytes(png_bytes((4, 4)))
    wf = workflow("load_and_invert_input")
    result = executor.run(wf, {"in.png": png_bytes((5, 5)), **urls, "extra/local.png": local})
    assert open_image(result.outputs[0].data).size == (5, 5)
    assert all(file_server.hits(f"/many/{i}.png") == 1 for i in range(4))
    as_path = executor.run(wf, files={"in.png": str(local)})  # a string that is not a URL is a path
    assert open_image(as_path.outputs[0].data).size == (4, 4)


def test_the_old_images_argument_says_that_files_took_its_place(executor):
    with pytest.raises(TypeError, match="files="):
        executor.run(workflow("load_and_invert_input"), images={"in.png": png_bytes((4, 4))})
    with pytest.raises(InputError, match="files must map input names"):
        executor.run(workflow("load_and_invert_input"), [png_bytes((4, 4))])


def test_a_url_on_a_host_that_is_not_allowed_is_refused_before_any_request(executor, file_server):
    other_port_url = f"http://127.0.0.2:{file_server.port}/in/red.png"
    with pytest.raises(FetchRefused, match="loopback"):
        executor.run(workflow("load_and_invert_input"), files={"in.png": other_port_url})
    with pytest.raises(FetchRefused, match="169.254.169.254.*link-local"):
        executor.run(workflow("load_and_invert_input"), files={"in.png": "http://169.254.169.254/latest/meta-data"})


def test_a_failed_download_names_the_input_and_the_host(executor, file_server):
    with pytest.raises(FetchError, match=rf"Input 'in.png' from 127.0.0.1:{file_server.port}: HTTP 404"):
        executor.run(workflow("load_and_invert_input"), files={"in.png": file_server.url("/nope.png?sig=s3cr3t")})


def test_every_failed_download_of_a_job_is_named(executor, file_server):
    with pytest.raises(FetchError) as failed:
        executor.run(workflow("load_and_invert_input"),
                     files={"in.png": file_server.url("/gone1.png"), "b.png": file_server.url("/gone2.png")})
    assert "2 files could not be fetched" in str(failed.value)
    assert "Input 'b.png'" in str(failed.value) and "Input 'in.png'" in str(failed.value)


def test_a_fetched_file_that_is_no_image_is_refused_as_any_input(executor, file_server):
    url = serve(file_server, "/in/fake.png", b"this is text")
    with pytest.raises(InputError, match="'in.png' is not an image: its bytes are none of the formats read \\(PNG, JPEG"):
        executor.run(workflow("load_and_invert_input"), files={"in.png": url})


def test_an_oversize_input_is_refused(file_server, test_config, tmp_path):
    url = serve(file_server, "/in/big.bin", b"x" * 4096)
    config = dataclasses.replace(test_config, input_max_bytes=1000, work_dir=tmp_path)
    with pytest.raises(FetchError, match="4096 bytes is over the limit of 1000"):
        _staging(config).fetch({"big.bin": url})


def test_the_inputs_of_a_job_together_stay_under_the_total_cap(file_server, test_config, tmp_path):
    urls = {f"part{i}.bin": serve(file_server, f"/total/{i}.bin", b"y" * 3000) for i in range(3)}
    config = dataclasses.replace(test_config, input_max_total_bytes=5000, work_dir=tmp_path)
    staging = _staging(config)
    with pytest.raises(FetchError, match="over 5000 bytes together .INPUT_MAX_TOTAL_BYTES"):
        staging.fetch(urls)
    staging.close()
    assert not staging.folder.exists()


def test_an_input_name_that_escapes_the_input_folder_is_refused_before_fetching(file_server):
    staging = _staging(Config.from_env({"FETCH_ALLOW": file_server.allow}))
    before = len(file_server.requests)
    with pytest.raises(InputError, match=r"'\.\.'"):
        staging.fetch({"../x.png": file_server.url("/in/red.png")})
    assert len(file_server.requests) == before


def test_preflight_lists_what_would_be_fetched_and_fetches_nothing(executor, file_server):
    before = len(file_server.requests)
    wf = workflow("txt2img_checkpoint")
    wf["1"]["inputs"]["ckpt_name"] = "not-fetched-yet.safetensors"
    report = executor.check({**wf, **{f"load{k}": v for k, v in workflow("load_and_invert_input").items()
                                      if k == "1"}},
                            files={"in.png": file_server.url("/in/red.png?X-Amz-Signature=abc")},
                            models=[{"url": file_server.url("/m/not-fetched-yet.safetensors"),
                                     "folder": "checkpoints", "filename": "not-fetched-yet.safetensors"}])
    assert report.ok, report.errors
    assert report.missing_models == []
    assert report.inputs_to_fetch == [
        {"kind": "input", "name": "in.png", "url": file_server.url("/in/red.png")},
        {"kind": "model", "name": "checkpoints/not-fetched-yet.safetensors",
         "url": file_server.url("/m/not-fetched-yet.safetensors"), "cached": False}]
    assert len(file_server.requests) == before


def test_preflight_still_reports_a_model_no_request_brings(executor, file_server):
    wf = workflow("txt2img_checkpoint")
    wf["1"]["inputs"]["ckpt_name"] = "nowhere.safetensors"
    report = executor.check(wf, models=[{"url": file_server.url("/m/other.safetensors"), "folder": "checkpoints",
                                         "filename": "other.safetensors"}])
    assert not report.ok
    assert [m.value for m in report.missing_models] == ["nowhere.safetensors"]


def _staging(config: Config) -> Staging:
    fetcher: Fetcher = fetcher_for(config)
    return Staging(config, fetcher, model_cache_for(config, fetcher))




def test_the_jobs_timeout_bounds_its_downloads(executor, file_server, test_config):
    file_server.files["/slow/drip.bin"] = b"d" * (40 * 256 * 1024)
    file_server.delay["/slow/drip.bin"] = 0.5  # a trickle: never silent long enough for the read timeout
    with pytest.raises(JobTimeout, match="timeout of 1 s .* while its files were being fetched"):
        executor.run(workflow("load_and_invert_input"), {"in.png": png_bytes(),
                                                         "drip.bin": file_server.url("/slow/drip.bin")}, timeout=1)
    assert list(test_config.downloads_dir.iterdir()) == []
    assert executor.run(workflow("solid_red_image")).outputs  # and the next job runs


def test_interrupting_a_job_by_id_stops_its_downloads(executor, file_server):
    import threading

    file_server.files["/slow/long.bin"] = b"l" * (40 * 256 * 1024)
    file_server.delay["/slow/long.bin"] = 0.5
    threading.Timer(1.0, executor.interrupt, ["fetching-job"]).start()
    with pytest.raises(JobInterrupted, match="while its files were being fetched"):
        executor.run(workflow("load_and_invert_input"), {"in.png": png_bytes(),
                                                         "long.bin": file_server.url("/slow/long.bin")},
                     job_id="fetching-job")


def test_a_stream_yields_downloads_while_they_run_and_closing_it_stops_them(executor, file_server):
    import contextlib

    file_server.files["/slow/streamed.bin"] = b"s" * (40 * 256 * 1024)
    file_server.delay["/slow/streamed.bin"] = 0.3
    files = {"in.png": png_bytes(), "streamed.bin": file_server.url("/slow/streamed.bin")}
    with contextlib.closing(executor.stream(workflow("load_and_invert_input"), files)) as events:
        first = next(events)
    assert isinstance(first, DownloadEvent) and not first.done and first.name == "streamed.bin"
    assert executor.run(workflow("solid_red_image")).outputs  # the stopped download holds nothing


def test_preflight_forgives_a_brought_model_only_in_its_own_folder(executor, file_server):
    wf = workflow("txt2img_checkpoint")
    wf["1"]["inputs"]["ckpt_name"] = "wrong-folder.safetensors"
    report = executor.check(wf, models=[{"url": file_server.url("/m/wrong-folder.safetensors"), "folder": "loras",
                                         "filename": "wrong-folder.safetensors"}])
    assert not report.ok and [m.value for m in report.missing_models] == ["wrong-folder.safetensors"]
