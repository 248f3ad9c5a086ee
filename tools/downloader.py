"""The opt-in model downloader behind `scripts/models` (list, download NAME…, download --workflow FILE).

Only this command downloads anything: nothing in the pack imports this module, and the pack itself never
touches the network. Standard library only (urllib), so it runs with any Python, ComfyUI's included.

How a file arrives (the guarantees the tests check):
- it is written to `<final name>.part` next to its final place; an interrupted transfer leaves only that
  `.part`, and the next run asks the server for the rest (HTTP Range). A 206 answer continues the file; a
  server that ignores the Range header (200) or answers for another offset makes it start over;
- its sha256 is computed while it is written and compared, when the catalogue has a published value, BEFORE
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
import json
import os
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterable, TextIO

from ..models.core.catalog import CATALOG, CatalogModel, RemoteFile, by_name
from ..models.core.folders import FOLDERS
from .download_fetch import fetch
from .download_progress import human
from .download_safety import WRITE_ERRORS, DownloadError, _write_error, check_entry, inside, safe_extract
from .workflow_models import needed_by_workflow

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


def is_present(entry: CatalogModel, models_dir: Path) -> bool:
    d = folder_dir(models_dir, entry.folder)
    return any((d / n).exists() for n in {entry.target, entry.file})


def is_folder_model(entry: CatalogModel) -> bool:
    return any(f.archive or f.path.startswith(entry.target + "/") for f in entry.files)


# ---------------------------------------------------------------- manifest (the catalogue, or JSON)
def load_manifest_json(path: str) -> dict[str, CatalogModel]:
    """A manifest in JSON (mirrors, tests): [{"name", "folder", "target", "licence", "non_commercial",
    "files": [{"url", "path", "size", "sha256", "sha256_source", "archive"}]}]. A name the catalogue knows
    keeps the catalogue's file name (the README's), so a model already there under that name is found."""
    known = {m.name: m.file for m in CATALOG}
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
        out[e["name"]] = check_entry(CatalogModel(
            e["name"], known.get(e["name"], e["target"]), e["folder"], "", "", e.get("licence", ""),
            bool(e.get("non_commercial")), files, e["target"], e.get("page", ""), e.get("note", "")))
    return out


# ---------------------------------------------------------------- one model
def download_entry(entry: CatalogModel, models_dir: Path, *, opener=None, out: TextIO | None = None,
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
    chosen: list[CatalogModel] = []
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
        manifest = load_manifest_json(args.manifest) if args.manifest else by_name()
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
