"""The benchmark harness (bench/): a --smoke run of every benchmark on tiny configs writes a results file of the
documented schema and a table with one line per row; the file-read audit the workflow rows rely on sees the
readers the pack uses; bench/run lists the benchmarks. No assertion on speed: numbers live in bench/results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
NAMES = ["import", "workflows", "sam", "upscale", "lcm", "lora", "vision", "pose_depth"]  # vision, pose_depth: issue 20


@pytest.fixture()
def harness(pack):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import harness as h

    saved = dict(os.environ)
    yield h
    os.environ.clear()
    os.environ.update(saved)


def _upscale_workflow(folder: Path) -> Path:
    """A small API workflow in the shipped files' style: real model name, an input image of the shipped set."""
    folder.mkdir()
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "visionkit_house.png"}},
        "2": {"class_type": "VisionKitUpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x4plus.pth",
                                                                       "dtype": "auto"}},
        "3": {"class_type": "VisionKitUpscale", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0],
                                                           "outscale": 0.5, "tile_size": 128, "tile_pad": 8,
                                                           "alpha_upscale": "network", "tile_batch": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bench"}},
    }
    path = folder / "bench_upscale.json"
    path.write_text(json.dumps(wf))
    return folder


def test_smoke_run_writes_results_and_table(harness, models_dir, tmp_path, capsys):
    out = tmp_path / "results"
    wfs = _upscale_workflow(tmp_path / "wf")
    args = ["--smoke", "--threads", str(torch.get_num_threads()), "--out", str(out), "--models-dir", str(models_dir),
            "--workflows", str(wfs), "--note", "test run"]
    doc = harness.main(args)
    printed = capsys.readouterr().out

    harness.validate_doc(doc)
    assert [b["name"] for b in doc["benches"]] == NAMES
    assert all(b["error"] is None for b in doc["benches"]), [b["error"] for b in doc["benches"]]
    assert doc["mode"] == "smoke" and doc["note"] == "test run"
    stem = harness.device_info("cpu")["name"] + "-smoke"
    assert stem.startswith("cpu-") and stem.endswith("cores-smoke")
    on_disk = json.loads((out / f"{stem}.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    table = (out / f"{stem}.md").read_text()
    assert table in printed
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| Benchmark")]
    rows = [r for b in doc["benches"] for r in b["rows"]]
    assert len(lines) == len(rows)
    for line, r in zip(lines, rows):
        assert line.count("|") == 7 and r["name"].replace("|", "/") in line

    by_name = {r["name"]: r for r in rows}
    wf_row = by_name["Workflow bench_upscale: model loading, cached run vs cold"]
    assert wf_row["goal"] == "≥ 50×" and wf_row["value"] > 0
    assert "cached 0 opens" in wf_row["notes"] and "(each by one load)" in wf_row["notes"], wf_row["notes"]
    assert by_name["Workflow bench_upscale: peak RSS"]["unit"] == "MB"
    for goal_name in ("Pack import time beyond torch", "SAM 8 boxes vs 1 box on one image",
                      "Upscale node vs ComfyUI core ImageUpscaleWithModel, time", "Upscale peak memory growth, 4× area vs 1×",
                      "Upscale model load vs ComfyUI core UpscaleModelLoader", "Upscale peak memory vs ComfyUI core, 4× area",
                      "LCM 4 steps vs 25 steps of the default scheduler",
                      "LCM Sampler node vs bare diffusers pipeline call"):
        assert by_name[goal_name]["ok"] in (True, False) and by_name[goal_name]["goal"] != "—"
    assert "0 in 3 cached loads" in by_name["SAM loader: cached load vs cold"]["notes"]

    # --only replaces that benchmark in the existing file and keeps the others
    again = harness.main(["--only", "import", *args])
    assert [b["name"] for b in again["benches"]] == NAMES
    merged = json.loads((out / f"{stem}.json").read_text())
    assert merged["benches"][0]["finished_at"] >= doc["benches"][0]["finished_at"]
    assert merged["benches"][1:] == on_disk["benches"][1:]


def test_file_audit_sees_python_safetensors_and_torch_reads(harness, tmp_path):
    from safetensors.torch import load_file, save_file

    inside, outside = tmp_path / "models", tmp_path / "other"
    inside.mkdir()
    outside.mkdir()
    save_file({"w": torch.zeros(2)}, str(inside / "a.safetensors"))
    torch.save({"w": torch.zeros(2)}, inside / "b.pth")
    (inside / "c.json").write_text("{}")
    (outside / "d.json").write_text("{}")
    with harness.FileAudit([inside]) as audit:
        audit.tag = "one"
        load_file(str(inside / "a.safetensors"))
        torch.load(inside / "b.pth", weights_only=True)
        audit.tag = "two"
        (inside / "c.json").read_text()
        (outside / "d.json").read_text()
        load_file(str(inside / "a.safetensors"))
    opens = {Path(p).name: n for p, n in audit.opens().items()}
    assert opens == {"a.safetensors": 2, "b.pth": 1, "c.json": 1}
    assert {Path(p).name: n for p, n in audit.loads_per_file().items()}["a.safetensors"] == 2
    import safetensors

    assert not hasattr(safetensors.safe_open, "__vk_original__")  # unpatched after the block
    with harness.FileAudit([inside]) as idle:
        pass
    (inside / "c.json").read_text()
    assert idle.events == []


def test_rows_and_device_names(harness):
    r = harness.goal_row("x", 0.5, "<=", 1.0)
    assert (r.ok, r.goal) == (True, "≤ 1×")
    assert harness.goal_row("x", 60, ">=", 50, extra_ok=False).ok is False
    assert harness.goal_row("x", None, ">=", 50).ok is None
    assert harness.device_name("cpu", "Intel(R) Xeon(R) CPU @ 2.20GHz", 8) == "cpu-Intel-Xeon-8cores"
    assert harness.device_name("cpu", "AMD EPYC", 2) == "cpu-AMD-EPYC-2cores"
    assert harness.device_name("cpu", "AMD Ryzen 9 5950X 16-Core Processor", 32) == "cpu-AMD-Ryzen-9-5950X-32cores"
    assert harness.device_name("cuda", "NVIDIA H200") == "cuda-NVIDIA-H200"
    with pytest.raises(ValueError):
        harness.validate_doc({"schema": 1})


def test_bench_run_lists_the_benchmarks():
    env = {**os.environ, "VISIONKIT_NO_INSTALL": "1"}  # the venv as it is: a test never runs pip
    res = subprocess.run([str(BENCH / "run"), "--list"], capture_output=True, text=True, timeout=120, check=False,
                         env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [ln.split()[0] for ln in res.stdout.splitlines() if ln.strip()] == NAMES
