"""T3: the shipped workflows in the real ComfyUI page (Playwright + Debian's Chromium, tests/vk_testing/browser.py).

- every VisionKit node is in LiteGraph.registered_node_types, under its display name;
- every workflows/*.json loads through app.loadGraphData with no dialog (the missing-node dialog is shown to be
  detected with a node type that does not exist), and `await app.graphToPrompt()` gives exactly the API twin in
  workflows/api/ (titles included) and, as its workflow (what Export saves), the shipped file again: the
  generator writes the frontend's own format (node sizes aside: the page grows a node to its minimum);
- bypassing the optional IP-Adapter of clothes_swap leaves a prompt without it;
- the Run button (app.queuePrompt) runs a workflow to success in /history;
- a screenshot of each workflow goes to a temp folder (printed), or $VISIONKIT_TEST_OUTPUT/t3; with
  VISIONKIT_UPDATE_SCREENSHOTS=1 also to docs/screenshots/ and, as the Templates dialog's thumbnail, to
  workflows/<name>.jpg (scripts/dev/update_screenshots).

The server is the session's shared one of the primary ComfyUI with its pinned frontend (`comfy_primary`; the other
ComfyUI x frontend combinations get the smoke set of test_t3_frontends.py), with the tiny models linked under the
real names,
so the combos hold the shipped model names. Skipped when Playwright or Chromium is missing.
"""
from __future__ import annotations

import copy
import json
import time

import pytest
from vk_testing import import_pack, tiers
from vk_testing import workflows as W
from vk_testing.browser import (
    ComfyPage,
    apply_settings,
    launch_browser,
    missing_reason,
    publish,
    publish_thumbnail,
    screenshot_folder,
    update_docs_screenshots,
    write_settings,
)
from vk_testing.comfy_server import comfy_primary  # noqa: F401  (the session fixture: the primary ComfyUI)

pytestmark = pytest.mark.t3

PACK = import_pack()
FRONTEND_HOSTS = ("https://api.comfy.org/",)
PACK_SCRIPTS = "/extensions/ComfyUI-VisionKit/"
# Node fields the page recomputes on load (the node's minimum size depends on the fonts of the machine)
RECOMPUTED = {"size"}


@pytest.fixture(scope="session", autouse=True)
def _browser_present():
    """Before the server starts (session scope and autouse: set up before the `comfy` fixture): without
    Playwright or Chromium every test here skips, or fails where T3 is required (VISIONKIT_REQUIRE_TIERS)."""
    reason = missing_reason()
    if reason:
        tiers.missing("T3", reason)


@pytest.fixture(scope="module")
def server(comfy_primary):  # noqa: F811
    comfy = comfy_primary
    W.link_real_names(comfy.base_dir / "models", comfy.models_dir)
    W.copy_inputs(comfy.base_dir / "input")
    write_settings(comfy.base_dir)
    apply_settings(comfy)
    return comfy


def declared_model_urls() -> tuple[str, ...]:
    """The download URLs the shipped workflows declare (properties.models): newer frontends ask for them."""
    return tuple(sorted({m["url"] for name in W.names() for n in W.load_ui(name)["nodes"]
                         for m in n.get("properties", {}).get("models", [])}))


@pytest.fixture(scope="module")
def page(server):
    with launch_browser() as browser:
        p = ComfyPage(browser, server)
        try:
            yield p
        finally:
            p.close()
    # The frontend itself asks the Comfy registry (releases, which pack a node type comes from): aborted here.
    # Anything else would be the pack's scripts reaching out.
    others = [u for u in p.blocked if not u.startswith(FRONTEND_HOSTS + declared_model_urls())]
    assert not others, f"the page tried to reach other hosts: {others[:10]}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = screenshot_folder(tmp_path_factory)
    yield folder
    print(f"\nT3 workflow screenshots: {folder}")


def test_every_visionkit_node_is_registered(page):
    types = page.evaluate("""() => Object.fromEntries(Object.entries(LiteGraph.registered_node_types)
        .filter(([k]) => k.startsWith('VisionKit')).map(([k, v]) => [k, v.title]))""")
    missing = sorted(set(PACK.NODE_CLASS_MAPPINGS) - set(types))
    assert not missing, f"not registered in the page: {missing}"
    for node_id, title in types.items():
        assert title == PACK.NODE_DISPLAY_NAME_MAPPINGS[node_id], (node_id, title)


def test_a_missing_node_opens_the_dialog_that_the_workflow_tests_look_for(page):
    wf = copy.deepcopy(W.load_ui("upscale"))
    wf["nodes"][-1]["type"] = "VisionKitNoSuchNode"
    dialogs = page.load_workflow(wf, "missing-node-check")
    assert any("VisionKitNoSuchNode" in d for d in dialogs), dialogs
    page.close_dialogs()
    assert page.dialogs() == []


