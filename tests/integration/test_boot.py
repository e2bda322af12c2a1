"""Boot does what ComfyUI's main.py does: prestartup scripts before the nodes, the tree's own
folders and extra_model_paths.yaml, custom nodes from every configured folder; a pack that fails
to import is named to the job that uses one of its nodes."""

import pytest

from embedded import ValidationError

from ..helpers import workflow


def test_prestartup_scripts_run_before_node_packs_import(executor):
    result = executor.run(workflow("prestartup_seen"))
    assert [o.text for o in result.outputs] == ["ran before the nodes"]


def test_a_failed_pack_is_recorded_once_at_boot_with_comfyuis_reason(executor):
    failed = executor.boot_info.failed_packs
    assert [p.name for p in failed] == ["embedded_broken_pack"]
    assert "embedded_test_missing_dependency" in failed[0].reason


def test_a_job_using_a_node_of_a_failed_pack_is_told_which_pack_and_why(executor):
    with pytest.raises(ValidationError) as info:
        executor.run(workflow("uses_broken_pack"))
    assert info.value.message == "Cannot execute because node EmbeddedTestBrokenNode does not exist."
    assert ("node pack 'embedded_broken_pack', which defines it, failed to import at boot: "
            "No module named 'embedded_test_missing_dependency'") in info.value.extra


def test_the_trees_models_folder_is_searched_beside_the_configured_one(executor, test_config):
    import folder_paths
    assert str(test_config.comfyui_path / "models" / "checkpoints") in folder_paths.get_folder_paths("checkpoints")
    assert folder_paths.get_folder_paths("checkpoints")[0] == str(test_config.models / "checkpoints")
