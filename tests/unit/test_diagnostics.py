"""NETWORK_VOLUME_DEBUG: the volume report names what was found and the usual mistakes."""

import logging

from embedded.worker import diagnostics


def test_an_absent_volume_is_reported_as_not_mounted(tmp_path):
    assert "not mounted" in diagnostics.report(tmp_path / "none")[-1]


def test_models_per_kind_and_the_usual_mistakes_are_reported(tmp_path):
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "a.safetensors").write_bytes(b"\0" * 1024)
    (tmp_path / "models" / "checkpoints" / "notes.txt").write_text("x")
    (tmp_path / "models" / "lora").mkdir()
    (tmp_path / "ComfyUI" / "models").mkdir(parents=True)
    text = "\n".join(diagnostics.report(tmp_path))
    assert "models/checkpoints/: 2 file(s)" in text and "a.safetensors (0.0 MiB)" in text
    assert "notes.txt (0.0 MiB) (ignored: not a model file extension)" in text
    assert "models/lora/ is not a ComfyUI model folder (did you mean 'loras'?)" in text
    assert f"models found under {tmp_path / 'ComfyUI/models'}" in text
    assert text.endswith("1 model file(s) found")


def test_the_report_is_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="embedded.worker.volume"):
        diagnostics.log_report(tmp_path)
    assert "no " in caplog.records[-1].getMessage() and str(tmp_path) in caplog.text
