"""scripts/models against a hostile manifest, server or disk (issue 19): manifest paths and targets that would
leave the models folder, non-http URLs, a server that sends more than the declared size, zip bombs, and disk
errors (full, file-size limit) reported as what they are instead of "interrupted, run again".

Uses the loopback server of tests/test_downloader.py.
"""
from __future__ import annotations

import errno
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from test_downloader import NO_PROXY, DATA, cli, entry, fetch, make_zip, server, sha  # noqa: F401
from visionkit_pack.models.core.catalog import CATALOG, RemoteFile
from visionkit_pack.tools import download_fetch as F
from visionkit_pack.tools import downloader as D

BAD_PATHS = {
    "dotdot": "../../../../../tmp/x.pth",
    "dotdot inside": "sub/../../x.pth",
    "backslash dotdot": "..\\..\\x.pth",
    "absolute": "/tmp/x.pth",
    "drive letter": "C:\\x.pth",
    "drive relative": "C:x.pth",
    "NUL": "a\x00b.pth",
    "home": "~/x.pth",
}


def _rows(url: str, path: str = "ok.pth", target: str = "ok.pth") -> list:
    return [{"name": "m", "folder": "upscale_models", "target": target, "licence": "MIT",
             "files": [{"url": url, "path": path, "size": len(DATA)}]}]


@pytest.mark.parametrize("form", list(BAD_PATHS), ids=list(BAD_PATHS))
@pytest.mark.parametrize("field", ["path", "target"])
def test_manifest_paths_that_leave_the_folder_are_refused(server, tmp_path, form, field):  # noqa: F811
    bad = BAD_PATHS[form]
    url = server.add("/x.pth", DATA)
    rows = _rows(url, path=bad) if field == "path" else _rows(url, target=bad)
    with pytest.raises(ValueError, match="absolute path|leave the model folder|NUL"):
        D.load_manifest_json(_write(tmp_path / "m.json", rows))
    # the built-in path (an entry made in code) is guarded too, and nothing is written anywhere
    files = [RemoteFile(url, bad if field == "path" else "ok.pth", size=len(DATA))]
    e = entry("m", "upscale_models", bad if field == "target" else "ok.pth", files)
    models = tmp_path / "models" / "deep" / "er" / "still"
    with pytest.raises(D.DownloadError, match="absolute path|leave the model folder|NUL"):
        D.download_entry(e, models, opener=NO_PROXY, out=io.StringIO(), retries=0)
    assert not server.requests, "nothing may be fetched for a refused entry"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["m.json"]


def _opening(writer, real_open):
    """An `open` for the downloader module: files opened for writing get `writer` (an io.FileIO subclass)."""
    def op(p, mode="r", *a, **k):
        if "w" in mode or "a" in mode:
            return writer(p, mode.replace("b", ""))
        return real_open(p, mode, *a, **k)
    return op


def _write(p: Path, rows) -> str:
    p.write_text(json.dumps(rows))
    return str(p)


def test_cli_refuses_a_manifest_that_leaves_the_folder(server, tmp_path):  # noqa: F811
    rows = _rows(server.add("/x.pth", DATA), path="../../../escaped.pth")
    r = cli("download", "m", "--manifest", _write(tmp_path / "m.json", rows), "--models-dir", str(tmp_path / "a" / "b"))
    assert r.returncode == D.EXIT_USAGE and "would leave the model folder" in r.stderr, r.stderr
    assert not list(tmp_path.rglob("escaped.pth")) and not server.requests


def test_the_built_in_catalogue_passes_the_path_checks():
    for e in CATALOG:
        D.check_entry(e)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.pth", "data:,hello", "/etc/passwd"])
def test_non_http_urls_are_refused(tmp_path, url):
    with pytest.raises(D.DownloadError, match="not http"):
        fetch(url, tmp_path / "x.pth")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="not http"):
        D.load_manifest_json(_write(tmp_path / "m.json", _rows(url)))


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "no-length"])
def test_a_server_sending_more_than_the_declared_size_is_stopped(server, tmp_path, announced):  # noqa: F811
    big = DATA * 5  # 5 MB for an entry that declares 1 MB
    url = server.add("/big.pth", big)
    if not announced:
        server.no_length.add("/big.pth")
    with pytest.raises(D.DownloadError, match="declares"):
        fetch(url, tmp_path / "big.pth", size=len(DATA))
    assert not list(tmp_path.iterdir()), "nothing may stay behind, and nothing beyond the declared size is written"


