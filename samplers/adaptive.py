"""Adaptive Guidance (Castillo et al., 2023, arXiv 2312.12487; AAAI 2025).

Guidance matters early in sampling and becomes redundant once the conditional and unconditional
predictions agree. Per sample: while the cosine similarity gamma of the two predictions is below
the threshold, the step is guided with cfg; at the first step where gamma reaches the threshold
the sample switches to the conditional prediction alone, for the rest of the run (one-way). That
crossing step itself is not guided (the paper: "once gamma_t >= gamma_bar, use the conditional
prediction alone"); its unconditional pass was only needed to measure gamma. Once every sample of
the batch has stopped, the unconditional pass is no longer run.

gamma is measured on the denoised predictions D_c, D_u (x0 estimates), over the whole latent of a
sample. The paper states it on the noise predictions, but at high noise both noise predictions are
about x / sigma, so their similarity starts near 1 and a threshold rule on it stops guidance at the
first step; the similarity of the denoised predictions starts low and rises to 1, as the paper's
figure shows (README, "Adaptive Guidance"). For flow models the same holds: D is the x0 estimate.
"""
from __future__ import annotations

import math

import torch

from .schedule import Evaluation, GuidanceSchedule, RunInfo


def cosine_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each sample's flattened a and b, in float64, on the CPU: (B,)."""
    a, b = a.flatten(1).to(torch.float64), b.flatten(1).to(torch.float64)
    return torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12).cpu()


def check_threshold(threshold: float) -> float:
    if not isinstance(threshold, (int, float)) or math.isnan(threshold) or not -1.0 <= threshold <= 2.0:
        raise ValueError(f"threshold must be a number in [-1, 2] (cosine similarity; above 1 never stops guidance), "
                         f"got {threshold!r}")
    return float(threshold)


class AdaptiveSchedule(GuidanceSchedule):
    name = "adaptive guidance"

    def __init__(self, run: RunInfo, threshold: float):
        super().__init__(run)
        self.threshold = check_threshold(threshold)
        self.stopped: torch.Tensor | None = None  # per sample: conditional-only from now on
        self.stop_step: list[int | None] = []  # per sample: the crossing step
        self.similarity: dict[int, list[float]] = {}  # per step: gamma per sample (for logs and plots)
        self._step_guided: tuple[int, torch.Tensor] | None = None

    def needs_uncond(self, ev: Evaluation) -> torch.Tensor:
        if self.stopped is None:
            self.stopped = torch.zeros(ev.batch_size, dtype=torch.bool)
            self.stop_step = [None] * ev.batch_size
        if ev.first_of_step or self._step_guided is None or self._step_guided[0] != ev.step:
            # Decided at the step's first evaluation and kept for the step's other evaluations.
            self._step_guided = (ev.step, ~self.stopped & super().needs_uncond(ev))
        return self._step_guided[1] & ~self.stopped

    def guide(self, ev: Evaluation, cond: torch.Tensor, uncond: torch.Tensor,
              needed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        guided = needed.clone()
        if ev.first_of_step:
            gamma = cosine_per_sample(cond, uncond)
            self.similarity[ev.step] = gamma.tolist()
            crossing = guided & (gamma >= self.threshold)
            for b in torch.nonzero(crossing).flatten().tolist():
                self.stopped[b] = True
                self.stop_step[b] = ev.step
            guided = guided & ~crossing
        return torch.full((ev.batch_size,), float(ev.cond_scale), dtype=torch.float64), guided

    def summary(self) -> str:
        steps = self.run.steps
        parts = [f"sample {b}: guided {s if s is not None else steps} of {steps} steps"
                 for b, s in enumerate(self.stop_step)]
        return "; ".join(parts)
