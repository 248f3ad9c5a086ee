"""Model folders and safe name resolution: names come from requests and must never escape a folder."""
from __future__ import annotations

import os

import pytest


@pytest.fixture()
def folders(pack):
    from visionkit_pack.models.core import folders

    return folders


def test_every_design_folder_key_is_known(folders):
    expected = {"checkpoints", "diffusers", "loras", "controlnet", "ipadapter", "clip_vision", "clip_models", "vae",
                "sams", "grounding-dino", "insightface", "instantid", "upscale_models"}
    expected |= {"blip", "dinov2", "vit"}  # issue 20: captions, image similarity, image labels
    expected |= {"pose", "depth"}  # issue 20
    assert set(folders.FOLDERS) == expected
    assert all(k in folders.WHERE_TO_GET for k in expected)


def test_listing_finds_fixture_files_nested_and_folder_models(folders, models_dir):
    ups = folders.list_models("upscale_models")
    assert "tiny_RealESRGAN_x4plus.pth" in ups
    assert "nested/tiny_srvgg_x2.pth" in ups
    clip = folders.list_models("clip_models")
    assert "tiny-clip" in clip  # a transformers folder is one model ...
    assert not any(n.startswith("tiny-clip/") for n in clip)  # ... whose own files are not listed
    assert "tiny-clip/model.safetensors" not in folders.list_models("clip_models")


def test_resolve_returns_path_inside_folder(folders, models_dir):
    p = folders.resolve("upscale_models", "nested/tiny_srvgg_x2.pth")
    assert p == os.path.join(str(models_dir), "upscale_models", "nested", "tiny_srvgg_x2.pth")
    assert folders.resolve("upscale_models", "nested\\tiny_srvgg_x2.pth") == p  # Windows separators


@pytest.mark.parametrize("name", [
    "../sams/tiny_sam_vit.pth", "nested/../../sams/tiny_sam_vit.pth", "/etc/passwd", "\\\\server\\share\\x.pth",
    "C:\\models\\x.pth", "..", "nested//tiny_srvgg_x2.pth", "a\x00b.pth", "",
])
def test_unsafe_names_are_refused(folders, name):
    with pytest.raises(folders.UnsafeModelNameError) as ex:
        folders.resolve("upscale_models", name)
    assert "model name" in str(ex.value) or "no model name" in str(ex.value)


def test_absolute_path_of_a_real_listed_file_is_still_refused(folders, models_dir):
    real = os.path.join(str(models_dir), "upscale_models", "tiny_RealESRGAN_x4plus.pth")
    assert os.path.exists(real)
    with pytest.raises(folders.UnsafeModelNameError, match="absolute"):
        folders.resolve("upscale_models", real)


def test_missing_model_message_names_folders_files_and_source(folders, models_dir):
    with pytest.raises(folders.ModelNotFoundError) as ex:
        folders.resolve("upscale_models", "RealESRGAN_x4plus.pth")
    msg = str(ex.value)
    assert os.path.join(str(models_dir), "upscale_models") in msg  # the folder searched
    assert "tiny_RealESRGAN_x4plus.pth" in msg  # what is there
    assert "RealESRGAN_x4plus.pth" in msg and "README" in msg  # what to get, and where it is described


def test_a_file_not_in_the_listing_is_refused_even_if_it_exists(folders, models_dir):
    junk = models_dir / "upscale_models" / "notes.txt"
    junk.write_text("not a model")
    try:
        with pytest.raises(folders.ModelNotFoundError):
            folders.resolve("upscale_models", "notes.txt")
    finally:
        junk.unlink()


def test_symlinked_files_and_folders_are_listed(folders, models_dir, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "linked.pth").write_bytes(b"x")
    link_file = models_dir / "upscale_models" / "linked.pth"
    link_dir = models_dir / "upscale_models" / "shared"
    link_file.symlink_to(outside / "linked.pth")
    link_dir.symlink_to(outside, target_is_directory=True)
    try:
        names = folders.list_models("upscale_models")
        assert "linked.pth" in names and "shared/linked.pth" in names
        assert os.path.samefile(folders.resolve("upscale_models", "shared/linked.pth"), outside / "linked.pth")
    finally:
        link_file.unlink()
        link_dir.unlink()


def test_several_roots_first_wins(folders, models_dir, tmp_path, monkeypatch):
    second = tmp_path / "second"
    (second / "upscale_models").mkdir(parents=True)
    (second / "upscale_models" / "only_here.pth").write_bytes(b"x")
    (second / "upscale_models" / "tiny_RealESRGAN_x4plus.pth").write_bytes(b"shadowed")
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", os.pathsep.join([str(models_dir), str(second)]))
    names = folders.list_models("upscale_models")
    assert "only_here.pth" in names
    assert folders.resolve("upscale_models", "tiny_RealESRGAN_x4plus.pth").startswith(str(models_dir))
    assert folders.resolve("upscale_models", "only_here.pth").startswith(str(second))


