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

from .spaces import EDM_SIGMA



@dataclass(frozen=True)
class RunInfo:
    """What a schedule may know about a sampling run before it starts."""

    sigmas: tuple[float, ...]  # the run's sigma grid, last entry included (usually 0)
    sigma_space: str = EDM_SIGMA  # EDM_SIGMA or FLOW (spaces.py)
    sampler: str = ""  # name of the k-diffusion function (sample_euler, ...), for messages and files
    renoises_with_uncond: bool = False  # the sampler re-noises with the unconditional prediction (CFG++)
    takes_flow_step: bool = False  # on a flow model, the sampler's step is the annealing reference's
    guider: str = ""  # a core guider that combines its passes its own way (PerpNegGuider, ...); "" for CFG
    prediction: str = "eps"  # what the model predicts (spaces.PREDICTION_SPACE)
    timesteps: str = "discrete_1000"  # the model's timestep convention: discrete_1000 or continuous
    latent_shape: tuple[int, ...] = ()  # (batch, channels, ...) of the run's latent
    model_family: str = ""  # the model's family as ComfyUI detected it (sdxl, sd15, sd3, ...), "" if unknown
    noise_scale: float = 1.0  # std of a flow model's noise (x = (1 - t) x0 + t * noise_scale * n); 1 elsewhere

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
    model_timestep: float = 0.0  # the timestep the model itself receives (0..999 for SD/SDXL), for schedules that read it
    # a patch of the model reads the unconditional pass itself (ComfyUI's SelfAttentionGuidance: its prediction and
    # attention map; NAGuidance: its attention beside the positive's): the pass runs at every evaluation, and a
    # sample without guidance gets weight 1 with the real prediction in the slot, as stock ComfyUI's cfg-1 step
    hooks_read_uncond: bool = False


Mask = tuple  # tuple[bool, ...]: one decision per sample of the batch, on the host


@dataclass(frozen=True)
class StepPlan:
    """A schedule's decision for one solver step, taken at the step's first evaluation and kept by the
    driver (`ScheduleDriver`) for the step's other evaluations.

    Decisions are host values (Python bools), not tensors: whether the unconditional pass runs is decided
    on the host before the model is called, so they are there anyway, and a handful of bools costs
    nothing where a tensor operation per decision costs microseconds of host time per evaluation."""

    guided: Mask  # per sample: guided in this step
    estimated: bool = False  # the guided samples' unconditional prediction is estimated (LinearAG), not run


@dataclass(frozen=True)
class Guidance:
    """How an evaluation's predictions are combined: the weight of every sample, and which samples
    are guided (those whose unconditional prediction is at hand, or fewer: a method may measure and
    then decide not to guide)."""

    weight: float | list[float]  # one weight for every sample, or one per sample
    guided: Mask


def every(batch_size: int, value: bool = True) -> Mask:
    return (value,) * batch_size


