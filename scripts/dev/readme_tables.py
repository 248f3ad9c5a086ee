#!/usr/bin/env python3
"""Keeps two README parts in step with the code: the node reference table and the Workflows section.

    .venv/bin/python scripts/dev/readme_tables.py          # rewrite both parts of README.md
    .venv/bin/python scripts/dev/readme_tables.py --check  # exit 1 when README.md differs

Node table: one row per registered node (nodes/__init__.py order): ID, display name and the inputs → outputs
come from the node classes; "What it does" is the row's current text in the README (written by hand, kept), or
the first sentence of the node's DESCRIPTION for a node that has no row yet. Workflows section: from the shipped
files (workflows/*.json note, workflows/api/*.json models and input images) and docs/screenshots/.
Both parts sit between <!-- generated: … --> markers; everything else in the README is left alone.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_workflows import import_pack

NODES_BEGIN, NODES_END = "<!-- generated: node table (scripts/dev/readme_tables.py) -->", "<!-- end: node table -->"
WF_BEGIN, WF_END = "<!-- generated: workflows (scripts/dev/readme_tables.py) -->", "<!-- end: workflows -->"
HEADER = "| ID | Display name | What it does | Inputs → outputs |\n|---|---|---|---|"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def io_cell(cls) -> str:
    it = cls.INPUT_TYPES()
    ins = [f"`{n}`" for n in list(it.get("required", {})) + list(it.get("optional", {}))]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    outs = [f"`{n}`" if str(n) == str(t) else f"`{n}` ({t})" for n, t in zip(names, cls.RETURN_TYPES)]
    if getattr(cls, "OUTPUT_NODE", False):
        outs.append("shown on the node")
    return f"{', '.join(ins) or '—'} → {', '.join(outs) or '—'}"


def first_sentence(text: str) -> str:
    """Up to the first '. ' that ends a sentence (not 'e.g. ', not inside quotes)."""
    m = re.match(r"(.+?(?<!e\.g)(?<!i\.e)[.!?])(\s+[A-Z(]|$)", " ".join(text.split()))
    return m.group(1) if m else text.strip()


def current_rows(readme: str) -> dict[str, str]:
    """ID → 'What it does' of the README's node table as it is."""
    rows = {}
    for line in readme.splitlines():
        m = re.match(r"\| `(VisionKit\w+)` \| [^|]* \| ((?:[^|\\]|\\.)*) \|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


def node_table(readme: str) -> str:
    pack = import_pack()
    kept = current_rows(readme)
    lines = [HEADER]
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        what = kept.get(node_id) or _cell(first_sentence(getattr(cls, "DESCRIPTION", "")))
        lines.append(f"| `{node_id}` | {_cell(pack.NODE_DISPLAY_NAME_MAPPINGS[node_id])} | {what} | {_cell(io_cell(cls))} |")
    return "\n".join(lines)


def workflows_section() -> str:
    from visionkit_pack.models.core.catalog import CATALOG

    by_file = {m.file: m for m in CATALOG}
    out = []
    from workflow_descriptions import WORKFLOWS

    shipped = {p.stem for p in (ROOT / "workflows").glob("*.json")}
    for name in [n for n in WORKFLOWS if n in shipped] + sorted(shipped - set(WORKFLOWS)):
        ui_path = ROOT / "workflows" / f"{name}.json"
        ui = json.loads(ui_path.read_text(encoding="utf-8"))
        api = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text(encoding="utf-8"))
        note = next(n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "Note")
        title, what = note.split("\n\n")[:2]
        models = []
        for nid, node in sorted(api.items(), key=lambda kv: int(kv[0])):
            for k, v in node["inputs"].items():
                bare = v.split("/", 1)[-1] if isinstance(v, str) else None
                if k.endswith("_name") and bare in by_file and bare not in models:
                    models.append(bare)
        images = [api[k]["inputs"]["image"] for k in sorted(api, key=int) if api[k]["class_type"] == "LoadImage"]
        model_text = ", ".join(f"`{m}` ({by_file[m].folder})" for m in models)
        cmd = f"./scripts/queue workflows/api/{name}.json" + "".join(f" --image workflows/inputs/{i}" for i in images)
        out.append(f"### {title}\n\n`workflows/{name}.json` — {' '.join(what.split())}\n\n"
                   f"Models: {model_text}." + (f" Input images: {', '.join(f'`{i}`' for i in images)}." if images
                                               else "") + "\n\n"
                   f"![{name} on the canvas](docs/screenshots/workflow_{name}.png)\n\n```bash\n{cmd} -o out/\n```")
    return "\n\n".join(out)


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"README.md lacks the markers {begin} … {end}")
    a, b = text.index(begin) + len(begin), text.index(end)
    return text[:a] + "\n" + body + "\n" + text[b:]


def render(readme: str) -> str:
    readme = replace_between(readme, NODES_BEGIN, NODES_END, node_table(readme))
    return replace_between(readme, WF_BEGIN, WF_END, workflows_section())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write (or --check) the README's node table and Workflows section.")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print("README.md is out of step with the nodes / workflows: run scripts/dev/readme_tables.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
        print("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
