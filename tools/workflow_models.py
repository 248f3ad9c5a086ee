"""Which catalogue models a workflow needs: the model names its VisionKit nodes carry (API or UI format),
matched against the catalogue's file and folder names. Standard library only."""
from __future__ import annotations

from ..models.core.catalog import CatalogModel
from ..models.core.folders import PT

MODEL_EXTS = tuple(sorted(set(PT) | {".onnx", ".ckpt", ".zip"}))


def workflow_values(data) -> list[tuple[str, str, bool]]:
    """(node type, value, looks like a model name) for every string widget / input of VisionKit nodes.

    API format: {id: {"class_type", "inputs"}} (optionally under "prompt"); an input is a model name
    when its name ends in '_name'. UI format: {"nodes": [{"type", "widgets_values"}], "definitions":
    {"subgraphs": [...]}}; widget names are not saved there, so a value is a model name when it has a
    model file extension (folder models are still matched against the manifest by name)."""
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        nodes = list(data["nodes"])
        for sg in ((data.get("definitions") or {}).get("subgraphs") or []):
            nodes += sg.get("nodes") or []
        out = []
        for n in nodes:
            t = str(n.get("type", ""))
            if not t.startswith("VisionKit"):
                continue
            wv = n.get("widgets_values") or []
            vals = wv.values() if isinstance(wv, dict) else wv
            out += [(t, v, v.lower().endswith(MODEL_EXTS)) for v in vals if isinstance(v, str)]
        return out
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        out = []
        for node in data.values():
            t = str(node["class_type"])
            if t.startswith("VisionKit"):
                out += [(t, v, k.endswith("_name")) for k, v in (node.get("inputs") or {}).items()
                        if isinstance(v, str)]
        return out
    raise ValueError("not a ComfyUI workflow: expected the API format ({id: {class_type, inputs}}) or the UI "
                     "format ({\"nodes\": [...]}) that the canvas saves")


def names_of(entry: CatalogModel) -> set[str]:
    names = {entry.target, entry.file}
    names |= {f.path.rsplit("/", 1)[-1] for f in entry.files if not f.path.startswith(entry.target + "/")}
    return names


def match_value(value: str, manifest: dict[str, CatalogModel]) -> CatalogModel | None:
    v = value.replace("\\", "/").strip("/")
    candidates = {v, v.rsplit("/", 1)[-1], v.split("/", 1)[-1]}
    for e in manifest.values():
        if candidates & names_of(e):
            return e
    return None


def needed_by_workflow(data, manifest: dict[str, CatalogModel]) -> tuple[list[CatalogModel], list[str]]:
    """(manifest entries the workflow's VisionKit loaders name, model names the manifest does not know)."""
    entries: dict[str, CatalogModel] = {}
    unknown: list[str] = []
    for node_type, value, is_model in workflow_values(data):
        e = match_value(value, manifest)
        if e is not None:
            entries.setdefault(e.name, e)
        elif is_model and value.strip() and not value.startswith("(") and value.lower() != "none":
            item = f"{value} ({node_type})"
            if item not in unknown:
                unknown.append(item)
    return list(entries.values()), unknown
