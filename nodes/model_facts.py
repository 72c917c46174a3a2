"""What the pack reads off a ComfyUI model: its sigma space, what it predicts, its timesteps, its family and
the scale of its noise. One table maps ComfyUI's model sampling classes to the pack's names
(samplers/schedule.py: EDM_SIGMA, FLOW); a class that a newer ComfyUI adds needs one line here.
"""
from __future__ import annotations

import comfy.model_sampling

from ..samplers.schedule import EDM_SIGMA, FLOW

# (ComfyUI's class, its sigma space, the pack's name for what it predicts), most derived class first:
# the first isinstance match wins (EDM < V_PREDICTION < EPS, IMG_TO_IMG < X0 < EPS, IMG_TO_IMG_FLOW <
# CONST). Classes a host does not have are left out. A class not listed is named by its own name and
# sampled in EDM sigmas, as ComfyUI's EPS-like noise_scaling does (x = x0 + sigma noise).
_PREDICTIONS = [(getattr(comfy.model_sampling, cls, None), space, name) for cls, space, name in (
    ("IMG_TO_IMG_FLOW", FLOW, "x0_flow"),  # ComfyUI 0.33: flow from a source image, x0 predicted
    ("CONST", FLOW, "flow"),  # rectified flow: SD3, Flux, ...
    ("V_PREDICTION_DDPM", EDM_SIGMA, "v_ddpm"),  # ComfyUI 0.33 (CogVideoX): v on the raw x = x0 + sigma noise
    ("EDM", EDM_SIGMA, "edm"),
    ("V_PREDICTION", EDM_SIGMA, "v"),
    ("X0", EDM_SIGMA, "x0"),  # and IMG_TO_IMG
    ("EPS", EDM_SIGMA, "eps"),
)]
_PREDICTIONS = [row for row in _PREDICTIONS if row[0] is not None]


def _row(model_sampling):
    return next((row for row in _PREDICTIONS if isinstance(model_sampling, row[0])), None)


def sigma_space_of(model_sampling) -> str:
    row = _row(model_sampling)
    return row[1] if row else EDM_SIGMA


def prediction_of(model_sampling) -> str:
    row = _row(model_sampling)
    return row[2] if row else type(model_sampling).__name__


def noise_scale_of(model_sampling) -> float:
    """The standard deviation of a flow model's noise (ComfyUI 0.33's `noise_scale`: x = (1 - t) x0 + t s n);
    1 for every other model."""
    return float(getattr(model_sampling, "noise_scale", 1.0)) if sigma_space_of(model_sampling) == FLOW else 1.0


def timesteps_of(model_sampling) -> str:
    if isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscrete) and len(model_sampling.sigmas) == 1000:
        return "discrete_1000"
    return "continuous"


def model_family_of(model) -> str:
    """The model's family as ComfyUI detected it (its model config's class: sdxl, sd15, sd3, flux, ...)."""
    base = getattr(getattr(model, "model_patcher", model), "model", None)
    config = getattr(base, "model_config", None)
    # BASE: the generic config of a model ComfyUI did not recognise (and of the test models): family unknown
    return type(config).__name__.lower() if config is not None and type(config).__name__ != "BASE" else ""
