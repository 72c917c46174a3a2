"""The pack's one vocabulary of spaces, and the conversions between them.

- Sigma space: how a sampler's sigma relates the latent to the clean one and the noise.
  EDM_SIGMA: x = x0 + sigma n (EPS, v-prediction, EDM, x0 models); FLOW: x = (1 - sigma) x0 + sigma s n
  (rectified flow: SD3, Flux, ...; s is the model's noise scale, 1 for most).
- Prediction: what a model predicts, by the names files record (LinearAG coefficients, annealing networks);
  each samples in one sigma space. The glue names a ComfyUI model's prediction (nodes/host_facts.py).
The annealing trainer works in the sigma space of its model: the two spaces are the two training spaces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EDM_SIGMA = "edm"
FLOW = "flow"

# prediction name -> the sigma space its models sample in
PREDICTION_SPACE = {
    "eps": EDM_SIGMA,
    "v": EDM_SIGMA,
    "edm": EDM_SIGMA,
    "x0": EDM_SIGMA,
    "v_ddpm": EDM_SIGMA,  # CogVideoX's v on the raw latent (ComfyUI 0.33)
    "cosmos_rflow": EDM_SIGMA,  # Cosmos Predict2: noised as x = x0 + sigma n, a flow prediction on x / (1 + sigma)
    "flow": FLOW,
    "x0_flow": FLOW,  # a flow from a source image, x0 predicted (ComfyUI 0.33's IMG_TO_IMG_FLOW)
}


@dataclass(frozen=True)
class ModelFacts:
    """What the pack needs to know of a model, read once (nodes/host_facts.py: model_facts) and handed to the
    sampling run, the trainer and the calibration."""

    prediction: str = "eps"  # PREDICTION_SPACE's names; a class the pack does not know keeps its own name
    timesteps: str = "discrete_1000"  # discrete_1000 (the model's own 0..999) or continuous
    family: str = ""  # the model's family as ComfyUI detected it (sdxl, sd15, sd3, ...), "" if unknown
    noise_scale: float = 1.0  # std of a flow model's noise; 1 elsewhere

    @property
    def sigma_space(self) -> str:
        return sigma_space_of(self.prediction)


def sigma_space_of(prediction: str) -> str:
    """The sigma space of a prediction; EDM sigmas for a name not listed (ComfyUI's EPS-like noise_scaling)."""
    return PREDICTION_SPACE.get(prediction, EDM_SIGMA)


def edm_sigma(sigma: float, sigma_space: str, noise_scale: float = 1.0) -> float:
    """The EDM sigma (noise-to-signal ratio) of a sampler sigma.

    For EPS / v-prediction / EDM models the sampler sigma is the EDM sigma. For flow models
    (x = (1 - t) x0 + t s n, noise of standard deviation s, 1 for most models) the sampler "sigma"
    is t, and the EDM sigma of equal signal-to-noise ratio is s t / (1 - t): t = 1 (pure noise)
    is infinitely far.
    """
    if sigma_space == EDM_SIGMA:
        return float(sigma)
    if sigma_space == FLOW:
        t = float(sigma)
        return math.inf if t >= 1.0 else noise_scale * t / (1.0 - t)
    raise ValueError(f"unknown sigma space {sigma_space!r}")


def signal_scale(sigma_space: str, sigma: torch.Tensor) -> torch.Tensor:
    """a(sigma) in x = a(sigma) x0 + sigma noise: 1 in EDM sigmas, 1 - sigma in flow."""
    if sigma_space == EDM_SIGMA:
        return torch.ones_like(sigma)
    if sigma_space == FLOW:
        return 1 - sigma
    raise ValueError(f"sigma space must be {EDM_SIGMA!r} or {FLOW!r}, got {sigma_space!r}")
