"""A RunPod job's ``input``, as worker-comfyui accepts it, turned into checked parts.

Owns: the request contract (``input`` as an object or a JSON string; ``workflow``; ``images`` as
``[{"name", "image": base64 or data URI}]``; ``comfy_org_api_key``; beyond upstream: an image
given as an ``http(s)://`` or ``s3://`` URL, fetched before the run, ``models`` fetched into the
model cache, an ``s3`` block, the job's own bucket for its outputs and ``s3://`` inputs,
``unload_models`` and ``free_memory``, as ComfyUI's ``POST /free`` after the job, ``timings``,
per-node run times in the result, ``dry_run``, a preflight instead of a run, ``previews``,
sampler previews with the progress reports, and ``outputs``, the output node ids to run) and worker-comfyui's error strings for bad input,
which clients match on. Image names and bytes are checked with ``inputs``.

Must not import ComfyUI, the backends or RunPod.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..job.errors import InputError
from ..staging.downloads import S3Settings
from ..job.inputs import (InputLimits, check_input_bytes, check_input_name, check_names_together, check_output_ids,
                          check_workflow)
from ..staging.modelcache import ModelRef
from ..staging.guard import Guard, is_url

# worker-comfyui's messages, kept word for word.
NO_INPUT = "Please provide input"
INVALID_JSON = "Invalid JSON format in input"
NO_WORKFLOW = "Missing 'workflow' parameter"
BAD_IMAGES = "'images' must be a list of objects with 'name' and 'image' keys"
IMAGES_FAILED = "Failed to upload one or more input images"


class RequestError(Exception):
    """The job input is unusable; ``message`` (and ``details``) go back to the client as they are."""

    def __init__(self, message: str, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = list(details or [])


@dataclass
class WorkerRequest:
    workflow: dict[str, Any]
    #: name -> bytes, or the URL to fetch it from
    images: dict[str, bytes | str] = field(default_factory=dict)
    models: list[ModelRef] = field(default_factory=list)
    #: the job's own bucket (outputs, ``s3://`` inputs); never logged
    s3: S3Settings | None = field(default=None, repr=False)
    #: per-request Comfy.org key (over COMFY_ORG_API_KEY); never logged
    comfy_org_api_key: str | None = field(default=None, repr=False)
    unload_models: bool = False
    free_memory: bool = False
    timings: bool = False
    dry_run: bool = False
    previews: bool = False
    #: output node ids to run (ours; ComfyUI's ``partial_execution_targets``); None: every output
    outputs: tuple[str, ...] | None = None


def decode_base64_image(data: Any) -> bytes:
    """Base64 (a ``data:<type>;base64,`` prefix is optional) -> bytes; raises ValueError."""
    if not isinstance(data, str):
        raise ValueError(f"expected a base64 string, got {type(data).__name__}")
    if data.startswith("data:"):
        data = data.split(",", 1)[1] if "," in data else ""
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None


def parse(job_input: Any, limits: InputLimits = InputLimits()) -> WorkerRequest:
    """Check a job's ``input``; raises ``RequestError`` (upstream's messages), ``WorkflowFormatError``
    or ``ValidationError`` (values ComfyUI cannot take)."""
    if job_input is None:
        raise RequestError(NO_INPUT)
    if isinstance(job_input, str):
        try:
            job_input = json.loads(job_input)
        except json.JSONDecodeError:
            raise RequestError(INVALID_JSON) from None
    if not isinstance(job_input, dict):
        raise RequestError(f"Invalid input: expected a JSON object with a 'workflow', got {type(job_input).__name__}")
    workflow = job_input.get("workflow")
    if workflow is None:
        raise RequestError(NO_WORKFLOW)
    images = job_input.get("images")
    if images is not None and (not isinstance(images, list) or not all(
            isinstance(i, dict) and "name" in i and "image" in i for i in images)):
        raise RequestError(BAD_IMAGES)
    key = job_input.get("comfy_org_api_key")
    if key is not None and not isinstance(key, str):
        raise RequestError("'comfy_org_api_key' must be a string")
    flags = {}
    for name in ("unload_models", "free_memory", "timings", "dry_run", "previews"):
        value = job_input.get(name, False)
        if not isinstance(value, bool):
            raise RequestError(f"'{name}' must be true or false")
        flags[name] = value
    check_workflow(workflow)
    try:
        outputs = check_output_ids(job_input.get("outputs"))
    except InputError as exc:
        raise RequestError(f"'outputs': {exc.message}") from None
    return WorkerRequest(workflow, _decode_images(images or [], limits), _models(job_input.get("models")),
                         _bucket(job_input.get("s3")), key or None, **flags, outputs=outputs)


#: a URL of any scheme (refused by the guard unless http, https or s3)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

S3_FIELDS = ("endpoint_url", "bucket", "access_key_id", "secret_access_key")
BAD_S3 = ("'s3' must be an object with 'endpoint_url', 'bucket', 'access_key_id' and 'secret_access_key' "
          "strings (and optionally 'region' and 'prefix')")


def _bucket(block: Any) -> S3Settings | None:
    """The request's ``s3`` block (its values never appear in an error)."""
    if block is None:
        return None
    if not isinstance(block, dict) or not all(isinstance(block.get(k), str) and block[k] for k in S3_FIELDS) \
            or not all(isinstance(block.get(k, ""), str) for k in ("region", "prefix")) \
            or set(block) - {*S3_FIELDS, "region", "prefix"}:
        raise RequestError(BAD_S3)
    try:
        Guard().check_url(block["endpoint_url"], ("http", "https"))
    except InputError as exc:
        raise RequestError(f"'s3.endpoint_url': {exc.message}") from None
    return S3Settings(block["endpoint_url"], block["access_key_id"], block["secret_access_key"], block["bucket"],
                      block.get("region") or None, block.get("prefix", "").strip("/"))


def _models(models: Any) -> list[ModelRef]:
    if models is None:
        return []
    if not isinstance(models, list):
        raise RequestError("'models' must be a list of objects with 'url', 'folder' and 'filename'")
    refs, problems = [], []
    for item in models:
        try:
            ref = ModelRef.from_request(item)
            Guard().check_url(ref.url)
            refs.append(ref)
        except InputError as exc:
            problems.append(exc.message)
    if problems:
        raise RequestError("Invalid 'models'", problems)
    return refs


def _decode_images(images: list[dict[str, Any]], limits: InputLimits) -> dict[str, bytes | str]:
    """Every file of ``images`` (any kind: images, video, audio, masks, text...; a URL is kept for
    fetching), each problem one line."""
    decoded: dict[str, bytes | str] = {}
    problems: list[str] = []
    for item in images:
        name = item["name"]
        try:
            check_input_name(name)
        except InputError as exc:
            problems.append(exc.message)
            continue
        if name in decoded:
            problems.append(f"Input name {name!r} is given twice")
            continue
        try:
            if is_url(item["image"]) or _SCHEME.match(str(item["image"])):  # base64 has no "://"
                decoded[name] = Guard().check_url(item["image"])
            else:
                decoded[name] = check_input_bytes(name, decode_base64_image(item["image"]), limits)
        except ValueError as exc:
            problems.append(f"Error decoding base64 for {name}: {exc}")
        except InputError as exc:
            problems.append(exc.message)
    if not problems:
        try:
            check_names_together(list(decoded))
        except InputError as exc:
            problems.append(exc.message)
    if problems:  # upstream's words, then why: the runpod SDK's local API drops ``details``
        raise RequestError(f"{IMAGES_FAILED}: {'; '.join(problems)}", problems)
    return decoded