def test_writing_stops_at_the_declared_size(server, tmp_path, monkeypatch):  # noqa: F811
    """The bytes on disk never exceed the declared size, even while the server keeps sending."""
    url = server.add("/big.pth", DATA * 8)
    server.no_length.add("/big.pth")
    peak = [0]
    real_open = open

    class Watch(io.FileIO):
        def write(self, b):
            n = super().write(b)
            peak[0] = max(peak[0], self.tell())
            return n

    monkeypatch.setattr(F, "open", _opening(Watch, real_open), raising=False)
    with pytest.raises(D.DownloadError):
        fetch(url, tmp_path / "big.pth", size=len(DATA))
    assert 0 < peak[0] <= len(DATA)


def test_zip_bomb_is_refused_before_unpacking(server, tmp_path):  # noqa: F811
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("pack/det.onnx", b"\0" * (64 << 20))  # 64 MB of zeros: a ~64 KB archive
    zdata = buf.getvalue()
    assert len(zdata) < 200_000
    e = entry("pack", "insightface", "pack", [RemoteFile(server.add("/bomb.zip", zdata), "pack", sha256=sha(zdata),
                                                          sha256_source="test", archive="zip")])
    with pytest.raises(D.DownloadError, match="zip bomb"):
        D.download_entry(e, tmp_path, opener=NO_PROXY, out=io.StringIO(), retries=0)
    assert not list(tmp_path.rglob("det.onnx"))
    assert not (tmp_path / "insightface" / "models" / "pack").exists()


def test_an_ordinary_zip_still_unpacks(server, tmp_path):  # noqa: F811
    z = make_zip({"pack/det.onnx": os.urandom(50_000), "pack/rec.onnx": os.urandom(70_000)})
    e = entry("pack", "insightface", "pack", [RemoteFile(server.add("/p.zip", z), "pack", archive="zip")])
    D.download_entry(e, tmp_path, opener=NO_PROXY, out=io.StringIO(), retries=0)
    assert sorted(os.listdir(tmp_path / "insightface" / "models" / "pack")) == ["det.onnx", "rec.onnx"]


@pytest.mark.parametrize("code,says", [(errno.EFBIG, "file-size limit"), (errno.ENOSPC, "the disk is full"),
                                       (errno.EDQUOT, "quota")], ids=["EFBIG", "ENOSPC", "EDQUOT"])
def test_disk_errors_are_reported_as_such(server, tmp_path, monkeypatch, code, says):  # noqa: F811
    url = server.add("/f.pth", DATA)
    real_open = open

    class Failing(io.FileIO):
        def write(self, b):
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(F, "open", _opening(Failing, real_open), raising=False)
    with pytest.raises(D.DownloadError) as ei:
        fetch(url, tmp_path / "f.pth", size=len(DATA), retries=2)
    msg = str(ei.value)
    assert says in msg and "run the same command again" not in msg and "interrupted" not in msg, msg
    assert len([r for r in server.requests if r[0] == "/f.pth"]) == 1, "a disk error is not retried"


def test_real_file_size_limit_in_a_child_process(server, tmp_path):  # noqa: F811
    """The same with a real RLIMIT_FSIZE (ulimit -f): Python ignores SIGXFSZ, so write() fails with EFBIG."""
    import subprocess
    import sys
    import textwrap

    from vk_testing import ROOT

    url = server.add("/f.pth", DATA)
    code = textwrap.dedent(f"""
        import io, resource, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from vk_testing import import_pack
        import_pack()
        from visionkit_pack.tools import downloader as D
        import urllib.request
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            D.fetch({url!r}, {str(tmp_path / 'f.pth')!r}, size={len(DATA)}, out=io.StringIO(), retries=1,
                    opener=urllib.request.build_opener(urllib.request.ProxyHandler({{}})))
        except D.DownloadError as ex:
            print(ex)
    """)
    r = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert "file-size limit" in r.stdout, (r.stdout, r.stderr)
