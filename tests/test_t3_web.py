"""T3: the canvas extension in a real browser (Playwright + Chromium) on the real ComfyUI page.

- SAM point/box editor: scripted clicks (left = include, right = exclude) and drags on the enlarged
  image write DESIGN.md's points JSON in pixels of the image; the prompt queued from the page gives the
  same mask as the same JSON sent over the HTTP API; the overlay shows on the node after the run.
- Model cache sidebar tab: shows a model once a prompt loaded it (refreshing by itself), purges one
  entry and everything (checked against GET /visionkit/cache).
- Missing-model help: on a server whose model folders are empty, a loader says which folder to fill and
  with which file; after the file is added and the lists refreshed, the notice goes.

Skipped when Chromium or Playwright is missing (VISIONKIT_CHROMIUM overrides /usr/bin/chromium).
Screenshots go to a temp folder (printed); with VISIONKIT_UPDATE_SCREENSHOTS=1 also into docs/screenshots/.
The page can reach the loopback server only: every other request is aborted (ComfyUI's frontend itself
asks api.comfy.org for release notes; the pack's scripts only call the server).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vk_testing import ROOT, tiers
from vk_testing.browser import DEPRECATION_HOOK, PACK_SCRIPTS
from vk_testing.comfy_checkouts import find_comfyui_dir, frontend_args
from vk_testing.comfy_server import ComfyServer, comfy_primary  # noqa: F401  (comfy_primary: the session fixture)

pytestmark = [pytest.mark.t3, pytest.mark.slow]

CHROMIUM = os.environ.get("VISIONKIT_CHROMIUM", "/usr/bin/chromium")
PACK_URL = "/extensions/ComfyUI-VisionKit/js/"
SAM_FILE = "tiny_sam_vit.pth"
VIEWPORT = {"width": 1400, "height": 900}

# The scripted editing session, in pixels of the 64×48 test image (each action hits a pixel's centre).
CLICK_INCLUDE = (10, 12)
CLICK_EXCLUDE = (40, 30)  # right button
DRAG_BOX = ((5, 6), (30, 20))  # top-left to bottom-right
DRAG_BOX_REVERSED = ((50, 40), (35, 25))  # bottom-right to top-left: the editor normalises it
EXPECTED = {"points": [[10, 12, 1], [40, 30, 0]], "boxes": [[5, 6, 31, 21], [35, 25, 51, 41]]}


@pytest.fixture(scope="session")
def comfy(comfy_primary):  # noqa: F811
    """The full T3 set runs on the primary ComfyUI with its pinned frontend (the others: test_t3_frontends.py)."""
    return comfy_primary


# ---------------------------------------------------------------- browser fixtures
def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        tiers.missing("T3", "playwright is not installed (pip install playwright; Chromium from the system: "
                      "apt install chromium)")
    if not os.path.exists(CHROMIUM):
        tiers.missing("T3", f"no Chromium at {CHROMIUM} (apt install chromium, or set VISIONKIT_CHROMIUM)")
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory):
    """shots(page, name): a screenshot in the test-output folder (and docs/screenshots/ when asked)."""
    out = tmp_path_factory.mktemp("t3_screenshots")
    update = os.environ.get("VISIONKIT_UPDATE_SCREENSHOTS") == "1"

    def take(page, name: str, **kw) -> Path:
        path = out / f"{name}.png"
        page.screenshot(path=str(path), **kw)
        if update:
            docs = ROOT / "docs" / "screenshots"
            docs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, docs / path.name)
        return path

    take.folder = out
    yield take
    print(f"\nT3 screenshots: {out}")


class Page:
    """A page of the ComfyUI app on one server, with the errors the page raised."""

    def __init__(self, browser, server):
        self.server = server
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.console: list[str] = []  # warnings and errors from the pack (see vk_testing.browser)
        _settings(server)
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.route("**/*", self._route)
        self.context.add_init_script(script=f"({DEPRECATION_HOOK})({json.dumps(PACK_SCRIPTS)})")
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(f"{e}\n{e.stack or ''}"))
        self.page.on("console", lambda m: m.type in ("warning", "error") and (
            "VisionKit" in m.text or PACK_SCRIPTS in m.text or PACK_SCRIPTS in (m.location or {}).get("url", "")
            or m.text.startswith("[ComfyUI Notice]")) and self.console.append(m.text))
        self.page.goto(server.url)
        self.page.wait_for_function(
            "() => window.app?.graph && window.LiteGraph?.registered_node_types?.VisionKitSAMSegment"
            " && app.extensions?.some((e) => e.name === 'VisionKit.ModelCachePanel')", timeout=90_000)

    def _route(self, route):
        host = urllib.parse.urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def pack_errors(self) -> list[str]:
        """Page errors raised in the pack's own scripts."""
        return [e for e in self.errors if PACK_URL in e]

    def close(self):
        self.context.close()


