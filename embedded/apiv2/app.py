"""The HTTP routes of the Comfy API v2 server, on aiohttp.

Owns the application: every route under ``/api/v2`` (jobs, their events, workflow and logs;
assets, their content with ``Range``; health), the middlewares in their order (errors outermost,
then ``access``'s host and origin checks and bearer token), and one error shape for everything (an ``ApiError``, a route that does not exist, a request that
cannot be read: the API's envelope, never a traceback). The event stream is ``stream``'s.

Must not import the backends or ComfyUI.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .access import Hosts, bearer, same_site
from .assets import INLINE_BYTES, AssetStore
from .jobs import Jobs
from .keys import ASSETS, JOBS, base_url
from .stream import STREAMS, Streams, job_events
from .wire import ApiError, inline, iso, not_found, without_paths

log = logging.getLogger("embedded.apiv2")

PREFIX = "/api/v2"
MAX_LIST_LIMIT = 100
#: the longest form field an upload may carry beside its file
MAX_FIELD_BYTES = 4096


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


@web.middleware
async def errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status,
                                                                                          f"http_{exc.status}")
        message = (f"The request body is larger than {request.client_max_size} bytes (SERVE_MAX_JSON_BYTES)"
                   if exc.status == 413 else exc.reason)
        return web.json_response(ApiError(exc.status, code, message).body(), status=exc.status)
    except Exception:  # noqa: BLE001 - logged, answered in the envelope
        log.exception("embedded.apiv2: %s %s failed", request.method, request.path)
        return web.json_response(ApiError(500, "server_error", "The server failed on this request").body(), status=500)


# --- jobs --------------------------------------------------------------------------------------------
async def _json_body(request: web.Request) -> Any:
    """The request's JSON (at most SERVE_MAX_JSON_BYTES: 413), or 422 ``invalid_request``."""
    try:
        return await request.json()
    except RecursionError:
        raise ApiError(422, "invalid_request", "The request body is nested too deeply") from None
    except (ValueError, LookupError):  # not JSON, not UTF-8, a number too long, an unknown charset
        raise ApiError(422, "invalid_request", "The request body is not JSON this server can read") from None


async def submit_job(request: web.Request) -> web.Response:
    body = await _json_body(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 255 and key.isprintable() and key.isascii()):
        raise ApiError(422, "invalid_request", "Idempotency-Key must be 1 to 255 printable ASCII characters")
    jobs = request.app[JOBS]
    job = await jobs.submit(body, key)
    return _json(job.to_json(base_url(request), await jobs.position(job)), status=201)


