"""ComfyUI's UI outputs become typed outputs with bytes; unreadable files are problems, not crashes."""

from embedded.job.outputs import collect, kind_of, mime_type


def test_kinds_follow_the_key_and_the_mime_type():
    assert kind_of("images", "image/png") == "image"
    assert kind_of("images", "video/mp4") == "video"  # SaveVideo reports under "images"
    assert kind_of("gifs", "image/gif") == "video"  # VideoHelperSuite
    assert kind_of("audio", "audio/flac") == "audio"
    assert kind_of("3d", "model/gltf-binary") == "file"
    assert mime_type("x.WEBM") == "video/webm" and mime_type("noext") == "application/octet-stream"


def test_every_file_list_and_text_is_collected():
    ui = {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}], "animated": [False]},
          "3": {"text": ["hello"]},
          "4": {"audio": [{"filename": "t.flac", "subfolder": "audio", "type": "output"}]},
          "5": {"result": [{"filename": "m.glb", "subfolder": "3d", "type": "output"}]},
          "6": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]}}
    files = {("output", "", "a.png"): b"A", ("output", "audio", "t.flac"): b"T",
             ("output", "3d", "m.glb"): b"M", ("temp", "", "p.png"): b"P"}
    outputs, problems = collect(ui, lambda t, s, f: files[(t, s, f)])
    assert problems == []
    assert [(o.node_id, o.kind, o.filename, o.data) for o in outputs] == [
        ("9", "image", "a.png", b"A"), ("3", "text", "3_0.txt", b"hello"), ("4", "audio", "t.flac", b"T"),
        ("5", "file", "m.glb", b"M"), ("6", "image", "p.png", b"P")]


def test_an_unreadable_file_is_reported_and_the_others_kept():
    ui = {"1": {"images": [{"filename": "gone.png", "subfolder": "", "type": "output"},
                           {"filename": "ok.png", "subfolder": "", "type": "output"}]}}

    def read(t, s, f):
        if f == "gone.png":
            raise FileNotFoundError("No such file")
        return b"ok"

    outputs, problems = collect(ui, read)
    assert [o.filename for o in outputs] == ["ok.png"]
    assert problems == ["Node 1: could not read output file gone.png: No such file"]


def test_only_the_requested_folder_types_are_collected():
    ui = {"1": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]}}
    assert collect(ui, lambda *a: b"x", types=("output",)) == ([], [])


def test_outputs_follow_the_workflow_order_whatever_order_comfyui_ran_them_in():
    ui = {"9": {"text": ["nine"]}, "2": {"text": ["two"]}, "5": {"text": ["five"]}}
    outputs, _ = collect(ui, lambda *a: b"", order=["2", "5", "9"])
    assert [o.text for o in outputs] == ["two", "five", "nine"]
    outputs, _ = collect(ui, lambda *a: b"", order=["5"])
    assert [o.text for o in outputs] == ["five", "nine", "two"]


def test_a_text_outputs_file_name_never_holds_a_path_from_its_node_id():
    outputs, _ = collect({"../../x": {"text": ["hi"]}}, read=lambda *a: b"")
    [text] = outputs
    assert "/" not in text.filename and not text.filename.startswith(".")


def test_the_cli_never_writes_outside_out(tmp_path):
    from embedded.cli import _write
    from embedded.job.types import TEXT, Output, Result, Timings

    out = tmp_path / "out"
    escaping = Output("9", TEXT, "x.txt", "../../evil", "output", "text/plain", b"data")
    plain = Output("3", TEXT, "3_0.txt", "sub", "output", "text/plain", b"kept")
    written = _write(Result("job", "prompt", [escaping, plain], Timings()), out)
    assert all(out.resolve() in path.parents for path in written)
    assert [p.read_bytes() for p in written] == [b"data", b"kept"]
    assert written[1] == out.resolve() / "sub" / "3_0.txt"
    assert not (tmp_path / "evil").exists()
