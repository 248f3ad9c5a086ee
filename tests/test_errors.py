"""The exception types ComfyUI shows for the pack's errors are short and stable (models/errors.py).

ComfyUI formats a failed node's `exception_type` as `<class __module__>.<qualname>`; inside ComfyUI the
pack's modules are named after its folder, so without the renaming users saw a file-system path there.
"""
from __future__ import annotations

import ast
from pathlib import Path

from vk_testing import ROOT, import_pack


def _defined_exception_classes() -> list[tuple[str, str]]:
    """(module, class) for every class in models/ and nodes/ whose bases name an Error/Exception."""
    out = []
    for folder in ("models", "nodes"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ClassDef) and any(
                        ast.unparse(b).split(".")[-1].endswith(("Error", "Exception")) for b in node.bases):
                    out.append((f"{folder}.{Path(path).stem}", node.name))
    return out


def test_every_pack_exception_is_shown_as_visionkit_dot_name():
    pack = import_pack()
    from visionkit_pack.models.errors import shown_type

    classes = _defined_exception_classes()
    assert len(classes) > 20  # the scan finds the pack's errors
    for module, name in classes:
        if module in ("models.downloader", "models.download_safety", "models.download_progress", "models.doctor"):
            continue  # command-line tools only: never raised inside ComfyUI
        mod = __import__(f"{pack.__name__}.{module}", fromlist=["x"])
        cls = getattr(mod, name)
        assert shown_type(cls) == f"visionkit.{name}", (module, name, cls.__module__)


def test_renaming_keeps_the_class_usable():
    import_pack()
    from visionkit_pack.models.upscale import UpscaleModelError

    try:
        raise UpscaleModelError("model x is not a Real-ESRGAN model: pick another file")
    except ValueError as ex:  # still the same class, still a ValueError
        assert type(ex) is UpscaleModelError and str(ex).startswith("model x")
