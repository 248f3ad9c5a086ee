// VisionKit canvas extension: help on loaders whose model list is empty.
//
// ComfyUI shows an empty dropdown when a model folder has no files. On every VisionKit loader whose
// dropdown is empty, this adds a read-only notice saying which folder to put which file in: the folders
// ComfyUI searches (GET /visionkit/models), what belongs there and the models of the README's table
// (its "catalog"), for the dropdowns GET /visionkit/loaders maps to folder keys. The notice goes away
// when the list has files again (after Refresh / pressing R, which reloads the node definitions).
import { app } from "../../../scripts/app.js";
import { allNodes, el, getJSON, injectStyle, nodeClass } from "./vk_util.js";

const NOTICE = "vk_missing_models";

const CSS = `
.vk-missing { box-sizing: border-box; width: 100%; height: 100%; overflow: auto; padding: 6px 8px;
  border: 1px solid #b7791f; border-radius: 6px; background: rgba(183,121,31,.14); color: var(--input-text, #eee);
  font: 12px/1.45 sans-serif; white-space: pre-wrap; user-select: text; }
.vk-missing b { color: #ffb454; }
`;

let info = null; // Promise<{loaders, folders}>

function loadInfo() {
  info ??= Promise.all([getJSON("/visionkit/loaders"), getJSON("/visionkit/models")])
    .then(([loaders, folders]) => ({ loaders, folders }))
    .catch((e) => {
      console.warn("VisionKit: no model folder help:", e);
      info = null;
      return { loaders: {}, folders: {} };
    });
  return info;
}

function comboValues(widget) {
  const v = widget?.options?.values;
  return Array.isArray(v) ? v : typeof v === "function" ? v(widget) : null;
}

/** The notice's text for one empty dropdown (several folder keys: any of them will do). */
export function noticeText(inputName, keys, folders) {
  const lines = [`No model files for ${inputName} yet.`];
  keys.forEach((key, i) => {
    const f = folders[key];
    if (!f) return;
    if (i > 0) lines.push("or");
    const paths = f.folders?.length ? f.folders : [`ComfyUI/models/${f.folder ?? key}`];
    lines.push(`Put ${f.holds} into`, `  ${paths[0]}`);
    if (paths.length > 1) lines.push(`  (also searched: ${paths.slice(1).join(", ")})`);
    const cat = f.catalog ?? [];
    if (cat.length) {
      lines.push("for example:");
      for (const m of cat) lines.push(`  • ${m.file} (${m.source}; ${m.licence})`);
    } else if (f.get) {
      lines.push(`for example ${f.get}`);
    }
  });
  lines.push("Then press R to reload the lists (the README's Models table lists every file).");
  return lines.join("\n");
}

/** Rows the notice needs at the node's width (long lines wrap). */
function rows(text, width) {
  const perRow = Math.max(20, Math.floor((width - 24) / 6.6));
  return text.split("\n").reduce((n, line) => n + Math.max(1, Math.ceil(line.length / perRow)), 0);
}

function setNotice(node, text) {
  let widget = node.widgets?.find((w) => w.name === NOTICE);
  if (!text) {
    if (widget) {
      const before = widget.vkSizeBefore; // the node's size before the notice grew it
      node.removeWidget(widget);
      const min = node.computeSize();
      node.setSize?.(before ? [Math.max(before[0], min[0]), Math.max(before[1], min[1])] : [node.size[0], min[1]]);
      node.setDirtyCanvas?.(true, true);
    }
    return;
  }
  if (!widget) {
    injectStyle("vk-missing-style", CSS);
    const box = el("div", { className: "vk-missing", dataset: { role: "missing-models" } });
    widget = node.addDOMWidget(NOTICE, "vk-notice", box, {
      serialize: false, // help text, not an input: kept out of the prompt
      hideOnZoom: false,
      getValue: () => box.textContent,
      setValue: () => {},
      getMinHeight: () => Math.min(420, 16 + 17.5 * rows(box.textContent, node.size[0])),
    });
    widget.serialize = false; // and out of the workflow's saved widget values
    widget.label = "Missing model files";
    widget.vkBox = box;
    widget.vkSizeBefore = [node.size[0], node.size[1]]; // restored when the notice goes
  }
  widget.vkBox.textContent = text;
  node.setSize?.([Math.max(node.size[0], 420), node.size[1]]); // wide enough to read, then tall enough
  node.setSize?.([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
  node.setDirtyCanvas?.(true, true);
}

async function update(node) {
  const { loaders, folders } = await loadInfo();
  const inputs = loaders[nodeClass(node)];
  if (!inputs || !node.graph) return;
  const parts = [];
  for (const [name, spec] of Object.entries(inputs)) {
    const widget = node.widgets?.find((w) => w.name === name);
    const values = comboValues(widget);
    if (widget && Array.isArray(values) && values.length === 0) parts.push(noticeText(name, spec.folders, folders));
  }
  setNotice(node, parts.join("\n\n"));
}

function isVisionKit(node) {
  return String(nodeClass(node) ?? "").startsWith("VisionKit");
}

function schedule(node) {
  if (!isVisionKit(node)) return;
  // After the node has its widgets and (when loading a workflow) its saved values.
  setTimeout(() => update(node).catch((e) => console.warn("VisionKit model help:", e)), 0);
}

app.registerExtension({
  name: "VisionKit.MissingModelHelp",
  nodeCreated(node) {
    schedule(node);
  },
  loadedGraphNode(node) {
    schedule(node);
  },
  async refreshComboInNodes() {
    info = null; // files may have been added: ask the server again
    for (const node of allNodes(app.graph)) if (isVisionKit(node)) await update(node);
  },
});
