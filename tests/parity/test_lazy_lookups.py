"""Lazy loading never changes an outcome (issue 17, item 6): whatever reaches for a node class by
name (an expansion into a class the workflow does not name, ``nodes.NODE_CLASS_MAPPINGS[...]``,
``.get``, ``in``, a custom pack at import or at run time) gets it, importing what is missing first.
Each case is the first job of a fresh process (``tests/probes/lookup_probe.py``), booted lazily
(the index built first, as the image does) and eagerly (``EAGER_NODES=true``)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from ..helpers import TESTS, probe, probe_reports

pytestmark = pytest.mark.timeout(900)
CASES = ("expansion", "lookup", "import")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k not in ("EAGER_NODES", "COMFY_ARGS")}
    indexed = tmp_path_factory.mktemp("index")
    subprocess.run([sys.executable, "-m", "embedded.backends.comfy.build_index"], cwd=TESTS.parent, check=True,
                   env={**env, "COMFY_WORK_DIR": str(indexed), "COMFY_LOG_LEVEL": "ERROR"}, capture_output=True,
                   timeout=300)
    running = {}
    for way in ("lazy", "eager"):
        for case in CASES:
            work = tmp_path_factory.mktemp(f"{way}-{case}")
            if way == "lazy":
                shutil.copy2(indexed / "node-index.json", work / "node-index.json")
            running[way, case] = probe("lookup_probe", str(work), case,
                                       env={**env, "EAGER_NODES": "true"} if way == "eager" else env)
    return probe_reports(running, timeout=800)


@pytest.mark.parametrize("case", CASES)
def test_a_class_reached_by_name_is_there_in_a_fresh_lazy_process_as_in_an_eager_one(outcomes, case):
    lazy, eager = outcomes["lazy", case], outcomes["eager", case]
    assert (lazy["lazy"], eager["lazy"]) == (True, False), "the probes booted each way"
    assert lazy["error"] is None and lazy["ok"] is True
    assert lazy == {**eager, "lazy": True}


def test_a_pack_that_looks_up_a_builtin_class_while_it_imports_finds_it(outcomes):
    [[_, kind, text]] = outcomes["lazy", "import"]["outputs"]
    assert kind == "text" and json.loads(text)["builtin_seen_at_import"] is True
