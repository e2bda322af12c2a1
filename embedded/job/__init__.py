"""The job model: what crosses every line of the package.

Owns: ``types`` (``Job``, ``Output``, ``Timings``, ``Result``, ``BootInfo``), ``events`` (the typed
progress events and their websocket-compat frames), ``errors`` (the exception family), ``inputs``
(what a job brings in: the workflow's form, input names, bytes and pixels, the input folder),
``outputs`` (ComfyUI's UI outputs turned into ``Output`` objects), and ``streams`` (a job's events
read as an async stream).

May import only the standard library, third-party libraries that do not start ComfyUI (Pillow,
PyAV) and ``embedded.logs``. Everything else in the package may import this; nothing here imports
the front doors, staging, the backends or ComfyUI.
"""
