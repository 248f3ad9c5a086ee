"""A test-only executor for API-format workflows (what ComfyUI's /prompt takes), without a server.

It calls the pack's nodes from NODE_CLASS_MAPPINGS in dependency order, as ComfyUI's executor does:
only output nodes and what they depend on run; a link is `[node_id, output_index]`; constant inputs
are checked first (required inputs present, combo values listed, INT/FLOAT min/max, then the node's own
VALIDATE_INPUTS), so a bad prompt fails before anything runs, like /prompt's 400. Core nodes used by
the shipped workflows have stand-ins: LoadImage reads the test input folder, SaveImage and
PreviewImage capture their images. Any other unknown node type is an error.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


class WorkflowError(RuntimeError):
    """The workflow cannot run (unknown node, bad link, validation failure); message says where."""


class LoadImage:
    """Stand-in for ComfyUI's LoadImage: IMAGE (RGB) and MASK (1 - alpha, or zeros) from the input folder."""

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load"
    input_dir: Path = Path(".")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("STRING", {})}, "optional": {"upload": ("STRING", {})}}

    def load(self, image: str, upload: str = "image"):
        from PIL import Image, ImageOps

        path = (self.input_dir / image).resolve()
        if self.input_dir.resolve() not in path.parents:
            raise WorkflowError(f"LoadImage: {image!r} is outside the input folder")
        from PIL import ImageSequence

        # As ComfyUI's Load Image: every frame of a multi-frame file that has the first frame's size, as a batch.
        rgbs, masks, size = [], [], None
        for frame in ImageSequence.Iterator(Image.open(path)):
            im = ImageOps.exif_transpose(frame)
            size = size or im.size
            if im.size != size:
                continue
            rgbs.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).float().div(255))
            if "A" in im.getbands():
                masks.append(1.0 - torch.from_numpy(np.asarray(im.getchannel("A")).copy()).float().div(255))
            else:
                masks.append(torch.zeros((64, 64)))
        return (torch.stack(rgbs), torch.stack(masks))


class _Capture:
    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True
    sink: list

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {})}, "optional": {"filename_prefix": ("STRING", {})}}

    def capture(self, images, filename_prefix: str = "ComfyUI"):
        self.sink.append(images)
        return {"ui": {"images": [{"filename": f"{filename_prefix}_{i:05d}.png"} for i in range(len(images))]}}


@dataclass
class RunResult:
    outputs: dict[str, tuple] = field(default_factory=dict)
    ui: dict[str, dict] = field(default_factory=dict)
    saved: dict[str, list] = field(default_factory=dict)  # SaveImage node id → IMAGE tensors
    previews: dict[str, list] = field(default_factory=dict)  # PreviewImage node id → IMAGE tensors
    order: list[str] = field(default_factory=list)


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


