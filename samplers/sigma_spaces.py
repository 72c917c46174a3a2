"""Conversions between the sigma spaces ComfyUI samples in."""
from __future__ import annotations

import math

from .schedule import EDM_SIGMA, FLOW


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

