// VisionKit canvas extension: the shared model cache in a sidebar tab ("VisionKit cache").
//
// Lists what GET /visionkit/cache returns (model, kind, device, size, hits, load time) with the totals,
// and purges everything or one entry (POST /visionkit/cache/purge with {} or {"keys": [...]}).
// While the tab is open it refreshes when prompts run (the server's "executing" / "executed" / "status"
// events) and every few seconds. Also reachable from the menu: View → VisionKit model cache.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { el, getJSON, humanBytes, injectStyle, postJSON } from "./vk_util.js";

const TAB_ID = "visionkit-cache";
const POLL_MS = 5000;
const EVENTS = ["executing", "executed", "status", "execution_success", "execution_error", "execution_interrupted"];

const CSS = `
.vk-cache { padding: 10px; font: 13px sans-serif; color: var(--fg-color, #ddd); display: flex; flex-direction: column; gap: 8px; }
.vk-cache h3 { margin: 0; font-size: 14px; }
.vk-cache .vk-cache-actions { display: flex; gap: 6px; flex-wrap: wrap; }
.vk-cache button { background: var(--comfy-input-bg, #333); color: var(--input-text, #eee);
  border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 3px 10px; cursor: pointer; }
.vk-cache button:hover { filter: brightness(1.25); }
.vk-cache button:disabled { opacity: .45; cursor: default; }
.vk-cache .vk-cache-totals { color: var(--descrip-text, #aaa); font-size: 12px; line-height: 1.5; }
.vk-cache .vk-cache-error { color: #ff7a7a; white-space: pre-wrap; }
.vk-cache .vk-cache-error:empty { display: none; }
.vk-cache .vk-cache-empty { color: var(--descrip-text, #aaa); font-style: italic; }
.vk-cache .vk-cache-entry { border: 1px solid var(--border-color, #444); border-radius: 6px; padding: 6px 8px;
  margin-bottom: 6px; }
.vk-cache .vk-cache-row { display: flex; gap: 6px; align-items: flex-start; justify-content: space-between; }
.vk-cache .vk-name { font-weight: bold; word-break: break-all; }
.vk-cache .vk-cache-meta { color: var(--descrip-text, #aaa); font-size: 12px; }
.vk-cache .vk-in-use { color: #ffb454; font-size: 11px; }
.vk-cache .vk-cache-updated { color: var(--descrip-text, #888); font-size: 11px; }
`;

function basename(p) {
  const parts = String(p ?? "").replace(/[\\/]+$/, "").split(/[\\/]/);
  return parts[parts.length - 1] || String(p ?? "");
}

function ago(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return new Date(seconds * 1000).toLocaleString();
}

class CachePanel {
  constructor(root) {
    this.root = root;
    this.timer = null;
    this.pending = null;
    this.busy = false;
    this.onEvent = () => this.refreshSoon();
  }

  mount() {
    injectStyle("vk-cache-style", CSS);
    this.error = el("div", { className: "vk-cache-error" });
    this.totals = el("div", { className: "vk-cache-totals" });
    this.body = el("div", { className: "vk-cache-list" });
    this.updated = el("div", { className: "vk-cache-updated" });
    this.purgeAll = el("button", { type: "button", dataset: { action: "purge-all" },
      title: "Drop every model from VisionKit's cache (models in use go when their node is done)",
      onclick: () => this.purge(null) }, "Purge all");
    this.root.replaceChildren(el("div", { className: "vk-cache" },
      el("h3", {}, "VisionKit model cache"),
      el("div", { className: "vk-cache-actions" },
        el("button", { type: "button", dataset: { action: "refresh" }, onclick: () => this.refresh() }, "Refresh"),
        this.purgeAll),
      this.error, this.totals, this.body, this.updated));
    for (const name of EVENTS) api.addEventListener(name, this.onEvent);
    this.timer = setInterval(() => {
      if (!document.hidden) this.refresh();
    }, POLL_MS);
    this.refresh();
  }

  unmount() {
    for (const name of EVENTS) api.removeEventListener(name, this.onEvent);
    clearInterval(this.timer);
    clearTimeout(this.pending);
    this.timer = this.pending = null;
  }

  refreshSoon() {
    clearTimeout(this.pending);
    this.pending = setTimeout(() => this.refresh(), 200); // a burst of events → one request
  }

