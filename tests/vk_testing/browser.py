"""T3 harness: the real ComfyUI page in Chromium, driven by Playwright.

    with browser_or_skip() as browser:
        page = ComfyPage(browser, server)       # the app loaded, VisionKit's nodes registered
        page.load_workflow(ui_json, "upscale")  # app.loadGraphData; returns the dialogs that opened
        page.graph_to_prompt()                  # await app.graphToPrompt() → {"workflow", "output"}
        page.screenshot_graph(path)             # the whole graph, fitted, without the app's overlays

Chromium is Debian's (`apt install chromium`), started through `executable_path`: `playwright install` is never
run (it downloads browsers). VISIONKIT_CHROMIUM names another binary. Without Playwright or Chromium the
tests skip with the command that installs them. The page may only reach the loopback server: every other
request is aborted and recorded (`blocked`).

Settings: the harness that starts the server writes user/default/comfy.settings.json with
Comfy.TutorialCompleted (else a tutorial covers the canvas); `apply_settings` adds the display settings the
screenshots need over the server's /settings route before the page opens.
"""
from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from . import ROOT

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
VIEWPORT = {"width": 1920, "height": 1080}
# Display settings for readable screenshots: text drawn at any zoom (LiteGraph draws boxes without text below
# a font size), no minimap over the canvas.
DISPLAY_SETTINGS = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 1,
                    "Comfy.Minimap.Visible": False}
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
PACK_SCRIPTS = "/extensions/ComfyUI-VisionKit/"  # the pack's scripts in the test servers (PACK_FOLDER)
PACK_TEMPLATES = "/workflow_templates/ComfyUI-VisionKit/"
# Installed before the app's scripts run: once LiteGraph exists, every deprecation warning is reported (not
# only the first of its kind) and one whose call stack passes through the pack's scripts is logged again
# as a VisionKit warning, so the console check below can tell the pack's from the frontend's own.
DEPRECATION_HOOK = """(pack) => {
  const hook = (lg) => {
    if (!lg || !Array.isArray(lg.onDeprecationWarning)) return false;
    if (lg.__vkHooked) return true;
    lg.__vkHooked = true;
    lg.alwaysRepeatWarnings = true;
    lg.onDeprecationWarning.push((msg) => {
      const stack = String(new Error().stack || "");
      if (stack.includes(pack)) console.warn("VisionKit uses a deprecated frontend API: " + msg + "\\n" + stack);
    });
    return true;
  };
  const iv = setInterval(() => { if (hook(window.LiteGraph)) clearInterval(iv); }, 2);
  setTimeout(() => clearInterval(iv), 180000);
}"""
INSTALL_HINT = ("install Playwright (pip install playwright; never `playwright install`) and Debian's Chromium "
                "(apt install chromium), or set VISIONKIT_CHROMIUM to a Chromium binary")


def chromium_path() -> str | None:
    env = os.environ.get("VISIONKIT_CHROMIUM")
    if env:
        return env if os.path.exists(env) else None
    return next((c for c in CANDIDATES if os.path.exists(c)), None)


