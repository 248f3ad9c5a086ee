"""scripts/queue (python -m vkclient): queue API-format workflows on ComfyUI and fetch what they make.

    ./scripts/queue workflows/api/upscale.json --image photo.png -o out/
    ./scripts/queue wf.json --set 5.seed=3 --set "Prompt.text=a red fox" --timeout 600
    ./scripts/queue wf.json --repeat 8 --seed-random --server http://gpu1:8188 --server http://gpu2:8188
    ./scripts/queue wf.json --json > summary.json

Exit status: 0 every job succeeded; 1 a job was rejected (node_errors), failed while running or timed out;
2 bad command line, workflow file, override or image; 3 no server could be reached.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .batch import BatchJob, run_batch
from .client import DEFAULT_SERVER, Client
from .results import ExecutionFailed, JobTimeout, PromptRejected, ServerUnreachable
from .workflow import WorkflowError, apply_overrides, assign_images, load_workflow, parse_value, split_target

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
PROGRESS_EVERY = 0.5  # seconds between two progress lines of one node (the last step is always shown)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="queue", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Queue API-format ComfyUI workflows over HTTP, follow their progress, download the results.",
        epilog="NODE is a node id, its title (_meta.title) or its class_type when only one node has it.\n"
               "VALUE is read as JSON when it parses (3, 0.5, true, \"text\", [..]), else as plain text.\n"
               "A canvas (UI-format) file is refused with a hint: export it with Workflow → Export (API).\n"
               "Exit status: 0 ok, 1 a job was rejected/failed/timed out, 2 bad input, 3 no server reachable.")
    p.add_argument("workflows", nargs="+", metavar="WORKFLOW.json", help="API-format workflow file(s)")
    p.add_argument("--server", action="append", metavar="URL",
                   help=f"a ComfyUI server; repeat to spread the jobs over several (default $VISIONKIT_SERVER "
                        f"or {DEFAULT_SERVER})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="change an input before queueing (repeatable)")
    p.add_argument("--image", dest="images", action="append", default=[], metavar="[NODE.INPUT=]PATH",
                   help="upload an image and feed it to that input; without NODE.INPUT, to the next LoadImage "
                        "node in id order (repeatable)")
    p.add_argument("-o", "--output", default="output", metavar="DIR",
                   help="where the output files go (default ./output)")
    p.add_argument("--no-download", action="store_true", help="do not download the output files")
    p.add_argument("--no-previews", action="store_true",
                   help="download only saved outputs, not the temporary previews (PreviewImage)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="queue each workflow N times")
    p.add_argument("--seed-random", action="store_true",
                   help="a fresh random value for every seed / noise_seed input of every job")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up on a job after this long (it is then removed from the server's queue)")
    p.add_argument("--per-server", type=int, default=1, metavar="N",
                   help="jobs in flight at once on each server (default 1)")
    p.add_argument("--no-websocket", action="store_true", help="follow jobs by polling /history only")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def parse_image_arg(text: str):
    """'PATH' -> (None, PATH); 'NODE.INPUT=PATH' -> ('NODE.INPUT', PATH) unless the whole text is a file."""
    if "=" in text and not os.path.exists(text):
        target, _, path = text.partition("=")
        try:
            split_target(target, "image target")
            return target, path
        except WorkflowError:
            pass
    return None, text


class Printer:
    """Progress lines on stderr, one per node step, at most one progress line per node per PROGRESS_EVERY s."""

    def __init__(self, stream, quiet: bool = False):
        self.stream, self.quiet = stream, quiet
        self._last: dict = {}

    def __call__(self, ev) -> None:
        if self.quiet:
            return
        if ev.kind == "progress":
            key = (ev.job, ev.node)
            now = time.monotonic()
            last = self._last.get(key)
            if last is not None and now - last < PROGRESS_EVERY and ev.value != ev.max:
                return
            self._last[key] = now
        if ev.kind == "submitted":
            text = f"queued on {ev.server} as {ev.prompt_id}"
        elif ev.kind in ("done", "failed"):
            return  # the summary says it
        else:
            text = str(ev)
        label = f"[{ev.job}] " if ev.job else ""
        print(f"{label}{text}", file=self.stream, flush=True)


def _job_name(path: str, rep: int, repeat: int) -> str:
    name = os.path.basename(path)
    return f"{name} #{rep + 1}" if repeat > 1 else name


def _summary(item) -> dict:
    out = {"name": item.job.name, "server": item.server, "prompt_id": item.prompt_id, "ok": item.ok}
    if item.ok:
        r = item.result
        out.update(status="success", seconds=round(r.seconds, 3), files=[str(p) for p in r.files],
                   outputs=r.outputs, websocket=r.used_websocket, events=len(r.events))
        return out
    e = item.error
    status = {PromptRejected: "rejected", ExecutionFailed: "error", JobTimeout: "timeout",
              ServerUnreachable: "unreachable"}.get(type(e), "error")
    out.update(status=status, error=str(e))
    if isinstance(e, PromptRejected):
        out["node_errors"] = e.node_errors
    if isinstance(e, ExecutionFailed):
        out.update(node_id=e.node_id, node_type=e.node_type, exception_type=e.exception_type,
                   exception_message=e.exception_message)
    return out


def _texts(outputs: dict):
    """(node, key, value) of the non-file values of the outputs (readouts: text, scores)."""
    for node_id, ui in (outputs or {}).items():
        for key, value in (ui or {}).items():
            if isinstance(value, list) and value and all(isinstance(v, dict) and "filename" in v for v in value):
                continue
            yield node_id, key, value


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    err = sys.stderr
    servers = args.server or [os.environ.get("VISIONKIT_SERVER") or DEFAULT_SERVER]
    if args.repeat < 1 or args.per_server < 1:
        print("error: --repeat and --per-server must be at least 1", file=err)
        return EXIT_USAGE
    try:
        clients = [Client(s) for s in servers]
    except ValueError as e:
        print(f"error: {e}", file=err)
        return EXIT_USAGE

    known_cache: dict = {}

    def known_inputs(class_type):
        if class_type not in known_cache:
            try:
                known_cache[class_type] = clients[0].input_names(class_type)
            except Exception:  # noqa: BLE001 - only a hint for the override check
                known_cache[class_type] = set()
        return known_cache[class_type]

    images = [parse_image_arg(t) for t in args.images]
    jobs = []
    try:
        overrides = []
        for text in args.overrides:
            if "=" not in text:
                raise WorkflowError(f"--set {text!r} must be NODE.INPUT=VALUE (e.g. 5.seed=3)")
            target, _, value = text.partition("=")
            overrides.append((target, parse_value(value)))
        for target, path in images:
            if not Path(path).is_file():
                raise WorkflowError(f"--image {path!r}: no such file")
        for path in args.workflows:
            prompt = load_workflow(path)
            prompt = _apply_all(prompt, overrides, known_inputs)
            assign_images(prompt, images)  # a wrong target fails here, before anything is uploaded
            for rep in range(args.repeat):
                jobs.append(BatchJob(prompt, images or None,
                                     _job_name(path, rep, args.repeat)))
    except WorkflowError as e:
        print(f"error: {e}", file=err)
        return EXIT_USAGE

    printer = Printer(err, args.quiet)
    items = run_batch(clients, jobs, output_dir=None if args.no_download else args.output, timeout=args.timeout,
                      progress=printer, per_server=args.per_server, seed_random=args.seed_random,
                      types=("output",) if args.no_previews else ("output", "temp"),
                      websocket=not args.no_websocket)

    out = sys.stdout
    for item in items:
        label = f"[{item.job.name}] " if len(items) > 1 or args.json else ""
        if item.ok:
            r = item.result
            files = ", ".join(str(p) for p in r.files) or "no files"
            if not args.json:
                print(f"{label}done in {r.seconds:.1f} s on {r.server}: {files}", file=out)
                for node_id, key, value in _texts(r.outputs):
                    shown = json.dumps(value, default=str)
                    print(f"{label}  node {node_id} {key}: {shown[:500]}", file=out)
        else:
            print(f"{label}FAILED{f' on {item.server}' if item.server else ''}: {item.error}", file=err)
    if args.json:
        json.dump({"ok": all(i.ok for i in items), "jobs": [_summary(i) for i in items]}, out, indent=2,
                  default=str)
        out.write("\n")
    if all(i.ok for i in items):
        return EXIT_OK
    if all(isinstance(i.error, ServerUnreachable) for i in items if not i.ok) and not any(i.ok for i in items):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def _apply_all(prompt, overrides, known_inputs):
    """Overrides in the order given (a later one for the same input wins)."""
    for target, value in overrides:
        prompt = apply_overrides(prompt, {target: value}, known_inputs)
    return prompt


def run() -> None:
    try:
        code = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