def _settings(server) -> None:
    """The tutorial would cover the canvas: mark it done (keeping any settings already there)."""
    path = Path(server.base_dir) / "user" / "default" / "comfy.settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update({"Comfy.TutorialCompleted": True})
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def shared_page(browser, comfy):  # noqa: F811
    """One loaded page for the tests on the shared server (a page load costs ~10 s here)."""
    p = Page(browser, comfy)
    yield p
    p.close()


@pytest.fixture()
def page(shared_page):
    """The shared page, reset: no editor open, no sidebar tab open; fails the test on the pack's page errors."""
    pg = shared_page.page
    if pg.query_selector(".vk-sam-editor"):
        pg.keyboard.press("Escape")
        pg.wait_for_selector(".vk-sam-editor", state="detached")
    pg.evaluate("() => { const s = app.extensionManager?.sidebarTab; if (s?.activeSidebarTabId) "
                "s.toggleSidebarTab(s.activeSidebarTabId); }")
    seen, seen_console = len(shared_page.errors), len(shared_page.console)
    yield shared_page
    errors = [e for e in shared_page.errors[seen:] if PACK_URL in e]
    assert not errors, "the pack's scripts raised in the page:\n" + "\n".join(errors)
    console = shared_page.console[seen_console:]
    assert not console, "the pack's console warnings/errors:\n" + "\n".join(console)


# ---------------------------------------------------------------- server helpers
def upload_image(server, name: str, img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + buf.getvalue() + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n"
        f"--{boundary}--\r\n").encode()
    req = urllib.request.Request(server.url + "/upload/image", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as r:
        out = json.loads(r.read())
    return (out["subfolder"] + "/" if out.get("subfolder") else "") + out["name"]


def sample_image() -> Image.Image:
    """64×48: a bright rectangle on a noisy dark background (something for SAM to find)."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 40, (48, 64, 3), dtype=np.uint8)
    arr[10:30, 8:40] = [220, 180, 40]
    return Image.fromarray(arr)


def fetch_image(server, ref: dict) -> np.ndarray:
    q = urllib.parse.urlencode({"filename": ref["filename"], "subfolder": ref.get("subfolder", ""),
                                "type": ref.get("type", "output")})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{server.url}/view?{q}", timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("L"))


def wait_new_history(server, before: set, timeout: float = 120) -> dict:
    """The first prompt that finished after `before` (a set of prompt ids) was taken."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = server.get_json("/history")
        for pid, entry in hist.items():
            if pid not in before and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
        time.sleep(0.2)
    raise AssertionError(f"no prompt finished within {timeout:.0f} s\n{server.log_tail()}")


def sam_prompt(image: str, points: str, prefix: str, threshold: float = 0.0) -> dict:
    """LoadImage → SAM loader → SAM Segment (points) → mask as image → SaveImage (API format)."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "VisionKitSAMLoader", "inputs": {"model_name": SAM_FILE, "dtype": "fp32"}},
        "3": {"class_type": "VisionKitSAMSegment", "inputs": {
            "sam_model": ["2", 0], "image": ["1", 0], "multimask": "best score", "mask_threshold": threshold,
            "dilation": 0, "feather": 0, "output": "union", "points": points}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": prefix}},
    }


# ---------------------------------------------------------------- page helpers
BUILD_GRAPH = """({image, prefix}) => {
  app.graph.clear();
  const add = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; app.graph.add(n); return n; };
  const widget = (n, name) => n.widgets.find((w) => w.name === name);
  const load = add("LoadImage", [150, 120]);
  if (image !== null) widget(load, "image").value = image;
  const loader = add("VisionKitSAMLoader", [150, 520]);
  widget(loader, "model_name").value = "$SAM_FILE$";
  const seg = add("VisionKitSAMSegment", [560, 120]);
  if (image !== null) load.connect(0, seg, seg.findInputSlot("image"));
  loader.connect(0, seg, seg.findInputSlot("sam_model"));
  const toImage = add("MaskToImage", [980, 120]);
  seg.connect(0, toImage, 0);
  const save = add("SaveImage", [980, 300]);
  toImage.connect(0, save, 0);
  widget(save, "filename_prefix").value = prefix;
  app.canvas.ds.offset = [0, 0];
  app.canvas.ds.scale = 1;
  app.graph.setDirtyCanvas(true, true);
  window.__vkt = { load, loader, seg, save };
  return { seg: String(seg.id), save: String(save.id) };
}""".replace("$SAM_FILE$", SAM_FILE)

POINTS_VALUE = "() => __vkt.seg.widgets.find((w) => w.name === 'points').value"


def click_node_button(page, node_js: str, name: str) -> None:
    """Click a canvas button widget with the mouse, where the canvas draws it."""
    page.wait_for_timeout(300)  # one frame at least: widgets get their y when the node is drawn
    x, y = page.evaluate("""([name]) => {
      const n = $NODE$, w = n.widgets.find((w) => w.name === name);
      const gy = n.pos[1] + (w.last_y ?? w.y) + LiteGraph.NODE_WIDGET_HEIGHT / 2;
      const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0] / 2, gy]);
      const r = app.canvas.canvas.getBoundingClientRect();
      return [r.left + cx, r.top + cy];
    }""".replace("$NODE$", node_js), [name])
    page.mouse.click(x, y)


def editor_geometry(page):
    page.wait_for_selector(".vk-sam-canvas[data-natural-width]", state="visible", timeout=20_000)
    return page.evaluate("""() => {
      const c = document.querySelector('.vk-sam-canvas'), r = c.getBoundingClientRect();
      return {left: r.left, top: r.top, width: r.width, height: r.height,
              w: +c.dataset.naturalWidth, h: +c.dataset.naturalHeight};
    }""")


def at(geo, px: int, py: int) -> tuple[float, float]:
    """Screen position of the centre of image pixel (px, py), through the editor's display scale."""
    return (geo["left"] + (px + 0.5) * geo["width"] / geo["w"], geo["top"] + (py + 0.5) * geo["height"] / geo["h"])