def reduction_dtype(device: torch.device) -> torch.dtype:
    """The dtype a schedule reduces predictions in on their device (a similarity, a norm, a least squares):
    float64, or float32 where the device has no float64 (Apple's MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


class GuidanceSchedule:
    """Base class: stock CFG. A method overrides what it decides.

    ScheduleDriver below drives a schedule at every model evaluation of a run:
    - plan_step(ev), once per step at its first evaluation: which samples are guided in the step,
      and whether their unconditional prediction is estimated instead of run;
    - the model: the unconditional pass runs, for the whole batch, when a guided sample needs it and
      ComfyUI's cfg == 1 shortcut does not apply to this evaluation;
    - estimate_uncond(ev, cond), when the plan says so, in place of the pass (the schedule that planned
      the estimate knows, in guide, that this step's unconditional prediction is one);
    - guide(ev, cond, uncond, candidates): the weights, and which candidates are guided.
    Samples that are not guided are treated exactly as if they had been sampled alone with the pass
    skipped: their unconditional slot holds the conditional prediction and their weight is irrelevant.
    """

    # ComfyUI skips the unconditional pass where cfg == 1 ("cfg1 optimisation") unless the sampler
    # disables that; a schedule that needs the pass whatever the cfg says so here.
    follows_cfg1_shortcut = True
    # Evaluation.model_timestep is filled in only for a schedule that reads it (one conversion per run)
    reads_model_timestep = False

    def __init__(self, run: RunInfo):
        self.run = run

    def plan_step(self, ev: Evaluation) -> StepPlan:
        return StepPlan(guided=every(ev.batch_size))

    def estimate_uncond(self, ev: Evaluation, cond: torch.Tensor) -> torch.Tensor:
        """The unconditional prediction where the step's plan has it estimated."""
        raise NotImplementedError(f"{type(self).__name__} plans estimated steps but cannot estimate")

    def guide(self, ev: Evaluation, cond: torch.Tensor, uncond: torch.Tensor, candidates: Mask) -> Guidance:
        """Once the predictions are in: the weight per sample, and which of the candidates (the guided
        samples whose unconditional prediction was run or estimated) are guided. Only a few numbers per
        sample may reach the host here (predictions stay on their device)."""
        return Guidance(ev.cond_scale, candidates)

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
    estimated: set[int] = field(default_factory=set)  # steps whose unconditional prediction was estimated (LinearAG)
    evaluations: int = 0  # model evaluations (calls of the guider), each for the whole batch
    uncond_evaluations: int = 0  # of those, how many ran the unconditional pass
    # per sample: evaluations at which that sample needed the unconditional pass, i.e. what it
    # would have cost alone (in a batch the pass runs for all samples when one needs it)
    uncond_needed: list[int] = field(default_factory=list)

    def add(self, ev: Evaluation, needed: Mask, guided: Mask, weights, ran_uncond: bool, estimated: bool = False):
        """One evaluation: `needed`, `guided` per sample, `weights` per sample (any sequence of floats)."""
        self.evaluations += 1
        self.uncond_evaluations += int(ran_uncond)
        self.batch_size = ev.batch_size
        if not self.uncond_needed:
            self.uncond_needed = [0] * ev.batch_size
        if any(needed):
            self.uncond_needed = [n + int(bool(k)) for n, k in zip(self.uncond_needed, needed)]
        if ev.first_of_step:
            if estimated:
                self.estimated.add(ev.step)
            self.guided[ev.step] = [bool(g) for g in guided]
            self.weight[ev.step] = [float(w) if g else 1.0 for w, g in zip(weights, guided)]

    def guided_steps(self, sample: int = 0) -> list[int]:
        return [s for s, g in sorted(self.guided.items()) if sample < len(g) and g[sample]]

    def as_dict(self) -> dict:
        """The record as plain JSON values (nodes/reports.py sends it over the API)."""
        samples = range(self.batch_size)
        return {"steps": self.steps, "batch_size": self.batch_size,
                "guided_steps": [self.guided_steps(b) for b in samples],
                "weights": [[self.weight[s][b] if s in self.weight else None for s in range(self.steps)] for b in samples],
                "estimated_steps": sorted(self.estimated),
                "evaluations": self.evaluations, "uncond_evaluations": self.uncond_evaluations,
                "uncond_needed": list(self.uncond_needed)}

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


@dataclass(frozen=True)
class GuidedPrediction:
    """What one evaluation hands on to ComfyUI's cfg_function."""

    cond: torch.Tensor
    uncond_slot: torch.Tensor  # the real or estimated unconditional prediction, cond for unguided samples
    cond_scale: float | torch.Tensor  # cfg_function's cond_scale argument
    ran_uncond: bool  # the unconditional pass ran (for the whole batch)
    guided: Mask  # per sample: guided in this evaluation


class ScheduleDriver:
    """Runs a schedule over one run's evaluations: keeps each step's plan, asks the schedule in the
    contract's order and records what happened. One per run, made by the glue with the schedule.

    Its own work per evaluation is host work on a few bools per sample: it runs inside every model
    evaluation, where on a fast GPU at batch 1 host time is what a step costs (benchmarks/overhead.py),
    and it never reads a prediction (the schedules read the few numbers they need)."""

    def __init__(self, schedule: GuidanceSchedule, record: RunRecord):
        self.schedule = schedule
        self.record = record
        self.plan: tuple[int, StepPlan] | None = None  # (step, its plan)
        self._masks: dict = {}  # (mask, device, rank) -> the mask as a tensor that broadcasts over a latent
        self.last_ran_uncond: bool | None = None  # whether the previous evaluation ran the pass (None: the first)

    def step_plan(self, ev: Evaluation) -> StepPlan:
        if self.plan is None or ev.first_of_step or self.plan[0] != ev.step:
            self.plan = (ev.step, self.schedule.plan_step(ev))
        return self.plan[1]

    def evaluate(self, ev: Evaluation, predict: Callable[[bool], tuple[torch.Tensor, torch.Tensor]],
                 uncond_available: bool = True) -> GuidedPrediction:
        """One model evaluation, in the order a sampler's step takes it: the step's plan, the model's passes,
        the weights, the record. predict(run_uncond) runs the model and returns (cond, uncond); without the
        pass its second item is ignored. uncond_available is False when there is no negative conditioning."""
        plan = self.step_plan(ev)
        nobody = every(ev.batch_size, False)
        guidable = plan.guided if self.guidance_applies(ev) else nobody
        estimate = plan.estimated and any(guidable)
        needs_pass = guidable if uncond_available and not estimate else nobody
        ran_uncond = any(needs_pass) or (ev.hooks_read_uncond and uncond_available)
        cond, uncond = predict(ran_uncond)
        self.last_ran_uncond = ran_uncond
        if estimate:
            uncond = self.schedule.estimate_uncond(ev, cond)
        with_uncond = guidable if estimate or ran_uncond else needs_pass  # the samples whose uncond is at hand
        weight, guided = self.weights(ev, cond, uncond, with_uncond)
        self.keep_for_the_step(ev, plan, with_uncond, guided)
        weights = _per_sample(weight, ev.batch_size)
        self.record.add(ev, needs_pass, guided, weights, ran_uncond, estimate)
        if ran_uncond and ev.hooks_read_uncond:  # the real prediction for every sample, weight 1 where unguided
            real = [w if g else 1.0 for w, g in zip(weights, guided)]
            return GuidedPrediction(cond, uncond, scale_argument(real, every(ev.batch_size), cond), ran_uncond, guided)
        return GuidedPrediction(cond, unguided_to_cond(cond, uncond, guided, self.mask),
                                scale_argument(weights, guided, cond), ran_uncond, guided)

    def pass_returns(self, run_uncond: bool) -> bool:
        """Whether the pass, if run now, follows evaluations without it: it starts mid-run (the interval's first
        step) or comes back (LinearAG's real step after an estimated one). Asked before the evaluation is recorded,
        e.g. from within `evaluate`'s predict. The glue runs such a pass as a new branch: a cache that keeps a
        difference per branch (EasyCache) may hold one from before the gap, and would apply that stale difference
        in place of the pass."""
        return run_uncond and self.last_ran_uncond is False

    def plain_step(self, ev: Evaluation) -> bool | None:
        """True (False) where this evaluation is plain CFG with the sampler's cfg (the conditional prediction alone)
        for the whole batch, decided by the step's plan without the predictions: the schedule weighs with the cfg
        (GuidanceSchedule.guide, not overridden) and estimates nothing. None where the predictions are needed;
        then `evaluate`. The glue runs a plain evaluation as ComfyUI's own and tells `record_plain`."""
        if type(self.schedule).guide is not GuidanceSchedule.guide:
            return None
        plan = self.step_plan(ev)
        if plan.estimated:
            return None
        if all(plan.guided):
            # the pass returning after a gap runs as a new branch (pass_returns): not ComfyUI's own step
            return None if self.pass_returns(self.guidance_applies(ev)) else True
        return False if not any(plan.guided) else None

    def record_plain(self, ev: Evaluation, guided: bool) -> None:
        """Record a plain evaluation (`plain_step`) as `evaluate` would: the pass ran where the batch was guided and
        ComfyUI's cfg == 1 shortcut did not hold."""
        applied = guided and self.guidance_applies(ev)
        mask = every(ev.batch_size, applied)
        self.record.add(ev, mask, mask, [ev.cond_scale] * ev.batch_size, applied)
        self.last_ran_uncond = applied

    def guidance_applies(self, ev: Evaluation) -> bool:
        """False where ComfyUI's cfg == 1 shortcut holds: per evaluation, since another node may change cfg
        within a step."""
        return not (self.schedule.follows_cfg1_shortcut and ev.skip_uncond_at_weight_one
                    and math.isclose(ev.cond_scale, 1.0))

    def weights(self, ev: Evaluation, cond: torch.Tensor, uncond: torch.Tensor,
                candidates: Mask) -> tuple[float | list[float], Mask]:
        """(weight, guided): the schedule's, among the candidates; no sample guided without one."""
        if not any(candidates):
            return 1.0, candidates
        guidance = self.schedule.guide(ev, cond, uncond, candidates)
        if guidance.guided is candidates:
            return guidance.weight, candidates
        return guidance.weight, tuple(bool(g) and c for g, c in zip(guidance.guided, candidates))

    def keep_for_the_step(self, ev: Evaluation, plan: StepPlan, candidates: Mask, guided: Mask):
        """A method may stop guiding samples at a step's first evaluation (AG's crossing): the step's other
        evaluations (Heun's correction) follow that decision."""
        if ev.first_of_step and guided != candidates:
            kept = tuple(p and (g or not c) for p, g, c in zip(plan.guided, guided, candidates))
            self.plan = (ev.step, StepPlan(guided=kept, estimated=plan.estimated))

    def mask(self, guided: Mask, like: torch.Tensor) -> torch.Tensor:
        """`guided` as a bool tensor on `like`'s device that broadcasts over it, made once per run, device and rank."""
        key = (guided, like.device, like.ndim)
        if key not in self._masks:
            self._masks[key] = broadcast_mask(guided, like)
        return self._masks[key]


def broadcast_mask(guided: Mask, like: torch.Tensor) -> torch.Tensor:
    """`guided` as a bool tensor on `like`'s device, shaped (B, 1, ...) to broadcast over it."""
    return torch.tensor(guided, dtype=torch.bool).to(like.device).view(-1, *([1] * (like.ndim - 1)))


def _per_sample(weight: float | list[float], batch_size: int) -> list[float]:
    """A schedule's weight as one float per sample."""
    if isinstance(weight, (int, float)):
        return [float(weight)] * batch_size
    return [float(w) for w in weight]


def unguided_to_cond(cond: torch.Tensor, uncond: torch.Tensor, guided: Mask,
                     mask: Callable[[Mask, torch.Tensor], torch.Tensor] = broadcast_mask) -> torch.Tensor:
    """The unconditional slot handed on: the real prediction for guided samples, the conditional
    one for the others, so that D = cond for them and hooks (CFG++ re-noising, post-CFG patches)
    see what they would see had the pass been skipped for that sample alone, never zeros. `mask` makes
    the tensor of a mixed batch's mask (the driver keeps one per run)."""
    if all(guided):
        return uncond
    if not any(guided):
        return cond
    return torch.where(mask(guided, cond), uncond, cond)


def scale_argument(weights: list[float], guided: Mask, like: torch.Tensor) -> float | torch.Tensor:
    """The cond_scale to hand to ComfyUI's cfg_function: a float when every guided sample shares
    one weight (the common case, and what other patches expect), else a per-sample tensor that
    broadcasts over the latent. Unguided samples carry cond in both slots, so their entry only
    has to keep the value common; 1.0 when no sample is guided."""
    if not any(guided):
        return 1.0
    common = next(w for w, g in zip(weights, guided) if g)
    w = [float(v) if g else float(common) for v, g in zip(weights, guided)]
    if all(v == w[0] for v in w):
        return w[0]
    # made on the CPU in the latent's dtype, then moved: some devices (Apple's MPS) cannot hold float64
    return torch.tensor(w, dtype=like.dtype).to(like.device).view(-1, *([1] * (like.ndim - 1)))
