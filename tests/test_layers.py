"""The pack's layers, read from the code's own imports (every `import` and `from … import`, also the ones
inside functions):

    nodes/            ComfyUI node classes (thin) and the HTTP routes
    models/perception, models/sd, models/upscale    capability engines
    models/core/      host, folders, cache, bridge, weights, patching, image ops, errors, identify, catalogue
    tools/            the downloader and the doctor: use the pack, never used by it

- engines (models/) never import nodes/ or tools/, and nothing in the pack imports tools/;
- models/core imports no capability package;
- a capability imports another only through a declared seam (SEAMS below, each with its reason);
- no import cycles between modules (a module may import its own package's __init__);
- no Python file over 400 lines outside the test files themselves.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from vk_testing import ROOT

PACK_DIRS = ("models", "nodes", "tools", "vkclient")
CAPABILITIES = ("perception", "sd", "upscale")
MAX_LINES = 400
# (importing capability, imported module): why the seam exists
SEAMS = {
    ("sd", "models.perception.faces"): "InstantID takes the identity embedding and keypoints from face analysis",
    ("sd", "models.perception.clip_inputs"): "the SD text encoders use CLIP's BPE tokenizer files and error type",
    ("sd", "models.perception.clip_files"): "IP-Adapter's CLIP vision encoder takes its head width as CLIP files do",
}


def _modules() -> dict[str, Path]:
    out = {}
    for top in PACK_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    out[""] = ROOT / "__init__.py"
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Pack modules `name` imports (relative imports resolved; `from pkg import mod` counts as pkg.mod)."""
    is_pkg = path.name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join(base + (node.module.split(".") if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACK_DIRS:
            found.add(node.module)  # absolute imports of the repo's own packages (tools run outside the pack)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if parts[0] == "models" and len(parts) > 1:
        return parts[1]
    return parts[0] or "root"


def test_engines_never_import_nodes_or_tools_and_the_pack_never_imports_tools():
    bad = [(m, t) for m, targets in _graph().items() for t in targets
           if (m.startswith("models") and t.split(".")[0] in ("nodes", "tools"))
           or (not m.startswith("tools") and t.startswith("tools"))]
    assert not bad, bad


def test_core_imports_no_capability():
    bad = [(m, t) for m, targets in _graph().items() if m.startswith("models.core")
           for t in targets if _layer(t) in CAPABILITIES]
    assert not bad, bad


def test_capabilities_meet_only_at_declared_seams():
    bad = []
    for m, targets in _graph().items():
        if _layer(m) not in CAPABILITIES:
            continue
        for t in targets:
            if _layer(t) in CAPABILITIES and _layer(t) != _layer(m) and (_layer(m), t) not in SEAMS:
                bad.append((m, t))
    assert not bad, f"undeclared imports between capabilities (declare them in SEAMS with a reason): {bad}"
    used = {(_layer(m), t) for m, targets in _graph().items() for t in targets}
    assert set(SEAMS) <= used, f"declared seams no code uses any more: {set(SEAMS) - used}"


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle with them
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_import_reader_sees_real_edges():
    """The checks above are only as good as the graph: spot-check edges that must be there."""
    graph = _graph()
    assert "models.core.cache" in graph["models.perception.sam_everything"]
    assert "models.perception.faces" in graph["models.sd.instantid"]
    assert any(t.startswith("models.") for t in graph["nodes.sam"])
    assert "models.core.folders" in graph["tools.downloader"]


def test_no_python_file_over_400_lines():
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in (".venv", ".git", ".comfyui") or (rel.parts[0] == "tests" and rel.name.startswith("test_")):
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            long.append(f"{rel}: {n}")
    assert not long, f"split these by what they do (one concern per module): {long}"


def test_every_capability_module_belongs_to_a_package():
    loose = sorted(p.name for p in (ROOT / "models").glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules directly under models/ (put them in core/ or a capability): {loose}"
    counts = defaultdict(int)
    for p in (ROOT / "models").rglob("*.py"):
        counts[p.relative_to(ROOT / "models").parts[0]] += 1
    assert set(counts) >= {"core", *CAPABILITIES}, counts


def test_socket_types_are_declared_once():
    """Each custom socket type ("VK_...") is one constant in the engine whose value travels on it; nodes import it."""
    import re

    seen = defaultdict(list)
    for top in ("models", "nodes"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and re.fullmatch(r"VK_[A-Z_]+", node.value):
                    seen[node.value].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert len(seen) >= 15, sorted(seen)  # the scan finds them
    repeated = {name: where for name, where in seen.items() if len(where) > 1}
    assert not repeated, repeated
