"""Guidance interval (Kynkaeaenniemi et al., NeurIPS 2024, arXiv 2404.07724).

Guide with weight w only for steps whose starting sigma lies in (sigma_lo, sigma_hi]; every
other step uses the conditional prediction alone and its unconditional pass is not run.

Bounds are compared at the precision they are written with. The paper picks sigma_lo and
sigma_hi among the grid sigmas of its schedule and prints them rounded (0.28 for the grid sigma
0.2809...), so a step sigma is rounded to the bound's number of decimals (at least two) before
the comparison: the grid sigma 0.2809 counts as 0.28, which is not above sigma_lo = 0.28, as in
the paper. A bound typed with more decimals is compared more finely.

Sigmas are EDM sigmas. For flow models the step's flow time t is converted to the EDM sigma of
equal signal-to-noise ratio, t / (1 - t), i.e. the bounds mean t in (lo / (1 + lo), hi / (1 + hi)]; where the
model's noise has another scale s (ComfyUI 0.33's flow `noise_scale`), s t / (1 - t).
The first step of a flow model (t = 1) is infinitely noisy and is guided only when sigma_hi is
SIGMA_HI_UNBOUNDED.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from decimal import Decimal

from .checks import number
from .spaces import edm_sigma
from .schedule import Evaluation, GuidanceSchedule, RunInfo, StepPlan, every

log = logging.getLogger("guidance_schedules")

SIGMA_HI_UNBOUNDED = 1000.0  # sigma_hi at or above this has no upper bound
PAPER_SDXL = (0.28, 5.42)  # (sigma_lo, sigma_hi) the paper uses for SDXL


def as_written(value: float) -> float:
    """The value a person typed: float noise a UI may add (0.28000000000000003) removed."""
    return float(format(float(value), ".10g"))


def written_decimals(value: float) -> int:
    """Decimals in the shortest text of `value` (0.28 -> 2, 5.0 -> 1, 1e-05 -> 5)."""
    exponent = Decimal(repr(as_written(value))).as_tuple().exponent
    return max(-int(exponent), 0)


@dataclass(frozen=True)
class GuidanceInterval:
    """The interval (sigma_lo, sigma_hi] in EDM sigma units."""

    sigma_lo: float
    sigma_hi: float

    def __post_init__(self):
        number("sigma_lo", self.sigma_lo, 0.0)
        number("sigma_hi", self.sigma_hi)
        if self.sigma_lo >= self.sigma_hi:
            raise ValueError(f"sigma_lo ({self.sigma_lo:g}) must be smaller than sigma_hi ({self.sigma_hi:g}): "
                             "guidance is applied for sigma in (sigma_lo, sigma_hi]")

    def contains(self, sigma: float) -> bool:
        """Is a step starting at EDM sigma `sigma` guided?"""
        return self._test()(sigma)

    def _test(self):
        """contains() with the bounds' written precision worked out once (a run asks it for every step)."""
        lo, hi = as_written(self.sigma_lo), as_written(self.sigma_hi)
        lo_digits, hi_digits = max(2, written_decimals(lo)), max(2, written_decimals(hi))
        unbounded = hi >= SIGMA_HI_UNBOUNDED

        def test(sigma: float) -> bool:
            if not math.isfinite(sigma):
                return sigma > lo and (unbounded or sigma <= hi)
            # sigma_lo 0 guides to the end: a positive sigma that rounds to 0.00 (EDM models such as SVD and Cosmos
            # end at 0.002) is above it
            above_lo = sigma > 0 if lo == 0 else round(sigma, lo_digits) > lo
            return above_lo and (unbounded or round(sigma, hi_digits) <= hi)
        return test

    def guided_steps(self, run: RunInfo) -> list[bool]:
        """Per step of the run: guided or not, decided on the step's starting sigma."""
        test = self._test()
        return [test(edm_sigma(s, run.sigma_space, run.noise_scale)) for s in run.sigmas[:run.steps]]


class IntervalSchedule(GuidanceSchedule):
    """Guides the steps whose starting sigma lies in the interval, with the sampler's cfg."""

    def __init__(self, run: RunInfo, interval: GuidanceInterval):
        super().__init__(run)
        self.guided_steps = interval.guided_steps(run)
        if run.steps and not any(self.guided_steps):
            first, last = (edm_sigma(run.sigmas[i], run.sigma_space, run.noise_scale) for i in (0, run.steps - 1))
            log.warning("Guidance interval: sigma_lo=%g, sigma_hi=%g select none of this run's %d steps "
                        "(EDM sigmas %.4g .. %.4g); every step runs without guidance.",
                        interval.sigma_lo, interval.sigma_hi, run.steps, first, last)

    def plan_step(self, ev: Evaluation) -> StepPlan:
        return StepPlan(guided=every(ev.batch_size, self.guided_steps[ev.step]))