class WorkflowRunner:
    def __init__(self, node_classes: dict, input_dir: Path | str = "."):
        self.node_classes = dict(node_classes)
        self.input_dir = Path(input_dir)

    def _class(self, node_id: str, class_type: str, result: RunResult):
        if class_type in self.node_classes:
            return self.node_classes[class_type]
        if class_type == "LoadImage":
            return type("LoadImage", (LoadImage,), {"input_dir": self.input_dir})
        if class_type in ("SaveImage", "PreviewImage"):
            sink = result.saved if class_type == "SaveImage" else result.previews
            return type(class_type, (_Capture,), {"sink": sink.setdefault(node_id, [])})
        raise WorkflowError(f"node {node_id}: unknown node type {class_type!r} (not a VisionKit node and no "
                            "test stand-in: LoadImage, SaveImage, PreviewImage)")

    def run(self, prompt: dict | str | Path) -> RunResult:
        if isinstance(prompt, (str, Path)):
            prompt = json.loads(Path(prompt).read_text())
        if not isinstance(prompt, dict) or not prompt:
            raise WorkflowError("an API-format workflow is a non-empty {node_id: {class_type, inputs}} object")
        if "nodes" in prompt and "links" in prompt:
            raise WorkflowError("this is a UI-format workflow (nodes/links); the runner takes API format")
        result = RunResult()
        classes = {nid: self._class(nid, node.get("class_type", "?"), result) for nid, node in prompt.items()}
        for nid, node in prompt.items():
            self._validate(nid, node, classes, prompt)
        outputs = [nid for nid, cls in classes.items() if getattr(cls, "OUTPUT_NODE", False)]
        if not outputs:
            raise WorkflowError("the workflow has no output node (SaveImage, PreviewImage or a readout node)")
        order = self._order(prompt, outputs)
        for nid in order:
            cls = classes[nid]
            kwargs = {k: (result.outputs[v[0]][v[1]] if _is_link(v) else v)
                      for k, v in prompt[nid].get("inputs", {}).items()}
            kwargs = self._only_declared(cls, kwargs)
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
            if isinstance(out, dict):
                result.ui[nid] = out.get("ui", {})
                out = out.get("result", ())
            if not isinstance(out, tuple):
                raise WorkflowError(f"node {nid} ({prompt[nid]['class_type']}) returned {type(out).__name__}, "
                                    "not a tuple")
            if len(out) != len(cls.RETURN_TYPES):
                raise WorkflowError(f"node {nid} returned {len(out)} values for {len(cls.RETURN_TYPES)} outputs")
            result.outputs[nid] = out
            result.order.append(nid)
        return result

    @staticmethod
    def _only_declared(cls, kwargs):
        types = cls.INPUT_TYPES()
        declared = set(types.get("required", {})) | set(types.get("optional", {}))
        return {k: v for k, v in kwargs.items() if k in declared}

    def _validate(self, nid, node, classes, prompt) -> None:
        cls = classes[nid]
        inputs = node.get("inputs", {})
        types = cls.INPUT_TYPES()
        for name, spec in types.get("required", {}).items():
            if name not in inputs:
                raise WorkflowError(f"node {nid} ({node['class_type']}): required input {name!r} is missing")
        all_specs = {**types.get("required", {}), **types.get("optional", {})}
        for name, value in inputs.items():
            if name not in all_specs:
                continue
            if _is_link(value):
                src = prompt.get(value[0])
                if src is None:
                    raise WorkflowError(f"node {nid}: input {name!r} links to missing node {value[0]}")
                src_cls = classes[value[0]]
                if value[1] >= len(src_cls.RETURN_TYPES):
                    raise WorkflowError(f"node {nid}: input {name!r} links to output {value[1]} of node "
                                        f"{value[0]}, which has {len(src_cls.RETURN_TYPES)}")
                want, got = all_specs[name][0], src_cls.RETURN_TYPES[value[1]]
                if isinstance(want, str) and (want != got) and want != "*":
                    raise WorkflowError(f"node {nid}: input {name!r} wants {want}, got {got} from node {value[0]}")
                continue
            typ, opts = all_specs[name][0], (all_specs[name][1] if len(all_specs[name]) > 1 else {})
            if self._has_validate(cls, name):
                continue
            if isinstance(typ, list) and value not in typ:
                raise WorkflowError(f"node {nid}: {name}={value!r} is not one of {typ[:10]}")
            if typ in ("INT", "FLOAT"):
                if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
                    raise WorkflowError(f"node {nid}: {name}={value} outside [{opts.get('min')}, {opts.get('max')}]")
        if hasattr(cls, "VALIDATE_INPUTS"):
            params = inspect.signature(cls.VALIDATE_INPUTS).parameters
            args = {k: v for k, v in inputs.items() if k in params and not _is_link(v)}
            if args:
                ok = cls.VALIDATE_INPUTS(**args)
                if ok is not True:
                    raise WorkflowError(f"node {nid} ({node['class_type']}): {ok}")

    @staticmethod
    def _has_validate(cls, name) -> bool:
        fn = getattr(cls, "VALIDATE_INPUTS", None)
        return fn is not None and name in inspect.signature(fn).parameters

    @staticmethod
    def _order(prompt, outputs) -> list[str]:
        order, state = [], {}

        def visit(nid, path):
            if state.get(nid) == "done":
                return
            if state.get(nid) == "visiting":
                raise WorkflowError(f"the workflow has a cycle through nodes {' → '.join(path + [nid])}")
            state[nid] = "visiting"
            for v in prompt[nid].get("inputs", {}).values():
                if _is_link(v):
                    if v[0] not in prompt:
                        raise WorkflowError(f"node {nid} links to missing node {v[0]}")
                    visit(v[0], path + [nid])
            state[nid] = "done"
            order.append(nid)

        for nid in sorted(outputs, key=lambda x: (len(x), x)):
            visit(nid, [])
        return order
