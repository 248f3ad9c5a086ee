"""The benchmark results: the row format, the results file (merged with a previous partial run) and its
markdown table, and the file's schema check."""
from __future__ import annotations

import dataclasses
import datetime as _dt

from machine import device_info, git_commit, versions

SCHEMA = 1


@dataclasses.dataclass
class Row:
    """One measured line of the table. `value` in `unit` ("×" ratio, "ms", "s", "MB"); `ok` None = no goal."""

    name: str
    value: float | None
    goal: str = "—"
    ok: bool | None = None
    unit: str = "×"
    notes: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def goal_row(name: str, value: float | None, op: str, target: float, unit: str = "×", notes: str = "",
             extra_ok: bool = True) -> Row:
    """A row with a numeric goal: op is '<=' or '>='; ok also needs `extra_ok` (e.g. 'no file read twice')."""
    if op not in ("<=", ">="):
        raise ValueError(f"op must be '<=' or '>=', not {op!r}")
    sign = "≤" if op == "<=" else "≥"
    ok = None if value is None else bool((value <= target if op == "<=" else value >= target) and extra_ok)
    return Row(name, value, f"{sign} {fmt_value(target, unit)}", ok, unit, notes)


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "×":
        if v >= 1000:
            return f"{v:,.0f}×"
        return f"{v:.3g}×" if v < 10 else f"{v:.0f}×"
    if unit == "ms":
        return f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"
    if unit == "s":
        return f"{v:.2f} s" if v < 100 else f"{v:.0f} s"
    if unit == "MB":
        return f"{v:,.0f} MB"
    return f"{v:g} {unit}".strip()


def results_doc(benches: list[dict], ctx, seconds: float, note: str, previous: dict | None, order: list) -> dict:
    """The results file: this run's benchmarks, merged (in table `order`) with a previous file's others when the
    run was a partial one (--only) on the same device and mode."""
    info = device_info(ctx.device)
    merged = benches
    if previous and previous.get("device") == info["name"] and previous.get("mode") == ctx.mode:
        ran = {b["name"] for b in benches}
        keep = [b for b in previous.get("benches", []) if b["name"] not in ran]
        merged = sorted(keep + benches, key=lambda b: order.index(b["name"]) if b["name"] in order else 99)
    return {
        "schema": SCHEMA,
        "device": info["name"],
        "device_info": info,
        "mode": ctx.mode,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "commit": git_commit(),
        "versions": versions(),
        "note": note,
        "command": "bench/run" + ("" if ctx.mode == "full" else f" --{ctx.mode}"),
        "benches": merged,
    }


def render_markdown(doc: dict) -> str:
    info = doc["device_info"]
    where = (f"{info.get('gpu')} ({info.get('gpu_memory_gb')} GB), CUDA {info.get('cuda')}" if info["kind"] == "cuda"
             else f"{info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM, torch threads {info['torch_threads']}")
    v = doc.get("versions", {})
    lines = [
        f"Device `{doc['device']}`: {where}; torch {v.get('torch', '?')}, diffusers {v.get('diffusers', '?')}, "
        f"Python {v.get('python', '?')}. Mode {doc['mode']}, {doc['finished_at']}, commit {doc['commit']}, "
        f"{doc['seconds']:.0f} s in all.",
    ]
    if doc.get("note"):
        lines.append(f"Note: {doc['note']}")
    lines += ["", "| Benchmark | Measure | Result | Goal | Met | Notes |", "|---|---|---|---|---|---|"]
    for b in doc["benches"]:
        for r in b["rows"]:
            met = {True: "yes", False: "**no**", None: "—"}[r["ok"]]
            notes = str(r.get("notes", "")).replace("|", "/").replace("\n", " ")
            name = str(r["name"]).replace("|", "/")
            lines.append(f"| {b['name']} | {name} | {fmt_value(r['value'], r['unit'])} | {r['goal']} | {met} | "
                         f"{notes} |")
    load = [(b["name"], b.get("load_before"), b.get("seconds")) for b in doc["benches"]]
    lines += ["", "Seconds per benchmark (load average before it): " + ", ".join(
        f"{n} {s:.0f} s ({la[0] if la else '?'})" for n, la, s in load)]
    return "\n".join(lines) + "\n"


def validate_doc(doc: dict) -> None:
    """The results file's schema (the smoke test calls this); raises ValueError naming what is wrong."""
    need = {"schema": int, "device": str, "device_info": dict, "mode": str, "finished_at": str, "seconds": (int, float),
            "commit": str, "versions": dict, "note": str, "benches": list}
    for k, t in need.items():
        if not isinstance(doc.get(k), t):
            raise ValueError(f"results: {k!r} missing or not {t}")
    if doc["mode"] not in ("full", "quick", "smoke"):
        raise ValueError(f"results: mode {doc['mode']!r}")
    for b in doc["benches"]:
        for k in ("name", "title", "mode", "rows", "seconds"):
            if k not in b:
                raise ValueError(f"results: benchmark entry without {k!r}: {b.get('name')}")
        if not b["rows"]:
            raise ValueError(f"results: benchmark {b['name']} has no rows")
        for r in b["rows"]:
            if set(r) != {f.name for f in dataclasses.fields(Row)}:
                raise ValueError(f"results: row fields {sorted(r)} in {b['name']}")
            if r["value"] is not None and not isinstance(r["value"], (int, float)):
                raise ValueError(f"results: row {r['name']!r} value {r['value']!r} is not a number")
            if r["ok"] not in (True, False, None):
                raise ValueError(f"results: row {r['name']!r} ok {r['ok']!r}")
