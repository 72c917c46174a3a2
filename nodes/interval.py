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
            "tooltip": "Upper end of the guided interval, in EDM sigma units (inclusive). Steps starting above "
                       "it run without guidance and without the unconditional pass. Default 5.42 is the "
                       "paper's SDXL setting; 1000 (the maximum) means no upper bound. For flow models "
                       "(SD3, Flux) the bound applies to the flow time of equal noise level, t = s / (1 + s)."}),
        "sigma_lo": ("FLOAT", {
            "default": SIGMA_LO, "min": 0.0, "max": SIGMA_HI_UNBOUNDED, "step": 0.01, "round": False,
            "tooltip": "Lower end of the guided interval, in EDM sigma units (exclusive). Steps starting at or "
                       "below it run without guidance. Default 0.28 is the paper's SDXL setting; 0 guides to "
                       "the end. Bounds are compared at the precision they are written with (0.28 excludes "
                       "the grid sigma 0.2809, as in the paper)."}),
    }


def interval_schedule(sigma_hi, sigma_lo):
    interval = GuidanceInterval(sigma_lo=sigma_lo, sigma_hi=sigma_hi)  # raises a clear ValueError
    return Schedule(lambda run: IntervalSchedule(run, interval), f"Guidance interval ({sigma_lo:g}, {sigma_hi:g}]")


INTERVAL = GuidanceMethod(
    key="interval",
    title="Guidance interval (Kynkaeaenniemi et al. 2024)",
    summary="guidance only for steps whose sigma lies in (sigma_lo, sigma_hi]; other steps use the conditional "
            "prediction alone and skip the unconditional model pass.",
    inputs=interval_inputs, schedule=interval_schedule,
    cfg_tooltip="Guidance weight inside the interval (the paper uses higher weights than full-run CFG: 16 for SDXL "
                "with its default interval).",
    patch_note="The KSampler's cfg is the weight inside the interval.",
    model_tooltip="The model to sample with guidance only in the interval.")


class GuidanceIntervalPatch(SchedulePatchNode):
    METHOD = INTERVAL


class GuidanceIntervalGuider(ScheduleGuiderNode):
    METHOD = INTERVAL
