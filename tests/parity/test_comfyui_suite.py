"""ComfyUI's own execution suite (issue 17, item 1): ``tests/execution/`` of the pinned tree
(test_execution.py, test_async_nodes.py, test_progress_isolation.py, test_public_api.py and their
testing-pack), run unchanged against our public API in both modes (``embedded/tooling/selftest/``: their
server fixture and their client's transport replaced; the image's self-test runs the same).

The suite is copied from the verified tree into a temporary folder at test time (never committed)
and run by pytest in a process of its own (its ``tests`` package and options are not ours), with
``--skip-timing-checks``: no test here asserts a duration. Every test passes, except ComfyUI's
HTTP history-paging tests, reported as not applicable.
"""

import pytest

from embedded import Config
from embedded.tooling.selftest.suite import has_suite, run_suite


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_comfyuis_own_execution_suite_passes_but_for_history_paging(tmp_path, mode):
    tree = Config().comfyui_path
    assert has_suite(tree), "the pinned tree carries ComfyUI's execution suite"
    report = run_suite(tree, mode, tmp_path)
    print(report.line())
    assert len(report.outcomes) > 200, report.output
    assert report.failed == {}
    assert report.skipped_otherwise == []
    not_applicable = {name.rsplit("::", 1)[1].split("[")[0] for name in report.not_applicable}
    assert not_applicable == {"test_offset_returns_different_items_than_beginning_of_history",
                              "test_offset_beyond_history_length_returns_empty",
                              "test_offset_at_exact_history_length_returns_empty",
                              "test_offset_zero_equals_no_offset_parameter",
                              "test_offset_without_max_items_skips_from_beginning",
                              "test_offset_with_max_items_returns_correct_window",
                              "test_offset_near_end_returns_remaining_items_only"}
