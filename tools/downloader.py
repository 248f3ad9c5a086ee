"""The opt-in model downloader behind `scripts/models` (list, download NAME…, download --workflow FILE).

Only this command downloads anything: nothing in the pack imports this module, and the pack itself never
touches the network. Standard library only (urllib), so it runs with any Python, ComfyUI's included.

How a file arrives (the guarantees the tests check):
- it is written to `<final name>.part` next to its final place; an interrupted transfer leaves only that
  `.part`, and the next run asks the server for the rest (HTTP Range). A 206 answer continues the file; a
  server that ignores the Range header (200) or answers for another offset makes it start over;
- its sha256 is computed while it is written and compared, when the manifest has a published value, BEFORE
  the `.part` is renamed (os.replace, atomic) to the final name; a wrong checksum removes the `.part` and
  stops with an error. A file without a published checksum is downloaded with an "unverified" warning;
- folder models (transformers / diffusers folders, InsightFace packs) are assembled in
  `<folder>/.visionkit-downloads/` (hidden: VisionKit never lists it) and moved into place whole, so a
  half-downloaded folder never shows up as a model; zip archives are unpacked there too (no member may
  leave the folder);
- a model under a non-commercial licence is fetched only with --accept-licence, after its note is shown.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterable, TextIO

from ..models.core.catalog import CATALOG
from .download_progress import ProgressBar, human
from .download_safety import (  # noqa: F401  (DownloadError, ChecksumError, check_*: the downloader's API too)
    WRITE_ERRORS,
    ChecksumError,
    DownloadError,
    _Incomplete,
    _write_error,
    check_entry,
    check_rel_path,
    check_url,
    inside,
    safe_extract,
)
from ..models.core.folders import FOLDERS, PT
from .manifest import MANIFEST, ManifestEntry, RemoteFile

STAGING = ".visionkit-downloads"
CHUNK = 1 << 20
USER_AGENT = "VisionKit-models/1 (+https://github.com/; opt-in model downloader)"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LICENCE = 0, 1, 2, 3


# ---------------------------------------------------------------- where models go
def pack_root() -> Path:
    # abspath, not realpath: a pack linked into custom_nodes/ is judged by where it is linked
    return Path(os.path.abspath(__file__)).parent.parent


def default_models_dir(root: Path | None = None, env: dict | None = None) -> tuple[Path, str]:
    """(models dir, why): ComfyUI's models/ when the pack sits in <ComfyUI>/custom_nodes/, else
    $VISIONKIT_MODELS_DIR (its first entry), else ~/.cache/visionkit/models."""
    root = Path(root) if root is not None else pack_root()
    env = os.environ if env is None else env
    comfy = root.parent.parent
    if root.parent.name == "custom_nodes" and ((comfy / "folder_paths.py").is_file() or (comfy / "main.py").is_file()
                                               or (comfy / "models").is_dir()):
        return comfy / "models", f"ComfyUI's models folder (this pack is in {root.parent})"
    if env.get("VISIONKIT_MODELS_DIR"):
        first = [p for p in env["VISIONKIT_MODELS_DIR"].split(os.pathsep) if p][0]
        return Path(first).expanduser().absolute(), "from $VISIONKIT_MODELS_DIR"
    return Path.home() / ".cache" / "visionkit" / "models", \
        "the default; set --models-dir or $VISIONKIT_MODELS_DIR, or run the copy inside ComfyUI/custom_nodes"


def folder_dir(models_dir: Path, key: str) -> Path:
    spec = FOLDERS[key]
    d = Path(models_dir) / spec.folder
    return d / spec.subdir if spec.subdir else d


def _catalog_file(name: str) -> str | None:
    for m in CATALOG:
        if m.name == name:
            return m.file
    return None


def is_present(entry: ManifestEntry, models_dir: Path) -> bool:
    d = folder_dir(models_dir, entry.folder)
    names = {entry.target, _catalog_file(entry.name)} - {None}
    return any((d / n).exists() for n in names)


def is_folder_model(entry: ManifestEntry) -> bool:
    return any(f.archive or f.path.startswith(entry.target + "/") for f in entry.files)


# ---------------------------------------------------------------- manifest (built-in or JSON)
def load_manifest_json(path: str) -> dict[str, ManifestEntry]:
    """A manifest in JSON (mirrors, tests): [{"name", "folder", "target", "licence", "non_commercial",
    "files": [{"url", "path", "size", "sha256", "sha256_source", "archive"}]}]."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    out = {}
    for e in raw:
        files = tuple(RemoteFile(url=x["url"], path=x["path"], size=x.get("size"), sha256=x.get("sha256"),
                                 sha256_source=x.get("sha256_source"), archive=x.get("archive", ""))
                      for x in e["files"])
        for x in files:
            if x.sha256 and not x.sha256_source:
                raise ValueError(f"manifest {path}: {e['name']}/{x.path} has a sha256 but no sha256_source")
        out[e["name"]] = check_entry(ManifestEntry(e["name"], e["folder"], e["target"], files, e.get("licence", ""),
                                                   bool(e.get("non_commercial")), e.get("page", ""),
                                                   e.get("note", "")))
    return out


