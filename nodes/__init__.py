"""ComfyUI glue: node definitions and the shared patch/guider mechanism (guidance.py)."""
from .interval import GuidanceIntervalGuider, GuidanceIntervalPatch

NODE_CLASS_MAPPINGS = {
    "GuidanceIntervalGuider": GuidanceIntervalGuider,
    "GuidanceIntervalPatch": GuidanceIntervalPatch,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "GuidanceIntervalGuider": "Guidance Interval Guider",
    "GuidanceIntervalPatch": "Guidance Interval (model patch)",
}
