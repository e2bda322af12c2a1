"""An import ComfyUI's core pulls in at boot that no job needs then, deferred from our side.

Owns: ``torch._dynamo`` (about a quarter of the core's import time here). The core imports it
only through torchvision (``comfy.ldm.cascade.stage_c_coder`` -> ``torchvision.models`` ->
``torchvision.ops.roi_align``, whose module does ``from torch._dynamo.utils import
is_compile_supported``, a function it calls only inside ``roi_align``). While ComfyUI's core is
imported, ``torch._dynamo.utils`` is a stand-in module holding that one function, which imports
the real one when it is called; the stand-in is gone from ``sys.modules`` as soon as the core is
in, so anything later (a custom pack, ``torch.compile``) imports the real ``torch._dynamo``
normally. Nothing in ComfyUI's tree is changed. ``EAGER_NODES=true`` turns it off; the
node-loading parity test pins that, with the pinned tree and torch, nothing imports
``torch._dynamo`` meanwhile and that it works afterwards. The window is process-wide: in the
worker the runpod SDK is imported on the main thread meanwhile (it imports no torch).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import types
from typing import Iterator

log = logging.getLogger("embedded.backends.comfy")

STAND_IN = "torch._dynamo.utils"


def _is_compile_supported(device_type):  # the only name torchvision takes from it
    if isinstance(sys.modules.get(STAND_IN), _StandIn):  # called during the window: end it first
        sys.modules[STAND_IN].called = True
        del sys.modules[STAND_IN]
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


class _StandIn(types.ModuleType):
    called = False  # its function ran during the window: the real torch._dynamo was imported for it

    def __getattr__(self, name: str):  # anything else is missing (`from ... import name` fails)
        raise AttributeError(f"torch._dynamo.utils.{name}: embedded.backends.comfy.deferred's stand-in while ComfyUI's "
                             f"core imports (EAGER_NODES=true turns it off)")


@contextlib.contextmanager
def dynamo_deferred(enabled: bool = True) -> Iterator[None]:
    """While the block runs, ``torch._dynamo.utils`` is the stand-in (unless already imported)."""
    if not enabled or STAND_IN in sys.modules or "torch._dynamo" in sys.modules:
        yield
        return
    stand_in = _StandIn(STAND_IN, "Stand-in while ComfyUI's core imports (embedded.backends.comfy.deferred)")
    stand_in.is_compile_supported = _is_compile_supported
    sys.modules[STAND_IN] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(STAND_IN) is stand_in:
            del sys.modules[STAND_IN]
        touched = [m for m in sys.modules if m == "torch._dynamo" or m.startswith("torch._dynamo.")]
        if touched and not stand_in.called:  # something imported part of it meanwhile: not expected with the pinned versions
            log.warning("embedded: %s imported while ComfyUI's core loaded; set EAGER_NODES=true if torch.compile "
                        "misbehaves", ", ".join(sorted(touched)[:3]))