# ---------------------------------------------------------------- one file
def _sha256_of(path: Path) -> "hashlib._Hash":
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def _transfer(url: str, part: Path, size: int | None, opener, timeout: float, label: str, out: TextIO,
              restart: bool = False) -> "hashlib._Hash":
    """Bring `part` to the whole file (resuming what is there); returns its running sha256."""
    have = 0 if restart or not part.exists() else part.stat().st_size
    if size is not None and have > size:
        have = 0  # longer than the file can be: not a prefix of it
    if have and size is not None and have == size:
        return _sha256_of(part)  # complete already (e.g. interrupted before the check)
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after the bytes we have: the .part is the whole file
            return _sha256_of(part)
        raise DownloadError(f"{label}: the server answered HTTP {e.code} {e.reason} for {url}") from None
    with resp:
        status = getattr(resp, "status", 200)
        if have and status == 206:
            if _content_range_start(resp.headers.get("Content-Range")) != have:
                out.write(f"  {label}: the server resumed at another offset; starting over\n")
                resp.close()
                return _transfer(url, part, size, opener, timeout, label, out, restart=True)
            h, mode = _sha256_of(part), "ab"
            out.write(f"  {label}: resuming at {human(have)}\n")
        elif status == 200:
            if have:
                out.write(f"  {label}: the server ignored the resume request (HTTP 200); starting over\n")
            have, h, mode = 0, hashlib.sha256(), "wb"
        else:
            raise DownloadError(f"{label}: unexpected HTTP {status} for {url}")
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else size
        if size is not None and expected is not None and expected > size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{label}: the server announces {human(expected)} but the manifest declares "
                                f"{human(size)} ({size} bytes); nothing was kept. A changed upload or a wrong "
                                f"mirror? Check {url}")
        bar = ProgressBar(label, expected, have, out)
        got = have
        over = False
        read = getattr(resp, "read1", resp.read)  # what has arrived (up to CHUNK), not a full CHUNK
        part.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = read(CHUNK)
                    except http.client.IncompleteRead as ex:
                        chunk = ex.partial
                        if chunk:
                            f.write(chunk)
                            h.update(chunk)
                            got += len(chunk)
                        raise _Incomplete(f"connection closed after {human(got)}") from None
                    if not chunk:
                        break
                    if size is not None and got + len(chunk) > size:
                        f.truncate(0)
                        over = True
                        break
                    f.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        finally:
            bar.close()
        if over:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{label}: the server sent more than the {human(size)} ({size} bytes) the manifest "
                                f"declares; writing stopped there and the file was removed. A changed upload or a "
                                f"wrong mirror? Check {url}")
        if expected is not None and got < expected:
            raise _Incomplete(f"connection closed after {human(got)} of {human(expected)}")
    return h


