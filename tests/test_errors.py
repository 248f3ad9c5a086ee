"""The pack's one error base (models/core/errors.py): every error type derives from VisionKitError, reads as
`visionkit.<Name>` where ComfyUI shows it, chains its cause, and out-of-memory errors reach ComfyUI as what they
are (its handler unloads models and the user can retry).

ComfyUI formats a failed node's `exception_type` as `<class __module__>.<qualname>`; inside ComfyUI the
pack's modules are named after its folder, so without the base users saw a file-system path there.
"""
from __future__ import annotations

import ast
import io
import traceback

import pytest
import torch
from vk_testing import ROOT, import_pack

PACK_FOLDERS = ("models", "nodes")


def _defined_exception_classes() -> list[tuple[str, str]]:
    """(module, class) for every class in models/ and nodes/ whose bases name an Error/Exception."""
    out = []
    for folder in PACK_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ClassDef) and any(
                        ast.unparse(b).split(".")[-1].endswith(("Error", "Exception")) for b in node.bases):
                    out.append((".".join(path.relative_to(ROOT).with_suffix("").parts), node.name))
    return out


def test_every_pack_exception_derives_from_the_base_and_is_shown_as_visionkit_dot_name():
    pack = import_pack()
    from visionkit_pack.models.core.errors import VisionKitError, shown_type

    classes = _defined_exception_classes()
    assert len(classes) > 20  # the scan finds the pack's errors
    for module, name in classes:
        mod = __import__(f"{pack.__name__}.{module}", fromlist=["x"])
        cls = getattr(mod, name)
        assert issubclass(cls, VisionKitError), (module, name, cls.__mro__)
        assert shown_type(cls) == f"visionkit.{name}", (module, name, cls.__module__)
    assert shown_type(VisionKitError) == "visionkit.VisionKitError"


def test_the_base_keeps_the_class_usable_and_a_value_error():
    import_pack()
    from visionkit_pack.models.upscale.arch import UpscaleModelError

    try:
        raise UpscaleModelError("model x is not a Real-ESRGAN model: pick another file")
    except ValueError as ex:  # still the same class, still a ValueError
        assert type(ex) is UpscaleModelError and str(ex).startswith("model x")


def test_no_raise_hides_its_cause():
    """`raise ... from None` drops the library's own words from ComfyUI's log; the pack chains instead."""
    hidden = []
    for folder in PACK_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Raise) and isinstance(node.cause, ast.Constant) and node.cause.value is None:
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not hidden, hidden


def test_a_wrapped_error_keeps_the_library_cause_in_the_traceback(tmp_path):
    """A real failure path: a weights file that is not one; the message is ours, the cause stays chained."""
    import_pack()
    from visionkit_pack.models.core.weights import WeightsError, load_state_dict

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(WeightsError) as ei:
        load_state_dict(str(bad))
    assert ei.value.__cause__ is not None
    text = "".join(traceback.format_exception(ei.value))
    assert "The above exception was the direct cause" in text


def test_message_puts_what_and_fix_on_the_first_line():
    import_pack()
    from visionkit_pack.models.core.errors import message

    text = message("sam_x.pth is not a SAM checkpoint.", "Put a SAM file in models/sams.", "first keys: a, b")
    assert text.split("\n") == ["sam_x.pth is not a SAM checkpoint. Put a SAM file in models/sams.", "first keys: a, b"]


def test_out_of_memory_in_the_upscaler_reaches_comfyui_as_out_of_memory(monkeypatch):
    """ComfyUI's execution catches `model_management.OOM_EXCEPTION` (torch.cuda.OutOfMemoryError) to unload its
    models; the tile engine must not turn it into an input error. It still adds its hint."""
    import_pack()
    from visionkit_pack.models.upscale import tiles

    class OOMNet(torch.nn.Module):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(torch.cuda.OutOfMemoryError) as ei:
        tiles.upscale_tensor(OOMNet(), torch.rand(1, 16, 16, 3), scale=2, tile=8, tile_pad=2, tile_batch=1)
    assert "tile_size" in str(ei.value) and "Tried to allocate" in str(ei.value)
    assert isinstance(ei.value.__cause__, torch.cuda.OutOfMemoryError)


def test_cpu_allocation_failure_is_not_called_bad_input():
    import_pack()
    from visionkit_pack.models.core.errors import VisionKitError
    from visionkit_pack.models.upscale import tiles

    class NoRam(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1000 bytes")

    with pytest.raises(RuntimeError) as ei:
        tiles.upscale_tensor(NoRam(), torch.rand(1, 16, 16, 3), scale=2, tile=8, tile_pad=2, tile_batch=1)
    assert not isinstance(ei.value, VisionKitError)
    assert "tile_size" in str(ei.value) and "can't allocate memory" in str(ei.value)
    out = io.StringIO()
    traceback.print_exception(ei.value, file=out)
    assert "DefaultCPUAllocator" in out.getvalue()
