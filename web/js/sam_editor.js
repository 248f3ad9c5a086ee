// VisionKit canvas extension: a point/box editor for "VisionKit SAM Segment".
//
// The node gets an "Edit points" button. It opens the image of the Load Image node connected to the
// node's `image` input in an editor over the canvas: left click = include point, right click (or
// Shift+click) = exclude point, left drag = box; Undo (Ctrl+Z), Clear, Save (Enter), Cancel (Esc).
// Save writes the node's `points` widget as DESIGN.md's JSON, in pixels of the image's natural size:
//   {"points": [[x, y, 1], [x, y, 0], ...], "boxes": [[x0, y0, x1, y1], ...]}   (x1/y1 exclusive)
// A point is the pixel under the pointer; a box covers every pixel from the one under the press to the
// one under the release (whatever the drag direction). The widget is an ordinary STRING input, so the
// prompt is saved with the workflow and works the same over the HTTP API; re-opening shows it again.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { el, injectStyle, nodeClass } from "./vk_util.js";

const NODE = "VisionKitSAMSegment";
const BUTTON = "Edit points";
const DRAG_PX = 5; // pointer travel (screen px) that turns a press into a box drag
const LOAD_IMAGE = /^LoadImage/; // LoadImage and its variants with an `image` file widget

const CSS = `
.vk-sam-editor { position: fixed; inset: 0; z-index: 10000; background: rgba(0,0,0,.72);
  display: flex; align-items: center; justify-content: center; font: 13px sans-serif; color: #ddd; }
.vk-sam-panel { background: #222; border: 1px solid #444; border-radius: 8px; padding: 10px;
  display: flex; flex-direction: column; gap: 8px; max-width: 96vw; max-height: 96vh; box-shadow: 0 8px 32px #000; }
.vk-sam-toolbar { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.vk-sam-toolbar .vk-sam-title { font-weight: bold; margin-right: auto; }
.vk-sam-toolbar button { background: #333; color: #eee; border: 1px solid #555; border-radius: 4px;
  padding: 4px 12px; cursor: pointer; }
.vk-sam-toolbar button:hover { background: #444; }
.vk-sam-toolbar button[data-action=save] { background: #1d6b35; border-color: #2a8a47; }
.vk-sam-toolbar button:disabled { opacity: .4; cursor: default; }
.vk-sam-hint { color: #aaa; font-size: 12px; }
.vk-sam-message { color: #ffb454; white-space: pre-wrap; max-width: 80vw; }
.vk-sam-message:empty { display: none; }
.vk-sam-stage { overflow: auto; display: flex; justify-content: center; }
.vk-sam-canvas { cursor: crosshair; touch-action: none; user-select: none; display: block; }
.vk-sam-status { color: #aaa; font-size: 12px; }
`;

// ------------------------------------------------------------------ the points JSON
/** {points, boxes} from the widget's text; `error` says why the text was not used (then both are empty). */
export function parsePrompt(text) {
  const empty = { points: [], boxes: [], error: null };
  if (text === undefined || text === null || !String(text).trim()) return empty;
  let data;
  try {
    data = JSON.parse(text);
  } catch (e) {
    return { ...empty, error: `the points field is not JSON (${e.message})` };
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) {
    return { ...empty, error: "the points field is not a JSON object like {\"points\": [...], \"boxes\": [...]}" };
  }
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const points = [];
  const boxes = [];
  for (const p of data.points ?? []) {
    if (!Array.isArray(p) || p.length < 2 || !isNum(p[0]) || !isNum(p[1])) {
      return { ...empty, error: `point ${JSON.stringify(p)} is not [x, y, label]` };
    }
    points.push([p[0], p[1], p.length > 2 && p[2] === 0 ? 0 : 1]);
  }
  for (const b of data.boxes ?? []) {
    if (!Array.isArray(b) || b.length !== 4 || !b.every(isNum)) {
      return { ...empty, error: `box ${JSON.stringify(b)} is not [x0, y0, x1, y1]` };
    }
    boxes.push([...b]);
  }
  return { points, boxes, error: null };
}

/** The widget text for a prompt: DESIGN.md's JSON, or "" (no prompt) when there is nothing. */
export function formatPrompt(points, boxes) {
  if (!points.length && !boxes.length) return "";
  return JSON.stringify({ points, boxes });
}

/** Integer pixel under an image-space position, clamped into the image. */
function pixel(v, size) {
  return Math.min(Math.max(Math.floor(v), 0), size - 1);
}

/** A box [x0, y0, x1, y1] (x1/y1 exclusive) covering the pixels under two image-space positions. */
export function boxFrom(a, b, width, height) {
  const ax = pixel(a[0], width), bx = pixel(b[0], width);
  const ay = pixel(a[1], height), by = pixel(b[1], height);
  return [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx) + 1, Math.max(ay, by) + 1];
}

