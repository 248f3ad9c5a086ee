"""pyproject.toml is accepted by the Comfy Registry's own validator, and matches requirements.txt."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from vk_testing import ROOT


def test_comfy_node_validate_accepts_pyproject(tmp_path):
    comfy = shutil.which("comfy", path=os.path.dirname(sys.executable))
    if comfy is None:
        pytest.fail("comfy-cli is not installed in the test environment (tests/requirements.txt lists it)")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config")}
    out = subprocess.run([comfy, "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "All validation checks passed" in text, text[-3000:]


def test_pyproject_fields_and_dependencies_match_requirements():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] == "VisionKit"
    # Not published yet: no links to a repository or an icon that do not exist (README, install section).
    # An Icon, once there, must be a file of the repository.
    assert "urls" not in data["project"], data["project"]["urls"]
    icon = comfy.get("Icon")
    assert icon is None or (ROOT / "docs" / icon.rsplit("/docs/", 1)[-1]).is_file(), icon
    deps = data["project"]["dependencies"]
    reqs = [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")]
    norm = lambda s: s.replace('"', "'").replace(" ", "")  # noqa: E731
    assert sorted(map(norm, deps)) == sorted(map(norm, reqs))
    for banned in ("torch", "torchvision", "torchaudio"):
        assert not any(r.split(">")[0].split("=")[0].split(";")[0].strip() == banned for r in reqs), banned