def test_insightface_packs_are_folders_under_models(folders, tmp_path, monkeypatch):
    root = tmp_path / "models"
    pack_dir = root / "insightface" / "models" / "antelopev2"
    pack_dir.mkdir(parents=True)
    (pack_dir / "glintr100.onnx").write_bytes(b"x")
    (root / "insightface" / "stray.onnx").write_bytes(b"x")  # beside models/, not a pack
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(root))
    assert folders.list_models("insightface") == ["antelopev2"]


def test_registration_with_comfy_folder_paths_adds_and_never_replaces(pack, monkeypatch, tmp_path):
    """With a stand-in folder_paths module (ComfyUI's API): existing keys keep their folders."""
    import sys
    import types

    from visionkit_pack.models.core import folders, host

    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    user_sams = str(tmp_path / "my_sams")
    fp.folder_names_and_paths = {"upscale_models": ([str(tmp_path / "models" / "upscale_models")], {".pth"}),
                                 "sams": ([user_sams], {".pth"}),
                                 "ipadapter": ([str(tmp_path / "yaml_ipadapter")], set())}  # from a yaml

    def add_model_folder_path(name, path, is_default=False):
        if name in fp.folder_names_and_paths:
            if path not in fp.folder_names_and_paths[name][0]:
                fp.folder_names_and_paths[name][0].append(path)
        else:
            fp.folder_names_and_paths[name] = ([path], set())

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: fp.folder_names_and_paths[name][0][:]
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    monkeypatch.delenv("VISIONKIT_STANDALONE")
    assert host.in_comfyui()
    host.register_comfy_folders(folders.FOLDERS.values())
    assert fp.folder_names_and_paths["sams"][0] == [user_sams, os.path.join(fp.models_dir, "sams")]
    assert fp.folder_names_and_paths["upscale_models"][1] == {".pth"}  # extensions untouched
    assert fp.folder_names_and_paths["grounding-dino"][0] == [os.path.join(fp.models_dir, "grounding-dino")]
    assert ".safetensors" in fp.folder_names_and_paths["grounding-dino"][1]
    assert folders.folder_paths_for("sams")[0] == user_sams
    assert fp.folder_names_and_paths["ipadapter"][1] == set(folders.FOLDERS["ipadapter"].extensions)
    host.register_comfy_folders(folders.FOLDERS.values())  # idempotent
    assert len(fp.folder_names_and_paths["sams"][0]) == 2


def test_a_symlink_loop_is_listed_once(folders, tmp_path, monkeypatch):
    """`loras/a -> .`: each real folder is visited once (before: a/x, a/a/x, ... until the OS's ELOOP)."""
    root = tmp_path / "models"
    (root / "loras").mkdir(parents=True)
    (root / "loras" / "x.safetensors").write_bytes(b"x")
    (root / "loras" / "a").symlink_to(root / "loras", target_is_directory=True)
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(root))
    assert folders.list_models("loras") == ["x.safetensors"]


def test_two_symlink_loops_do_not_hang_the_listing(tmp_path):
    """`loras/a -> .` and `loras/b -> .` made the walk exponential (every validation and /object_info hung).
    Run in a child process so that a regression fails the test (timeout) instead of hanging the suite."""
    import subprocess
    import sys
    import textwrap

    from vk_testing import ROOT

    root = tmp_path / "models"
    (root / "loras" / "sub").mkdir(parents=True)
    (root / "loras" / "sub" / "x.safetensors").write_bytes(b"x")
    for n in ("a", "b"):
        (root / "loras" / n).symlink_to(root / "loras", target_is_directory=True)
    (root / "loras" / "sub" / "up").symlink_to(root, target_is_directory=True)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from vk_testing import import_pack
        import_pack()
        from visionkit_pack.models.core import folders
        print(folders.list_models("loras"))
    """)
    env = {**os.environ, "VISIONKIT_MODELS_DIR": str(root)}
    r = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.stdout.strip() == "['sub/x.safetensors']", (r.stdout[-500:], r.stderr[-2000:])


def test_the_walk_is_bounded_in_depth(folders, tmp_path, monkeypatch, caplog):
    root = tmp_path / "models"
    deep = root / "loras"
    for i in range(folders.MAX_DEPTH + 3):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "x.safetensors").write_bytes(b"x")
    (root / "loras" / "d0" / "shallow.safetensors").write_bytes(b"x")
    monkeypatch.setenv("VISIONKIT_MODELS_DIR", str(root))
    with caplog.at_level("WARNING", logger="visionkit"):
        assert folders.list_models("loras") == ["d0/shallow.safetensors"]
    assert "the listing stops there" in caplog.text
