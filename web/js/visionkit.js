// VisionKit canvas extension: readout nodes (cache info, similarity and ranking tables) show the text
// they return in `ui.text` right on the node, so people read results without opening a viewer.
// (This file is served as /extensions/<pack>/js/visionkit.js: the frontend's modules are three levels up.)
import { app } from "../../../scripts/app.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

const READOUT = "vk_readout";

function showText(node, lines) {
  const text = (Array.isArray(lines) ? lines : [lines]).join("\n");
  let widget = node.widgets?.find((w) => w.name === READOUT);
  if (!widget) {
    widget = ComfyWidgets.STRING(node, READOUT, ["STRING", { multiline: true }], app).widget;
    widget.inputEl.readOnly = true;
    widget.inputEl.style.opacity = 0.85;
    widget.serialize = false; // a readout, not an input: never saved into the workflow's values
    widget.options.serialize = false; // nor sent in the prompt (app.graphToPrompt)
  }
  widget.value = text;
  requestAnimationFrame(() => {
    const size = node.computeSize();
    node.setSize([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
    app.graph.setDirtyCanvas(true, false);
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