def fetch(url: str, dest: Path, sha256: str | None = None, size: int | None = None, *, opener=None,
          out: TextIO | None = None, retries: int = 2, timeout: float = 60.0, label: str | None = None,
          source: str | None = None) -> Path:
    """Download `url` to `dest` through `dest.part` (resumed if present), checked, then renamed."""
    out = out or sys.stderr
    try:
        check_url(url, label or Path(dest).name)
    except ValueError as ex:
        raise DownloadError(str(ex)) from None
    opener = opener or urllib.request.build_opener()
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    label = label or dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        try:
            h = _transfer(url, part, size, opener, timeout, label, out)
            break
        except (_Incomplete, ConnectionError, TimeoutError, http.client.HTTPException, urllib.error.URLError,
                OSError) as ex:
            if isinstance(ex, DownloadError):
                raise
            if getattr(ex, "errno", None) in WRITE_ERRORS:
                raise DownloadError(f"{label}: cannot write {part}: {_write_error(ex)} (the partial file is kept "
                                    "for a resume)") from None
            kept = part.stat().st_size if part.exists() else 0
            if attempt >= retries:
                raise DownloadError(
                    f"{label}: the download was interrupted ({ex}); {human(kept)} kept in {part}: run the same "
                    "command again to resume") from None
            attempt += 1
            out.write(f"  {label}: interrupted ({ex}); resuming (retry {attempt} of {retries})\n")
    digest = h.hexdigest()
    if sha256:
        if digest != sha256.lower():
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{label}: sha256 {digest} is not the published {sha256.lower()} ({source or 'manifest'}); the "
                f"download was removed. The server sent another file (a changed upload, a mirror, a captive portal "
                f"or proxy page?): check {url} in a browser, or report it")
        out.write(f"  {label}: sha256 verified ({digest[:16]}…)\n")
    else:
        out.write(f"  {label}: UNVERIFIED: no published sha256 for this file; its sha256 is {digest}\n")
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------- a manifest entry
def download_entry(entry: ManifestEntry, models_dir: Path, *, opener=None, out: TextIO | None = None,
                   retries: int = 2, timeout: float = 60.0) -> Path:
    out = out or sys.stderr
    try:
        check_entry(entry)
    except ValueError as ex:
        raise DownloadError(str(ex)) from None
    d = folder_dir(models_dir, entry.folder)
    final = inside(d, d / entry.target, entry.name)
    out.write(f"{entry.name}: {entry.verification}, {human(entry.size) if entry.size else 'size unknown'} → "
              f"{final}\n")
    if entry.verification != "verified":
        out.write(f"  warning: {entry.name} has no published sha256 for "
                  f"{'some of its files' if entry.verification == 'partly verified' else 'its file(s)'}: "
                  "they are downloaded UNVERIFIED\n")
    kw = dict(opener=opener, out=out, retries=retries, timeout=timeout)
    if not is_folder_model(entry):
        for f in entry.files:
            dest = inside(d, d / f.path, entry.name)
            if dest.exists():
                out.write(f"  {f.path}: already there\n")
                continue
            fetch(f.url, dest, f.sha256, f.size, label=f.path, source=f.sha256_source, **kw)
        return final
    if final.exists():
        out.write(f"  {entry.target}: already there\n")
        return final
    stage = d / STAGING
    built = stage / entry.target
    for f in entry.files:
        if f.archive:
            if f.archive != "zip":
                raise DownloadError(f"{entry.name}: unknown archive kind {f.archive!r} in the manifest")
            zpath = stage / (entry.target + ".zip")
            if not zpath.exists():
                fetch(f.url, zpath, f.sha256, f.size, label=f"{entry.target}.zip", source=f.sha256_source, **kw)
            unpack = stage / (entry.target + ".unpacking")
            shutil.rmtree(unpack, ignore_errors=True)
            try:
                safe_extract(zpath, unpack, entry.target)
            except OSError as ex:
                shutil.rmtree(unpack, ignore_errors=True)
                if getattr(ex, "errno", None) in WRITE_ERRORS:
                    raise DownloadError(f"{entry.name}: cannot unpack into {unpack}: {_write_error(ex)}") from None
                raise
            except DownloadError:
                shutil.rmtree(unpack, ignore_errors=True)
                raise
            except zipfile.BadZipFile as ex:
                zpath.unlink(missing_ok=True)
                raise DownloadError(f"{entry.name}: the archive is damaged ({ex}); it was removed, run again") from None
            shutil.rmtree(built, ignore_errors=True)
            os.replace(unpack, built)
            zpath.unlink(missing_ok=True)
        else:
            rel = f.path.split("/", 1)[1] if f.path.startswith(entry.target + "/") else f.path
            dest = inside(built, built / rel, entry.name)
            if not dest.exists():
                fetch(f.url, dest, f.sha256, f.size, label=f.path, source=f.sha256_source, **kw)
    os.replace(built, final)
    try:
        stage.rmdir()
    except OSError:
        pass
    out.write(f"  {entry.target}: folder complete\n")
    return final


