"""Which solver step a model evaluation belongs to.

ComfyUI has no step counter, and a step's evaluations are not recognisable by their sigma alone:
samplers evaluate at midpoints that can lie below the next grid sigma (ancestral 2S and DPM2 when
sigma_down is far below it), and several evaluate a stage exactly at the next grid sigma (Heun's
correction, DPM++ SDE and SEEDS with r = 1, exp_heun_2_x0), where the next step also starts. The
papers decide guidance per step and keep the decision for every evaluation of that step, so each
evaluation has to be attributed to the step that made it.

What does tell: every k-diffusion sampler calls its callback once per step, with the step's index,
right after the step's first model evaluation. So the order of evaluations and callbacks of a run
attributes every evaluation: the one just before callback i is step i's first, and the ones after it
belong to step i until step i + 1's first. A guidance method has to decide before each evaluation,
so the glue rehearses the run: it runs the sampler's own function, with the run's sigmas and
options, on a one-pixel latent and a stand-in model that costs nothing, and records that order
(`plan_from_events`). The real run then follows the plan evaluation by evaluation (`StepTracker`).

Where there is no plan, evaluations are placed by sigma (`StepTracker` without a plan, and from the
first evaluation where a real run departs from its plan):
- an evaluation at the next grid sigma starts the next step;
- one between the current step's sigma and the next one belongs to the current step;
- anything else to the step k with sigmas[k] >= sigma > sigmas[k + 1].
That is the case for samplers with their own time grid (dpm_fast, dpm_adaptive: their callbacks
count their own steps), for a sampler that is not a k-diffusion function, and for a rehearsal that
fails; the glue names such a sampler once in the log.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)


@dataclass(frozen=True)
class PlannedEvaluation:
    sigma: float  # where the rehearsal evaluated the model
    step: int
    first_of_step: bool


@dataclass(frozen=True)
class Evaluated:
    """A rehearsal event: the model was evaluated at `sigma`."""
    sigma: float


@dataclass(frozen=True)
class Called:
    """A rehearsal event: the sampler called its callback for step `step` (reporting `sigma`, if it does)."""
    step: int
    sigma: float | None = None


def plan_from_events(events: Sequence[Evaluated | Called], sigmas: Sequence[float]) -> list[PlannedEvaluation] | None:
    """Each evaluation's step from the order of evaluations and callbacks of a rehearsed run.

    None when the callbacks do not mark the run's own steps: not 0, 1, ..., steps - 1 in order, each
    right after an evaluation, or reporting a sigma off the run's grid (samplers with their own time
    grid); the caller then places evaluations by sigma."""
    steps = len(sigmas) - 1
    called = [e for e in events if isinstance(e, Called)]
    if [c.step for c in called] != list(range(steps)):
        return None
    attributed: list[tuple[float, int]] = []  # (sigma, step) per evaluation, in call order
    step = 0  # evaluations before the one that precedes callback 0 (none in k-diffusion) are step 0's
    for k, event in enumerate(events):
        if isinstance(event, Evaluated):
            attributed.append((event.sigma, step))
            continue
        if k == 0 or not isinstance(events[k - 1], Evaluated):
            return None
        if event.sigma is not None and not math.isclose(event.sigma, sigmas[event.step], rel_tol=1e-3, abs_tol=1e-6):
            return None
        step = event.step
        attributed[-1] = (attributed[-1][0], step)
    # a step's decision is taken at its earliest evaluation
    return [PlannedEvaluation(sigma, step, k == 0 or attributed[k - 1][1] != step)
            for k, (sigma, step) in enumerate(attributed)]


class StepTracker:
    """Attributes each model evaluation of one run to a solver step, in call order. One instance per run.

    With a plan (from a rehearsal) evaluation k gets the plan's step for evaluation k (`next_planned`),
    without reading the sigma the sampler evaluates at: on an accelerator that read would make the host
    wait for the device at every evaluation. The glue sees every evaluation (its wrapper is the outermost)
    and checks the sigmas against the plan once the run is over (`departure`). Without a plan, and
    past its end, evaluations are placed by sigma (`locate`; the module docstring gives the rule)."""

    def __init__(self, sigmas: Sequence[float], plan: Sequence[PlannedEvaluation] | None = None):
        self.sigmas = [float(s) for s in sigmas]
        if len(self.sigmas) < 2:
            raise ValueError("a sampling run needs at least two sigmas")
        self.steps = len(self.sigmas) - 1
        self.plan = list(plan) if plan is not None else None
        self.evaluations = 0  # the plan's index of the next evaluation
        self.departed_at: int | None = None  # the evaluation where the run left its plan
        self.step = -1

    def next_planned(self) -> PlannedEvaluation | None:
        """The plan's entry for the next evaluation, counted as made; None where there is no plan or the run
        has more evaluations than its plan (then `locate` places it, by sigma)."""
        k = self.evaluations
        if self.plan is None or self.departed_at is not None:
            return None
        if k >= len(self.plan):
            self.departed_at = k
            return None
        self.evaluations += 1
        self.step = self.plan[k].step
        return self.plan[k]

    def departure(self, evaluated: Sequence[tuple[int, float]]) -> int | None:
        """The first evaluation, among those attributed by the plan ((plan index, sigma the sampler evaluated
        at)), whose sigma is not the planned one; None when the run followed its plan. Also kept as departed_at."""
        for k, seen in evaluated:
            if not _close(float(seen), self.plan[k].sigma):
                self.departed_at = k if self.departed_at is None else min(k, self.departed_at)
                break
        return self.departed_at

    def locate(self, sigma: float) -> tuple[int, bool]:
        """(step, is_first_evaluation_of_step) for the next evaluation, at `sigma`, by the plan while the run
        follows it (checked here, for callers that have the sigma at hand), else by sigma."""
        k, s = self.evaluations, float(sigma)
        if self.plan is not None and self.departed_at is None:
            if k < len(self.plan) and _close(s, self.plan[k].sigma):
                planned = self.next_planned()
                return planned.step, planned.first_of_step
            self.departed_at = k
        self.evaluations += 1
        return self._by_sigma(s)

    def _by_sigma(self, s: float) -> tuple[int, bool]:
        step = self.step
        if step >= 0:
            following = step + 1
            if following < self.steps and _close(s, self.sigmas[following]):
                self.step = following
                return following, True
            if following <= self.steps and (self.sigmas[following] < s <= self.sigmas[step] or _close(s, self.sigmas[step])):
                return step, False
        self.step = self.step_of_sigma(s)
        return self.step, True

    def step_of_sigma(self, sigma: float) -> int:
        """The step k with sigmas[k] >= sigma > sigmas[k + 1] (clamped to the run)."""
        for k in range(self.steps):
            if sigma > self.sigmas[k + 1] and not _close(sigma, self.sigmas[k + 1]):
                return k
        return self.steps - 1
