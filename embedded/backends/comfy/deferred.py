"""Imports ComfyUI's core pulls in at boot that no job needs then, deferred from our side, each only
while the core is imported (``core_deferred``). Nothing in ComfyUI's tree is changed, and
``EAGER_NODES=true`` turns both off.

Owns:
- ``torch._dynamo`` (about a quarter of the core's import time here). The core imports it only
  through torchvision (``comfy.ldm.cascade.stage_c_coder`` -> ``torchvision.models`` ->
  ``torchvision.ops.roi_align``, whose module does ``from torch._dynamo.utils import
  is_compile_supported``, a function it calls only inside ``roi_align``). While ComfyUI's core is
  imported, ``torch._dynamo.utils`` is a stand-in module holding that one function, which imports
  the real one when it is called; the stand-in is gone from ``sys.modules`` as soon as the core is
  in, so anything later (a custom pack, ``torch.compile``) imports the real ``torch._dynamo``
  normally. The node-loading parity test pins that, with the pinned tree and torch, nothing
  imports ``torch._dynamo`` meanwhile and that it works afterwards. The window is process-wide: in
  the worker the runpod SDK is imported on the main thread meanwhile (it imports no torch).
- ``scipy.stats`` and ``scipy.integrate`` (about 0.45 s of the core's 1.65 s here; ComfyUI uses
  them only inside the beta scheduler and the LMS sampler): imported during the window, they are
  modules whose code runs on their first use (any attribute but what the import system reads),
  once, under a lock, as ``importlib.util.LazyLoader`` does (whose Python 3.11 version lets a
  second thread see a half-run module); from then on they are plain modules. A submodule imported
  first runs its lazy parent first (``_SubmoduleFinder``). Once the runner has been idle for a
  moment after its first job, it runs them (``run_deferred``): the cold start is spared, and no
  job later meets a first use.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
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


@contextlib.contextmanager
def core_deferred(enabled: bool = True) -> Iterator[None]:
    """Both deferrals while ComfyUI's core is imported (none when ``enabled`` is false)."""
    with dynamo_deferred(enabled), lazy_modules(enabled):
        yield


#: imported during the window, their code run on first use
LAZY_MODULES = ("scipy.stats", "scipy.integrate")

_first_use = threading.RLock()
_running: set[int] = set()  # lazy modules whose code runs now (their own thread sees them fill, as any import)


class _LazyModule(types.ModuleType):
    """A module imported during the window whose code has not run yet."""

    #: what the import system reads of a module it has just made (reading it runs nothing)
    _METADATA = frozenset({"__spec__", "__name__", "__file__", "__loader__", "__package__", "__class__"})

    def __getattribute__(self, attr):
        if attr not in _LazyModule._METADATA:
            with _first_use:
                if type(self) is _LazyModule and id(self) not in _running:
                    _running.add(id(self))
                    try:
                        spec = object.__getattribute__(self, "__spec__")
                        spec.loader.exec_module(self)
                    except BaseException:
                        sys.modules.pop(spec.name, None)  # as an import that failed
                        raise
                    finally:
                        _running.discard(id(self))
                        self.__class__ = types.ModuleType
        return types.ModuleType.__getattribute__(self, attr)


class _LazyLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.loader  # the real one, for the first use
        module.__class__ = _LazyModule


class _LazyFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _LazyLoader(spec.loader)
        return spec


class _Loaded(importlib.abc.Loader):
    """Hands the import system a module that is already there."""

    def __init__(self, module):
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        pass


class _SubmoduleFinder(importlib.abc.MetaPathFinder):
    """A submodule of a lazy module imported before anything else of it (``import scipy.stats.qmc``):
    the lazy module's code runs first, as a package's always does before its submodules, and the
    submodule is the one that code imported, never a second copy. Stays on ``sys.meta_path`` (it
    does nothing once every lazy module has run)."""

    def find_spec(self, fullname, path, target=None):
        for name in LAZY_MODULES:
            if fullname.startswith(name + ".") and type(sys.modules.get(name)) is _LazyModule:
                getattr(sys.modules[name], "__dict__")  # runs it
                module = sys.modules.get(fullname)
                return None if module is None else importlib.util.spec_from_loader(fullname, _Loaded(module))
        return None


_submodules = _SubmoduleFinder()


@contextlib.contextmanager
def lazy_modules(enabled: bool = True, names: tuple[str, ...] = LAZY_MODULES) -> Iterator[None]:
    """While the block runs, importing one of ``names`` (not imported yet) defers its code."""
    names = tuple(name for name in names if name not in sys.modules)
    if not enabled or not names:
        yield
        return
    finder = _LazyFinder(names)
    sys.meta_path.insert(0, finder)
    if _submodules not in sys.meta_path:
        sys.meta_path.insert(0, _submodules)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def still_deferred() -> list[str]:
    """The lazy modules whose code has not run yet."""
    return [name for name in LAZY_MODULES if type(sys.modules.get(name)) is _LazyModule]


def run_deferred() -> None:
    """Run the lazy modules' code now (the runner does it once it is idle after its first job: a
    sampler that needs them never pays for it, and other threads meet plain modules)."""
    for name in still_deferred():
        getattr(sys.modules[name], "__dict__")
