"""T2: vkclient and scripts/queue against the real ComfyUI (the shared `comfy` session server, tiny models).

Every test uploads an image under a fresh name, so ComfyUI's output cache cannot answer a prompt without
running it (LoadImage re-runs for a new file, and everything downstream with it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest
from PIL import Image

from vk_testing import ROOT, netguard
from vk_testing.comfy_server import comfy  # noqa: F401  (the session fixture)
from vk_testing.fake_comfy import import_vkclient

pytestmark = pytest.mark.t2

vk = import_vkclient()
from vkclient import cli  # noqa: E402

TINY_X4 = "tiny_RealESRGAN_x4plus.pth"


def upscale_prompt(model: str = TINY_X4) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}, "_meta": {"title": "Photo"}},
        "2": {"class_type": "VisionKitUpscaleModelLoader", "inputs": {"model_name": model, "dtype": "auto"}},
        "3": {"class_type": "VisionKitUpscale", "_meta": {"title": "Upscale"},
              "inputs": {"upscale_model": ["2", 0], "image": ["1", 0], "outscale": 0.0, "tile_size": 32,
                         "tile_pad": 4}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "vkclient_t2"}},
    }


def photo(tmp_path, w: int = 40, h: int = 24):
    """A random RGB PNG under a name no other test uses."""
    rng = np.random.default_rng(abs(hash(tmp_path.name)) % 2**32)
    path = tmp_path / f"t2q_{uuid.uuid4().hex[:8]}.png"
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_api_queue_upload_progress_and_download(comfy, tmp_path):  # noqa: F811
    img = photo(tmp_path, 72, 40)  # two 32-pixel tiles across (plus 4 pixels of padding each side)
    client = vk.Client(comfy.url)
    events = []
    job = client.queue(upscale_prompt(), images={"Photo.image": img})
    uploaded = job.prompt["1"]["inputs"]["image"]
    assert (comfy.base_dir / "input" / uploaded).read_bytes() == img.read_bytes()

    result = job.wait(progress=events.append, timeout=120)
    assert result.used_websocket and result.status["status_str"] == "success"
    for kind in ("execution_start", "executing", "progress", "executed", "execution_success"):
        assert kind in result.events, (kind, result.events)
    executing = [e.node for e in events if e.kind == "executing"]
    assert "1" in executing and "3" in executing and "4" in executing, executing
    tiles = [(e.value, e.max) for e in events if e.kind == "progress" and e.node == "3"]
    assert tiles and tiles[-1][0] == tiles[-1][1] and tiles[-1][1] == 2, tiles
    assert [e.data for e in events if e.kind == "executed" and e.node == "4"] == [result.outputs["4"]]

    paths = client.download_outputs(result, tmp_path / "out")
    assert len(paths) == 1
    with Image.open(paths[0]) as im:
        assert im.size == (288, 160) and im.mode == "RGB"
    saved = comfy.base_dir / "output" / result.outputs["4"]["images"][0]["filename"]
    assert paths[0].read_bytes() == saved.read_bytes()


def test_scripts_queue_end_to_end(comfy, tmp_path):  # noqa: F811
    wf = tmp_path / "upscale_api.json"
    wf.write_text(json.dumps(upscale_prompt()))
    img, out = photo(tmp_path, 30, 20), tmp_path / "out"
    env = netguard.child_env({k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")})
    proc = subprocess.run([str(ROOT / "scripts" / "queue"), str(wf), "--server", comfy.url, "--image", str(img),
                           "--set", "Upscale.outscale=2", "--set", "4.filename_prefix=vkclient_cli", "-o", str(out),
                           "--json", "--timeout", "120"], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = json.loads(proc.stdout)["jobs"][0]
    assert job["status"] == "success" and job["websocket"] is True and job["events"] > 0, job
    assert "node 3 (VisionKitUpscale, 'Upscale') executing" in proc.stderr, proc.stderr
    [path] = job["files"]
    assert os.path.basename(path).startswith("vkclient_cli")
    with Image.open(path) as im:
        assert im.size == (60, 40)  # outscale 2 from the --set


def test_broken_prompt_prints_node_errors(comfy, tmp_path, capsys):  # noqa: F811
    wf = tmp_path / "broken.json"
    prompt = upscale_prompt("no_such_model.pth")
    prompt["3"]["inputs"]["tile_size"] = 5
    wf.write_text(json.dumps(prompt))
    code = cli.main([str(wf), "--server", comfy.url, "--image", str(photo(tmp_path)), "-o", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert code == 1
    assert "the server rejected the prompt: Prompt outputs failed validation" in err, err
    assert "node 2 (VisionKitUpscaleModelLoader):" in err and "input 'model_name'" in err, err
    assert "was not found in the upscale_models folder" in err, err
    assert "node 3 (VisionKitUpscale, 'Upscale'):" in err and "'tile_size'" in err, err
    assert err.count("tile_size 5 must be 0 (whole image) or between 32 and 8192") == 1, err  # said once
    assert not (tmp_path / "out").exists()
    assert comfy.alive()


def test_execution_error_arrives_over_the_websocket(comfy, tmp_path):  # noqa: F811
    name = f"t2q_{uuid.uuid4().hex[:8]}.pth"  # a SAM checkpoint where an upscale model is expected
    dest = comfy.base_dir / "models" / "upscale_models"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(comfy.models_dir / "sams" / "tiny_sam_vit.pth", dest / name)
    job = vk.Client(comfy.url).queue(upscale_prompt(name), images=[photo(tmp_path)])
    with pytest.raises(vk.ExecutionFailed) as info:
        job.wait(timeout=120)
    e = info.value
    assert e.node_id == "2" and e.node_type == "VisionKitUpscaleModelLoader"
    assert "is not an upscale model" in e.exception_message and "SAM" in e.exception_message
    assert "execution_error" in job.events


def test_batch_on_one_server_given_twice(comfy, tmp_path):  # noqa: F811
    jobs = [vk.BatchJob(upscale_prompt(), images=[photo(tmp_path, 16 + 8 * i, 16)], name=f"take {i}")
            for i in range(2)]
    items = vk.run_batch([comfy.url, comfy.url], jobs, output_dir=tmp_path / "out", timeout=120)
    assert [it.ok for it in items] == [True, True], [str(it.error) for it in items]
    sizes = []
    for it in items:
        [path] = it.result.files
        with Image.open(path) as im:
            sizes.append(im.size)
    assert sizes == [(64, 64), (96, 64)]


def test_shipped_upscale_workflow_from_the_cli(comfy, tmp_path, capsys):  # noqa: F811
    wf = ROOT / "workflows" / "api" / "upscale.json"
    out = tmp_path / "out"
    code = cli.main([str(wf), "--server", comfy.url, "--image", str(photo(tmp_path, 24, 16)), "-o", str(out),
                     "--set", f"VisionKitUpscaleModelLoader.model_name={TINY_X4}", "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    [path] = json.loads(stdout)["jobs"][0]["files"]
    with Image.open(path) as im:
        assert im.size == (96, 64)
