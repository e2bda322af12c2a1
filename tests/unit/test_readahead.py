"""The warm-up workflow's model files are found under the worker's model folders and read once."""

from embedded.config import Config
from embedded.worker import readahead


def test_model_names_are_the_string_inputs_that_name_model_files():
    wf = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd/xl.safetensors"}},
          "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "style.SAFETENSORS", "strength": 1.0,
                                                       "model": ["1", 0]}},
          "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo"}}, "4": "not a node"}
    assert readahead.model_names(wf) == {"sd/xl.safetensors", "style.SAFETENSORS"}


def test_files_are_found_under_every_model_folder_by_name_or_sub_path(tmp_path):
    config = Config.from_env({"COMFY_WORK_DIR": str(tmp_path / "work"), "NETWORK_VOLUME_PATH": str(tmp_path / "vol"),
                              "MODEL_CACHE_DIR": str(tmp_path / "cache")})
    wanted = [config.models / "checkpoints" / "sd" / "xl.safetensors", tmp_path / "vol" / "models" / "loras" / "a.pt",
              tmp_path / "cache" / "vae" / "v.safetensors"]
    for path in [*wanted, config.models / "checkpoints" / "other.safetensors",
                 config.models / "checkpoints" / "old" / "sd" / "xl.safetensors",  # another file of that name
                 tmp_path / "cache" / ".incoming" / "v.safetensors"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"w" * 10)
    found = readahead.find({"sd/xl.safetensors", "a.pt", "v.safetensors"}, readahead.model_roots(config))
    assert sorted(found) == sorted(wanted)
    assert readahead.read(found) == 30


def test_a_link_back_up_the_tree_is_walked_once(tmp_path):
    (tmp_path / "models" / "loras").mkdir(parents=True)
    (tmp_path / "models" / "loras" / "a.pt").write_bytes(b"w")
    (tmp_path / "models" / "loras" / "loop").symlink_to(tmp_path / "models", target_is_directory=True)
    assert readahead.find({"a.pt"}, [tmp_path / "models"]) == [tmp_path / "models" / "loras" / "a.pt"]
