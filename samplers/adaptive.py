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

import logging
import math

import torch

from . import linear_ag
from .checks import number
from .schedule import Evaluation, Guidance, GuidanceSchedule, Mask, RunInfo, StepPlan, reduction_dtype

log = logging.getLogger("guidance_schedules")


def cosine_per_sample(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None = None) -> list[float]:
    """Cosine similarity of each sample's flattened a and b, one float per sample.

    Taken on the predictions' device, so that only a few numbers per sample reach the host: a full prediction
    copied to the CPU every step grows with the latent and makes the host wait for the device, and every
    tensor operation costs host time in every step. In float64, from the norms |a|, |b| and |a - b| of every
    sample (one reduction): cos = (|a|^2 + |b|^2 - |a - b|^2) / (2 |a| |b|), which keeps its precision near 1,
    where thresholds lie. Where the device has no float64 (Apple's MPS), torch's cosine similarity in float32
    (the identity loses digits there when |a| and |b| differ much). Per sample, so that a sample's value does
    not depend on the rest of its batch (the stop step of a sample in a batch is the one it has alone). As
    torch's cosine_similarity, |a| |b| is at least 1e-12."""
    dtype = dtype or reduction_dtype(a.device)
    if dtype != torch.float64:
        return torch.nn.functional.cosine_similarity(a.reshape(a.shape[0], -1).to(dtype),
                                                     b.reshape(b.shape[0], -1).to(dtype), dim=1, eps=1e-12).tolist()
    parts = torch.stack([a, b, a - b], dim=1).reshape(a.shape[0], 3, -1)
    norms = torch.linalg.vector_norm(parts, dim=2, dtype=dtype).tolist()
    return [(na * na + nb * nb - nd * nd) / (2 * max(na * nb, 1e-12)) for na, nb, nd in norms]


def check_threshold(threshold: float) -> float:
    return number("threshold", threshold, -1.0, 2.0, meaning="a cosine similarity; above 1 never stops guidance")


class AdaptiveSchedule(GuidanceSchedule):
    """AG for one run. With a LinearAG file (samplers/linear_ag.py), the unconditional pass of every odd
    step of the guided part is estimated from the previous (real) step instead of run; gamma is only
    measured on real passes."""

    def __init__(self, run: RunInfo, threshold: float, linear: linear_ag.LinearAGFile | None = None):
        super().__init__(run)
        self.threshold = check_threshold(threshold)
        self.stopped: list[bool] = []  # per sample: conditional-only from now on
        self.stop_step: list[int | None] = []  # per sample: the crossing step
        if linear is not None:
            if run.guider:
                raise ValueError(f"linear_ag: LinearAG estimates the unconditional pass of plain CFG; {run.guider} "
                                 "combines its passes its own way, so it does not apply there. Choose none.")
            linear.check_run(run)
        self.linear = linear
        self.cfg_noted = False
        self.previous: tuple[int, torch.Tensor, torch.Tensor] | None = None  # last real step's (step, D_c, D_u)
        self.estimated_steps = 0
        self.estimating_step: int | None = None  # the step whose unconditional prediction is estimated

    def plan_step(self, ev: Evaluation) -> StepPlan:
        if not self.stopped:
            self.stopped = [False] * ev.batch_size
            self.stop_step = [None] * ev.batch_size
        guided = tuple(not s for s in self.stopped)
        estimated = (self.linear is not None and linear_ag.estimated_step(ev.step) and any(guided)
                     and self.previous is not None and self.previous[0] == ev.step - 1)
        self.estimated_steps += int(estimated)
        self.estimating_step = ev.step if estimated else None
        return StepPlan(guided=guided, estimated=estimated)

    def estimate_uncond(self, ev: Evaluation, cond: torch.Tensor) -> torch.Tensor:
        fitted_cfg = self.linear.fitted_for.cfg
        if not self.cfg_noted and not math.isclose(ev.cond_scale, fitted_cfg, rel_tol=1e-3):
            self.cfg_noted = True
            log.warning("LinearAG: %s was fitted at cfg %g; this run guides with cfg %g, so its estimates may be "
                        "further off. Calibrate at the cfg you sample with.", self.linear.name, fitted_cfg, ev.cond_scale)
        _, prev_cond, prev_uncond = self.previous
        return linear_ag.estimate(self.linear.coefficients, ev.step, cond, prev_cond, prev_uncond)

    def guide(self, ev: Evaluation, cond: torch.Tensor, uncond: torch.Tensor, candidates: Mask) -> Guidance:
        guided = candidates
        if ev.first_of_step and self.estimating_step != ev.step:  # gamma is measured on real passes only
            if self.linear is not None:  # kept for the next step's estimate only where there is one
                self.previous = (ev.step, cond, uncond)
            similarity = self.similarity_of(ev, cond, uncond)  # a few numbers per sample: the step's one read
            crossing = [c and s >= self.threshold for c, s in zip(candidates, similarity)]
            for b, crossed in enumerate(crossing):
                if crossed:
                    self.stopped[b] = True
                    self.stop_step[b] = ev.step
            guided = tuple(c and not x for c, x in zip(candidates, crossing))
        return Guidance(ev.cond_scale, guided)

    def similarity_of(self, ev: Evaluation, cond: torch.Tensor, uncond: torch.Tensor) -> list[float]:
        """gamma per sample: cosine similarity of the denoised predictions."""
        return cosine_per_sample(cond, uncond)

    def summary(self) -> str:
        steps = self.run.steps
        parts = [f"sample {b}: guided {s if s is not None else steps} of {steps} steps"
                 for b, s in enumerate(self.stop_step)]
        if self.linear is not None:
            parts.append(f"LinearAG estimated the unconditional pass at {self.estimated_steps} steps")
        return "; ".join(parts)
