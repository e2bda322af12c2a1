"""Staging: what a job fetches before its workflow runs.

Owns: ``guard`` (which addresses a URL may reach: the special-purpose address table, ``FETCH_ALLOW``),
``downloads`` (one URL, ``http(s)`` or ``s3``, streamed into a file through the guard, with its
deadlines), ``modelcache`` (models on demand in a shared cache, and ComfyUI's model folder names),
and ``stage`` (a job's input files and models fetched in parallel before it is queued).

May import the job model, ``embedded.config`` and ``embedded.logs``; never a backend, a front door
or ComfyUI. The front doors and the backends (``launch`` registers the model cache) import it.
"""