def missing_reason() -> str | None:
    """Why T3 cannot run here (None when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return f"Playwright is not installed: {INSTALL_HINT}"
    if chromium_path() is None:
        return f"no Chromium found ({os.environ.get('VISIONKIT_CHROMIUM') or ', '.join(CANDIDATES)}): {INSTALL_HINT}"
    return None


@contextmanager
def launch_browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def write_settings(base_dir, settings: dict | None = None) -> Path:
    """Merge settings into <base>/user/default/comfy.settings.json (ComfyUI reads it on every request)."""
    path = Path(base_dir) / "user" / "default" / "comfy.settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data.update(settings or DISPLAY_SETTINGS)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def apply_settings(server, settings: dict | None = None) -> None:
    """Set each setting through POST /settings/<id> (how the page itself saves them)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for key, value in (settings or DISPLAY_SETTINGS).items():
        req = urllib.request.Request(f"{server.url}/settings/{urllib.parse.quote(key)}",
                                     data=json.dumps(value).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with opener.open(req, timeout=10) as r:
            assert r.status == 200, (key, r.status)


class ComfyPage:
    """One tab with the ComfyUI app of `server`, ready when VisionKit's nodes are registered."""

    def __init__(self, browser, server, viewport: dict | None = None, ready_node: str = "VisionKitLCMSampler",
                 timeout_ms: int = 90_000):
        self.server = server
        self.errors: list[str] = []  # uncaught errors in the page
        self.console_errors: list[str] = []
        self.console: list[dict] = []  # every console message: {"type", "text", "url"}
        self.blocked: list[str] = []  # non-loopback requests the page tried
        self.context = browser.new_context(viewport=viewport or VIEWPORT)
        self.context.route("**/*", self._route)
        self.context.add_init_script(script=f"({DEPRECATION_HOOK})({json.dumps(PACK_SCRIPTS)})")
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(f"{e}\n{e.stack or ''}"))
        self.page.on("console", self._on_console)
        self.pack_responses: list[tuple[int, str]] = []  # (status, url) of every request for one of the pack's files
        self.page.on("response", lambda r: (PACK_SCRIPTS in r.url or PACK_TEMPLATES in r.url)
                     and self.pack_responses.append((r.status, r.url)))
        self.page.goto(server.url)
        self.page.wait_for_function(
            f"() => window.app?.graph && window.LiteGraph?.registered_node_types?.[{json.dumps(ready_node)}]",
            timeout=timeout_ms)

    def _on_console(self, m) -> None:
        self.console.append({"type": m.type, "text": m.text, "url": (m.location or {}).get("url", "")})
        if m.type == "error":
            self.console_errors.append(m.text)

    def frontend_version(self) -> str:
        return self.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? 'unknown'")

    def visionkit_console(self) -> list[str]:
        """Console warnings and errors that come from the pack: logged by its scripts or naming it, its
        deprecated-API uses (DEPRECATION_HOOK), a failed load of one of its files (scripts, template
        thumbnails), and the frontend's notice about an import of an internal module (the pack is the only
        custom node in the test servers, so such an import is its)."""
        out = []
        for m in self.console:
            if m["type"] not in ("warning", "error"):
                continue
            text, url = m["text"], m["url"]
            if ("VisionKit" in text or PACK_SCRIPTS in text or PACK_SCRIPTS in url or PACK_TEMPLATES in url
                    or text.startswith("[ComfyUI Notice]")):
                out.append(f"{m['type']}: {text} ({url})")
        return out

    def _route(self, route):
        url = route.request.url
        host = urllib.parse.urlsplit(url).hostname
        if host in ("127.0.0.1", "localhost") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def evaluate(self, js: str, arg=None):
        return self.page.evaluate(js, arg)

    def registered_types(self) -> list[str]:
        return self.evaluate("() => Object.keys(LiteGraph.registered_node_types)")

    def dialogs(self) -> list[str]:
        """Texts of the dialogs open in the page (the missing-node dialog is one)."""
        return self.evaluate("""() => [...document.querySelectorAll('.p-dialog')]
            .filter((d) => d.offsetParent !== null || getComputedStyle(d).display !== 'none')
            .map((d) => d.innerText.trim())""")

    def close_dialogs(self) -> None:
        for _ in range(3):
            if not self.dialogs():
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(200)

    def load_workflow(self, workflow: dict, name: str) -> list[str]:
        """app.loadGraphData as the Workflows tab does; returns the texts of dialogs it opened."""
        self.close_dialogs()
        self.evaluate("async ([wf, name]) => { await app.loadGraphData(wf, true, true, name); }", [workflow, name])
        self.page.wait_for_timeout(400)  # dialogs and widget callbacks run after the promise
        return self.dialogs()

    def graph_to_prompt(self) -> dict:
        # JSON inside the page: Playwright would turn undefined into null
        return json.loads(self.evaluate("async () => JSON.stringify(await app.graphToPrompt())"))

    def serialize(self) -> dict:
        return json.loads(self.evaluate("() => JSON.stringify(app.graph.serialize())"))

    def set_mode(self, node_id: int, mode: int) -> None:
        self.evaluate("([id, mode]) => { app.graph.getNodeById(id).mode = mode; app.graph.setDirtyCanvas(true, true); }",
                      [node_id, mode])

    def queue(self) -> None:
        """The Run button: app.queuePrompt(0, 1)."""
        self.evaluate("async () => { await app.queuePrompt(0, 1); }")

    def screenshot_graph(self, path, margin: int = 24) -> Path:
        """The whole graph fitted into the canvas (at most 100 %), clipped to it, without the app's overlays."""
        clip = self.evaluate("""(margin) => {
            const c = app.canvas, rect = c.canvas.getBoundingClientRect(), th = LiteGraph.NODE_TITLE_HEIGHT;
            let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
            for (const n of app.graph._nodes) {
                x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - th);
                x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
            }
            const scale = Math.min(1, (rect.width - 2 * margin) / (x1 - x0), (rect.height - 2 * margin) / (y1 - y0));
            c.ds.scale = scale;
            c.ds.offset = [-x0 + margin / scale, -y0 + margin / scale];
            c.show_info = false;
            if (!document.getElementById('vk-shot-style')) {
                const st = document.createElement('style');
                st.id = 'vk-shot-style';
                st.textContent = '.graph-canvas-container .p-buttongroup-vertical { visibility: hidden !important; }';
                document.head.appendChild(st);
            }
            c.setDirty(true, true); c.draw(true, true);
            return {x: rect.left, y: rect.top, width: Math.ceil((x1 - x0) * scale + 2 * margin),
                    height: Math.ceil((y1 - y0) * scale + 2 * margin)};
        }""", margin)
        self.page.wait_for_timeout(300)  # DOM widgets (text areas, image previews) follow on the next frames
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), clip=clip)
        return path

    def close(self) -> None:
        self.context.close()


def screenshot_folder(tmp_factory) -> Path:
    """$VISIONKIT_TEST_OUTPUT/t3, else a fresh temp folder (printed at the end of the run)."""
    env = os.environ.get("VISIONKIT_TEST_OUTPUT")
    if env:
        out = Path(env) / "t3"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_factory.mktemp("t3_screenshots")


def update_docs_screenshots() -> bool:
    return os.environ.get("VISIONKIT_UPDATE_SCREENSHOTS") == "1"


def publish(path: Path, name: str | None = None) -> Path:
    """A screenshot into docs/screenshots/ (VISIONKIT_UPDATE_SCREENSHOTS=1), as a 256-colour PNG: the canvas is
    flat colours, so it looks the same at a third of the size."""
    from PIL import Image

    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    dest = DOCS_SCREENSHOTS / (name or Path(path).name)
    Image.open(path).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(dest, optimize=True)
    return dest


def publish_thumbnail(path: Path, dest: Path, width: int = 640) -> Path:
    """A JPEG thumbnail beside a workflow: the Templates dialog shows /api/workflow_templates/<pack>/<name>.jpg."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    im = im.resize((width, max(1, round(im.height * width / im.width))), Image.Resampling.LANCZOS)
    im.save(dest, quality=82, optimize=True)
    return dest
