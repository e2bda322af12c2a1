"""Contract drift: what this package relies on in the pinned ComfyUI tree still holds there.

When the pin moves, a failure here names the assumption that broke, before a user finds it.
"""

import inspect

from embedded.backends.launch import MODEL_FOLDERS

from ..helpers import workflow


def test_model_folder_names_match_comfyui_folder_paths(executor):
    import folder_paths
    assert set(folder_paths.folder_names_and_paths) - {"custom_nodes"} == set(MODEL_FOLDERS)


def test_model_folders_point_into_the_configured_models_folder(executor, test_config):
    import folder_paths
    for name, subs in MODEL_FOLDERS.items():
        assert folder_paths.get_folder_paths(name)[0] == str(test_config.models / subs[0]), name


def test_network_volume_style_extra_model_paths_are_honoured(executor):
    import folder_paths
    # the test configuration's yaml adds custom_nodes; the tree's own folder is kept beside it
    custom = folder_paths.get_folder_paths("custom_nodes")
    assert any(p.endswith("tests/custom_nodes") for p in custom)
    assert any(p.endswith("ComfyUI/custom_nodes") for p in custom)


def test_prompt_executor_api_we_call():
    import execution
    params = list(inspect.signature(execution.PromptExecutor.execute_async).parameters)
    assert params == ["self", "prompt", "prompt_id", "extra_data", "execute_outputs"]
    assert list(inspect.signature(execution.validate_prompt).parameters) == ["prompt_id", "prompt",
                                                                              "partial_execution_list"]
    assert inspect.iscoroutinefunction(execution.validate_prompt)
    assert {c.name for c in execution.CacheType} >= {"CLASSIC", "LRU", "NONE", "RAM_PRESSURE"}


def test_caches_keep_entries_where_we_remove_output_nodes_from_them(executor):
    """comfy.executor._remove_entry: BasicCache and its subclasses hold entries in ``cache`` by the
    data key of ``cache_key_set``; LRU/RAM-pressure caches keep bookkeeping by the same key."""
    from comfy_execution import caching
    executor.run(workflow("save_and_preview"))
    caches = executor._runner._executor.caches
    for cache in (caches.outputs, caches.objects):
        assert cache.initialized and isinstance(cache.cache, dict)
        assert callable(cache.cache_key_set.get_data_key)
    lru = caching.LRUCache(caching.CacheKeySetInputSignature, max_size=1)
    ram = caching.RAMPressureCache(caching.CacheKeySetInputSignature)
    assert isinstance(lru.used_generation, dict) and isinstance(lru.children, dict)
    assert isinstance(ram.timestamps, dict)
    assert not hasattr(caching.NullCache(), "initialized")


def test_prompt_workers_between_jobs_steps_are_the_ones_we_repeat():
    """comfy.housekeeping repeats prompt_worker (main.py): cache choice, /free flags, throttled gc."""
    from embedded.config import Config
    main = (Config().comfyui_path / "main.py").read_text()
    for line in ("if args.cache_lru > 0:", "elif args.cache_ram > 0:", "elif args.cache_none:",
                 'cache_args={ "lru" : args.cache_lru, "ram" : args.cache_ram }', "gc_collect_interval = 10.0",
                 'if flags.get("unload_models", free_memory):', "comfy.model_management.unload_all_models()",
                 "e.reset()", "comfy.model_management.soft_empty_cache()", "hook_breaker_ac10a0.restore_functions()"):
        assert line in main, line


def test_the_log_buffer_our_server_side_pack_seeds():
    """embedded/backends/server/comfy_nodes/embedded_log_buffer: app.logger keeps its buffer in ``logs``."""
    import app.logger
    assert hasattr(app.logger, "logs")
    assert 'logs[-1]["m"]' in inspect.getsource(app.logger.LogInterceptor.write)


def test_our_server_stand_in_is_the_prompt_server_instance(executor):
    import server

    from embedded.backends.comfy import boot
    assert server.PromptServer.instance is boot.shim()
    for attr in ("send_sync", "send_progress_text", "client_id", "last_node_id", "last_prompt_id",
                 "sockets_metadata", "routes", "queue_updated"):
        assert hasattr(server.PromptServer.instance, attr), attr


def test_our_progress_hook_is_installed(executor):
    import comfy.utils
    assert comfy.utils.PROGRESS_BAR_HOOK is not None
    assert comfy.utils.PROGRESS_BAR_HOOK.__module__ == "embedded.backends.comfy.progress"


def test_comfyui_arguments_come_from_our_list_not_sys_argv(executor, test_config):
    from comfy.cli_args import args
    assert args.cpu is executor.boot_info.cpu
    assert args.disable_metadata is True  # COMFY_DISABLE_METADATA=true in the test configuration
    assert args.base_directory == str(test_config.work_dir)


def test_every_node_module_imports(executor):
    assert executor.boot_info.import_failures == ()
    assert executor.boot_info.node_classes > 500


def test_network_volume_folders_list_their_models(executor, network_volume):
    """COMFY_EXTRA_MODEL_PATHS with the RunPod example: diffusion_models and text_encoders included."""
    import folder_paths
    for kind, sub in (("checkpoints", "checkpoints"), ("diffusion_models", "diffusion_models"),
                      ("diffusion_models", "unet"), ("text_encoders", "text_encoders"), ("loras", "loras")):
        folder = network_volume / "models" / sub
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"on_volume_{sub}.safetensors").write_bytes(b"")
        assert f"on_volume_{sub}.safetensors" in folder_paths.get_filename_list(kind), (kind, sub)


def test_the_executor_and_cache_internals_the_cache_hits_read(executor):
    """embedded/backends/server/comfy_nodes/embedded_cache_keys wraps PromptExecutor.execute_async in server
    mode; both backends read the output cache's key set, entries and state (comfy/executor.py)."""
    import execution
    from comfy_execution import caching
    assert inspect.iscoroutinefunction(execution.PromptExecutor.execute_async)
    assert list(inspect.signature(execution.PromptExecutor.execute_async).parameters) == [
        "self", "prompt", "prompt_id", "extra_data", "execute_outputs"]
    for cache_type in (execution.CacheType.CLASSIC, execution.CacheType.LRU, execution.CacheType.RAM_PRESSURE):
        outputs = execution.CacheSet(cache_type, {"lru": 10, "ram": 4.0}).outputs
        assert outputs.initialized is False and outputs.cache == {}
        assert "cache_key_set" in inspect.getsource(caching.BasicCache.set_prompt)
    assert hasattr(caching.CacheKeySet, "get_data_key")
    assert not hasattr(execution.CacheSet(execution.CacheType.NONE).outputs, "initialized")


def test_comfyuis_failed_pack_message_is_the_one_we_read():
    import nodes

    from embedded.backends import packs
    source = inspect.getsource(nodes.load_custom_node)
    assert 'f"Cannot import {module_path} module for custom nodes: {e}"' in source
    assert packs.parse("Cannot import /x/pack module for custom nodes: boom").reason == "boom"


def test_the_selftests_contract_checks_find_nothing_on_the_pinned_tree(executor):
    """embedded/tooling/selftest/contract.py: every internal we read or wrap, as the image's self-test checks it."""
    from embedded.tooling.selftest import contract
    assert len(contract.CHECKS) >= 10
    assert contract.problems() == []