def _node_fields(node: dict) -> dict:
    return {k: v for k, v in node.items() if k not in RECOMPUTED}


@pytest.mark.parametrize("name", W.names())
def test_workflow_loads_and_its_prompt_is_the_api_twin(page, shots, name):
    ui, api = W.load_ui(name), W.load_api(name)
    dialogs = page.load_workflow(ui, name)
    assert dialogs == [], f"{name}: loading opened a dialog:\n" + "\n---\n".join(dialogs)
    prompt = page.graph_to_prompt()
    assert prompt["output"] == api, (
        f"{name}: the page's graphToPrompt differs from workflows/api/{name}.json:\n"
        + "\n".join(f"node {k}: file {api.get(k)}\n        page {prompt['output'].get(k)}"
                    for k in sorted(set(api) | set(prompt["output"]), key=int)
                    if api.get(k) != prompt["output"].get(k)))
    saved = prompt["workflow"]  # what the page exports (Workflow → Export) for the loaded graph
    assert [_node_fields(n) for n in saved["nodes"]] == [_node_fields(n) for n in ui["nodes"]], \
        f"{name}: the page saves the loaded graph differently from the shipped file"
    for key in ("links", "groups", "config", "version", "last_node_id", "last_link_id"):
        assert saved[key] == ui[key], (name, key)
    shot = page.screenshot_graph(shots / f"workflow_{name}.png")
    assert shot.stat().st_size > 10_000
    if update_docs_screenshots():
        publish(shot)
        publish_thumbnail(shot, W.WORKFLOWS_DIR / f"{name}.jpg")


def test_a_model_name_the_server_does_not_have_is_kept(page):
    """A user without the model opens a template: the page keeps the saved name in the combo (so the prompt
    names the file to get) instead of silently picking another model."""
    ui = copy.deepcopy(W.load_ui("upscale"))
    loader = next(n for n in ui["nodes"] if n["type"] == "VisionKitUpscaleModelLoader")
    loader["widgets_values"][0] = "RealESRGAN_x4plus_not_here.pth"
    assert page.load_workflow(ui, "absent-model") == []
    out = page.graph_to_prompt()["output"]
    assert out[str(loader["id"])]["inputs"]["model_name"] == "RealESRGAN_x4plus_not_here.pth"


def test_bypassing_the_optional_ip_adapter_of_clothes_swap(page):
    ui, api = W.load_ui("clothes_swap"), W.load_api("clothes_swap")
    assert page.load_workflow(ui, "clothes_swap") == []
    (apply_id,) = [n["id"] for n in ui["nodes"] if n["type"] == "VisionKitIPAdapterApply"]
    page.set_mode(apply_id, 4)  # Ctrl+B
    out = page.graph_to_prompt()["output"]
    sampler = next(k for k, n in out.items() if n["class_type"] == "VisionKitLCMSampler")
    assert str(apply_id) not in out and "control" not in out[sampler]["inputs"]
    expected = {k: v for k, v in api[sampler]["inputs"].items() if k != "control"}
    assert out[sampler]["inputs"] == expected


def test_run_button_queues_a_workflow_that_finishes(page, server):
    name = "upscale"
    assert page.load_workflow(W.load_ui(name), name) == []
    before = set(server.get_json("/history", max_items=1000))
    page.queue()
    deadline, entry = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        new = {k: v for k, v in server.get_json("/history", max_items=1000).items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("status_str") in ("success", "error")]
        if done:
            entry = done[0]
            break
        time.sleep(0.3)
    assert entry is not None, f"nothing queued from the page finished\n{server.log_tail()}"
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    assert entry["prompt"][2] == W.load_api(name)  # what the page sent is the API twin
    save = next(k for k, n in W.load_api(name).items() if n["class_type"] == "SaveImage")
    assert entry["outputs"][save]["images"]


def test_zero_visionkit_console_warnings_or_errors(page):
    """Nothing the pack does shows in the console: no deprecated frontend API, no internal-module import, no
    failed load of its files (template thumbnails included). Runs after the workflow tests (file order)."""
    ours = [m for m in page.visionkit_console() if "VisionKitNoSuchNode" not in m]  # the missing-node test's own
    assert not ours, f"frontend {page.frontend_version()}: the pack's console output:\n" + "\n".join(ours)


def test_the_pack_raised_no_errors_in_the_page(page):
    """Uncaught errors from the pack's scripts fail; the frontend's own (1.27.10 throws one at start-up while it
    migrates the canvas navigation setting of a new user) are only printed."""
    ours = [e for e in page.errors if PACK_SCRIPTS in e]
    if page.errors:
        print("\nuncaught errors in the page:\n" + "\n".join(e.splitlines()[0] for e in page.errors))
    assert not ours, "the pack's scripts raised in the page:\n" + "\n".join(ours[:10])
