"""The benchmark harness: one registry of benchmarks, one row format, one results file per device.

    bench/run                      # everything (about 10 minutes on a 2-core CPU)
    bench/run --quick              # smaller sizes, fewer repeats (a few minutes)
    bench/run --only sam --only lcm
    bench/run --smoke --out /tmp/x # tiny configs: checks that the harness works, numbers mean nothing
    bench/run --list

Each benchmark module (bench/*_bench.py, bench/import_time.py) registers a function `fn(ctx) -> [Row]`
with `@register(name, title)` and stays runnable alone (`python bench/sam_bench.py` prints its rows).
Results go to `<out>/<device>.json` and `<out>/<device>.md` (device: `cpu-<model>-<n>cores` or
`cuda-<gpu name>`); a run with `--only` replaces those benchmarks in an existing file and keeps the
others. Times are minimum-of-N, with the two sides of a comparison interleaved, so ratios survive a
noisy machine; absolute times still move with the machine's load (the load average is recorded).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PACK = "visionkit_pack"  # the name tests and benchmarks import the pack by
from file_audit import FileAudit  # noqa: E402,F401  (re-exported: harness.FileAudit)
from machine import (  # noqa: E402,F401  (device_name, device_info, available_memory_bytes: re-exported)
    available_memory_bytes,
    cpu_count,
    device_info,
    device_name,
    loadavg,
    pick_device,
)
from measure import best_of, timed  # noqa: E402
from report import Row, goal_row, render_markdown, results_doc, validate_doc  # noqa: E402,F401  (benchmarks' API)

MODULES = ("import_time", "workflows_bench", "sam_bench", "upscale_bench", "lcm_bench", "lora_bench",
           "vision_bench", "pose_depth_bench")  # table order (vision_bench, pose_depth_bench: issue 20)


# ---------------------------------------------------------------- registry
@dataclasses.dataclass
class Bench:
    name: str
    title: str
    fn: Callable[["Ctx"], list]
    module: str


REGISTRY: dict[str, Bench] = {}


def register(name: str, title: str):
    def deco(fn):
        REGISTRY[name] = Bench(name, title, fn, fn.__module__)
        return fn

    return deco


def load_all() -> dict[str, Bench]:
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    for m in MODULES:
        importlib.import_module(m)
    order = {m: i for i, m in enumerate(MODULES)}
    return dict(sorted(REGISTRY.items(), key=lambda kv: order.get(kv[1].module, 99)))


# ---------------------------------------------------------------- context
@dataclasses.dataclass
class Ctx:
    mode: str = "full"  # "full" | "quick" | "smoke"
    device: str = "cpu"
    threads: int = 0  # torch threads (0: torch's default)
    tmp: Path = dataclasses.field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vk-bench-")))
    models_dir: Path | None = None  # tiny fixture models (built on first use when None)
    workflows_dir: Path = ROOT / "workflows" / "api"
    verbose: bool = True

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def pick(self, full, quick, smoke):
        return {"full": full, "quick": quick, "smoke": smoke}[self.mode]

    def log(self, *parts) -> None:
        if self.verbose:
            print("  ·", *parts, flush=True, file=sys.stderr)

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def tiny_models(self) -> Path:
        """The tests' tiny real-format fixture models (tests/vk_testing/tiny_models.build_all), built once."""
        if self.models_dir is None:
            sys.path.insert(0, str(ROOT / "tests")) if str(ROOT / "tests") not in sys.path else None
            from vk_testing import tiny_models

            t = time.perf_counter()
            root = self.tmp / "tiny-models"
            with contextlib.redirect_stderr(open(os.devnull, "w")):  # their progress bars
                tiny_models.build_all(root)
            self.log(f"tiny fixture models built in {time.perf_counter() - t:.1f} s")
            self.models_dir = root
        return self.models_dir


def setup_env(device: str) -> None:
    """The pack standalone (not inside ComfyUI), on `device`, offline."""
    os.environ["VISIONKIT_STANDALONE"] = "1"
    os.environ["VISIONKIT_DEVICE"] = device
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def import_pack():
    """The repository imported as a package named PACK, once: the tests' own importer (tests/vk_testing)."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from vk_testing import import_pack as tests_import_pack

    return tests_import_pack()


@contextlib.contextmanager
def fresh_cache():
    """A new, empty model cache for the block (the previous one comes back afterwards)."""
    import_pack()
    from visionkit_pack.models.core import cache as cache_mod

    old = cache_mod._CACHE
    cache_mod._CACHE = cache_mod.ModelCache()
    try:
        yield cache_mod._CACHE
    finally:
        cache_mod._CACHE.purge()
        cache_mod._CACHE = old


@contextlib.contextmanager
def env(**values):
    """Set environment variables for the block (None removes), then put the old values back."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_worker(script: Path, args: list[str], timeout: float = 900, env_extra: dict | None = None) -> dict:
    """Run `python script args` in a fresh process; its last stdout line is a JSON object."""
    cmd = [sys.executable, str(script), *args]
    e = {**os.environ, **(env_extra or {})}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed (exit {res.returncode}): {' '.join(cmd)}\n{res.stderr[-3000:]}")
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"worker printed no JSON: {' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return json.loads(lines[-1])


