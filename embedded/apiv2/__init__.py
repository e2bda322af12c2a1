"""The Comfy API v2 server: ``python -m embedded serve``, the API Comfy Cloud speaks, on our in-process
executor, so that Comfy-Org's official client (``comfy-sdk``) works against it.

Owns these modules, one job each:
- ``wire``: our records as the JSON the API names (jobs, outputs, assets, progress) and its error
  envelope;
- ``assets``: the asset store (uploads with their blake3 hash, dedup by hash, outputs, expiry,
  limits on size and total storage);
- ``bucket``: outputs uploaded to the ``BUCKET_*`` bucket, as presigned URLs;
- ``state``: jobs, idempotency keys and the asset index in SQLite (``--state FOLDER``);
- ``shared``: the same in PostgreSQL with files in the bucket (``--state postgresql://...``): every
  replica serves every job (its own package: database, assets, jobs);
- ``record``: one job as the server keeps it, and its JSON;
- ``jobs``: the jobs (submission checks, idempotency keys, the queue bound, the run on the
  executor, events to the streams, cancels);
- ``readiness``: whether a job can run now (the boot, its failure, a stuck runner, shutting down);
- ``access``: who may talk to it (the bearer token; no page of another site, no foreign Host);
- ``keys``: what the routes share (the application's keys, a request's base URL);
- ``stream``: a job's event stream (SSE);
- ``app``: the HTTP routes on aiohttp (auth, errors, ranges);
- ``command``: the command line and its environment variables, the process's life (SIGTERM).

A front door: may import the public API (``embedded.api``), the job model, staging (``S3Settings``),
``config`` and ``logs``; never a backend. Nothing else in the package imports it.
"""
