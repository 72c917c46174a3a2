"""The training objective of the annealing guidance network (Yehezkel et al. 2025, Algorithm 1), one
step, as the public reference trainer computes it (stated in ../shared/reference/annealing_training/
README.md), for EPS models on the DDPM grid and for flow models. Pure torch: the diffusion model is a
function `predict(z, t, branch)`, branch "cond" or "uncond", returning its output (the noise for EPS,
the velocity for flow) with gradients through z; its weights are the caller's to freeze.

Per example, with lambda drawn by the caller:
- z_t, the model's noising of x0 at the grid timestep t (never the grid's last);
- both predictions at z_t without gradient; w = network(t, ||uncond - cond||, lambda); the guided
  prediction uncond + w (cond - uncond);
- one sampler step to the next grid timestep t' that re-noises with the unconditional prediction
  (EPS: DDIM, x0 from the guided noise, the unconditional noise as the direction; flow: x0 = z - s v_g,
  noise = z + (1 - s) v_u, z' = (1 - s') x0 + s' noise, s = t / 1000);
- both predictions at z' WITH gradient: delta' = cond - uncond there;
- loss = (1 - lambda) mean((guided - target)^2) + r lambda mean(delta'^2), target the noise (EPS) or
  noise - x0 (flow), r = EMA of (1 - lambda) times the first term over EMA of lambda times the second
  (`LossBalance`).

Measured against the reference's parity vectors: equal to 1e-15 for EPS with the released network
(tests/test_annealing_training.py). This is the trainer's core; the ComfyUI node that runs it is to come.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .annealing import AnnealingNetwork

EPS, FLOW = "eps", "flow"


def ddpm_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000) -> torch.Tensor:
    """SD / SDXL's scaled-linear DDPM schedule, computed in float32 as diffusers does (the reference's
    numbers depend on it), returned in float64."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float32) ** 2
    return torch.cumprod(1 - betas, dim=0).to(torch.float64)


@dataclass
class LossBalance:
    """r = EMA((1 - lambda) * eps term) / EMA(lambda * delta term): the two terms' running sizes, decay 0.999,
    starting at the first step's values, capped at 1e4, a plain number (no gradient through it)."""

    decay: float = 0.999
    cap: float = 1e4
    eps_ema: float | None = None
    delta_ema: float | None = None

    def update(self, weighted_eps: float, weighted_delta: float) -> float:
        if self.eps_ema is None:
            self.eps_ema, self.delta_ema = weighted_eps, weighted_delta
        else:
            self.eps_ema = self.decay * self.eps_ema + (1 - self.decay) * weighted_eps
            self.delta_ema = self.decay * self.delta_ema + (1 - self.decay) * weighted_delta
        ratio = self.eps_ema / self.delta_ema if self.delta_ema > 0 else math.inf
        return min(ratio, self.cap)


@dataclass(frozen=True)
class Example:
    x0: torch.Tensor  # (1, C, H, W) data latent
    noise: torch.Tensor  # same shape
    timestep: float  # a grid timestep on the 0..1000 scale (flow: 1000 s)
    next_timestep: float  # the grid's following (less noisy) timestep
    lam: float


def training_loss(network: AnnealingNetwork, predict: Callable, example: Example, prediction: str,
                  balance: LossBalance, alphas_cumprod: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The loss of one example and its parts; backward() on it reaches the network through w and through
    the model's evaluation at z'."""
    x0, noise, t, t_next, lam = example.x0, example.noise, example.timestep, example.next_timestep, example.lam
    if prediction == EPS:
        alphas = ddpm_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        a, a_next = alphas[int(round(t))].to(x0.dtype), alphas[int(round(t_next))].to(x0.dtype)
        z = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise
    elif prediction == FLOW:
        s, s_next = t / 1000.0, t_next / 1000.0
        z = (1 - s) * x0 + s * noise
        target = noise - x0
    else:
        raise ValueError(f"prediction must be {EPS!r} or {FLOW!r}, got {prediction!r}")
    with torch.no_grad():
        cond, uncond = predict(z, t, "cond"), predict(z, t, "uncond")
    batch = x0.shape[0]
    w = network(torch.full((batch,), float(t), dtype=x0.dtype), (uncond - cond).flatten(1).norm(dim=1),
                torch.full((batch,), float(lam), dtype=x0.dtype)).view(-1, *([1] * (x0.ndim - 1)))
    guided = uncond + w * (cond - uncond)
    if prediction == EPS:
        x0_guided = (z - (1 - a).sqrt() * guided) / a.sqrt()
        z_next = a_next.sqrt() * x0_guided + (1 - a_next).sqrt() * uncond
    else:
        z_next = (1 - s_next) * (z - s * guided) + s_next * (z + (1 - s) * uncond)
    delta_next = predict(z_next, t_next, "cond") - predict(z_next, t_next, "uncond")
    eps_term, delta_term = ((guided - target) ** 2).mean(), (delta_next ** 2).mean()
    r = balance.update((1 - lam) * eps_term.item(), lam * delta_term.item())
    loss = (1 - lam) * eps_term + r * lam * delta_term
    return loss, {"eps_term": eps_term.item(), "delta_term": delta_term.item(), "r": r, "w": w.flatten().tolist()}
