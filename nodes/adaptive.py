"""Adaptive Guidance nodes: a GUIDER for SamplerCustomAdvanced and a MODEL patch for KSampler."""
from __future__ import annotations

from ..samplers.adaptive import AdaptiveSchedule, check_threshold
from .guidance import ScheduleGuider, patch_model

CATEGORY = "sampling/guidance schedules"
DEFAULT_THRESHOLD = 0.99


def threshold_input():
    return {"threshold": ("FLOAT", {
        "default": DEFAULT_THRESHOLD, "min": -1.0, "max": 2.0, "step": 0.001, "round": False,
        "tooltip": "Stop guiding a sample once the cosine similarity of its conditional and unconditional denoised "
                   "predictions reaches this value; it stays conditional-only for the rest of the run. Lower stops "
                   "earlier (faster, further from CFG); above 1 never stops (plain CFG)."})}


def adaptive_schedule(threshold):
    threshold = check_threshold(threshold)
    return lambda run: AdaptiveSchedule(run, threshold)


def describe(threshold):
    return f"Adaptive guidance (threshold {threshold:g})"


class AdaptiveGuidancePatch:
    DESCRIPTION = ("Adaptive Guidance (Castillo et al. 2023) for the stock KSampler: each sample is guided with the "
                   "KSampler's cfg until its conditional and unconditional predictions agree (cosine similarity >= "
                   "threshold), then continues without guidance and without the unconditional pass.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), **threshold_input()}}

    def patch(self, model, threshold):
        return (patch_model(model, adaptive_schedule(threshold), describe(threshold)),)


class AdaptiveGuidanceGuider:
    DESCRIPTION = ("Adaptive Guidance (Castillo et al. 2023) as a GUIDER: cfg until the conditional and "
                   "unconditional predictions agree, then the conditional prediction alone.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Guidance weight while a sample is guided."}),
            **threshold_input()}}

    def get_guider(self, model, positive, negative, cfg, threshold):
        return (ScheduleGuider(patch_model(model, adaptive_schedule(threshold), describe(threshold)),
                               positive, negative, cfg),)
