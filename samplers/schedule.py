"""The contract every guidance method fulfils, and the arithmetic they share.

Convention (as in the papers and ComfyUI): the guided prediction is
    D = D_uncond + w * (D_cond - D_uncond),
so w = 1 means "no guidance" and the unconditional prediction is not needed.

A schedule object lives for exactly one sampling run: the glue creates a fresh one from the
node's settings at the start of every run, so nothing leaks from one queued prompt to the next.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

# Prediction families, as the glue reads them off ComfyUI's model_sampling object.
EDM_SIGMA = "edm"  # EPS, v-prediction, EDM, x0: x = x0 + sigma * noise
FLOW = "flow"  # rectified flow (SD3, Flux, ...): x = (1 - t) * x0 + t * noise, "sigma" is t


@dataclass(frozen=True)
class RunInfo:
    """What a schedule may know about a sampling run before it starts."""

    sigmas: tuple[float, ...]  # the run's sigma grid, last entry included (usually 0)
    sigma_space: str = EDM_SIGMA  # EDM_SIGMA or FLOW
    sampler: str = ""  # name of the k-diffusion function (sample_euler, ...)
    prediction: str = "eps"  # what the model predicts: eps, v, edm, x0, flow
    timesteps: str = "discrete_1000"  # the model's timestep convention: discrete_1000 or continuous
    latent_shape: tuple[int, ...] = ()  # (batch, channels, ...) of the run's latent

    @property
    def steps(self) -> int:
        return max(len(self.sigmas) - 1, 0)


@dataclass(frozen=True)
class Evaluation:
    """One model evaluation of the run, as a schedule sees it."""

    step: int  # the solver step it belongs to (Heun's correction belongs to its step)
    first_of_step: bool  # the step's first evaluation (decisions are taken here)
    sigma: float  # the sigma the model is evaluated at (may be off the grid)
    batch_size: int
    cond_scale: float  # the cfg the sampler was given (KSampler's cfg, the guider's cfg)
    # ComfyUI skips the unconditional pass when cfg == 1 ("cfg1 optimisation") unless the
    # sampler needs it anyway (the CFG++ samplers re-noise with it and disable the skip).
    skip_uncond_at_weight_one: bool = True
    model_timestep: float = 0.0  # the timestep the model itself receives (0..999 for SD/SDXL)


class GuidanceSchedule:
    """Base class: stock CFG. Subclasses decide per step and per sample.

    guided_evaluation() below asks these methods in this order at every model evaluation.
    needs_uncond() is asked before the model call and returns a bool per sample; the
    unconditional pass runs (for the whole batch) only when some sample needs it. guide() is asked
    after the model call, when that pass ran or estimate_uncond() stood in for it: it returns the
    weight of every sample and which samples are guided (a subset of those that needed the pass:
    a method may measure and then decide not to guide). Samples that are not guided are treated exactly as if they had been
    sampled alone with the pass skipped: their unconditional slot holds the conditional
    prediction and their weight is irrelevant.
    """

    def __init__(self, run: RunInfo):
        self.run = run

    def needs_uncond(self, ev: Evaluation) -> torch.Tensor:
        needed = not (math.isclose(ev.cond_scale, 1.0) and ev.skip_uncond_at_weight_one)
        return torch.full((ev.batch_size,), needed, dtype=torch.bool)

    def estimate_uncond(self, ev: Evaluation, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """When the unconditional pass was skipped: an estimate of it and the samples to guide with
        it (LinearAG), or None to leave those samples unguided."""
        return None

    def guide(self, ev: Evaluation, cond: torch.Tensor, uncond: torch.Tensor,
              needed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight per sample, guided per sample) once the predictions are in."""
        return self.weights(ev, cond, uncond), needed

    def weights(self, ev: Evaluation, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        return torch.full((ev.batch_size,), float(ev.cond_scale), dtype=torch.float64)

    def summary(self) -> str:
        return ""


@dataclass
class RunRecord:
    """What guidance did in one run: per step, which samples were guided and with which weight.

    Filled by the glue at every evaluation (counts) and every step's first evaluation (per-step
    decisions); used for the log line, the plot node and the benchmarks.
    """

    steps: int
    batch_size: int = 0
    guided: dict[int, list[bool]] = field(default_factory=dict)
    weight: dict[int, list[float]] = field(default_factory=dict)
    evaluations: int = 0  # model evaluations (calls of the guider), each for the whole batch
    uncond_evaluations: int = 0  # of those, how many ran the unconditional pass
    # per sample: evaluations at which that sample needed the unconditional pass, i.e. what it
    # would have cost alone (in a batch the pass runs for all samples when one needs it)
    uncond_needed: list[int] = field(default_factory=list)

    def add(self, ev: Evaluation, needed: torch.Tensor, guided: torch.Tensor, weight: torch.Tensor, ran_uncond: bool):
        self.evaluations += 1
        self.uncond_evaluations += int(ran_uncond)
        self.batch_size = ev.batch_size
        if not self.uncond_needed:
            self.uncond_needed = [0] * ev.batch_size
        for b, n in enumerate(needed.tolist()):
            self.uncond_needed[b] += int(n)
        if ev.first_of_step:
            self.guided[ev.step] = [bool(g) for g in guided.tolist()]
            self.weight[ev.step] = [float(w) if g else 1.0 for w, g in zip(weight.tolist(), guided.tolist())]

    def guided_steps(self, sample: int = 0) -> list[int]:
        return [s for s, g in sorted(self.guided.items()) if sample < len(g) and g[sample]]

    def describe(self) -> str:
        skipped = self.evaluations - self.uncond_evaluations
        guided = self.guided_steps()
        span = f"steps {_ranges(guided)}" if guided else "no step"
        return (f"guided {span} ({len(guided)} of {self.steps}); unconditional pass skipped in "
                f"{skipped} of {self.evaluations} model evaluations")


def _ranges(indices: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts, start = [], None
    for i, v in enumerate(indices):
        if start is None:
            start = v
        if i + 1 == len(indices) or indices[i + 1] != v + 1:
            parts.append(f"{start}-{v}" if v != start else f"{v}")
            start = None
    return ", ".join(parts)


def guided_evaluation(schedule: GuidanceSchedule, record: RunRecord, ev: Evaluation,
                      predict: Callable[[bool], tuple[torch.Tensor, torch.Tensor]], uncond_available: bool = True):
    """One model evaluation under `schedule`, in the order the contract promises: needs_uncond ->
    the model -> estimate_uncond (when the pass was skipped) -> guide -> the record.

    predict(run_uncond) runs the model and returns (cond, uncond); without the pass its second
    item is ignored. Returns (cond, the unconditional slot to hand on, the cond_scale argument,
    whether the pass ran): what ComfyUI's cfg_function takes.
    """
    needed = schedule.needs_uncond(ev).to(torch.bool)
    if not uncond_available:  # no negative conditioning: nothing to run
        needed = torch.zeros_like(needed)
    ran_uncond = bool(needed.any())
    cond, uncond = predict(ran_uncond)
    guided = needed
    estimate = None if ran_uncond else schedule.estimate_uncond(ev, cond)
    if estimate is not None:
        uncond, guided = estimate
    if ran_uncond or estimate is not None:
        weights, guided = schedule.guide(ev, cond, uncond, guided)
    else:
        uncond, weights = cond, torch.ones(ev.batch_size, dtype=torch.float64)
    record.add(ev, needed, guided, weights, ran_uncond)
    return cond, unguided_to_cond(cond, uncond, guided), scale_argument(weights, guided, like=cond), ran_uncond


def unguided_to_cond(cond: torch.Tensor, uncond: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
    """The unconditional slot handed on: the real prediction for guided samples, the conditional
    one for the others, so that D = cond for them and hooks (CFG++ re-noising, post-CFG patches)
    see what they would see had the pass been skipped for that sample alone, never zeros."""
    if bool(guided.all()):
        return uncond
    mask = guided.to(cond.device).view(-1, *([1] * (cond.ndim - 1)))
    return torch.where(mask, uncond, cond)


def scale_argument(weights: torch.Tensor, guided: torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """The cond_scale to hand to ComfyUI's cfg_function: a float when every guided sample shares
    one weight (the common case, and what other patches expect), else a per-sample tensor that
    broadcasts over the latent. Unguided samples carry cond in both slots, so their entry only
    has to keep the value common; 1.0 when no sample is guided."""
    if not bool(guided.any()):
        return 1.0
    w = torch.where(guided, weights.to(torch.float64), weights[guided][0].to(torch.float64))
    if bool((w == w[0]).all()):
        return float(w[0])
    # the dtype first, on the CPU: some devices (Apple's MPS) cannot hold the float64 weights
    return w.to(dtype=like.dtype).to(like.device).view(-1, *([1] * (like.ndim - 1)))