# ---------------------------------------------------------------- what a workflow needs
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


def names_of(entry: ManifestEntry) -> set[str]:
    names = {entry.target, _catalog_file(entry.name) or entry.target}
    names |= {f.path.rsplit("/", 1)[-1] for f in entry.files if not f.path.startswith(entry.target + "/")}
    return names


def match_value(value: str, manifest: dict[str, ManifestEntry]) -> ManifestEntry | None:
    v = value.replace("\\", "/").strip("/")
    candidates = {v, v.rsplit("/", 1)[-1], v.split("/", 1)[-1]}
    for e in manifest.values():
        if candidates & names_of(e):
            return e
    return None


def needed_by_workflow(data, manifest: dict[str, ManifestEntry]) -> tuple[list[ManifestEntry], list[str]]:
    """(manifest entries the workflow's VisionKit loaders name, model names the manifest does not know)."""
    entries: dict[str, ManifestEntry] = {}
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


# ---------------------------------------------------------------- command line
def _opener():
    return urllib.request.build_opener()


def cmd_list(manifest, models_dir: Path, why: str, out: TextIO, as_json: bool) -> int:
    rows = [{"name": e.name, "folder": e.folder, "target": e.target, "size": e.size,
             "present": is_present(e, models_dir), "checksum": e.verification, "licence": e.licence,
             "non_commercial": e.non_commercial} for e in manifest.values()]
    if as_json:
        out.write(json.dumps({"models_dir": str(models_dir), "models_dir_from": why, "models": rows}, indent=1) + "\n")
        return EXIT_OK
    out.write(f"models folder: {models_dir} ({why})\n")
    w = max(len(r["name"]) for r in rows) if rows else 4
    out.write(f"{'name':{w}}  {'folder':15} {'size':>9}  {'here':7}  {'checksum':15}  licence\n")
    for r in rows:
        nc = "  [NON-COMMERCIAL]" if r["non_commercial"] else ""
        out.write(f"{r['name']:{w}}  {r['folder']:15} {human(r['size']) if r['size'] else '?':>9}  "
                  f"{'present' if r['present'] else 'missing':7}  {r['checksum']:15}  {r['licence']}{nc}\n")
    return EXIT_OK


