"""The canvas extension uses only the frontend's public API (a T1 check; T3 proves it in the page's console).

Frontend 1.58 warns about imports of its internal modules (everything under scripts/ except app.js and api.js
is an internal shim), `widget.inputEl` (use `widget.element`) and reading `input.link` (use
`node.isInputConnected(slot)` / `node.getInputLink(slot)`).
"""
from __future__ import annotations

import re

import pytest
from vk_testing import ROOT

SCRIPTS = sorted((ROOT / "web" / "js").glob("*.js"))
PUBLIC_MODULES = {"app.js", "api.js"}


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_only_public_frontend_modules_and_apis(path):
    code = re.sub(r"(?m)^\s*//.*$|\s//\s.*$", "", path.read_text(encoding="utf-8"))  # comments aside
    imported = re.findall(r"""from\s+["'](?:\.\./)+scripts/([\w./]+)["']""", code)
    assert set(imported) <= PUBLIC_MODULES, (path.name, imported)
    assert ".inputEl" not in code, path.name
    assert not re.search(r"\binputs?\b[^;\n]*\.link\b(?!s)", code), path.name  # input.link / inputs[i].link


def test_the_check_sees_the_old_patterns():
    old = 'import { ComfyWidgets } from "../../../scripts/widgets.js";\nconst x = input.link !== null;'
    assert re.findall(r"""from\s+["'](?:\.\./)+scripts/([\w./]+)["']""", old) == ["widgets.js"]
    assert re.search(r"\binputs?\b[^;\n]*\.link\b(?!s)", old)
