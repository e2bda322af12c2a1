"""The only part of this package that imports ComfyUI: boot, server stand-in, progress hook, executor.

Owns ``ComfyRunner`` and ComfyUI's process-global state. ComfyUI keeps process-global state. This package owns all of it, under these rules:

1. **One boot per process** (``boot.boot``, guarded by a lock). It adds the ComfyUI tree to
   ``sys.path`` (first), and ComfyUI's ``nodes.py`` later puts ``<tree>/comfy`` there too: after boot,
   top-level module names such as ``utils``, ``sd``, ``ops`` or ``options`` resolve into ComfyUI.
   Do not boot two trees in one process; a second boot with another configuration is refused.
2. **Arguments** (``comfy.cli_args.args``): parsed once by ComfyUI's own parser from the list that
   ``Config.comfy_args`` builds (the server backend passes the same list to ``main.py``); our
   ``sys.argv`` (RunPod's ``--rp_serve_api`` and friends) is never shown to it. The parse runs on
   the caller's thread (``parse_arguments``, before a worker boots in the background: the runpod
   SDK reads and rewrites ``sys.argv`` too). Two values change after it: ``args.cpu``, set during
   the boot when torch finds no CUDA (before ``comfy.model_management`` reads it), and
   ``args.disable_metadata``, set by the runner at the start of each job from its own
   configuration (save nodes read it when they run), so runners with different settings share a
   process.
3. **Folders** (``folder_paths``): model folders, custom nodes and the user folder are set at boot.
   Input, output and temp folders are switched to the running job's own folders by the executor
   and back to the empty idle folders after it: only one job runs at a time.
4. **``server.PromptServer.instance``** is our ``shim.ServerShim``, set before any node module is
   imported, with ComfyUI's own ``PromptQueue`` as its ``prompt_queue``. It relays ComfyUI's
   messages to the running job's events; its on-prompt handlers run on the runner thread before a
   job is validated. ``execution.get_output_from_returns`` is wrapped (``ui_strings``): a UI value
   that is one string stays one item.
5. **The progress hook** (``comfy.utils.set_progress_bar_global_hook``) is ours (``progress.py``); it
   keeps ComfyUI's interrupt check and per-node progress state.
6. **The interrupt flag** (``comfy.model_management``) is set only by ``ComfyRunner.interrupt`` and
   the job timeout, and only while the job it targets runs.
7. **One job at a time per process.** Caches and loaded models belong to the runner's
   ``execution.PromptExecutor`` and are only touched from its thread; a process-wide lock keeps
   jobs of several runners (several ``Executor`` objects) from overlapping, since folders and the
   interrupt flag are shared.
8. **Logging**: ComfyUI logs on the root logger; boot sets the root level to ``COMFY_LOG_LEVEL`` and
   adds a stderr handler only when the process has none (``logs.setup``, which also caps the
   loggers of boto3/botocore/s3transfer at WARNING and urllib3 at ERROR: they log credentials and
   signed URLs). ComfyUI's ``setup_logger`` (which replaces ``sys.stdout``/``sys.stderr``) is not
   called.
9. **The cyclic garbage collector** is off while the boot imports (millions of objects, almost
   none garbage) and on again after it; what boot made is frozen (``gc.freeze()``) so full
   collections stay short during jobs.
10. **Node classes** (``nodes.NODE_CLASS_MAPPINGS``): ComfyUI's own packs are registered on first
   use (``nodeindex.LazyPacks``, on the runner thread, before a job or a preflight is validated,
   and whenever a class is looked up by name: the mapping is a ``nodeindex.LazyMappings``, one
   dict filled in place), custom packs at boot. While the core imports, ``sys.modules["torch._dynamo.utils"]`` is a
   stand-in (``deferred``), removed before any node pack is imported (the worker's main thread
   imports the runpod SDK meanwhile). ``EAGER_NODES=true`` turns both off.

May import the job model, staging, ``config``, ``logs`` and the shared part of ``embedded.backends``;
must not import the server backend, a front door or RunPod.
"""

from .executor import ComfyRunner

__all__ = ["ComfyRunner"]