def drag(page, geo, a, b) -> None:
    page.mouse.move(*at(geo, *a))
    page.mouse.down()
    mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    page.mouse.move(*at(geo, *mid), steps=4)
    page.mouse.move(*at(geo, *b), steps=4)
    page.mouse.up()


def edit_points_with_mouse(page, shots=None) -> dict:
    """Open the editor from the node's button, click and drag the scripted session, save; the widget's JSON."""
    click_node_button(page, "__vkt.seg", "Edit points")
    geo = editor_geometry(page)
    assert (geo["w"], geo["h"]) == (64, 48), geo
    assert geo["width"] > 2 * geo["w"], f"the small image should be shown enlarged: {geo}"
    page.mouse.click(*at(geo, *CLICK_INCLUDE))
    page.mouse.click(*at(geo, *CLICK_EXCLUDE), button="right")
    drag(page, geo, *DRAG_BOX)
    drag(page, geo, *DRAG_BOX_REVERSED)
    assert page.inner_text(".vk-sam-status").startswith("1 include · 1 exclude · 2 boxes")
    if shots:
        shots(page, "sam_editor")
    page.click(".vk-sam-editor button[data-action=save]")
    page.wait_for_selector(".vk-sam-editor", state="detached")
    return json.loads(page.evaluate(POINTS_VALUE))


