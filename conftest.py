"""pytest: collect the repository root as a plain folder, not as a Python package.

The repository is the pack, so its root holds ComfyUI's `__init__.py`. pytest (8+) would collect the root as
a package and import that `__init__.py` on its own (for setup_module hooks) under a name taken from the folder:
`ComfyUI-VisionKit`, the folder name users clone into, is not a valid module name, so every test then failed
with "attempted relative import with no known parent package", and under other names the pack was imported a
second time under the folder's name. Tests import the pack themselves (tests/vk_testing.import_pack).
tests/test_pack_import.py runs a copy of the suite's collection from a folder named with a hyphen.
"""
from __future__ import annotations

from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent


class _RootIsAFolder:
    """A plugin, not a conftest hook: pytest asks the root folder's parent which collector the root gets, and a
    conftest's hooks only apply inside its own folder."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector):
        if path.resolve() == _ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("visionkit-root-is-a-folder"):
        config.pluginmanager.register(_RootIsAFolder(), "visionkit-root-is-a-folder")
