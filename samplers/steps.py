"""Which solver step a model evaluation belongs to.

ComfyUI has no step counter: samplers call the model at off-grid sigmas (midpoints of DPM2,
2S and SDE samplers) and some evaluate a correction exactly at the next grid sigma (Heun),
which is also where the next step's first evaluation happens. The papers decide guidance per
step, on the step's starting sigma, and keep the decision for every evaluation of that step, so
each evaluation has to be attributed to its step:

- an evaluation at the next grid sigma starts the next step, unless the sampler is known to
  evaluate a correction there first (`GRID_CORRECTORS`: Heun, Heun++);
- an evaluation between the current step's sigma and the next one (midpoints, the PECE
  re-evaluation at the same sigma) belongs to the current step;
- anything else (a sampler with its own time grid, such as dpm_fast or dpm_adaptive) is placed
  by its sigma: the step k with sigmas[k] >= sigma > sigmas[k + 1].

Limits: with s_churn > 0 a step's first evaluation happens above its grid sigma and is counted
in the previous step; a third-party sampler that corrects exactly at the next grid sigma
without being listed here has that correction counted in the next step.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

Correctors = Callable[[int, Sequence[float]], tuple[int, ...]]


def _heun_correctors(step: int, sigmas: Sequence[float]) -> tuple[int, ...]:
    # sample_heun: one extra evaluation at sigmas[i + 1], except when that sigma is 0.
    return (step + 1,) if sigmas[step + 1] != 0 else ()


def _heunpp2_correctors(step: int, sigmas: Sequence[float]) -> tuple[int, ...]:
    # sample_heunpp2: none on the last step, one at sigmas[i + 1] on the one before,
    # two (sigmas[i + 1], sigmas[i + 2]) otherwise.
    end = sigmas[-1]
    if sigmas[step + 1] == end:
        return ()
    if sigmas[step + 2] == end:
        return (step + 1,)
    return (step + 1, step + 2)


# k-diffusion functions (by name) whose step evaluates the model again at later grid sigmas.
GRID_CORRECTORS: dict[str, Correctors] = {
    "sample_heun": _heun_correctors,
    "sample_heunpp2": _heunpp2_correctors,
}


def _no_correctors(step: int, sigmas: Sequence[float]) -> tuple[int, ...]:
    return ()


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)


class StepTracker:
    """Attributes each model evaluation of one run to a solver step. One instance per run."""

    def __init__(self, sigmas: Sequence[float], sampler: str = ""):
        self.sigmas = [float(s) for s in sigmas]
        if len(self.sigmas) < 2:
            raise ValueError("a sampling run needs at least two sigmas")
        self.steps = len(self.sigmas) - 1
        self._correctors = GRID_CORRECTORS.get(sampler, _no_correctors)
        self.step = -1
        self._pending: list[int] = []  # grid indices of corrections the current step still makes

    def locate(self, sigma: float) -> tuple[int, bool]:
        """(step, is_first_evaluation_of_step) for an evaluation at `sigma`, in call order."""
        s, step = float(sigma), self.step
        if step >= 0:
            if self._pending and _close(s, self.sigmas[self._pending[0]]):
                self._pending.pop(0)
                return step, False
            following = step + 1
            if following < self.steps and _close(s, self.sigmas[following]):
                return self._start(following), True
            if self.sigmas[following] < s <= self.sigmas[step] or _close(s, self.sigmas[step]):
                return step, False
        return self._start(self.step_of_sigma(s)), True

    def step_of_sigma(self, sigma: float) -> int:
        """The step k with sigmas[k] >= sigma > sigmas[k + 1] (clamped to the run)."""
        for k in range(self.steps):
            if sigma > self.sigmas[k + 1] and not _close(sigma, self.sigmas[k + 1]):
                return k
        return self.steps - 1

    def _start(self, step: int) -> int:
        self.step = step
        self._pending = list(self._correctors(step, self.sigmas))
        return step