async def get_job(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    job = await jobs.find(request.match_info["job_id"])
    return _json(job.to_json(base_url(request), await jobs.position(job)))


async def list_jobs(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    query = request.rel_url.query
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise ApiError(422, "invalid_request", "limit must be an integer") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ApiError(422, "invalid_request", f"limit must be between 1 and {MAX_LIST_LIMIT}")
    metadata = {k[len("metadata["):-1]: v for k, v in query.items() if k.startswith("metadata[") and k.endswith("]")}
    page, cursor = await jobs.page(metadata, limit, query.get("cursor"))
    return _json({"jobs": [{"id": j.id, "status": j.status, "create_time": iso(j.created_at),
                            "update_time": iso(j.completed_at or j.started_at or j.created_at),
                            "created_at": iso(j.created_at), "deployment_id": None, "metadata": dict(j.metadata)}
                           for j in page], "next_cursor": cursor})


async def cancel_job(request: web.Request) -> web.Response:
    jobs = request.app[JOBS]
    job = await jobs.request_cancel(request.match_info["job_id"])
    return _json(job.to_json(base_url(request), await jobs.position(job)))


async def job_workflow(request: web.Request) -> web.Response:
    job = await request.app[JOBS].find(request.match_info["job_id"])
    return _json({"workflow": job.workflow, "format": "api"})


async def job_logs(request: web.Request) -> web.Response:
    await request.app[JOBS].find(request.match_info["job_id"])
    return web.Response(status=204)  # ComfyUI logs on the process's logger: no per-job log is kept


# --- assets ------------------------------------------------------------------------------------------
async def upload_asset(request: web.Request) -> web.Response:
    """A multipart upload: the ``file`` part streamed in, the fields (``file_path``,
    ``content_type``, ``expected_hash``) before or after it."""
    store = request.app[ASSETS]
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise ApiError(422, "invalid_request", "An upload is multipart/form-data with a 'file' part") from None
    fields: dict[str, str] = {}
    received, file_name, file_type = None, None, ""
    try:
        while (part := await _well_formed(reader.next())) is not None:
            if part.name == "file" and received is None:
                async def chunks(part=part):
                    while chunk := await _well_formed(part.read_chunk(1 << 20)):
                        yield chunk
                file_name, file_type = part.filename, part.headers.get("Content-Type", "")
                received = await store.receive(chunks())
            elif part.name in ("content_type", "file_path", "expected_hash"):
                fields[part.name] = await _form_field(part)
            else:
                await part.release()
        if received is None:
            raise ApiError(422, "invalid_request", "The upload has no 'file' part")
        asset = await store.keep_upload(received, fields.get("file_path") or file_name, fields.get("content_type") or file_type,
                           fields.get("expected_hash"))
    finally:
        if received is not None:
            received.discard()
    return _json(asset.to_json(base_url(request)), status=201 if asset.created_new else 200)


async def _well_formed(step):
    """A step of reading a multipart upload (its next part, a chunk of one): 422 when the body is
    not well-formed (a boundary missing, a part cut short)."""
    try:
        return await step
    except (ValueError, AssertionError, KeyError):
        raise ApiError(422, "invalid_request", "The upload is not well-formed multipart/form-data") from None


async def _form_field(part) -> str:
    """A small form field of an upload (a name, a type, a hash): at most MAX_FIELD_BYTES of UTF-8."""
    data = b""
    while chunk := await _well_formed(part.read_chunk(MAX_FIELD_BYTES + 1)):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise ApiError(422, "invalid_request", f"The upload's field {part.name!r} is longer than "
                                                   f"{MAX_FIELD_BYTES} bytes")
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_request", f"The upload's field {part.name!r} is not UTF-8") from None


async def asset_by_hash(request: web.Request) -> web.Response:
    exists = await request.app[ASSETS].holds(request.match_info["hash"])
    return web.Response(status=200 if exists else 404)


async def asset_from_hash(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "The request body must be an object with a 'hash'")
    asset = await request.app[ASSETS].new_from_hash(body.get("hash"), body.get("file_path"), body.get("content_type"))
    return _json(asset.to_json(base_url(request)), status=201)


async def get_asset(request: web.Request) -> web.Response:
    return _json((await request.app[ASSETS].find(request.match_info["asset_id"])).to_json(base_url(request)))


async def asset_content(request: web.Request) -> web.StreamResponse:
    store = request.app[ASSETS]
    asset = await store.find(request.match_info["asset_id"])
    if (location := await store.redirect(asset)) is not None:  # in the bucket: the client follows its presigned URL
        return web.Response(status=302, headers={"Location": location})  # as signed, not re-encoded
    headers = {"Content-Type": asset.content_type, "Content-Disposition": inline(asset.file_path or asset.id),
               "Accept-Ranges": "bytes"}
    if "Range" not in request.headers and asset.size_bytes <= INLINE_BYTES:  # read here: no hop to a thread
        try:
            return web.Response(body=store.path(asset).read_bytes(), headers=headers)
        except OSError:
            raise not_found("asset content", asset.id) from None
    # aiohttp's FileResponse answers Range (206 with Content-Range, 416 when unsatisfiable)
    return web.FileResponse(store.path(asset), headers=headers)


async def delete_asset(request: web.Request) -> web.Response:
    await request.app[ASSETS].remove(request.match_info["asset_id"])
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    """200 only when a job can run now; else 503 with why (``booting``, ``boot_failed`` with the boot
    error, ``stuck``, ``shutting_down``). ``jobs_at_once`` is one per device; ``devices`` names them
    when there are several (``COMFY_DEVICES``)."""
    jobs = request.app[JOBS]
    readiness = jobs.readiness
    counts = await jobs.counts()  # (a shared state's database is asked first: its failure is the status)
    status = jobs.status()
    info = jobs.executor.boot_info if jobs.executor is not None and readiness.booted else None
    body = {"status": status, "booted": readiness.booted, **counts,
            "devices": list(info.devices) if info is not None else [], "state_error": jobs.state_error()}
    if status == "boot_failed":
        body["error"] = without_paths(readiness.boot_error or "")
    return _json(body, status=200 if status == "healthy" else 503)


def build(jobs: Jobs, assets: AssetStore, token: str | None, max_json_bytes: int, hosts: Hosts,
          max_streams: int = 100) -> web.Application:
    """The application; ``max_json_bytes`` bounds every body read whole (JSON: 413 past it), while
    an upload streams into the asset store, which bounds it; ``max_streams`` live event streams."""
    middlewares = [errors, same_site(hosts)] + ([bearer(token)] if token else [])
    app = web.Application(middlewares=middlewares, client_max_size=max_json_bytes)
    app[JOBS], app[ASSETS], app[STREAMS] = jobs, assets, Streams(max_streams)
    app.add_routes([
        web.post(f"{PREFIX}/jobs", submit_job), web.get(f"{PREFIX}/jobs", list_jobs),
        web.get(f"{PREFIX}/jobs/{{job_id}}", get_job), web.post(f"{PREFIX}/jobs/{{job_id}}/cancel", cancel_job),
        web.get(f"{PREFIX}/jobs/{{job_id}}/workflow", job_workflow), web.get(f"{PREFIX}/jobs/{{job_id}}/logs", job_logs),
        web.get(f"{PREFIX}/jobs/{{job_id}}/events", job_events),
        web.post(f"{PREFIX}/assets", upload_asset), web.post(f"{PREFIX}/assets/from-hash", asset_from_hash),
        web.head(f"{PREFIX}/assets/by-hash/{{hash}}", asset_by_hash),
        web.get(f"{PREFIX}/assets/{{asset_id}}", get_asset), web.delete(f"{PREFIX}/assets/{{asset_id}}", delete_asset),
        web.get(f"{PREFIX}/assets/{{asset_id}}/content", asset_content),
        web.get(f"{PREFIX}/health", health),
    ])
    return app
