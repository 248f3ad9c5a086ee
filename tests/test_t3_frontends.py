"""T3 smoke on every other ComfyUI × frontend combination (the full T3 set runs on the primary one).

Combinations: each ComfyUI found (tests/vk_testing/comfy_server.py: 0.3.64 and 0.33 here) with its own pinned
`comfyui-frontend-package` and with the newest one (NEWEST_FRONTEND, 1.58.1), each frontend an unpacked wheel
served with `--front-end-root` (scripts/lib/env.sh fetches them). The primary ComfyUI with its pinned frontend
is left out: test_t3_browser.py / test_t3_web.py cover it in full. On each combination:

- every VisionKit node is registered in the page;
- every shipped workflow loads with no dialog and `await app.graphToPrompt()` equals its API twin;
- the Missing Models panel of frontends that have one (1.58) lists a missing model of a shipped workflow with
  its folder and a Download button (the workflow's `properties.models`), not as "Unknown";
- in 1.58's Nodes 2.0 layout a readout box shows all of its text;
- the Templates dialog shows the pack's thumbnails (they load: no 404 per template);
- the console holds zero warnings or errors from the pack (deprecated APIs, internal-module imports, failed
  loads of its files such as template thumbnails; `ComfyPage.visionkit_console`).

One server and one page per combination (~30-40 s each here); skipped when Playwright or Chromium is missing.
"""
from __future__ import annotations

import time

import pytest
from vk_testing import import_pack, tiers
from vk_testing import workflows as W
from vk_testing.browser import PACK_TEMPLATES, ComfyPage, launch_browser, missing_reason, write_settings
from vk_testing.comfy_checkouts import (
    NEWEST_FRONTEND,
    ComfyUINotFound,
    comfyui_version,
    find_comfyui_dirs,
    frontend_args,
    pinned_frontend,
)
from vk_testing.comfy_server import ComfyServer

pytestmark = [pytest.mark.t3, pytest.mark.slow]

if missing_reason():
    tiers.missing("T3", missing_reason())

PACK = import_pack()


def combinations() -> list:
    try:
        dirs = find_comfyui_dirs()
    except ComfyUINotFound:
        return []
    out = []
    for i, d in enumerate(dirs):
        pinned = pinned_frontend(d)
        for fe in dict.fromkeys([pinned, NEWEST_FRONTEND]):
            if fe is None or (i == 0 and fe == pinned):
                continue  # the primary combination: the full T3 modules
            out.append(pytest.param((d, fe), id=f"comfyui-{comfyui_version(d)}-frontend-{fe}"))
    return out


COMBOS = combinations()
if not COMBOS:
    tiers.missing("T2", "no second ComfyUI or frontend to test (see tests/vk_testing/comfy_server.py)")


@pytest.fixture(scope="module")
def browser():
    with launch_browser() as b:
        yield b


@pytest.fixture(scope="module", params=COMBOS)
def combo(request, browser, models_dir, tmp_path_factory):
    """(server, page) of one ComfyUI × frontend combination, with the tiny models under the real names."""
    comfyui, fe = request.param
    try:
        args = frontend_args(comfyui, fe)
    except ComfyUINotFound as e:
        pytest.fail(str(e))
    base = tmp_path_factory.mktemp("comfyui_combo")
    W.link_real_names(base / "models", models_dir)
    W.copy_inputs(base / "input")
    write_settings(base)
    server = ComfyServer(comfyui, models_dir, base, extra_args=args).start()
    page = None
    try:
        page = ComfyPage(browser, server)
        assert page.frontend_version() == fe, (page.frontend_version(), fe)
        yield server, page
    finally:
        if page is not None:
            page.close()
        server.stop()


def test_nodes_are_registered(combo):
    _, page = combo
    types = set(page.evaluate("() => Object.keys(LiteGraph.registered_node_types)"))
    assert not sorted(set(PACK.NODE_CLASS_MAPPINGS) - types)


def test_every_workflow_loads_and_gives_its_api_twin(combo):
    _, page = combo
    for name in W.names():
        dialogs = page.load_workflow(W.load_ui(name), name)
        assert dialogs == [], f"{name}: loading opened a dialog:\n" + "\n---\n".join(dialogs)
        out = page.graph_to_prompt()["output"]
        assert out == W.load_api(name), f"{name}: graphToPrompt differs from workflows/api/{name}.json"


