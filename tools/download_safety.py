"""What the model downloader (tools/downloader.py) refuses, and how it reports local disk errors.

A manifest given with --manifest (mirrors) and the server behind it are untrusted (issue 19): every path and
target must stay inside its model folder, only http(s) URLs are fetched, and a zip may not unpack to more
than its members declare, more than MAX_ZIP_RATIO times its own size, or more than the disk has free.
Standard library only, like the downloader.
"""
from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path

from .download_progress import human
from ..models.core.folders import FOLDERS

CHUNK = 1 << 20
MAX_ZIP_RATIO = 50  # unpacked / packed: model files barely compress, a zip bomb does (by thousands)
URL_SCHEMES = ("https", "http")


class DownloadError(RuntimeError):
    """A transfer that could not complete (the .part is kept for a later resume)."""


class ChecksumError(DownloadError):
    """The file's sha256 is not the published one (the .part was removed)."""


class _Incomplete(OSError):
    pass


# errors of the local disk, not of the transfer: retrying cannot help, so they are reported as what they are
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EPERM)


def _write_error(ex: OSError) -> str:
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EFBIG: "the file is larger than this system or process allows (a file-size limit, e.g. ulimit "
                         "-f, or a FAT32 disk's 4 GB limit)",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EROFS: "the disk is read-only"}.get(ex.errno, ex.strerror or str(ex))
    fix = {errno.ENOSPC: "free some space or choose another --models-dir",
           errno.EDQUOT: "free some space or choose another --models-dir",
           errno.EFBIG: "raise the limit or choose another --models-dir"}.get(
        ex.errno, "choose a --models-dir you can write to")
    return f"{what}; {fix}"


def check_rel_path(value, what: str) -> str:
    """A manifest path or target must stay inside its model folder: no '..', no absolute path, no drive
    letter, no NUL, no empty part. Returns it in '/' form; anything else is a ValueError naming it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is empty; give a path relative to the model folder")
    v = value.replace("\\", "/")
    if "\x00" in v:
        raise ValueError(f"{what} {value!r} contains a NUL character; refused")
    if v.startswith("/") or (len(v) > 1 and v[1] == ":") or v.startswith("~"):
        raise ValueError(f"{what} {value!r} is an absolute path; a manifest may only name paths inside the "
                         "model folder, refused")
    if any(part in ("..", "", ".") for part in v.split("/")):
        raise ValueError(f"{what} {value!r} would leave the model folder ('..', '.' or an empty path part); "
                         "refused")
    return v


def check_url(url, what: str) -> str:
    scheme = str(url).split(":", 1)[0].lower() if ":" in str(url) else ""
    if scheme not in URL_SCHEMES:
        raise ValueError(f"{what}: URL {str(url)[:200]!r} is not http(s); the downloader fetches only http:// and "
                         "https:// URLs (file://, ftp:// and others are refused: copy a local file into the model "
                         "folder yourself)")
    return url


def check_entry(entry):  # a catalog.CatalogModel (built in, or read from a --manifest JSON)
    """Every path of `entry` stays inside its model folder and every URL is http(s); else ValueError."""
    if entry.folder not in FOLDERS:
        raise ValueError(f"{entry.name}: unknown folder {entry.folder!r}; known: {', '.join(FOLDERS)}")
    check_rel_path(entry.target, f"{entry.name}: target")
    for f in entry.files:
        check_rel_path(f.path, f"{entry.name}: file path")
        check_url(f.url, f"{entry.name}/{f.path}")
        if f.size is not None and (not isinstance(f.size, int) or isinstance(f.size, bool) or f.size < 0):
            raise ValueError(f"{entry.name}/{f.path}: size {f.size!r} is not a byte count")
    return entry


def inside(base: Path, p: Path, what: str) -> Path:
    """`p`, after checking that it lies under `base` (the last guard after check_entry)."""
    b, q = os.path.abspath(base), os.path.abspath(p)
    if os.path.commonpath([b, q]) != b:
        raise DownloadError(f"{what}: {p} is outside the model folder {base}; refused")
    return p


def safe_extract(zip_path: Path, into: Path, target: str) -> Path:
    """Unpack into `into`; one top-level folder in the archive is taken as the model folder itself."""
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as z:
        names = [n for n in z.namelist() if n and not n.startswith("__MACOSX/")]
        for n in names:
            p = Path(n)
            if p.is_absolute() or ".." in p.parts or n.startswith(("/", "\\")) or (len(n) > 1 and n[1] == ":"):
                raise DownloadError(f"{zip_path.name}: archive member {n!r} would leave the model folder; refused")
        infos = [i for i in z.infolist() if i.filename in names and not i.is_dir()]
        declared = sum(i.file_size for i in infos)
        packed = max(zip_path.stat().st_size, 1)
        if declared > MAX_ZIP_RATIO * packed + CHUNK:
            raise DownloadError(f"{zip_path.name}: the archive declares {human(declared)} unpacked from "
                                f"{human(packed)} (over {MAX_ZIP_RATIO}×): not a model pack (a zip bomb?); refused")
        free = shutil.disk_usage(into).free
        if declared > free:
            raise DownloadError(f"{zip_path.name}: unpacking needs {human(declared)} but {into} has {human(free)} "
                                "free; free some space or choose another --models-dir")
        tops = {n.split("/", 1)[0] for n in names}
        strip = len(tops) == 1 and all("/" in n or n.endswith("/") for n in names)
        for info in z.infolist():
            if info.filename not in names or info.is_dir():
                continue
            rel = info.filename.split("/", 1)[1] if strip else info.filename
            if not rel:
                continue
            dest = into / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with z.open(info) as src, open(dest, "wb") as dst:
                while block := src.read(CHUNK):
                    written += len(block)
                    if written > info.file_size:  # never more than the member declares
                        raise DownloadError(f"{zip_path.name}: member {info.filename!r} unpacks to more than its "
                                            f"declared {human(info.file_size)}; the archive is damaged or forged")
                    dst.write(block)
    return into
