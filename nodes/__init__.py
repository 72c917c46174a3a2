"""ComfyUI glue: node definitions and the shared patch/guider mechanism (guidance.py)."""
from .adaptive import AdaptiveGuidanceGuider, AdaptiveGuidancePatch, LinearAGCalibrate
from .annealing import AnnealingGuidanceGuider, AnnealingGuidancePatch
from .annealing_train import AnnealingGuidanceTrain
from .interval import GuidanceIntervalGuider, GuidanceIntervalPatch
from .plot import GuidanceSchedulePlot
from .reports import register_routes

register_routes()  # GET /guidance_schedules/runs, where a ComfyUI server runs

NODE_CLASS_MAPPINGS = {
    "GuidanceIntervalGuider": GuidanceIntervalGuider,
    "GuidanceIntervalPatch": GuidanceIntervalPatch,
    "AdaptiveGuidanceGuider": AdaptiveGuidanceGuider,
    "AdaptiveGuidancePatch": AdaptiveGuidancePatch,
    "LinearAGCalibrate": LinearAGCalibrate,
    "AnnealingGuidanceGuider": AnnealingGuidanceGuider,
    "AnnealingGuidancePatch": AnnealingGuidancePatch,
    "AnnealingGuidanceTrain": AnnealingGuidanceTrain,
    "GuidanceSchedulePlot": GuidanceSchedulePlot,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    # short and distinct in their first words, so that the node library's truncated names still differ: the
    # patch (for KSampler and every other sampler that takes a MODEL) has the method's name, the guider adds "Guider"
    "GuidanceIntervalGuider": "Guidance Interval Guider",
    "GuidanceIntervalPatch": "Guidance Interval",
    "AdaptiveGuidanceGuider": "Adaptive Guidance Guider",
    "AdaptiveGuidancePatch": "Adaptive Guidance",
    "LinearAGCalibrate": "LinearAG Calibrate",
    "AnnealingGuidanceGuider": "Annealing Guidance Guider",
    "AnnealingGuidancePatch": "Annealing Guidance",
    "AnnealingGuidanceTrain": "Train Annealing Network",
    "GuidanceSchedulePlot": "Guidance Schedule Plot",
}