// ------------------------------------------------------------------ where the image comes from
function upstreamNode(node, inputName) {
  const slot = node.findInputSlot?.(inputName) ?? -1;
  if (slot < 0) return null;
  let src = node.getInputNode?.(slot) ?? null;
  for (let i = 0; src && nodeClass(src) === "Reroute" && i < 64; i++) src = src.getInputNode?.(0) ?? null;
  return src;
}

/** {url, label} of the image the node segments, or {error} saying why the editor cannot show it. */
export function findImage(node) {
  const src = upstreamNode(node, "image");
  if (!src) {
    return { error: "Connect the node's image input to a Load Image node first: the editor shows that image." };
  }
  const name = `"${src.title || nodeClass(src)}" (${nodeClass(src)})`;
  const widget = src.widgets?.find((w) => w.name === "image");
  if (!LOAD_IMAGE.test(nodeClass(src) ?? "") || !widget) {
    return {
      error:
        `The image comes from ${name}, not from a Load Image node, so the editor does not know it before the ` +
        "workflow runs. Connect a Load Image node, or type the prompt into the points field as " +
        '{"points": [[x, y, 1]], "boxes": [[x0, y0, x1, y1]]} in pixels of the image.',
    };
  }
  let value = typeof widget.value === "string" ? widget.value.trim() : "";
  if (!value) return { error: `${name} has no image selected yet: choose or upload one, then edit the points.` };
  let type = "input";
  const annotated = value.match(/^(.*) \[(input|output|temp)\]$/);
  if (annotated) [, value, type] = annotated;
  const cut = value.lastIndexOf("/");
  const filename = cut >= 0 ? value.slice(cut + 1) : value;
  const subfolder = cut >= 0 ? value.slice(0, cut) : "";
  const query = new URLSearchParams({ filename, type, subfolder, rand: String(Date.now()) });
  return { url: api.apiURL(`/view?${query}`), label: value, source: name };
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the server did not return a readable image"));
    img.src = url;
  });
}

// ------------------------------------------------------------------ the editor
class SamPointEditor {
  constructor(node) {
    this.node = node;
    this.widget = node.widgets?.find((w) => w.name === "points");
    this.points = [];
    this.boxes = [];
    this.history = [];
    this.image = null;
    this.drag = null;
    this.showResult = true;
    this.onKey = this.onKey.bind(this);
  }

  linkedPoints() {
    const slot = this.node.inputs?.findIndex((i) => i.name === "points") ?? -1;
    if (slot < 0) return false;
    // node.isInputConnected is the public API (reading input.link is deprecated in newer frontends).
    if (typeof this.node.isInputConnected === "function") return this.node.isInputConnected(slot);
    return this.node.getInputLink?.(slot) != null;
  }

  async open() {
    injectStyle("vk-sam-editor-style", CSS);
    const btn = (action, label, title) =>
      el("button", { type: "button", title, dataset: { action }, onclick: () => this.action(action) }, label);
    this.message = el("div", { className: "vk-sam-message" });
    this.status = el("div", { className: "vk-sam-status" });
    this.canvas = el("canvas", { className: "vk-sam-canvas" });
    this.resultToggle = el("input", { type: "checkbox", checked: true, onchange: (e) => {
      this.showResult = e.target.checked;
      this.draw();
    } });
    this.resultLabel = el("label", { className: "vk-sam-hint", title: "The node's last preview under the points" },
      this.resultToggle, " last result");
    this.saveButton = btn("save", "Save", "Write the points into the node (Enter)");
    this.root = el("div", { className: "vk-sam-editor", role: "dialog", "aria-label": "SAM points editor" },
      el("div", { className: "vk-sam-panel" },
        el("div", { className: "vk-sam-toolbar" },
          el("span", { className: "vk-sam-title" }, `SAM points · ${this.node.title || "SAM Segment"}`),
          this.resultLabel,
          btn("undo", "Undo", "Undo the last change (Ctrl+Z)"),
          btn("clear", "Clear", "Remove every point and box"),
          btn("cancel", "Cancel", "Close without changing the node (Esc)"),
          this.saveButton),
        el("div", { className: "vk-sam-hint" },
          "Left click: include point · right click or Shift+click: exclude point · drag: box"),
        this.message,
        el("div", { className: "vk-sam-stage" }, this.canvas),
        this.status));
    this.root.addEventListener("contextmenu", (e) => e.preventDefault());
    this.canvas.addEventListener("pointerdown", (e) => this.onDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onUp(e));
    this.canvas.addEventListener("pointercancel", () => { this.drag = null; this.draw(); });
    window.addEventListener("keydown", this.onKey, true);
    window.addEventListener("keyup", this.stopKeys, true);
    document.body.append(this.root);

    const notes = [];
    if (!this.widget) notes.push("This node has no points widget (an old version of the node?): nothing can be saved.");
    if (this.linkedPoints()) notes.push("The points input is connected to another node, so that node decides the prompt; "
      + "disconnect it to edit points here.");
    const parsed = parsePrompt(this.widget?.value);
    if (parsed.error) notes.push(`Existing prompt ignored: ${parsed.error}. Saving replaces it.`);
    this.points = parsed.points;
    this.boxes = parsed.boxes;
    const found = findImage(this.node);
    if (found.error) {
      this.fail([found.error, ...notes].join("\n"));
      return;
    }
    this.setMessage(notes.join("\n"));
    this.status.textContent = `Loading ${found.label} …`;
    try {
      this.image = await loadImage(found.url);
    } catch (e) {
      this.fail([`Could not load ${found.label} from ${found.source}: ${e.message}. Is the file still in ComfyUI's `
        + "input folder? Pick it again in the Load Image node.", ...notes].join("\n"));
      return;
    }
    if (!this.root.isConnected) return; // closed while loading
    this.result = this.lastResult();
    this.resultLabel.style.display = this.result ? "" : "none";
    const outside = this.points.some((p) => p[0] >= this.image.naturalWidth || p[1] >= this.image.naturalHeight);
    if (outside) this.setMessage([...notes, "Some points lie outside this image (was another image loaded?)."].join("\n"));
    this.layout();
    this.draw();
    this.saveButton.disabled = !this.widget || this.linkedPoints();
  }

