// The pack in ComfyUI's frontend: its templates in reading order, warnings as toasts, and LinearAG Calibrate's
// result on the node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

// ComfyUI lists a pack's templates in file-system order (an unsorted glob), which put LinearAG calibration
// first. The pack's examples in reading order: method by method, the simple one first. A test keeps this list
// equal to the files in workflows/.
const TEMPLATE_ORDER = [
  "Guidance interval with KSampler (SDXL)",
  "Guidance interval as in the paper (SDXL, SamplerCustomAdvanced)",
  "Guidance interval with Perp-Neg (SDXL, PerpNegGuider)",
  "Guidance interval on Wan 2.2 text to video (two experts, KSamplerAdvanced)",
  "Adaptive Guidance with KSampler (SDXL)",
  "Adaptive Guidance with SamplerCustomAdvanced (SDXL)",
  "Adaptive Guidance, LinearAG calibration (SDXL)",
  "Annealing guidance with KSampler (SDXL)",
  "Annealing guidance with SamplerCustomAdvanced (SDXL)",
  "Annealing guidance, three lambdas side by side (SDXL)",
  "Annealing guidance, train a network for your model (SDXL)",
];

// The folder the pack was cloned into names its templates; this script is served from /extensions/<folder>/.
const PACK_FOLDER = decodeURIComponent(new URL(import.meta.url).pathname.split("/").at(-2));

function templateRank(name) {
  const rank = TEMPLATE_ORDER.indexOf(name);
  return rank < 0 ? TEMPLATE_ORDER.length : rank;
}

// Runs at import, before the template browser first asks the server. A frontend without this method is left as is.
if (typeof api.getWorkflowTemplates === "function") {
  const getWorkflowTemplates = api.getWorkflowTemplates.bind(api);
  api.getWorkflowTemplates = async function () {
    const templates = await getWorkflowTemplates();
    const ours = templates?.[PACK_FOLDER];
    if (Array.isArray(ours)) ours.sort((a, b) => templateRank(a) - templateRank(b) || a.localeCompare(b));
    return templates;
  };
}

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
    // nodes whose result is a line of text: LinearAG Calibrate (the fit) and the annealing trainer (the file)
    if (!["LinearAGCalibrate", "AnnealingGuidanceTrain"].includes(nodeData.name)) return;
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
