"""The RunPod serverless worker: everything that only matters when this package runs under RunPod.

Owns these modules, one job each:
- ``handler``: the worker's life (boot, warm-up, boot errors on every job) and the async handler;
- ``request``: a job's ``input`` as worker-comfyui accepts it, and its error strings;
- ``response``: worker-comfyui's response shape for results and failures;
- ``delivery``: how an output file reaches the client (base64, or S3 through ``rp_upload``);
- ``reporting``: progress reports for ``progress_update``;
- ``diagnostics``: the network-volume report of ``NETWORK_VOLUME_DEBUG``.

Only this subpackage imports ``runpod``. It talks to ComfyUI through the public API (``Executor``);
it may import the job model, staging, ``config``, ``logs`` and ``embedded.backends``'s face, and
must not import ``embedded.backends.comfy`` or ``embedded.backends.server``.
"""