# ---------------------------------------------------------------- the SAM editor
def test_sam_editor_writes_points_json_in_image_pixels(page, comfy, shots):  # noqa: F811
    pg = page.page
    name = upload_image(comfy, f"vk_t3_{uuid.uuid4().hex[:8]}.png", sample_image())
    pg.evaluate(BUILD_GRAPH, {"image": name, "prefix": "vk_t3_unused"})
    assert edit_points_with_mouse(pg, shots) == EXPECTED
    # integers only, and the text is what goes into the prompt
    prompt = pg.evaluate("async () => (await app.graphToPrompt()).output")
    seg = prompt[pg.evaluate("() => String(__vkt.seg.id)")]
    assert json.loads(seg["inputs"]["points"]) == EXPECTED
    assert all(isinstance(v, int) for row in EXPECTED["points"] + EXPECTED["boxes"] for v in row)
    assert "Edit points" not in seg["inputs"], "the button must not be sent as an input"
    # the saved workflow keeps it (widget values), the button is not saved
    wf = pg.evaluate("() => app.graph.serialize().nodes.find((n) => n.id === __vkt.seg.id).widgets_values")
    assert json.dumps(EXPECTED, separators=(",", ":")) in wf and "Edit points" not in json.dumps(wf)

    # re-opening shows the saved prompt; Shift+click excludes; Undo; Clear then Cancel changes nothing
    click_node_button(pg, "__vkt.seg", "Edit points")
    geo = editor_geometry(pg)
    assert pg.inner_text(".vk-sam-status").startswith("1 include · 1 exclude · 2 boxes")
    pg.keyboard.down("Shift")
    pg.mouse.click(*at(geo, 60, 2))
    pg.keyboard.up("Shift")
    assert pg.inner_text(".vk-sam-status").startswith("1 include · 2 exclude · 2 boxes")
    pg.click(".vk-sam-editor button[data-action=undo]")
    assert pg.inner_text(".vk-sam-status").startswith("1 include · 1 exclude · 2 boxes")
    pg.click(".vk-sam-editor button[data-action=clear]")
    assert pg.inner_text(".vk-sam-status").startswith("0 include · 0 exclude · 0 boxes")
    pg.click(".vk-sam-editor button[data-action=cancel]")
    pg.wait_for_selector(".vk-sam-editor", state="detached")
    assert json.loads(pg.evaluate(POINTS_VALUE)) == EXPECTED
    # Clear + Save = no prompt (empty string); Escape closes without saving
    click_node_button(pg, "__vkt.seg", "Edit points")
    editor_geometry(pg)
    pg.keyboard.press("Escape")
    pg.wait_for_selector(".vk-sam-editor", state="detached")
    assert json.loads(pg.evaluate(POINTS_VALUE)) == EXPECTED
    click_node_button(pg, "__vkt.seg", "Edit points")
    editor_geometry(pg)
    pg.click(".vk-sam-editor button[data-action=clear]")
    pg.click(".vk-sam-editor button[data-action=save]")
    assert pg.evaluate(POINTS_VALUE) == ""


def test_sam_editor_points_give_the_same_mask_as_the_api(page, comfy, shots):  # noqa: F811
    pg = page.page
    img = sample_image()
    tag = uuid.uuid4().hex[:8]
    # The same pixels under two names: the API run cannot reuse the browser run's cached SAM output.
    name_ui = upload_image(comfy, f"vk_t3_ui_{tag}.png", img)
    name_api = upload_image(comfy, f"vk_t3_api_{tag}.png", img)
    ids = pg.evaluate(BUILD_GRAPH, {"image": name_ui, "prefix": f"vk_t3_ui_{tag}"})
    points = edit_points_with_mouse(pg)
    assert points == EXPECTED

    before = set(comfy.get_json("/history"))
    pg.evaluate("async () => { await app.queuePrompt(0, 1); }")
    entry = wait_new_history(comfy, before)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    ui_ref = entry["outputs"][ids["save"]]["images"][0]

    # the SAM node shows its overlay once the run is done
    previews = entry["outputs"][ids["seg"]]["images"]
    assert previews and previews[0]["type"] == "temp", entry["outputs"]
    pg.wait_for_function("() => __vkt.seg.imgs?.length > 0 && __vkt.seg.imgs[0].complete "
                         "&& __vkt.seg.imgs[0].naturalWidth === 64", timeout=20_000)
    shots(pg, "sam_preview_on_node")

    hand_written = json.dumps({"points": [[10, 12, 1], [40, 30, 0]], "boxes": [[5, 6, 31, 21], [35, 25, 51, 41]]})
    api_entry = comfy.run_prompt(sam_prompt(name_api, hand_written, f"vk_t3_api_{tag}"))
    api_ref = api_entry["outputs"]["5"]["images"][0]
    mask_ui, mask_api = fetch_image(comfy, ui_ref), fetch_image(comfy, api_ref)
    assert mask_ui.shape == (48, 64)
    np.testing.assert_array_equal(mask_ui, mask_api)
    assert mask_ui.any(), "the prompt should select something (a box prompt always gives SAM pixels)"
    # and the node really used the points: no prompt at all gives an empty mask
    empty = comfy.run_prompt(sam_prompt(name_api, "", f"vk_t3_none_{tag}"))
    assert not fetch_image(comfy, empty["outputs"]["5"]["images"][0]).any()


