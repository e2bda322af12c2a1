"""``python -m embedded run``: outputs land in --out, failures exit non-zero with one line;
``python -m embedded check`` prints the preflight and exits by it."""

import json
import subprocess
import sys

from ..helpers import EXAMPLES, WORKFLOWS, open_image

REPO = EXAMPLES.parent


def run_cli(*args, tmp_path, env_extra=None):
    import os
    env = dict(os.environ, COMFY_WORK_DIR=str(tmp_path / "work"), COMFY_LOG_LEVEL="WARNING")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "embedded", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_writes_outputs_and_prints_their_paths(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", str(EXAMPLES / "image_ops.json"), "--image", f"input.png={EXAMPLES / 'input.png'}",
                   "--out", str(out), "--progress", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = out / "image_ops_00001_.png"
    assert proc.stdout.splitlines() == [str(written)]
    assert open_image(written.read_bytes()).size == (512, 512)
    assert "nodes" in proc.stderr and "1 output(s) written" in proc.stderr


def test_a_failing_workflow_exits_non_zero_with_a_one_line_reason(tmp_path):
    proc = run_cli("run", str(WORKFLOWS / "invalid_out_of_range.json"), "--out", str(tmp_path / "o"), "-q",
                   tmp_path=tmp_path)
    assert proc.returncode == 1
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert line == ("error: Prompt outputs failed validation: "
                    "Node 1 (EmptyImage), input 'width': Value 0 smaller than min of 1: width")
    assert not (tmp_path / "o").exists()


def test_bad_arguments_exit_2(tmp_path):
    proc = run_cli("run", str(tmp_path / "missing.json"), tmp_path=tmp_path)
    assert proc.returncode == 2 and "cannot read" in proc.stderr


def test_an_unreadable_input_image_exits_2(tmp_path):
    proc = run_cli("run", str(EXAMPLES / "image_ops.json"), "--image", f"input.png={tmp_path / 'nope.png'}",
                   tmp_path=tmp_path)
    assert proc.returncode == 2 and "error: --image input.png: cannot read" in proc.stderr


def test_the_check_command_prints_the_report_and_exits_by_it(tmp_path):
    bad = run_cli("check", str(WORKFLOWS / "missing_model.json"), "-q", tmp_path=tmp_path)
    assert bad.returncode == 1, bad.stderr
    assert json.loads(bad.stdout)["missing_models"][0]["input"] == "ckpt_name"
    good = run_cli("check", str(EXAMPLES / "image_ops.json"), "--image", f"input.png={EXAMPLES / 'input.png'}", "-q",
                   tmp_path=tmp_path)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True


def test_a_ui_format_export_is_refused_at_once_before_comfyui_boots(tmp_path):
    proc = run_cli("run", str(WORKFLOWS / "invalid_ui_format.json"), "--out", str(tmp_path / "o"), tmp_path=tmp_path)
    assert proc.returncode == 1
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert "Export (API)" in line
    assert "ComfyUI ready" not in proc.stderr and not (tmp_path / "work").exists()  # nothing booted


def test_a_good_run_prints_a_few_lines_by_default(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "COMFY_LOG_LEVEL"}
    env.update(COMFY_WORK_DIR=str(tmp_path / "work"))
    proc = subprocess.run([sys.executable, "-m", "embedded", "run", str(EXAMPLES / "image_ops.json"),
                           "--image", f"input.png={EXAMPLES / 'input.png'}", "--out", str(tmp_path / "out")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) <= 4, proc.stderr  # "ComfyUI ready ...", the summary: no library's debug lines
    assert "STREAM" not in proc.stderr and "ComfyUI ready" in proc.stderr and "written" in proc.stderr
