"""InsightFace packs: finding a pack folder and telling what each of its .onnx files is.

A pack is a folder `insightface/models/<name>/` of .onnx files (antelopev2, buffalo_l, ...). What each
file is comes from its graph, by insightface's own rules (model_zoo.ModelRouter): 5 or more outputs =
SCRFD detector; input 192×192 = landmarks (not used here); 96×96 with 3 outputs = gender/age; a square
input of at least 112 that 16 divides = ArcFace recogniser. Per task the first file in name order wins,
as in insightface's FaceAnalysis. Nothing is ever downloaded: a missing pack is an error naming the
folder and the files expected in it.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from ..core import folders
from ..core.errors import VisionKitError

TASKS_USED = ("detection", "recognition", "genderage")

# the files of the packs people use, for the "pack not found" message
KNOWN_PACKS = {
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "genderage.onnx", "2d106det.onnx", "1k3d68.onnx"),
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx", "genderage.onnx", "2d106det.onnx", "1k3d68.onnx"),
    "buffalo_m": ("det_2.5g.onnx", "w600k_r50.onnx", "genderage.onnx", "2d106det.onnx", "1k3d68.onnx"),
    "buffalo_s": ("det_500m.onnx", "w600k_mbf.onnx", "genderage.onnx", "2d106det.onnx", "1k3d68.onnx"),
    "buffalo_sc": ("det_500m.onnx", "w600k_mbf.onnx"),
}



class FacePackError(VisionKitError):
    """A pack folder that cannot be used as it is; the message says which file and what to do."""


class FacePackMissingError(folders.ModelNotFoundError):
    """The pack is not in the insightface folders; the message names the folder and the expected files."""


# ------------------------------------------------------------------ pack inspection
@dataclass(frozen=True)
class OnnxInfo:
    path: str
    task: str  # detection / recognition / genderage / landmark / swapper / unknown
    input_hw: tuple  # (h, w); None entries for dynamic axes
    outputs: tuple  # shapes of the outputs (None for dynamic axes)
    mxnet_norm: bool  # the graph normalises its input itself (insightface: mean 0, std 1)


@dataclass(frozen=True)
class PackInfo:
    path: str
    files: dict = field(default_factory=dict)  # task -> OnnxInfo (first file per task)
    ignored: tuple = ()  # (file name, task) not used by VisionKit


def _dims(value_info) -> tuple:
    return tuple(d.dim_value if d.dim_value > 0 else None for d in value_info.type.tensor_type.shape.dim)


@functools.lru_cache(maxsize=64)
def _inspect_file(path: str, size: int, mtime_ns: int) -> OnnxInfo:
    import onnx

    try:
        try:
            m = onnx.load_model(path, load_external_data=False)
        except TypeError:  # pragma: no cover - older onnx
            m = onnx.load_model(path)
    except Exception as ex:  # noqa: BLE001 - onnx raises many kinds for a damaged file
        raise FacePackError(f"{os.path.basename(path)} in {os.path.dirname(path)} is not a readable .onnx file "
                            f"({str(ex).splitlines()[0][:160] if str(ex) else type(ex).__name__}); download the pack "
                            "again") from ex
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    shape = _dims(inputs[0]) if inputs else ()
    outs = tuple(_dims(o) for o in m.graph.output)
    hw = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
    names = [n.name for n in m.graph.node[:8]]
    sub = any(n.startswith(("Sub", "_minus")) for n in names)
    mul = any(n.startswith(("Mul", "_mul")) for n in names)
    bn_data = any(n == "bn_data" for n in names[:3])
    if len(outs) >= 5:
        task = "detection"
    elif hw == (192, 192):
        task = "landmark"
    elif hw == (96, 96):
        task = "genderage" if len(outs) == 1 and len(outs[0]) == 2 and outs[0][1] == 3 else "attribute"
    elif len(inputs) == 2 and hw == (128, 128):
        task = "swapper"
    elif hw[0] is not None and hw[0] == hw[1] and hw[0] >= 112 and hw[0] % 16 == 0:
        task = "recognition"
    else:
        task = "unknown"
    # ArcFace models only count 'Sub'/'Mul' names; gender/age models also the mxnet 'bn_data' layer
    mx = (sub and mul) or (task == "genderage" and bn_data)
    return OnnxInfo(path, task, hw, outs, mx)


def inspect_file(path: str) -> OnnxInfo:
    st = os.stat(path)
    return _inspect_file(path, st.st_size, st.st_mtime_ns)


def inspect_pack(path: str) -> PackInfo:
    """Classify the .onnx files of a pack folder and check what VisionKit needs (a keypoint detector)."""
    pack = os.path.basename(path.rstrip(os.sep))
    if os.path.isfile(os.path.join(path, "manifest.json")):
        raise FacePackError(f"the pack {pack!r} ({path}) is an insightface manifest package (manifest.json); "
                            "VisionKit reads the classic packs (antelopev2, buffalo_l) whose .onnx files are "
                            "recognised by their graphs")
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(".onnx") and not n.startswith("."))
    files, ignored = {}, []
    for n in names:
        info = inspect_file(os.path.join(path, n))
        if info.task in TASKS_USED and info.task not in files:
            files[info.task] = info
        else:
            ignored.append((n, info.task))
    det = files.get("detection")
    if det is None:
        raise FacePackError(
            f"the pack {pack!r} ({path}) has no face detector: none of {', '.join(names) or 'its files'} has the "
            "SCRFD outputs (scores, boxes, keypoints per stride). Put the pack's detector (det_10g.onnx in buffalo_l, "
            "scrfd_10g_bnkps.onnx in antelopev2) into the folder")
    n_out = len(det.outputs)
    if n_out not in (9, 15):
        why = ("it has no keypoint outputs, which face alignment needs" if n_out in (6, 10)
               else f"it has {n_out} outputs (SCRFD has 9 or 15)")
        raise FacePackError(f"{os.path.basename(det.path)} in pack {pack!r} cannot be used: {why}. Use a keypoint "
                            "SCRFD detector such as det_10g.onnx or scrfd_10g_bnkps.onnx")
    rec = files.get("recognition")
    if rec is not None and rec.input_hw[0] % 112 and rec.input_hw[0] % 128:
        raise FacePackError(f"{os.path.basename(rec.path)} in pack {pack!r} takes {rec.input_hw[0]}-pixel faces; "
                            "ArcFace alignment works at multiples of 112 or 128")
    return PackInfo(path, files, tuple(ignored))


# ------------------------------------------------------------------ finding a pack
def missing_pack_message(name: str) -> str:
    bases = folders.folder_paths_for("insightface")
    where = bases[0] if bases else "models/insightface/models"
    available = folders.list_models("insightface")
    expected = KNOWN_PACKS.get(os.path.basename(name))
    files = (", ".join(expected) if expected
             else "a keypoint SCRFD detector (e.g. det_10g.onnx), an ArcFace recogniser (e.g. w600k_r50.onnx), "
                  "optionally genderage.onnx")
    msg = (f"InsightFace pack {name!r} was not found. VisionKit looks for the folder {os.path.join(where, name)} "
           f"holding the pack's .onnx files ({files}). Folders searched: {', '.join(bases) or '(none configured)'}; "
           f"packs found there: {', '.join(available) or 'none'}.")
    deeper = [a for a in available if a.endswith("/" + name)]
    if deeper:
        msg += (f" The pack is one folder deeper ({deeper[0]}): pick that entry, or move its .onnx files up into "
                f"{os.path.join(where, name)}.")
    elif any(os.path.isdir(os.path.join(b, name)) for b in bases):
        msg += " That folder exists but holds no .onnx files (an unfinished unzip?)."
    return msg + (" VisionKit never downloads models: get the pack from the insightface model zoo "
                  "(deepinsight/insightface; non-commercial research licence), unzip it there, then refresh the page.")


def resolve_pack(name: str) -> str:
    n = folders.check_name(name)
    if n not in folders.list_models("insightface"):
        raise FacePackMissingError(missing_pack_message(n))
    return folders.resolve("insightface", n)


def pack_fingerprint(path: str) -> str:
    """Changes when any .onnx file of the pack changes (name, size, mtime)."""
    parts = []
    for n in sorted(os.listdir(path)):
        if n.lower().endswith(".onnx"):
            st = os.stat(os.path.join(path, n))
            parts.append(f"{n}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts) or "empty"
