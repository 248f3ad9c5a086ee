"""One file from a URL to its place: through `<name>.part` (resumed with HTTP Range), its sha256 computed while
it is written and compared with the published one before the atomic rename. Standard library only."""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

from .download_progress import ProgressBar, human
from .download_safety import WRITE_ERRORS, ChecksumError, DownloadError, _Incomplete, _write_error, check_url

CHUNK = 1 << 20
USER_AGENT = "VisionKit-models/1 (+https://github.com/; opt-in model downloader)"


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
