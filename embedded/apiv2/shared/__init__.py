"""The Comfy API v2 server's shared state: every replica of ``serve --state postgresql://...`` serves the
whole API and runs jobs on its own devices, with jobs, idempotency keys, the asset index and job
events in PostgreSQL and the files in the ``BUCKET_*`` bucket.

Owns these modules, one job each:
- ``database``: PostgreSQL (psycopg 3): the schema and its migrations, the pool, ``LISTEN``/``NOTIFY``,
  reconnecting, and what a database that does not answer means to a request (503
  ``state_unavailable``);
- ``assets``: ``SharedAssets``, the asset store whose index is in the database and whose bytes are
  in the bucket (this replica's disk is a cache);
- ``jobs``: ``SharedJobs``, the jobs in the database: the shared queue and its claims, leases and
  their reaping (``worker_lost``), events and cancels across replicas, the queue bound and the
  idempotency keys across replicas.

May import the rest of ``embedded.apiv2`` (never ``app``, ``command`` or ``stream``), ``config``,
``staging`` and the job model; never the executor's modules, a backend or ComfyUI.
"""