def test_missing_models_panel_offers_the_declared_file(combo):
    server, page = combo
    if not page.evaluate("() => !!document.querySelector('body') && "
                         "parseInt((window.__COMFYUI_FRONTEND_VERSION__ ?? '0.0').split('.')[1]) >= 58"):
        tiers.optional("this frontend has no Missing Models panel for widget values (1.58 has)")
    link = server.base_dir / "models" / "upscale_models" / "RealESRGAN_x4plus.pth"
    target = link.resolve()
    link.unlink()  # the user has not downloaded the model yet
    try:
        page.evaluate("async () => { await app.refreshComboInNodes(); }")
        page.load_workflow(W.load_ui("upscale"), "upscale-missing-model")
        page.page.get_by_text("View details").first.click(timeout=20_000)
        page.page.get_by_text("Missing Models").first.wait_for(timeout=20_000)
        text = page.evaluate("() => document.body.innerText")
        panel = text[text.index("Missing Models"):]
        panel = panel[:panel.index("For more help")] if "For more help" in panel else panel[:2000]
        assert "RealESRGAN_x4plus.pth" in panel and "upscale_models" in panel and "Download" in panel, panel
        assert "Unknown" not in panel, panel
    finally:
        link.symlink_to(target)
        page.close_dialogs()
        page.evaluate("async () => { await app.refreshComboInNodes(); }")


def test_template_thumbnails_load(combo):
    """The Templates dialog on the pack's category: every thumbnail it shows loads (no 404 in the console;
    the console check below covers the requests)."""
    _, page = combo
    if not page.evaluate("() => (app.extensionManager?.command?.commands ?? [])"
                         ".some((c) => c.id === 'Comfy.BrowseTemplates')"):
        tiers.optional("this frontend has no Comfy.BrowseTemplates command")
    page.evaluate("async () => { await app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    try:
        try:
            page.page.get_by_text("ComfyUI-VisionKit", exact=True).last.click(timeout=10_000)
        except Exception:  # noqa: BLE001  (already the open category)
            pass
        # the ones in view are fetched (the rest lazily); every fetch must succeed
        deadline = time.monotonic() + 30
        thumbs = []
        while time.monotonic() < deadline and not thumbs:
            page.page.wait_for_timeout(300)
            thumbs = [r for r in page.pack_responses if PACK_TEMPLATES in r[1] and r[1].endswith(".jpg")]
        page.page.wait_for_timeout(1500)
        thumbs = [r for r in page.pack_responses if PACK_TEMPLATES in r[1] and r[1].endswith(".jpg")]
        assert thumbs and all(status == 200 for status, _ in thumbs), thumbs
    finally:
        page.close_dialogs()
        page.page.keyboard.press("Escape")


def test_readout_fits_its_text_in_nodes_2(combo):
    """Nodes 2.0 (1.58's Vue node layout): the readout box shows all of its text (it asks for its height)."""
    _, page = combo
    if not page.evaluate("() => typeof app.extensionManager?.setting?.set === 'function' && "
                         "parseInt((window.__COMFYUI_FRONTEND_VERSION__ ?? '0.0').split('.')[1]) >= 58"):
        tiers.optional("Nodes 2.0 is tested on frontend 1.58")
    page.evaluate("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', true); }")
    try:
        out = page.evaluate("""async () => { app.graph.clear();
          const n = LiteGraph.createNode('VisionKitModelCacheInfo'); n.pos = [100, 100]; app.graph.add(n);
          await new Promise((r) => setTimeout(r, 500));
          n.onExecuted({text: ['3 model(s) cached', 'a.pth: 1.0 MB', 'b.pth: 2.0 MB', 'c.pth: 3.0 MB', 'd', 'e', 'f']});
          await new Promise((r) => setTimeout(r, 1000));
          const ta = document.querySelector('textarea.vk-readout');
          return {vue: !!LiteGraph.vueNodesMode, found: !!ta, client: ta?.clientHeight, scroll: ta?.scrollHeight,
                  text: ta?.value};
        }""")
        assert out["vue"] and out["found"], out
        assert out["text"].count("\n") == 6 and out["client"] >= out["scroll"] - 2, out  # no hidden lines
    finally:
        page.evaluate("async () => { app.graph.clear(); "
                      "await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")


def test_zero_visionkit_console_warnings(combo):
    _, page = combo
    # a readout and the SAM editor's connection check: the pack's code paths that touch widgets and slots
    page.evaluate("""async () => { app.graph.clear();
      const n = LiteGraph.createNode('VisionKitModelCacheInfo'); n.pos = [100, 100]; app.graph.add(n);
      n.onExecuted({text: ['1 model(s) cached', 'x: 1.0 MB']});
      await new Promise((r) => setTimeout(r, 300)); }""")
    ours = page.visionkit_console()
    assert not ours, f"frontend {page.frontend_version()}: the pack's console warnings/errors:\n" + "\n".join(ours)
    assert not [e for e in page.errors if "/extensions/ComfyUI-VisionKit/" in e], page.errors
