"""scripts/models (tools/downloader.py) against a loopback HTTP server: resume, checksums, atomic rename,
folder models, licences, workflow extraction, exit codes; and the real manifest's rules.

The server (stdlib http.server in a thread) serves bytes from a dict, honours Range (206 + Content-Range)
unless told to ignore it, and can cut a transfer after N bytes or hold it there until released.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vk_testing import ROOT, import_pack

import_pack()
from visionkit_pack.models.core.catalog import CatalogModel, RemoteFile, by_name  # noqa: E402
from visionkit_pack.tools import download_safety as S  # noqa: E402
from visionkit_pack.tools import downloader as D  # noqa: E402
from visionkit_pack.tools import workflow_models as W  # noqa: E402

CATALOGUE = by_name()

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Server:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cuts: dict[str, list[int]] = {}  # path -> byte counts after which the next responses are cut
        self.holds: dict[str, tuple[int, threading.Event]] = {}  # path -> (bytes, event): stall there
        self.ignore_range = False
        self.no_length: set[str] = set()  # paths answered without Content-Length (the body ends at close)
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                data = srv.files.get(path)
                rng = self.headers.get("Range")
                if data is None:
                    srv.requests.append((path, rng, 404))
                    self.send_error(404)
                    return
                start, status = 0, 200
                m = re.match(r"bytes=(\d+)-$", rng or "")
                if m and not srv.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        srv.requests.append((path, rng, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                srv.requests.append((path, rng, status))
                body = data[start:]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if path in srv.no_length:
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cuts = srv.cuts.get(path)
                if cuts:
                    self.wfile.write(body[:cuts.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if path in srv.holds:
                    n, ev = srv.holds[path]
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    ev.wait(30)
                    body = body[n:]
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def close(self):
        for _, ev in self.holds.values():
            ev.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


def payload(n: int, seed: int = 0) -> bytes:
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def fetch(url, dest, sha256=None, size=None, retries=0, out=None):
    return D.fetch(url, dest, sha256, size, opener=NO_PROXY, out=out or io.StringIO(), retries=retries,
                   timeout=10, source="test")


DATA = payload(1_000_000)


# ---------------------------------------------------------------- one file: resume, checksum, atomic rename
def test_interrupted_transfer_leaves_only_part_then_resume_completes_and_verifies(server, tmp_path):
    url = server.add("/m.pth", DATA)
    server.cuts["/m.pth"] = [300_000]
    dest = tmp_path / "upscale_models" / "m.pth"
    with pytest.raises(D.DownloadError, match="run the same command again to resume") as ei:
        fetch(url, dest, sha(DATA), len(DATA))
    assert not isinstance(ei.value, S.ChecksumError)
    assert not dest.exists()
    part = dest.with_name("m.pth.part")
    assert part.read_bytes() == DATA[:300_000]
    assert os.listdir(dest.parent) == ["m.pth.part"]

    out = io.StringIO()
    fetch(url, dest, sha(DATA), len(DATA), out=out)
    assert dest.read_bytes() == DATA and not part.exists()
    assert server.requests[-1] == ("/m.pth", "bytes=300000-", 206)  # only the rest was asked for
    assert "resuming at" in out.getvalue() and "sha256 verified" in out.getvalue()


def test_automatic_retry_resumes_after_a_cut(server, tmp_path):
    url = server.add("/m.pth", DATA)
    server.cuts["/m.pth"] = [123_457, 400_000]  # cut twice
    dest = tmp_path / "m.pth"
    fetch(url, dest, sha(DATA), retries=2)
    assert dest.read_bytes() == DATA
    assert [r[1] for r in server.requests] == [None, "bytes=123457-", "bytes=523457-"]


def test_server_ignoring_range_starts_over(server, tmp_path):
    url = server.add("/m.pth", DATA)
    dest = tmp_path / "m.pth"
    dest.with_name("m.pth.part").write_bytes(DATA[:250_000])
    server.ignore_range = True
    out = io.StringIO()
    fetch(url, dest, sha(DATA), len(DATA), out=out)
    assert dest.read_bytes() == DATA  # not the prefix twice
    assert server.requests == [("/m.pth", "bytes=250000-", 200)]
    assert "ignored the resume request" in out.getvalue()


def test_wrong_checksum_is_refused_and_removed(server, tmp_path):
    url = server.add("/m.pth", DATA)
    dest = tmp_path / "m.pth"
    with pytest.raises(S.ChecksumError, match="is not the published") as ei:
        fetch(url, dest, sha(b"another file"), len(DATA))
    assert "removed" in str(ei.value)
    assert os.listdir(tmp_path) == []  # neither the final name nor a .part


def test_damaged_partial_file_is_caught_by_the_checksum_and_a_rerun_recovers(server, tmp_path):
    url = server.add("/m.pth", DATA)
    dest = tmp_path / "m.pth"
    part = dest.with_name("m.pth.part")
    part.write_bytes(b"\0" * 200_000)  # not a prefix of the file: resuming after it gives a wrong file
    with pytest.raises(S.ChecksumError):
        fetch(url, dest, sha(DATA), len(DATA))
    assert not part.exists() and not dest.exists()
    fetch(url, dest, sha(DATA), len(DATA))
    assert dest.read_bytes() == DATA


def test_complete_part_is_checked_without_a_new_transfer(server, tmp_path):
    url = server.add("/m.pth", DATA)
    dest = tmp_path / "m.pth"
    dest.with_name("m.pth.part").write_bytes(DATA)
    fetch(url, dest, sha(DATA), len(DATA))
    assert server.requests == [] and dest.read_bytes() == DATA
    dest.unlink()
    dest.with_name("m.pth.part").write_bytes(DATA)  # size unknown: the server answers 416 for the range
    fetch(url, dest, sha(DATA), None)
    assert server.requests == [("/m.pth", "bytes=1000000-", 416)] and dest.read_bytes() == DATA


def test_no_partial_file_under_the_final_name_during_a_transfer(server, tmp_path):
    url = server.add("/m.pth", DATA)
    ev = threading.Event()
    server.holds["/m.pth"] = (600_000, ev)
    dest = tmp_path / "m.pth"
    part = dest.with_name("m.pth.part")
    errors = []
    t = threading.Thread(target=lambda: _catch(errors, fetch, url, dest, sha(DATA), len(DATA)))
    t.start()
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size >= 600_000) and time.monotonic() < deadline:
        assert not dest.exists()
        time.sleep(0.01)
    assert part.stat().st_size == 600_000 and not dest.exists()
    ev.set()
    t.join(20)
    assert not errors and dest.read_bytes() == DATA and not part.exists()


def _catch(errors, fn, *a):
    try:
        fn(*a)
    except Exception as ex:  # reported by the test
        errors.append(ex)


def test_http_error_is_clear(server, tmp_path):
    with pytest.raises(D.DownloadError, match="HTTP 404"):
        fetch(server.url("/missing.pth"), tmp_path / "x.pth", retries=3)
    assert os.listdir(tmp_path) == []
    assert len(server.requests) == 1  # an HTTP error is not retried


# ---------------------------------------------------------------- entries: unverified, folders, archives
def entry(name, folder, target, files, **kw):
    return CatalogModel(name, target, folder, "", "", kw.pop("licence", "MIT"), files=tuple(files), **kw)


def test_unverified_entry_downloads_with_a_warning(server, tmp_path):
    e = entry("tiny", "upscale_models", "t.pth", [RemoteFile(server.add("/t.pth", DATA), "t.pth")])
    out = io.StringIO()
    D.download_entry(e, tmp_path, opener=NO_PROXY, out=out, retries=0)
    text = out.getvalue()
    assert "warning: tiny has no published sha256" in text and "UNVERIFIED" in text and sha(DATA) in text
    assert (tmp_path / "upscale_models" / "t.pth").read_bytes() == DATA


def test_folder_model_appears_only_when_complete(server, tmp_path):
    cfg, weights = b'{"model_type": "clip"}', payload(300_000, 1)
    files = [RemoteFile(server.add("/c/config.json", cfg), "tiny-clip/config.json"),
             RemoteFile(server.add("/c/model.safetensors", weights), "tiny-clip/model.safetensors",
                        sha256=sha(weights), sha256_source="test")]
    e = entry("tiny-clip", "clip_models", "tiny-clip", files)
    server.cuts["/c/model.safetensors"] = [100_000]
    with pytest.raises(D.DownloadError):
        D.download_entry(e, tmp_path, opener=NO_PROXY, out=io.StringIO(), retries=0)
    d = tmp_path / "clip_models"
    assert os.listdir(d) == [D.STAGING]  # nothing under the model's name, and the stage is hidden
    D.download_entry(e, tmp_path, opener=NO_PROXY, out=io.StringIO(), retries=0)
    assert sorted(os.listdir(d)) == ["tiny-clip"]
    assert (d / "tiny-clip" / "model.safetensors").read_bytes() == weights
    assert (d / "tiny-clip" / "config.json").read_bytes() == cfg
    assert ("/c/config.json", None, 200) in server.requests
    assert server.requests.count(("/c/config.json", None, 200)) == 1  # kept from the first run


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return buf.getvalue()


@pytest.mark.parametrize("top", ["", "pack/"])
def test_zip_pack_is_unpacked_into_its_folder(server, tmp_path, top):
    z = make_zip({f"{top}det.onnx": b"d", f"{top}rec.onnx": b"r"})
    e = entry("pack", "insightface", "pack", [RemoteFile(server.add("/pack.zip", z), "pack", sha256=sha(z),
                                                          sha256_source="test", archive="zip")],
              licence="non-commercial research only", non_commercial=True)
    D.download_entry(e, tmp_path, opener=NO_PROXY, out=io.StringIO(), retries=0)
    d = tmp_path / "insightface" / "models"
    assert os.listdir(d) == ["pack"]  # the stage and the zip are gone
    assert sorted(os.listdir(d / "pack")) == ["det.onnx", "rec.onnx"]


def test_zip_member_leaving_the_folder_is_refused(server, tmp_path):
    z = make_zip({"pack/ok.onnx": b"x", "../../evil.txt": b"boom"})
    e = entry("pack", "insightface", "pack", [RemoteFile(server.add("/p.zip", z), "pack", archive="zip")])
    with pytest.raises(D.DownloadError, match="would leave the model folder"):
        D.download_entry(e, tmp_path, opener=NO_PROXY, out=io.StringIO(), retries=0)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "insightface" / "evil.txt").exists()
    assert not (tmp_path / "insightface" / "models" / "pack").exists()


# ---------------------------------------------------------------- what a workflow needs
def test_workflow_extraction_api_and_ui_formats():
    api = {
        "1": {"class_type": "VisionKitSAMLoader", "inputs": {"model_name": "sam_vit_b_01ec64.pth", "device": "auto"}},
        "2": {"class_type": "VisionKitPipelineLoader",
              "inputs": {"model_name": "checkpoints/v1-5-pruned-emaonly.safetensors", "vae_name": "(from checkpoint)"}},
        "3": {"class_type": "VisionKitUpscaleModelLoader", "inputs": {"model_name": "4x-UltraSharp.pth"}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "VisionKitFaceAnalysisLoader", "inputs": {"pack_name": "antelopev2"}},
        "6": {"class_type": "VisionKitSAMSegment", "inputs": {"points": "{}", "sam_model": ["1", 0]}},
    }
    entries, unknown = W.needed_by_workflow(api, CATALOGUE)
    assert sorted(e.name for e in entries) == ["antelopev2", "sam-b", "sd15"]  # core nodes are not VisionKit's
    assert unknown == ["4x-UltraSharp.pth (VisionKitUpscaleModelLoader)"]
    assert W.needed_by_workflow({"prompt": api}, CATALOGUE)[0] == entries

    ui = {"nodes": [
        {"id": 1, "type": "VisionKitUpscaleModelLoader", "widgets_values": ["RealESRGAN_x4plus.pth", "auto"]},
        {"id": 2, "type": "VisionKitCLIPLoader", "widgets_values": ["clip-vit-base-patch32", "auto"]},
        {"id": 3, "type": "VisionKitLoraLoader", "widgets_values": ["my_style.safetensors", 0.8, 1.0]},
        {"id": 4, "type": "LoadImage", "widgets_values": ["photo.png", "image"]}],
        "definitions": {"subgraphs": [{"nodes": [
            {"type": "VisionKitControlNetLoader", "widgets_values": ["control_v11p_sd15_canny_fp16.safetensors"]}]}]}}
    entries, unknown = W.needed_by_workflow(ui, CATALOGUE)
    assert sorted(e.name for e in entries) == ["clip-b32", "controlnet-canny-sd15", "realesrgan-x4plus"]
    assert unknown == ["my_style.safetensors (VisionKitLoraLoader)"]
    with pytest.raises(ValueError, match="not a ComfyUI workflow"):
        W.needed_by_workflow([1, 2], CATALOGUE)


# ---------------------------------------------------------------- where models go
def test_default_models_dir_inside_comfyui_env_and_default(tmp_path):
    comfy = tmp_path / "ComfyUI"
    pack = comfy / "custom_nodes" / "ComfyUI-VisionKit"
    pack.mkdir(parents=True)
    (comfy / "main.py").write_text("")
    d, why = D.default_models_dir(pack, env={"VISIONKIT_MODELS_DIR": "/elsewhere"})
    assert d == comfy / "models" and "ComfyUI's models folder" in why
    d, why = D.default_models_dir(tmp_path / "repo", env={"VISIONKIT_MODELS_DIR": f"/a/b{os.pathsep}/c"})
    assert d == Path("/a/b") and "VISIONKIT_MODELS_DIR" in why
    d, why = D.default_models_dir(tmp_path / "repo", env={})
    assert d == Path.home() / ".cache" / "visionkit" / "models" and "default" in why


def test_models_dir_when_linked_into_custom_nodes(tmp_path):
    """A link in ComfyUI/custom_nodes (how ./scripts/start installs the pack) counts as inside ComfyUI."""
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "folder_paths.py").write_text("")
    link = comfy / "custom_nodes" / "VK"
    link.symlink_to(ROOT, target_is_directory=True)
    out = subprocess.run([str(link / "scripts" / "models"), "list", "--json"], capture_output=True, text=True,
                         timeout=120, env=cli_env())
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["models_dir"] == str(comfy / "models") and "ComfyUI" in report["models_dir_from"]


# ---------------------------------------------------------------- the command line
def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "VISIONKIT_MODELS_DIR"}
    env["VISIONKIT_PYTHON"] = sys.executable
    return env


def cli(*args, timeout=120):
    return subprocess.run([str(ROOT / "scripts" / "models"), *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env())


@pytest.fixture()
def test_manifest(server, tmp_path):
    small, free_pack = payload(50_000, 2), make_zip({"nc/a.onnx": b"a"})
    server.add("/small.pth", small)
    server.add("/bad.pth", b"not what the manifest says")
    server.add("/nc.zip", free_pack)
    rows = [
        {"name": "small", "folder": "upscale_models", "target": "small.pth", "licence": "BSD-3-Clause",
         "files": [{"url": server.url("/small.pth"), "path": "small.pth", "size": len(small), "sha256": sha(small),
                    "sha256_source": "https://example.invalid/published"}]},
        {"name": "bad", "folder": "sams", "target": "bad.pth", "licence": "Apache-2.0",
         "files": [{"url": server.url("/bad.pth"), "path": "bad.pth", "sha256": "0" * 64,
                    "sha256_source": "https://example.invalid/published"}]},
        {"name": "nc", "folder": "insightface", "target": "nc", "licence": "non-commercial research only",
         "non_commercial": True, "note": "research only",
         "files": [{"url": server.url("/nc.zip"), "path": "nc", "archive": "zip"}]},
    ]
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps(rows))
    return str(p)


def test_cli_list_download_and_exit_codes(test_manifest, tmp_path):
    models = str(tmp_path / "models")
    common = ("--manifest", test_manifest, "--models-dir", models)
    r = cli("list", "--json", *common)
    assert r.returncode == 0, r.stderr
    rows = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert rows["small"]["present"] is False and rows["small"]["checksum"] == "verified"
    assert rows["nc"]["checksum"] == "unverified" and rows["nc"]["non_commercial"] is True

    assert cli("download", "nope", *common).returncode == D.EXIT_USAGE
    assert cli("download", *common).returncode == D.EXIT_USAGE  # nothing named

    r = cli("download", "small", *common)
    assert r.returncode == 0, r.stderr
    assert "100.0%" in r.stderr and "sha256 verified" in r.stderr
    r = cli("list", *common)
    assert re.search(r"small\s+upscale_models\s+50\.0 KB\s+present\s+verified", r.stdout), r.stdout
    assert "[NON-COMMERCIAL]" in r.stdout and f"models folder: {models} (from --models-dir)" in r.stdout

    r = cli("download", "bad", *common)
    assert r.returncode == D.EXIT_FAILED and "is not the published" in r.stderr
    assert not os.listdir(Path(models) / "sams")

    r = cli("download", "nc", *common)
    assert r.returncode == D.EXIT_LICENCE and "LICENCE of nc: non-commercial research only" in r.stdout
    assert "--accept-licence" in r.stderr and not (Path(models) / "insightface").exists()
    r = cli("download", "nc", "--accept-licence", *common)
    assert r.returncode == 0, r.stderr
    assert "UNVERIFIED" in r.stderr
    assert os.listdir(Path(models) / "insightface" / "models" / "nc") == ["a.onnx"]
    r = cli("download", "small", *common)
    assert r.returncode == 0 and "already present" in r.stdout


def test_cli_download_workflow(test_manifest, tmp_path):
    models = tmp_path / "models"
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "VisionKitUpscaleModelLoader", "inputs": {"model_name": "small.pth"}},
        "2": {"class_type": "VisionKitSAMLoader", "inputs": {"model_name": "sam_custom.pth"}}}))
    r = cli("download", "--workflow", str(wf), "--dry-run", "--manifest", test_manifest, "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert "would download small" in r.stdout and "sam_custom.pth (VisionKitSAMLoader)" in r.stdout
    assert not models.exists()
    r = cli("download", "--workflow", str(wf), "--manifest", test_manifest, "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert (models / "upscale_models" / "small.pth").stat().st_size == 50_000
    wf.write_text("{not json")
    r = cli("download", "--workflow", str(wf), "--manifest", test_manifest, "--models-dir", str(models))
    assert r.returncode == D.EXIT_USAGE and "cannot read the workflow" in r.stderr


# ---------------------------------------------------------------- the real catalogue's downloads
def test_catalogue_downloads_have_cited_checksums():
    for name, m in CATALOGUE.items():
        assert m.files and m.page.startswith("https://"), name
        for f in m.files:
            assert f.url.startswith("https://"), f
            if f.sha256 is not None:
                assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), f
                assert f.sha256_source and f.sha256_source.startswith("https://"), f  # never without a source
            else:
                assert f.sha256_source is None
        assert W.match_value(m.file, CATALOGUE) is m  # the README's file name finds its model
        assert W.match_value(m.target, CATALOGUE) is m  # and so does the name the download gives
    # the verified ones (see the catalogue's docstring for the sources)
    verified = sorted(n for n, m in CATALOGUE.items() if m.verification == "verified")
    assert {"sam-b", "sam-l", "sam-h", "realesrgan-x4plus", "sdxl", "ipadapter-sd15"} <= set(verified)
    assert CATALOGUE["antelopev2"].verification == "unverified"  # no published checksum found: said so


def test_the_pack_never_imports_the_downloader():
    """Opt-in only: no pack module imports tools/ (the downloader and its helpers), and importing the pack loads
    none of them (tests/test_layers.py checks the import graph as a whole)."""
    offenders = []
    for p in list(ROOT.glob("*.py")) + list((ROOT / "models").rglob("*.py")) + list((ROOT / "nodes").rglob("*.py")):
        text = p.read_text(encoding="utf-8")
        if re.search(r"(from|import)\s+[.\w]*\btools\b", text):
            offenders.append(str(p.relative_to(ROOT)))
    assert offenders == []
    code = ("import sys; sys.path.insert(0, %r); from vk_testing import import_pack; import_pack(); "
            "print(sorted(m for m in sys.modules if m.split('.')[1:2] == ['tools']))"
            % str(ROOT / "tests"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "VISIONKIT_STANDALONE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
