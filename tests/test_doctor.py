"""scripts/doctor: known-bad states are detected with their fix; the catalog matches the README table."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from vk_testing import ROOT, import_pack

import_pack()
from visionkit_pack.tools import doctor  # noqa: E402
from visionkit_pack.models.core.catalog import CATALOG  # noqa: E402


def test_mismatched_torchaudio_and_torchvision_are_errors_with_fixes():
    req = {"torchvision": ["torch==2.15.0"], "torchaudio": ["torch==2.11.0"]}
    bad = doctor.check_torch_trio({"torch": "2.15.0", "torchvision": "0.29.2", "torchaudio": "2.11.0"}, req)
    assert len(bad) == 1 and bad[0].level == "error" and "torchaudio 2.11.0" in bad[0].what
    assert "torchaudio==2.15.0" in bad[0].fix
    ok_req = {"torchvision": ["torch==2.11.0"], "torchaudio": ["torch==2.11.0"]}
    cuda = doctor.check_torch_trio({"torch": "2.11.0+cu130", "torchvision": "0.26.0+cu130",
                                    "torchaudio": "2.11.0+cu128"}, ok_req)
    assert len(cuda) == 1 and "another torch" in cuda[0].what
    tv = doctor.check_torch_trio({"torch": "2.11.0", "torchvision": "0.29.0", "torchaudio": None},
                                 {"torchvision": ["torch==2.15.0"]})
    assert len(tv) == 1 and "torchvision::nms" in tv[0].what
    assert doctor.check_torch_trio({"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}, ok_req) == []
    # the installed trio, read from the real wheel metadata
    assert doctor.pinned_torch("torchvision") == doctor.version("torch").split("+")[0]
    assert doctor.pinned_torch("x", {"x": ["torch (==2.11.0)"]}) == "2.11.0"


def test_onnxruntime_and_opencv_clashes():
    both = doctor.check_onnxruntime({"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"})
    assert both[0].level == "error" and "--force-reinstall --no-deps onnxruntime-gpu" in both[0].fix
    assert doctor.check_onnxruntime({"onnxruntime": None, "onnxruntime-gpu": "1.31.1"}) == []
    cv = doctor.check_opencv({"opencv-python": "5.0", "opencv-python-headless": "5.0"}, has_display=True)
    assert "pip uninstall -y opencv-python" in cv[0].fix
    assert doctor.check_opencv({"opencv-python": "5.0", "opencv-python-headless": None}, has_display=False)
    assert doctor.check_opencv({"opencv-python": None, "opencv-python-headless": "5.0"}, has_display=False) == []


def test_this_environment_is_healthy():
    """The venv ./scripts/test built must have none of the known-bad states."""
    errors = [f for f in doctor.diagnose(has_display=False) if f.level != "ok"]
    assert errors == [], errors


def test_model_report_marks_present_files(pack, models_dir):
    real_name = models_dir / "upscale_models" / "RealESRGAN_x4plus.pth"
    real_name.write_bytes((models_dir / "upscale_models" / "tiny_RealESRGAN_x4plus.pth").read_bytes())
    try:
        rows = {r["key"]: r for r in doctor.model_report()}
        ups = {m["file"]: m["present"] for m in rows["upscale_models"]["catalog"]}
        assert ups["RealESRGAN_x4plus.pth"] is True and ups["RealESRGAN_x2plus.pth"] is False
        assert rows["sams"]["files"] == ["tiny_sam_vit.pth", "tiny_sam_vit.safetensors"]
    finally:
        real_name.unlink()


def test_catalog_and_readme_table_agree():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Models", 1)[1].split("\n## ", 1)[0]
    from visionkit_pack.models.core.folders import FOLDERS

    for m in CATALOG:
        assert m.file in table, f"{m.file} is in the catalog but not in the README's model table"
        assert m.folder in FOLDERS
        if m.non_commercial:
            assert "non-commercial" in m.licence or "as InstantID" in m.licence


def test_doctor_command_runs_and_prints_json(models_dir):
    env = {**os.environ, "VISIONKIT_PYTHON": sys.executable}
    out = subprocess.run([str(ROOT / "scripts" / "doctor"), "--json", "--models", str(models_dir)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    report = json.loads(out.stdout)
    assert report["versions"]["torch"] and "CPUExecutionProvider" in report["devices"]["onnxruntime_providers"]
    assert any(r["key"] == "sams" and r["files"] for r in report["models"])
