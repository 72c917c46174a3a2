// The pack's messages in ComfyUI's frontend: warnings as toasts, and LinearAG Calibrate's result on the node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

function showWarning(message) {
  const toast = app.extensionManager?.toast;
  if (toast) {
    toast.add({ severity: "warn", summary: "Guidance schedules", detail: message, life: 10000 });
  } else {
    console.warn("Guidance schedules:", message);
  }
}

app.registerExtension({
  name: "guidance_schedules.messages",

  async setup() {
    // nodes/reports.py sends the pack's log warnings to the client that queued the prompt
    api.addEventListener("guidance_schedules.warning", (event) => showWarning(event.detail.message));
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "LinearAGCalibrate") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const text = (output?.text ?? []).join("\n");
      let widget = this.widgets?.find((w) => w.name === "result");
      if (!widget) {
        widget = ComfyWidgets.STRING(this, "result", ["STRING", { multiline: true }], app).widget;
        if (widget.inputEl) widget.inputEl.readOnly = true;
        widget.serialize = false; // a result, not an input: never saved into the workflow
      }
      widget.value = text;
      this.setSize([Math.max(this.size[0], 360), this.computeSize()[1]]);
      app.graph.setDirtyCanvas(true, true);
    };
  },
});
