"""The shipped workflows (workflows/api/*.json): a cached second run vs a cold one, the model files each run
reads, and the peak RSS of one run in a fresh process.

    .venv/bin/python bench/workflows_bench.py [--quick|--smoke] [--workflows DIR]

Each API workflow runs unchanged through the tests' WorkflowRunner (tests/vk_testing/runner.py) on the tiny
real-format fixture models (tests/vk_testing/tiny_models.build_all), reached under the real names the
workflow uses through the tests' alias table (tests/vk_testing/workflows.py: ALIASES, link_real_names; the
text-to-image sizes lowered by its for_tests, as in the tests). Real-size model files would make every run
minutes long on a CPU; the real-size cold-vs-cached loads are in the SAM and Real-ESRGAN rows.

Per workflow: a warm-up run (libraries imported, fresh cache, not counted), then a cold run (fresh cache)
and a second run on the same cache. "Model loading" is the time inside the loader nodes plus the cache
look-ups other nodes make; the goal is cold / cached ≥ 50×. File reads are counted during both runs (Python's
"open" audit event, plus safetensors' safe_open and onnxruntime sessions, which open files natively): the
cached run must open no model file, and in the cold run no file may be read by two different loads.
Peak RSS: the workflow run once in a fresh process (VmHWM), with the RSS after the imports for reference.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import harness
import measure
from harness import Row, goal_row, register

TESTS = harness.ROOT / "tests"


def _testing():
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from vk_testing import runner, workflows

    return runner, workflows


# ---------------------------------------------------------------- timing the loads
class LoadClock:
    """Time in loader nodes, plus cache acquisitions made by other nodes; tags file opens by cache build."""

    def __init__(self, audit: harness.FileAudit | None = None):
        self.loader_s = 0.0
        self.acquire_s = 0.0  # acquisitions outside loader nodes
        self.node_s: dict[str, float] = {}
        self._in_loader = 0
        self.audit = audit

    @property
    def load_s(self) -> float:
        return self.loader_s + self.acquire_s

    def wrap_node(self, cls, class_type: str):
        clock = self
        fn_name = cls.FUNCTION
        original = getattr(cls, fn_name)
        loader = class_type.endswith("Loader")

        def timed_fn(this, *a, **kw):
            t = time.perf_counter()
            clock._in_loader += loader
            try:
                return original(this, *a, **kw)
            finally:
                clock._in_loader -= loader
                dt = time.perf_counter() - t
                clock.node_s[class_type] = clock.node_s.get(class_type, 0.0) + dt
                if loader:
                    clock.loader_s += dt

        return type(cls.__name__, (cls,), {fn_name: timed_fn})

    @contextlib.contextmanager
    def patch_cache(self):
        from visionkit_pack.models.core.cache import ModelCache

        original = ModelCache._acquire
        clock = self

        def acquire(cache, spec):
            audit = clock.audit
            prev = audit.tag if audit else None
            if audit:
                audit.tag = f"{spec.kind}:{spec.path}"
            t = time.perf_counter()
            try:
                return original(cache, spec)
            finally:
                if not clock._in_loader:
                    clock.acquire_s += time.perf_counter() - t
                if audit:
                    audit.tag = prev

        ModelCache._acquire = acquire
        try:
            yield
        finally:
            ModelCache._acquire = original


def prepare(ctx) -> tuple[Path, Path, list[Path]]:
    """(models root(s) for VISIONKIT_MODELS_DIR, input folder, workflow files)."""
    _runner, W = _testing()
    tiny = ctx.tiny_models()
    aliases = W.link_real_names(ctx.tmp / "model-aliases", tiny)
    inputs = ctx.tmp / "workflow-inputs"
    W.copy_inputs(inputs)
    files = sorted(Path(ctx.workflows_dir).glob("*.json"))
    return f"{tiny}{os.pathsep}{aliases}", inputs, files


def node_classes():
    """The pack's nodes plus the tests' stand-ins for the core nodes the shipped workflows use
    (tests/vk_testing/workflows.CORE_STAND_INS: MaskToImage, ImageCompositeMasked)."""
    _runner, W = _testing()
    return {**harness.import_pack().NODE_CLASS_MAPPINGS, **getattr(W, "CORE_STAND_INS", {})}


def run_once(api: dict, inputs: Path, clock: LoadClock | None = None):
    runner_mod, _W = _testing()
    classes = node_classes()
    if clock is not None:
        used = {n["class_type"] for n in api.values()}
        classes = {k: (clock.wrap_node(v, k) if k in used else v) for k, v in classes.items()}
    return runner_mod.WorkflowRunner(classes, inputs).run(api)


def measure_cached_vs_cold(api: dict, inputs: Path, roots: list[str]) -> dict:
    """Warm-up run, then a cold run (fresh cache) and a cached one; load times, file opens, cache counters."""
    out = {}
    with harness.fresh_cache():
        run_once(api, inputs)  # libraries imported, first-call costs paid
    with harness.fresh_cache() as cache:
        for label in ("cold", "cached"):
            before = dict(cache.stats()["totals"])
            with harness.FileAudit(roots) as audit:
                clock = LoadClock(audit)
                with clock.patch_cache():
                    t, _ = measure.timed(lambda c=clock: run_once(api, inputs, c))
            after = cache.stats()["totals"]
            out[label] = {"run_s": t, "load_s": clock.load_s, "loader_s": clock.loader_s, "acquire_s": clock.acquire_s,
                          "opens": audit.opens(), "loads_per_file": audit.loads_per_file(),
                          "loaders": {k: v for k, v in clock.node_s.items() if k.endswith("Loader")},
                          "misses": after["misses"] - before["misses"], "hits": after["hits"] - before["hits"],
                          "cache_load_s": after["load_seconds"] - before["load_seconds"]}
    return out


def rss_cases(models: str, inputs: Path, files: list) -> list[dict]:
    """Each workflow run once on a fresh cache: peak RSS (VmHWM reset before the run) and the RSS before it."""
    import gc

    results = []
    with harness.env(VISIONKIT_MODELS_DIR=models):
        for wf in files:
            api = _for_bench(json.loads(Path(wf).read_text()))
            with harness.fresh_cache():
                gc.collect()
                reset = measure.reset_peak_rss()
                base = (measure.status_kb("VmRSS") or 0) * 1024
                t, _ = measure.timed(lambda a=api: run_once(a, Path(inputs)))
                results.append({"workflow": str(wf), "peak": measure.peak_rss_bytes(), "base": base, "seconds": t,
                                "how": "VmHWM" + (" (reset before the run)" if reset else "")})
    return results


def worker(args) -> None:
    """Fresh process: rss_cases, printed as JSON."""
    harness.setup_env(args.device)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    _testing()
    harness.import_pack()
    print(json.dumps({"results": rss_cases(args.models, Path(args.inputs), args.workflows)}))


def _for_bench(api: dict) -> dict:
    _r, W = _testing()
    return W.for_tests(api) if hasattr(W, "for_tests") else api


@register("workflows", "shipped workflows: cached second run vs cold, file reads, peak RSS")
def bench(ctx) -> list[Row]:
    import torch

    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    models, inputs, files = prepare(ctx)
    if not files:
        return [Row(f"Shipped workflows in {ctx.workflows_dir}", None, "—", None, "", "no API workflow found")]
    _r, W = _testing()
    tiny_root = models.split(os.pathsep)[0]
    roots = [tiny_root, models.split(os.pathsep)[1]]
    rows: list[Row] = []
    runnable = []
    with harness.env(VISIONKIT_MODELS_DIR=models):
        for wf in files:
            name = wf.stem
            api = _for_bench(json.loads(wf.read_text()))
            missing = W.missing_aliases(api, Path(roots[1])) if hasattr(W, "missing_aliases") else []
            if missing:
                rows.append(Row(f"Workflow {name}: cached run vs cold", None, "≥ 50×", None, "×",
                                f"skipped: no tiny stand-in yet for {', '.join(missing)}"))
                continue
            ctx.log(f"workflows: {name}")
            try:
                m = measure_cached_vs_cold(api, inputs, roots)
            except Exception as ex:  # noqa: BLE001 - one broken workflow is a failed row, not a lost table
                rows.append(Row(f"Workflow {name}: cached run vs cold", None, "≥ 50×", False, "×",
                                f"failed: {type(ex).__name__}: {str(ex)[:200]}"))
                continue
            runnable.append(wf)
            cold, warm = m["cold"], m["cached"]
            twice = {p: n for p, n in cold["loads_per_file"].items() if n > 1}
            warm_opens = sum(warm["opens"].values())
            ok_files = not twice and warm_opens == 0 and warm["misses"] == 0
            ratio = cold["load_s"] / warm["load_s"] if warm["load_s"] > 0 else None
            notes = (f"model loading {cold['load_s']:.2f} s cold (cache misses: {cold['misses']}) → "
                     f"{warm['load_s'] * 1000:.2f} ms cached (hits: {warm['hits']}, misses: {warm['misses']}); "
                     f"model files read cold: {len(cold['opens'])}, opened {sum(cold['opens'].values())} times "
                     f"({'each by one load' if not twice else 'read by two loads: ' + ', '.join(map(os.path.basename, twice))}), "
                     f"cached {warm_opens} opens; whole run {cold['run_s']:.2f} s → {warm['run_s']:.2f} s")
            if warm["loaders"]:
                slow = max(warm["loaders"], key=warm["loaders"].get)
                notes += f"; slowest cached loader {slow} {warm['loaders'][slow] * 1000:.2f} ms"
            rows.append(goal_row(f"Workflow {name}: model loading, cached run vs cold", ratio, ">=", 50, "×", notes,
                                 extra_ok=ok_files))
    if runnable:
        rows += rss_rows(ctx, models, inputs, runnable)
    return rows


def rss_rows(ctx, models: str, inputs: Path, files: list[Path]) -> list[Row]:
    ctx.log("workflows: peak RSS, " + ("in this process (smoke)" if ctx.smoke else "a fresh process per workflow"))
    if ctx.smoke:
        results = rss_cases(models, inputs, files)
    else:
        script = Path(__file__).resolve()
        base = ["--worker", "--device", ctx.device, "--threads", str(ctx.threads), "--models", models, "--inputs",
                str(inputs)]
        results = [r for f in files for r in harness.run_worker(script, [*base, "--workflows", str(f)])["results"]]
    where = "this process, after other runs (smoke)" if ctx.smoke else "a fresh process"
    return [Row(f"Workflow {Path(r['workflow']).stem}: peak RSS", r["peak"] / 2**20, "—", None, "MB",
                f"one run in {where} ({r['seconds']:.1f} s), tiny models; RSS before the run (imports done) "
                f"{r['base'] / 2**20:.0f} MB; {r['how']}") for r in results]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--models")
    ap.add_argument("--inputs")
    ap.add_argument("--workflows", nargs="+")
    args, _rest = ap.parse_known_args()
    if args.worker:
        worker(args)
        return 0
    return harness.main_single("workflows")


if __name__ == "__main__":
    sys.exit(main())