def loader_row(ctx, root, node_id: str, name: str, what: str, size_note: str) -> Row:
    """A loader node on a real-size file: cold load (fresh cache) vs a cached load, and the model files each
    one opened (a cached load must open none)."""
    pack = import_pack()
    loader = pack.NODE_CLASS_MAPPINGS[node_id]()
    n = ctx.pick(20, 10, 3)
    with env(VISIONKIT_MODELS_DIR=root), fresh_cache() as cache:
        with FileAudit([root]) as cold_audit:
            cold, _ = timed(lambda: loader.load(name), ctx.sync)
        with FileAudit([root]) as warm_audit:
            warm, _ = best_of(n, lambda: loader.load(name), ctx.sync)
        stats = cache.stats()["totals"]
    cold_opens, warm_opens = sum(cold_audit.opens().values()), sum(warm_audit.opens().values())
    notes = (f"{size_note}; cold {cold:.2f} s, cached {warm * 1000:.2f} ms (min of {n}); model file opens: "
             f"{cold_opens} cold, {warm_opens} in {n} cached loads; cache {stats['misses']} miss, {stats['hits']} hits")
    return goal_row(f"{what} loader: cached load vs cold", cold / warm, ">=", 50, "×", notes,
                    extra_ok=warm_opens == 0)


# ---------------------------------------------------------------- run, results, table
def run_benches(names: list[str] | None, ctx: Ctx) -> list[dict]:
    benches = load_all()
    unknown = [n for n in (names or []) if n not in benches]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(benches)}")
    out = []
    for name, b in benches.items():
        if names and name not in names:
            continue
        print(f"== {name}: {b.title} ({ctx.mode})", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        entry = {"name": name, "title": b.title, "mode": ctx.mode, "load_before": loadavg()}
        try:
            saved_env = dict(os.environ)
            try:
                rows = b.fn(ctx)
            finally:
                os.environ.clear()
                os.environ.update(saved_env)
            entry["rows"] = [r.as_dict() if isinstance(r, Row) else dict(r) for r in rows]
            entry["error"] = None
        except Exception as ex:  # noqa: BLE001 - one failing benchmark must not lose the others
            traceback.print_exc()
            entry["rows"] = [Row(f"{b.title}: failed", None, "—", False, "", f"{type(ex).__name__}: {ex}"[:300])
                             .as_dict()]
            entry["error"] = f"{type(ex).__name__}: {ex}"
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        entry["load_after"] = loadavg()
        entry["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        print(f"   {name}: {entry['seconds']:.0f} s", file=sys.stderr, flush=True)
        out.append(entry)
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0],
                                 epilog="Benchmarks: " + ", ".join(MODULES))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (a few minutes)")
    mode.add_argument("--smoke", action="store_true", help="tiny configs: tests the harness, the numbers mean nothing")
    ap.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available, else cpu)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads; 0: torch's default. Default: torch's default, or 1 on a CPU whose load average "
                         "is already above half its cores (measured here: two OpenMP threads next to other work made "
                         "a tiny workflow 180x slower than one thread)")
    ap.add_argument("--out", help="results folder (default bench/results; --smoke: a temporary folder)")
    ap.add_argument("--models-dir", help="tiny fixture models already built (default: built into a temp folder)")
    ap.add_argument("--workflows", help="folder of API-format workflows (default workflows/api)")
    ap.add_argument("--note", default="", help="a sentence stored with the results (e.g. 'machine shared')")
    ap.add_argument("--no-write", action="store_true", help="print the table, write no results file")
    return ap.parse_args(argv)


def choose_threads(requested: int | None, device: str) -> tuple[int, str]:
    """(torch threads to set, 0 = leave torch's default; why)."""
    if requested is not None:
        return requested, "--threads" if requested else "torch's default (--threads 0)"
    la = loadavg()
    if not device.startswith("cuda") and la and la[0] > cpu_count() / 2:
        return 1, f"1: the machine was busy (load average {la[0]} on {cpu_count()} cores)"
    return 0, "torch's default"


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.list:
        for name, b in load_all().items():
            print(f"{name:12s} {b.title}")
        return None
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    device = pick_device(args.device)
    setup_env(device)
    import torch

    threads, why = choose_threads(args.threads, device)
    if threads:
        torch.set_num_threads(threads)
    ctx = Ctx(mode=mode, device=device, threads=threads,
              models_dir=Path(args.models_dir) if args.models_dir else None)
    if args.workflows:
        ctx.workflows_dir = Path(args.workflows)
    out = Path(args.out) if args.out else (ctx.tmp / "results" if mode == "smoke" else BENCH_DIR / "results")
    info = device_info(device)
    stem = info["name"] + ("" if mode == "full" else f"-{mode}")
    print(f"VisionKit benchmarks on {info['name']} ({mode}); load average {loadavg()}; torch threads "
          f"{torch.get_num_threads()} ({why})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    benches = run_benches(args.only, ctx)
    previous = None
    json_path = out / f"{stem}.json"
    if args.only and json_path.exists():
        with contextlib.suppress(ValueError, OSError):
            previous = json.loads(json_path.read_text())
    doc = results_doc(benches, ctx, time.perf_counter() - t0, args.note, previous, list(load_all()))
    doc["device_info"]["threads_choice"] = why
    validate_doc(doc)
    table = render_markdown(doc)
    print()
    print(table)
    if not args.no_write:
        out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        (out / f"{stem}.md").write_text(table)
        print(f"results: {json_path} and {out / (stem + '.md')}", file=sys.stderr)
    return doc


def main_single(name: str, argv=None) -> int:
    """`python bench/<module>.py [--quick|--smoke] …`: one benchmark, table printed, nothing written."""
    args = list(argv if argv is not None else sys.argv[1:])
    doc = main(["--only", name, "--no-write", *args])
    return 0 if doc and all(b.get("error") is None for b in doc["benches"]) else 1


def cli() -> int:
    """Exit status: 1 when a benchmark failed to run (a goal not met is a row, not a failure)."""
    doc = main()
    return 0 if doc is None or all(b.get("error") is None for b in doc["benches"]) else 1


if __name__ == "__main__":
    # the benchmark modules import this file as `harness`: run that module, not a second copy of it
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    import harness as _harness

    sys.exit(_harness.cli())