def test_sam_editor_says_when_it_cannot_show_the_image(page, comfy):  # noqa: F811
    pg = page.page
    pg.evaluate(BUILD_GRAPH, {"image": None, "prefix": "vk_t3_unused"})
    click_node_button(pg, "__vkt.seg", "Edit points")
    pg.wait_for_selector(".vk-sam-message:not(:empty)")
    assert "Connect the node's image input to a Load Image node" in pg.inner_text(".vk-sam-message")
    assert pg.is_disabled(".vk-sam-editor button[data-action=save]")
    pg.click(".vk-sam-editor button[data-action=cancel]")
    # an image that comes from another node: the editor cannot know it before the run
    pg.evaluate("""() => { const e = LiteGraph.createNode("EmptyImage"); e.pos = [150, 700]; app.graph.add(e);
                           e.connect(0, __vkt.seg, __vkt.seg.findInputSlot("image")); }""")
    click_node_button(pg, "__vkt.seg", "Edit points")
    pg.wait_for_selector(".vk-sam-message:not(:empty)")
    text = pg.inner_text(".vk-sam-message")
    assert "EmptyImage" in text and "not from a Load Image node" in text, text
    pg.keyboard.press("Escape")
    pg.wait_for_selector(".vk-sam-editor", state="detached")


# ---------------------------------------------------------------- the cache panel
def panel_keys(pg) -> list[str]:
    return pg.evaluate("() => [...document.querySelectorAll('.vk-cache-entry')].map((e) => e.dataset.key)")


def sam_keys(server) -> list[str]:
    return [e["key"] for e in server.get_json("/visionkit/cache")["entries"]
            if os.path.basename(e["path"]) == SAM_FILE]


def test_cache_panel_shows_models_and_purges(page, comfy, shots):  # noqa: F811
    pg = page.page
    name = upload_image(comfy, f"vk_t3_cache_{uuid.uuid4().hex[:8]}.png", sample_image())
    pg.evaluate(BUILD_GRAPH, {"image": name, "prefix": "vk_t3_cache"})  # the graph behind the panel
    comfy.post_json("/visionkit/cache/purge", {})
    pg.click(".visionkit-cache-tab-button")
    pg.wait_for_selector(".vk-cache [data-role=empty]", timeout=20_000)
    assert pg.is_disabled(".vk-cache button[data-action=purge-all]")

    # a prompt that loads SAM: the open panel shows it by itself (server events / its poll)
    points = json.dumps({"boxes": [[5, 6, 31, 21]]})
    comfy.run_prompt(sam_prompt(name, points, "vk_t3_cache", threshold=0.1))
    keys = sam_keys(comfy)
    assert len(keys) == 1, comfy.get_json("/visionkit/cache")
    pg.wait_for_function("(key) => [...document.querySelectorAll('.vk-cache-entry')].some((e) => e.dataset.key === key)",
                         arg=keys[0], timeout=20_000)
    row = pg.inner_text(f".vk-cache-entry[data-key='{keys[0]}']")
    assert SAM_FILE in row and "sam" in row and "cpu" in row and "MB" in row, row
    summary = pg.inner_text(".vk-cache [data-role=summary]")
    assert summary.startswith(f"{len(panel_keys(pg))} model"), summary
    shots(pg, "cache_panel")

    # one entry's Purge button
    pg.click(f".vk-cache-entry[data-key='{keys[0]}'] button[data-action=purge]")
    pg.wait_for_function("(key) => ![...document.querySelectorAll('.vk-cache-entry')].some((e) => e.dataset.key === key)",
                         arg=keys[0], timeout=20_000)
    assert not sam_keys(comfy)

    # load again (another threshold: SAM Segment runs again), then Purge all
    comfy.run_prompt(sam_prompt(name, points, "vk_t3_cache", threshold=0.2))
    assert sam_keys(comfy)
    pg.click(".vk-cache button[data-action=refresh]")
    pg.wait_for_selector(".vk-cache-entry", timeout=20_000)
    pg.click(".vk-cache button[data-action=purge-all]")
    pg.wait_for_selector(".vk-cache [data-role=empty]", timeout=20_000)
    assert comfy.get_json("/visionkit/cache")["entries"] == []
    assert panel_keys(pg) == []


# ---------------------------------------------------------------- missing-model help
@pytest.fixture(scope="module")
def empty_models_server(tmp_path_factory):
    """A second ComfyUI whose model folders are all empty (its own base dir and models root)."""
    comfyui = find_comfyui_dir()
    if comfyui is None:
        tiers.missing("T2", "no ComfyUI found (COMFYUI_DIR or ../shared/comfyui)")
    _playwright()  # skip before starting a server the browser cannot use
    root = tmp_path_factory.mktemp("empty_models")
    server = ComfyServer(comfyui, root, tmp_path_factory.mktemp("comfyui_empty_base"),
                         extra_args=frontend_args(comfyui)).start()
    try:
        yield server
    finally:
        server.stop()


