"""Guidance interval nodes: a MODEL patch for KSampler and a GUIDER for SamplerCustomAdvanced."""
from __future__ import annotations

from ..samplers.interval import PAPER_SDXL, SIGMA_HI_UNBOUNDED, GuidanceInterval, IntervalSchedule
from .guidance import Schedule
from .method_nodes import GuidanceMethod, ScheduleGuiderNode, SchedulePatchNode

SIGMA_LO, SIGMA_HI = PAPER_SDXL


def interval_inputs():
    return {
        "sigma_hi": ("FLOAT", {
            "default": SIGMA_HI, "min": 0.0, "max": SIGMA_HI_UNBOUNDED, "step": 0.01, "round": False,
            "tooltip": "Top of the guided range of noise levels (sigma: about 14.6 at the start of an SD/SDXL run, "
                       "near 0 at the end). Steps that start above it run without guidance and skip the "
                       "negative prompt's model pass. 5.42: the paper's SDXL setting; 1000: no top. The same "
                       "numbers work for every model: for flow models (SD3, Flux, Wan) the pack converts them to "
                       "the model's own noise scale."}),
        "sigma_lo": ("FLOAT", {
            "default": SIGMA_LO, "min": 0.0, "max": SIGMA_HI_UNBOUNDED, "step": 0.01, "round": False,
            "tooltip": "Bottom of the guided range of noise levels (sigma). Steps that start at or below it run "
                       "without guidance. 0.28: the paper's SDXL setting; 0: guide to the end. Compared at the "
                       "precision written (0.28 also leaves out a step at 0.2809, as in the paper)."}),
    }


def interval_schedule(sigma_hi, sigma_lo):
    interval = GuidanceInterval(sigma_lo=sigma_lo, sigma_hi=sigma_hi)  # raises a clear ValueError
    return Schedule(lambda run: IntervalSchedule(run, interval), f"Guidance interval ({sigma_lo:g}, {sigma_hi:g}]")


INTERVAL = GuidanceMethod(
    key="interval",
    title="Guidance interval (Kynkaeaenniemi et al. 2024)",
    summary="CFG only for the steps whose noise level (sigma) lies in (sigma_lo, sigma_hi]; the other steps use the "
            "positive prompt alone and skip the negative prompt's model pass, so they cost half.",
    inputs=interval_inputs, schedule=interval_schedule,
    cfg_tooltip="The guidance weight (cfg) inside the interval. Use more than your usual cfg: the paper uses 16 for "
                "SDXL with the default interval.",
    patch_note="The KSampler's cfg is the weight inside the interval.",
    model_tooltip="The model to sample with guidance only in the interval.")


class GuidanceIntervalPatch(SchedulePatchNode):
    METHOD = INTERVAL


class GuidanceIntervalGuider(ScheduleGuiderNode):
    METHOD = INTERVAL
