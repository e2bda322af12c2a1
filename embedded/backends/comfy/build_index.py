"""``python -m embedded.backends.comfy.build_index``: write the node index for the configured tree
and work folder (an eager boot; the image runs it at build time).

Owns the command only: the index is ``nodeindex``'s, the boot ``boot``'s. Kept apart from both so
that ``nodeindex`` need not import ``boot`` (which imports it).
"""

from __future__ import annotations

import sys

from ...config import Config
from . import boot


def main() -> int:
    """Build the index for the configured tree and work folder (an eager boot)."""
    import asyncio
    import dataclasses

    config = dataclasses.replace(Config.from_env(), eager_nodes=True)
    config.node_index.unlink(missing_ok=True)  # so that a write that fails is seen below
    loop = asyncio.new_event_loop()
    try:
        info = boot.boot(config, loop)
    finally:
        loop.close()
    if not config.node_index.is_file():
        print(f"node index: could not be written to {config.node_index}", file=sys.stderr)
        return 1
    print(f"node index: {info.node_classes} node classes, written to {config.node_index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
