// VisionKit canvas extension: readout nodes (cache info, similarity and ranking tables) show the text
// they return in `ui.text` right on the node, so people read results without opening a viewer.
// (This file is served as /extensions/<pack>/js/visionkit.js: the frontend's modules are three levels up.)
//
// Only public frontend APIs: `app.registerExtension`, `node.addDOMWidget` and the widget's `element`. The
// readout is a read-only text area of its own (not the frontend's STRING widget from scripts/widgets.js,
// an internal module), labelled in plain words, and tall enough for its text on the classic canvas and
// in Nodes 2.0 (whose node layout asks the widget for its minimum height).
import { app } from "../../../scripts/app.js";
import { el, injectStyle } from "./vk_util.js";

const READOUT = "vk_readout"; // the widget's id on the node (never saved: serialize is off)
const LABEL = "Result"; // what people see beside it
const LINE_PX = 16;

const CSS = `
.vk-readout { box-sizing: border-box; width: 100%; height: 100%; min-height: ${2 * LINE_PX}px; resize: none;
  padding: 4px 6px; border: 1px solid var(--border-color, #555); border-radius: 6px; opacity: .9;
  background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); font: 12px/${LINE_PX}px monospace;
  white-space: pre; overflow: auto; }
`;

/** Pixels the readout needs for its text (one line per row, a little padding, capped). */
export function readoutHeight(text) {
  const lines = String(text ?? "").split("\n").length;
  return Math.min(480, 12 + LINE_PX * Math.max(2, lines));
}

function showText(node, lines) {
  const text = (Array.isArray(lines) ? lines : [lines]).join("\n");
  let widget = node.widgets?.find((w) => w.name === READOUT);
  if (!widget) {
    injectStyle("vk-readout-style", CSS);
    const area = el("textarea", { className: "vk-readout", readOnly: true, spellcheck: false,
      dataset: { role: "readout" } });
    widget = node.addDOMWidget(READOUT, "vk-readout", area, {
      serialize: false, // a readout, not an input: never sent in the prompt (app.graphToPrompt)
      hideOnZoom: false,
      getValue: () => area.value,
      setValue: (v) => {
        area.value = v ?? "";
      },
      getMinHeight: () => readoutHeight(area.value),
    });
    widget.serialize = false; // nor saved into the workflow's widget values
    widget.label = LABEL;
  }
  widget.element.value = text;
  widget.value = text;
  // Nodes 2.0 lays DOM widgets out in the page's flow: the box asks for its text's height itself there
  // (on the classic canvas the same height comes from getMinHeight).
  widget.element.style.minHeight = `${readoutHeight(text)}px`;
  requestAnimationFrame(() => {
    const size = node.computeSize();
    node.setSize([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
    node.setDirtyCanvas?.(true, true);
  });
}

app.registerExtension({
  name: "VisionKit.Readouts",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("VisionKit") || !nodeData.output_node) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.text) showText(this, message.text);
    };
  },
});
