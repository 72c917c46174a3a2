"""What the pack reads off ComfyUI: a model's sigma space, what it predicts, its timesteps, its family and
the scale of its noise, and what a sampler does with the unconditional prediction. One table maps ComfyUI's
model sampling classes to the pack's names (samplers/spaces.py); a class that a newer ComfyUI adds needs one
line here, and so does a new CFG++ sampler below. The pure layer (samplers/) gets the answers, never
ComfyUI's names.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import comfy.model_sampling

from ..samplers import spaces
from ..samplers.checks import number
from ..samplers.spaces import FLOW, ModelFacts

# (ComfyUI's class, the pack's name for what it predicts: spaces.PREDICTION_SPACE), most derived class first:
# the first isinstance match wins (EDM < V_PREDICTION < EPS, IMG_TO_IMG < X0 < EPS, IMG_TO_IMG_FLOW < CONST).
# Classes a host does not have are left out. A class not listed is named by its own name and sampled in EDM
# sigmas, as ComfyUI's EPS-like noise_scaling does (x = x0 + sigma noise).
_PREDICTIONS = [(getattr(comfy.model_sampling, cls, None), name) for cls, name in (
    ("IMG_TO_IMG_FLOW", "x0_flow"),  # ComfyUI 0.33: flow from a source image, x0 predicted
    ("CONST", "flow"),  # rectified flow: SD3, Flux, ...
    ("V_PREDICTION_DDPM", "v_ddpm"),  # ComfyUI 0.33 (CogVideoX): v on the raw x = x0 + sigma noise
    ("EDM", "edm"),
    ("COSMOS_RFLOW", "cosmos_rflow"),  # Cosmos Predict2: a flow prediction on EDM-sigma inputs (x = x0 + sigma n)
    ("V_PREDICTION", "v"),
    ("X0", "x0"),  # and IMG_TO_IMG
    ("EPS", "eps"),
)]
_PREDICTIONS = [row for row in _PREDICTIONS if row[0] is not None]


def model_facts(model) -> ModelFacts:
    """Everything the pack reads off a MODEL (a ModelPatcher, or a guider's), once: its model sampling's
    prediction, timesteps and noise scale, and its family."""
    patcher = getattr(model, "model_patcher", model)
    model_sampling = patcher.get_model_object("model_sampling")
    return ModelFacts(prediction=prediction_of(model_sampling), timesteps=timesteps_of(model_sampling),
                      family=model_family_of(patcher), noise_scale=noise_scale_of(model_sampling))


def prediction_of(model_sampling) -> str:
    return next((name for cls, name in _PREDICTIONS if isinstance(model_sampling, cls)), type(model_sampling).__name__)


def sigma_space_of(model_sampling) -> str:
    return spaces.sigma_space_of(prediction_of(model_sampling))


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


# ComfyUI's samplers that re-noise with the unconditional prediction (CFG++), by their k-diffusion function's
# name. A kept list rather than a name pattern: newer ComfyUI's cfgpp_ud10_ab is one without the suffix.
CFGPP_SAMPLERS = frozenset({
    "sample_euler_cfg_pp", "sample_euler_ancestral_cfg_pp", "sample_dpmpp_2s_ancestral_cfg_pp",
    "sample_dpmpp_2m_cfg_pp", "sample_res_multistep_cfg_pp", "sample_res_multistep_ancestral_cfg_pp",
    "sample_gradient_estimation_cfg_pp", "sample_cfgpp_ud10_ab",
})

# On flow models, the samplers whose step is the annealing reference's (x' = (1 - s') D_guided + s' noise_uncond
# with noise_uncond = (x - (1 - s) D_uncond) / s): ComfyUI's Euler CFG++ computes its step through the model's
# alpha(sigma), which makes it exactly that (tests/host/test_host_annealing_training.py checks it).
FLOW_STEP_SAMPLERS = frozenset({"sample_euler_cfg_pp", "sample_euler_ancestral_cfg_pp"})


def renoises_with_uncond(sampler: str) -> bool:
    """Does the sampler (its k-diffusion function's name) re-noise with the unconditional prediction (CFG++)?"""
    return sampler in CFGPP_SAMPLERS


def takes_flow_step(sampler: str) -> bool:
    """On a flow model, is the sampler's step the annealing reference's?"""
    return sampler in FLOW_STEP_SAMPLERS


@dataclass(frozen=True)
class OwnGuidance:
    """A core guider that combines its model passes its own way: where its predictions are, as (calc_cond_batch
    call, slot) in the order the guider asks for them, and its guidance scales (the guider's attributes)."""

    node: str  # the node users know it by
    cond: tuple[int, int]  # the positive (conditional) prediction
    # the prediction Adaptive Guidance compares it with: the first of these whose conditioning the guider passed
    # (a guider's own cfg == 1 shortcut passes None for a slot, which ComfyUI fills with zeros)
    uncond: tuple[tuple[int, int], ...]
    scales: tuple[tuple[str, str], ...]  # (input name, the guider's attribute); the first is the record's weight

    def prediction(self, calls: list, wheres):
        """The prediction at the first of `wheres` among the guider's calc_cond_batch calls ((conds, results) each)
        whose conditioning was passed; the conditional one where there is none (the guider skipped those passes:
        then nothing is guided)."""
        for call, slot in wheres:
            if call < len(calls) and slot < len(calls[call][1]) and calls[call][0][slot] is not None:
                return calls[call][1][slot]
        call, slot = self.cond
        return calls[call][1][slot]

    def scale_values(self, guider) -> dict[str, float]:
        """The guider's scales by input name; ValueError naming one that is no finite number (it would make a NaN
        latent, silently)."""
        values = {}
        for name, attribute in self.scales:
            values[name] = number(f"{self.node}: {name}", getattr(guider, attribute, None))
        return values

    def weight(self, guider) -> float:
        """The weight the run records: the guider's first scale (DualCFG's cfg_conds; its cfg attribute stays 1)."""
        return next(iter(self.scale_values(guider).values()))


# ComfyUI's guiders that compute guidance their own way, by class (comfy_extras): the unconditional prediction
# is, for PerpNeg, the empty prompt's (its guidance is nocond + cfg (pos - nocond - perp(neg))); for DualCFG the
# negative's (cond2 is the middle step towards the positive), or the middle one's where cfg_cond2_negative is 1
# (DualCFG then passes no negative: its result is middle + cfg_conds (positive - middle)); for DualModel the
# negative model's pass.
OWN_GUIDANCE = {
    "Guider_PerpNeg": OwnGuidance("PerpNegGuider", cond=(0, 0), uncond=((0, 2),),  # [positive, negative, empty]
                                  scales=(("cfg", "cfg"), ("neg_scale", "neg_scale"))),
    "Guider_DualCFG": OwnGuidance("DualCFGGuider", cond=(0, 2), uncond=((0, 0), (0, 1)),  # [negative, middle, positive]
                                  scales=(("cfg_conds", "cfg1"), ("cfg_cond2_negative", "cfg2"))),
    "Guider_DualModel": OwnGuidance("DualModelGuider", cond=(0, 0), uncond=((1, 0),),  # [positive], then [negative]
                                    scales=(("cfg", "cfg"),)),
}


def own_guidance_of(guider) -> OwnGuidance | None:
    """The OwnGuidance of one of ComfyUI's own guiders; None for CFGGuider and for guiders of other packs."""
    cls = type(guider)
    own = OWN_GUIDANCE.get(cls.__name__)
    if own is None:
        return None
    # ComfyUI's own class: defined in its comfy_extras folder (its server imports those files as top-level modules)
    try:
        folder = os.path.basename(os.path.dirname(inspect.getfile(cls)))
    except (TypeError, OSError):
        return None
    return own if folder == "comfy_extras" else None