  fail(text) {
    this.setMessage(text);
    this.status.textContent = "";
    this.canvas.style.display = "none";
    this.saveButton.disabled = true;
    this.resultLabel.style.display = "none";
  }

  setMessage(text) {
    this.message.textContent = text || "";
  }

  /** The node's last preview (its overlay output) when it has the image's size. */
  lastResult() {
    const img = this.node.imgs?.[0];
    if (img && img.naturalWidth === this.image.naturalWidth && img.naturalHeight === this.image.naturalHeight) return img;
    return null;
  }

  layout() {
    const w = this.image.naturalWidth, h = this.image.naturalHeight;
    const maxW = Math.max(200, window.innerWidth * 0.9 - 24);
    const maxH = Math.max(150, window.innerHeight * 0.9 - 120);
    this.scale = Math.min(maxW / w, maxH / h); // display px per image px (small images are enlarged)
    const cssW = Math.max(1, Math.round(w * this.scale)), cssH = Math.max(1, Math.round(h * this.scale));
    const dpr = window.devicePixelRatio || 1;
    this.canvas.style.width = `${cssW}px`;
    this.canvas.style.height = `${cssH}px`;
    this.canvas.width = Math.round(cssW * dpr);
    this.canvas.height = Math.round(cssH * dpr);
    this.canvas.dataset.naturalWidth = String(w);
    this.canvas.dataset.naturalHeight = String(h);
  }