def test_loader_with_no_files_says_where_to_put_them(browser, empty_models_server, models_dir, shots):
    server = empty_models_server
    p = Page(browser, server)
    try:
        pg = p.page
        pg.evaluate("""() => { app.graph.clear();
          const add = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; app.graph.add(n); return n; };
          window.__vkt = { sam: add("VisionKitSAMLoader", [150, 100]), pipe: add("VisionKitPipelineLoader", [640, 100]) };
          window.__vkt.samSize = [...window.__vkt.sam.size];  // before the notice (it is added on the next tick)
          app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1; app.graph.setDirtyCanvas(true, true); }""")
        notice = "(n) => n.widgets.find((w) => w.name === 'vk_missing_models')?.value ?? null"
        pg.wait_for_function(f"() => ({notice})(__vkt.sam) && ({notice})(__vkt.pipe)", timeout=20_000)
        sams_dir = str(server.models_dir / "sams")
        text = pg.evaluate(f"() => ({notice})(__vkt.sam)")
        assert "No model files for model_name" in text and sams_dir in text, text
        assert "sam_vit_b_01ec64.pth" in text and "facebookresearch/segment-anything" in text, text
        pipe = pg.evaluate(f"() => ({notice})(__vkt.pipe)")
        assert str(server.models_dir / "checkpoints") in pipe and str(server.models_dir / "diffusers") in pipe, pipe
        assert "v1-5-pruned-emaonly.safetensors" in pipe, pipe
        assert pg.is_visible(".vk-missing[data-role=missing-models]")
        # help, not an input: neither in the prompt nor in the saved widget values
        prompt = pg.evaluate("async () => (await app.graphToPrompt()).output")
        assert all("vk_missing_models" not in n["inputs"] for n in prompt.values()), prompt
        shots(pg, "missing_model_notice")

        # the user adds a SAM file and refreshes the lists: the notice goes, the dropdown has the file
        (server.models_dir / "sams").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(models_dir / "sams" / SAM_FILE, server.models_dir / "sams" / SAM_FILE)
        pg.evaluate("async () => { await app.refreshComboInNodes(); }")
        pg.wait_for_function(f"() => ({notice})(__vkt.sam) === null", timeout=20_000)
        before, after = pg.evaluate("() => [__vkt.samSize, [...__vkt.sam.size]]")
        assert after[0] == pytest.approx(before[0], abs=1), (before, after)  # the notice's width is given back
        assert after[1] <= before[1] + 40, (before, after)
        values = pg.evaluate("() => __vkt.sam.widgets.find((w) => w.name === 'model_name').options.values")
        assert values == [SAM_FILE], values
        assert pg.evaluate(f"() => ({notice})(__vkt.pipe)") is not None  # still no pipeline files
        assert not p.pack_errors(), p.pack_errors()
        assert not p.console, p.console
    finally:
        p.close()


def test_readout_has_a_label_and_fits_its_text(page):
    """A readout node (cache info, similarity, ranking) shows its text in a labelled, read-only box that
    grows with the text; it is kept out of the prompt and the saved workflow."""
    pg = page.page
    out = pg.evaluate("""async () => { app.graph.clear();
      const n = LiteGraph.createNode('VisionKitModelCacheInfo'); n.pos = [100, 100]; app.graph.add(n);
      const h0 = n.size[1];
      n.onExecuted({text: ['3 model(s) cached', 'a.pth: 1.0 MB', 'b.pth: 2.0 MB', 'c.pth: 3.0 MB', 'd', 'e', 'f']});
      await new Promise((r) => setTimeout(r, 300));
      const w = n.widgets.find((x) => x.name === 'vk_readout');
      const el = w.element;
      const prompt = (await app.graphToPrompt()).output[String(n.id)];
      return {label: w.label, value: el.value, readOnly: el.readOnly, h0, h1: n.size[1],
              inputs: Object.keys(prompt.inputs),
              saved: app.graph.serialize().nodes.find((x) => x.id === n.id).widgets_values};
    }""")
    assert out["label"] == "Result" and out["readOnly"], out
    assert out["value"].splitlines()[0] == "3 model(s) cached" and len(out["value"].splitlines()) == 7, out
    assert out["h1"] >= out["h0"] + 7 * 16 - 40, out  # taller for seven lines
    assert "vk_readout" not in out["inputs"] and out["value"] not in (out["saved"] or []), out