  async refresh() {
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    try {
      this.render(await getJSON("/visionkit/cache"));
      this.error.textContent = "";
    } catch (e) {
      this.error.textContent = `Could not read the cache: ${e.message}`;
    } finally {
      this.busy = false;
      if (this.again) {
        this.again = false;
        this.refreshSoon();
      }
    }
  }

  async purge(keys) {
    try {
      const out = await postJSON("/visionkit/cache/purge", keys ? { keys } : {});
      const deferred = out?.deferred?.length ?? 0;
      this.render(out);
      this.error.textContent = deferred ? `${deferred} model(s) in use now: they go when their node is done.` : "";
    } catch (e) {
      this.error.textContent = `Purge failed: ${e.message}`;
    }
  }

  render(stats) {
    const entries = Array.isArray(stats?.entries) ? stats.entries : [];
    const t = stats?.totals ?? {};
    const byDevice = Object.entries(t.bytes_by_device ?? {})
      .map(([dev, n]) => `${dev} ${humanBytes(n)}`).join(", ");
    const bytes = t.bytes ?? entries.reduce((s, e) => s + (e.bytes || 0), 0);
    this.totals.replaceChildren(
      el("div", { dataset: { role: "summary" } },
        `${entries.length} model${entries.length === 1 ? "" : "s"} · ${humanBytes(bytes)}`
        + (byDevice ? ` (${byDevice})` : "")),
      el("div", {}, `hits ${t.hits ?? 0} · misses ${t.misses ?? 0} · load time ${Number(t.load_seconds ?? 0).toFixed(2)} s`
        + (t.budget_bytes ? ` · budget ${humanBytes(t.budget_bytes)}` : "")));
    this.purgeAll.disabled = entries.length === 0;
    if (!entries.length) {
      this.body.replaceChildren(el("div", { className: "vk-cache-empty", dataset: { role: "empty" } },
        "No models cached. A model appears here once a VisionKit loader has run."));
    } else {
      // One card per model: the sidebar is narrow, a table would wrap every cell.
      this.body.replaceChildren(...entries.map((e) => el("div", { className: "vk-cache-entry", dataset: { key: e.key } },
        el("div", { className: "vk-cache-row" },
          el("span", { className: "vk-name", title: `${e.path}\n${e.key}` }, basename(e.path)),
          el("button", { type: "button", dataset: { action: "purge", key: e.key },
            title: "Drop this model from the cache", onclick: () => this.purge([e.key]) }, "Purge")),
        el("div", { className: "vk-cache-meta" },
          [e.kind, e.device, e.dtype, humanBytes(e.bytes)].filter(Boolean).join(" · "),
          e.in_use ? el("span", { className: "vk-in-use" }, " · in use") : null),
        el("div", { className: "vk-cache-meta",
          title: Number.isFinite(e.loaded_at) ? `loaded ${new Date(e.loaded_at * 1000).toLocaleString()}` : "" },
          `hits ${e.hits ?? 0} · loaded ${ago(e.loaded_at)}`
          + (Number.isFinite(e.load_seconds) ? ` in ${e.load_seconds.toFixed(2)} s` : "")))));
    }
    this.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }
}

let panel = null;

function toggleTab() {
  const mgr = app.extensionManager;
  if (mgr?.sidebarTab?.toggleSidebarTab) mgr.sidebarTab.toggleSidebarTab(TAB_ID);
  else mgr?.command?.execute?.(`Workspace.ToggleSidebarTab.${TAB_ID}`);
}

app.registerExtension({
  name: "VisionKit.ModelCachePanel",
  commands: [{ id: "VisionKit.ModelCache.Toggle", label: "VisionKit model cache", icon: "pi pi-database",
    function: toggleTab }],
  menuCommands: [{ path: ["View"], commands: ["VisionKit.ModelCache.Toggle"] }],
  async setup() {
    const mgr = app.extensionManager;
    if (!mgr?.registerSidebarTab) {
      console.warn("VisionKit: this ComfyUI frontend has no sidebar tabs; use GET /visionkit/cache or the "
        + "Model Cache Info node");
      return;
    }
    mgr.registerSidebarTab({
      id: TAB_ID,
      icon: "pi pi-database",
      title: "VisionKit cache",
      tooltip: "VisionKit model cache: loaded models, memory, purge",
      type: "custom",
      render(container) {
        panel?.unmount();
        panel = new CachePanel(container);
        panel.mount();
      },
      destroy() {
        panel?.unmount();
        panel = null;
      },
    });
  },
});
