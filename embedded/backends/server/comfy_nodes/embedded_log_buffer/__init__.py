"""Loaded into ComfyUI's own server process (server mode only), as a custom-node pack with no nodes.

Owns one adaptation: ComfyUI's ``app.logger.LogInterceptor.write`` reads the last line of its log
buffer when a write starts with a carriage return (tqdm's progress bars, in every sampler); with
nothing logged yet (``--verbose ERROR``, ``COMFY_LOG_LEVEL=ERROR``) the buffer is empty and the
first sampler fails with ``IndexError: deque index out of range``. The buffer gets one empty line
here, so it is never empty. ComfyUI's files are not edited. Must not import ``embedded``.
"""

from datetime import datetime

import app.logger

if app.logger.logs is not None and len(app.logger.logs) == 0:
    app.logger.logs.append({"t": datetime.now().isoformat(), "m": "\n"})