  /** Image-space position (fractional pixels of the natural image) of a pointer event. */
  toImage(e) {
    const r = this.canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (this.image.naturalWidth / r.width),
      (e.clientY - r.top) * (this.image.naturalHeight / r.height)];
  }

  onDown(e) {
    if (!this.image) return;
    e.preventDefault();
    this.canvas.setPointerCapture?.(e.pointerId);
    this.drag = { button: e.button, shift: e.shiftKey, x: e.clientX, y: e.clientY, start: this.toImage(e), end: null };
  }

  onMove(e) {
    const d = this.drag;
    if (!d || d.button !== 0) return;
    if (!d.end && Math.hypot(e.clientX - d.x, e.clientY - d.y) < DRAG_PX) return;
    d.end = this.toImage(e);
    this.draw();
  }

  onUp(e) {
    const d = this.drag;
    this.drag = null;
    if (!d || !this.image) return;
    const w = this.image.naturalWidth, h = this.image.naturalHeight;
    this.remember();
    if (d.button === 0 && d.end) {
      this.boxes.push(boxFrom(d.start, this.toImage(e), w, h));
    } else if (d.button === 0 || d.button === 2) {
      const label = d.button === 2 || d.shift ? 0 : 1;
      this.points.push([pixel(d.start[0], w), pixel(d.start[1], h), label]);
    } else {
      this.history.pop(); // middle button: nothing changed
    }
    this.draw();
  }

  remember() {
    this.history.push(JSON.stringify([this.points, this.boxes]));
  }

  action(name) {
    if (name === "undo") {
      const last = this.history.pop();
      if (last) [this.points, this.boxes] = JSON.parse(last);
      this.draw();
    } else if (name === "clear") {
      if (this.points.length || this.boxes.length) this.remember();
      this.points = [];
      this.boxes = [];
      this.draw();
    } else if (name === "save") {
      if (this.saveButton.disabled) return;
      this.save();
      this.close();
    } else if (name === "cancel") {
      this.close();
    }
  }

  save() {
    const text = formatPrompt(this.points, this.boxes);
    this.widget.value = text;
    this.widget.callback?.(text, app.canvas, this.node);
    this.node.setDirtyCanvas?.(true, true);
    app.graph?.setDirtyCanvas?.(true, true);
  }

  close() {
    window.removeEventListener("keydown", this.onKey, true);
    window.removeEventListener("keyup", this.stopKeys, true);
    this.root?.remove();
    if (SamPointEditor.current === this) SamPointEditor.current = null;
  }

  stopKeys(e) {
    e.stopPropagation();
  }

  onKey(e) {
    // While the editor is open, keys belong to it: the canvas behind must not delete or move nodes.
    e.stopPropagation();
    if (e.key === "Escape") {
      e.preventDefault();
      this.action("cancel");
    } else if (e.key === "Enter") {
      e.preventDefault();
      this.action("save");
    } else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") {
      e.preventDefault();
      this.action("undo");
    }
  }

  draw() {
    if (!this.image) return;
    const w = this.image.naturalWidth, h = this.image.naturalHeight;
    const c = this.canvas.getContext("2d");
    const k = this.canvas.width / w; // canvas px per image px
    const dpr = window.devicePixelRatio || 1;
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.imageSmoothingEnabled = k < 2; // enlarged small images keep their pixels visible
    c.clearRect(0, 0, this.canvas.width, this.canvas.height);
    c.drawImage(this.image, 0, 0, this.canvas.width, this.canvas.height);
    if (this.result && this.showResult) {
      c.globalAlpha = 0.55;
      c.drawImage(this.result, 0, 0, this.canvas.width, this.canvas.height);
      c.globalAlpha = 1;
    }
    const rect = (b, dashed) => {
      c.setLineDash(dashed ? [6 * dpr, 4 * dpr] : []);
      c.lineWidth = 4 * dpr;
      c.strokeStyle = "rgba(0,0,0,.7)";
      c.strokeRect(b[0] * k, b[1] * k, (b[2] - b[0]) * k, (b[3] - b[1]) * k);
      c.lineWidth = 2 * dpr;
      c.strokeStyle = "#3ea6ff";
      c.strokeRect(b[0] * k, b[1] * k, (b[2] - b[0]) * k, (b[3] - b[1]) * k);
      c.setLineDash([]);
    };
    for (const b of this.boxes) rect(b, false);
    if (this.drag?.end) rect(boxFrom(this.drag.start, this.drag.end, w, h), true);
    for (const [x, y, label] of this.points) {
      const cx = (x + 0.5) * k, cy = (y + 0.5) * k;
      c.beginPath();
      c.arc(cx, cy, 6 * dpr, 0, Math.PI * 2);
      c.fillStyle = label ? "#22c55e" : "#ef4444";
      c.fill();
      c.lineWidth = 2 * dpr;
      c.strokeStyle = "#fff";
      c.stroke();
      if (!label) {
        c.beginPath();
        c.moveTo(cx - 3 * dpr, cy - 3 * dpr);
        c.lineTo(cx + 3 * dpr, cy + 3 * dpr);
        c.moveTo(cx + 3 * dpr, cy - 3 * dpr);
        c.lineTo(cx - 3 * dpr, cy + 3 * dpr);
        c.stroke();
      }
    }
    const inc = this.points.filter((p) => p[2] === 1).length;
    this.status.textContent = `${inc} include · ${this.points.length - inc} exclude · ${this.boxes.length} box`
      + `${this.boxes.length === 1 ? "" : "es"} · image ${w}×${h} px`;
  }
}

export function openEditor(node) {
  SamPointEditor.current?.close();
  const editor = new SamPointEditor(node);
  SamPointEditor.current = editor;
  editor.open().catch((e) => {
    console.error("VisionKit SAM editor", e);
    editor.setMessage?.(`The editor failed: ${e.message}`);
  });
  return editor;
}

app.registerExtension({
  name: "VisionKit.SAMPointEditor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      // Not an input: kept out of the prompt (options.serialize) and of the saved widget values (serialize).
      const button = this.addWidget("button", BUTTON, null, () => openEditor(this), { serialize: false });
      button.serialize = false;
      return r;
    };
  },
});