def cmd_download(manifest, models_dir: Path, args, out: TextIO, err: TextIO) -> int:
    chosen: list[ManifestEntry] = []
    unknown: list[str] = []
    if args.workflow:
        try:
            with open(args.workflow, encoding="utf-8") as f:
                data = json.load(f)
            chosen, unknown = needed_by_workflow(data, manifest)
        except (OSError, ValueError) as ex:
            err.write(f"error: cannot read the workflow {args.workflow}: {ex}\n")
            return EXIT_USAGE
        out.write(f"{args.workflow} uses {len(chosen)} model(s) from the manifest"
                  f"{': ' + ', '.join(e.name for e in chosen) if chosen else ''}\n")
        if unknown:
            out.write("not in the manifest (get these yourself; `scripts/models list` shows what it knows):\n"
                      + "".join(f"  {u}\n" for u in unknown))
    for n in args.names:
        if n not in manifest:
            err.write(f"error: no model named {n!r} in the manifest; known: {', '.join(manifest)}\n")
            return EXIT_USAGE
        if manifest[n] not in chosen:
            chosen.append(manifest[n])
    if not chosen:
        if args.workflow:
            return EXIT_OK
        err.write("error: name the models to download (see `list`) or give --workflow FILE\n")
        return EXIT_USAGE
    todo = [e for e in chosen if not is_present(e, models_dir)]
    for e in chosen:
        if e not in todo:
            out.write(f"{e.name}: already present in {folder_dir(models_dir, e.folder)}\n")
    blocked = [e for e in todo if e.non_commercial]
    for e in blocked:
        out.write(f"\nLICENCE of {e.name}: {e.licence}. {e.note}\n  {e.page}\n")
    if blocked and not args.accept_licence:
        err.write(f"error: {', '.join(e.name for e in blocked)} may not be used commercially; read the licence "
                  "above and run again with --accept-licence to download\n")
        return EXIT_LICENCE
    if args.dry_run:
        for e in todo:
            out.write(f"would download {e.name} ({e.verification}) → {folder_dir(models_dir, e.folder) / e.target}\n")
        return EXIT_OK
    failed = []
    for e in todo:
        try:
            download_entry(e, models_dir, opener=args.opener or _opener(), out=err, retries=args.retries,
                           timeout=args.timeout)
            out.write(f"{e.name}: done\n")
        except (DownloadError, OSError) as ex:
            failed.append(e.name)
            err.write(f"error: {ex}\n")
    if failed:
        err.write(f"failed: {', '.join(failed)}\n")
        return EXIT_FAILED
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    def common(p, default):
        p.add_argument("--models-dir", default=default,
                       help="models root (default: ComfyUI's models/ when this pack is inside ComfyUI/custom_nodes, "
                            "else $VISIONKIT_MODELS_DIR, else ~/.cache/visionkit/models)")
        p.add_argument("--manifest", default=default, help="a JSON manifest instead of the built-in one (mirrors, "
                                                           "tests)")

    ap = argparse.ArgumentParser(prog="scripts/models", description=(
        "List and download the models of VisionKit's README table (opt-in: the pack never downloads)."))
    common(ap, None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="every model: folder, size, present/missing, checksum status, licence")
    common(ls, argparse.SUPPRESS)
    ls.add_argument("--json", action="store_true")
    dl = sub.add_parser("download", help="download models by name and/or those a workflow uses")
    common(dl, argparse.SUPPRESS)
    dl.add_argument("names", nargs="*", help="manifest names (see list)")
    dl.add_argument("--workflow", help="a workflow JSON (API or UI format): download what its VisionKit "
                                       "loaders name")
    dl.add_argument("--accept-licence", "--accept-license", action="store_true", dest="accept_licence",
                    help="needed for models under a non-commercial licence (their note is printed first)")
    dl.add_argument("--dry-run", action="store_true", help="say what would be downloaded, download nothing")
    dl.add_argument("--retries", type=int, default=2, help="automatic resumes after an interrupted transfer")
    dl.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a retry")
    return ap


def main(argv: Iterable[str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
         opener=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    ap = build_parser()
    args = ap.parse_args(list(argv) if argv is not None else None)
    try:
        manifest = load_manifest_json(args.manifest) if args.manifest else dict(MANIFEST)
    except (OSError, ValueError, KeyError) as ex:
        err.write(f"error: cannot read the manifest {args.manifest}: {ex}\n")
        return EXIT_USAGE
    if args.models_dir:
        models_dir, why = Path(args.models_dir).expanduser().absolute(), "from --models-dir"
    else:
        models_dir, why = default_models_dir()
    if args.cmd == "list":
        return cmd_list(manifest, models_dir, why, out, args.json)
    out.write(f"models folder: {models_dir} ({why})\n")
    args.opener = opener
    return cmd_download(manifest, models_dir, args, out, err)
