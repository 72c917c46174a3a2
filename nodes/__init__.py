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
    "GuidanceIntervalGuider": "Guidance Interval Guider",
    "GuidanceIntervalPatch": "Guidance Interval (model patch)",
    "AdaptiveGuidanceGuider": "Adaptive Guidance Guider",
    "AdaptiveGuidancePatch": "Adaptive Guidance (model patch)",
    "LinearAGCalibrate": "Adaptive Guidance: LinearAG Calibrate",
    "AnnealingGuidanceGuider": "Annealing Guidance Guider",
    "AnnealingGuidancePatch": "Annealing Guidance (model patch)",
    "AnnealingGuidanceTrain": "Annealing Guidance: Train Network",
    "GuidanceSchedulePlot": "Guidance Schedule Plot",
}
