"""Bed 1: a class-conditional Gaussian mixture with exact denoisers (no training).

Data x0 in R^2 (a 2x1x1 latent for ComfyUI). Class c is a mixture of isotropic Gaussians; the
unconditional distribution is the mixture of the classes with equal priors. With x = x0 + sigma n
the exact denoiser is the posterior mean
    D(x; sigma, c) = sum_k r_k(x) [mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)],
    r_k(x) ~ pi_k N(x; mu_k, (s_k^2 + sigma^2) I),
so the true conditional distribution is known and samples can be measured exactly: which
components they land in (mode coverage), their sliced Wasserstein distance to the true
conditional, how far outside the data they are pushed, and how tightly they gather in their
component (mode_spread: 1 for the truth, below 1 = sharpened).

The layout mirrors the guidance interval paper's toy: class A has a component that sits next to
class B's mass; CFG at high noise pushes A's samples away from B and so drops that component.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mixture:
    means: torch.Tensor  # (K, 2)
    stds: torch.Tensor  # (K,)
    weights: torch.Tensor  # (K,), sums to 1 within each class
    classes: torch.Tensor  # (K,) class of each component
    n_classes: int

    def component_mask(self, label: int | None) -> torch.Tensor:
        if label is None:
            return torch.ones(len(self.stds), dtype=torch.bool)
        return self.classes == label

    def log_prior(self, label: int | None) -> torch.Tensor:
        """log pi_k of each component under the class (None: the unconditional mixture)."""
        w = self.weights if label is not None else self.weights / self.n_classes
        return torch.where(self.component_mask(label), w.log(), torch.full_like(w, -math.inf))

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, label: int | None) -> torch.Tensor:
        """Exact posterior mean E[x0 | x] for x (B, 2), sigma (B,) in float64."""
        x, sigma = x.double(), sigma.double().view(-1, 1)
        var = self.stds.double().view(1, -1) ** 2 + sigma ** 2  # (B, K)
        d2 = ((x.unsqueeze(1) - self.means.double().unsqueeze(0)) ** 2).sum(-1)  # (B, K)
        log_r = self.log_prior(label).double().view(1, -1) - d2 / (2 * var) - var.log()  # 2-D: log det = 2 log s
        r = log_r.softmax(dim=1)
        shrink = self.stds.double().view(1, -1) ** 2 / var  # (B, K)
        post = self.means.double().unsqueeze(0) + shrink.unsqueeze(-1) * (x.unsqueeze(1) - self.means.double().unsqueeze(0))
        return (r.unsqueeze(-1) * post).sum(1)

    def sample(self, n: int, label: int, generator: torch.Generator) -> torch.Tensor:
        mask = self.component_mask(label)
        idx = torch.multinomial(self.weights * mask, n, replacement=True, generator=generator)
        return self.means[idx].double() + self.stds[idx].double().view(-1, 1) * torch.randn(n, 2, generator=generator, dtype=torch.float64)

    def assign(self, x: torch.Tensor, label: int) -> torch.Tensor:
        """The component of the class each sample most likely belongs to (by data likelihood)."""
        mask = self.component_mask(label)
        var = self.stds.double() ** 2
        d2 = ((x.double().unsqueeze(1) - self.means.double().unsqueeze(0)) ** 2).sum(-1)
        score = torch.where(mask, -d2 / (2 * var) - var.log(), torch.full_like(d2, -math.inf))
        return score.argmax(1)


def default_mixture() -> Mixture:
    """Two classes. A: four components on a ring, one of them (A3) beside class B's mass; B: two
    components. Equal weights within a class."""
    means = torch.tensor([[0.0, 2.0], [2.0, 0.0], [0.0, -2.0], [-2.0, 0.0],  # class A (A3 = (-2, 0))
                          [-3.2, 0.6], [-3.2, -0.6]], dtype=torch.float64)  # class B, beside A3
    stds = torch.tensor([0.25, 0.25, 0.25, 0.25, 0.3, 0.3], dtype=torch.float64)
    classes = torch.tensor([0, 0, 0, 0, 1, 1])
    weights = torch.tensor([0.25, 0.25, 0.25, 0.25, 0.5, 0.5], dtype=torch.float64)
    return Mixture(means, stds, weights, classes, n_classes=2)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two equally sized 2-D sample sets."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(projections, 2, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    pa, pb = (a.double() @ theta.t()).sort(0).values, (b.double() @ theta.t()).sort(0).values
    return float((pa - pb).abs().mean())


def measure(mixture: Mixture, samples: torch.Tensor, label: int, generator: torch.Generator) -> dict[str, float]:
    """Mode coverage, distance to the true conditional and how far samples are off the data."""
    mask = mixture.component_mask(label)
    comps = mixture.assign(samples, label)
    share = torch.bincount(comps, minlength=len(mask))[mask].double() / len(samples)
    expected = mixture.weights[mask].double()
    # distance off the data: Mahalanobis distance (in stds) to the nearest component of the class
    d = ((samples.double().unsqueeze(1) - mixture.means.double().unsqueeze(0)).norm(dim=-1) / mixture.stds.double())
    nearest = torch.where(mask.view(1, -1), d, torch.full_like(d, math.inf)).min(1).values
    # sharpness: RMS distance to the assigned component's mean, in its stds per dimension (truth: 1)
    offsets = (samples.double() - mixture.means.double()[comps]) / mixture.stds.double()[comps].view(-1, 1)
    nearest_any = d.argmin(1)  # the nearest component of any class: the sample's class as the data would have it
    return {
        "in_class": float((mixture.classes[nearest_any] == label).double().mean()),
        "modes_covered": float((share >= 0.25 * expected).double().sum()),  # a mode counts with >= 1/4 of its mass
        "min_mode_share": float((share / expected).min()),
        "sliced_w": sliced_wasserstein(samples, mixture.sample(len(samples), label, generator)),
        "off_data": float((nearest > 4).double().mean()),  # share beyond 4 stds of every component (true data: 0.03%)
        "mode_spread": float((offsets ** 2).mean().sqrt()),
    }
