"""The shared arithmetic: what is handed to ComfyUI's cfg_function and the run record."""
import torch

from guidance_schedules.samplers.schedule import Evaluation, RunRecord, scale_argument, unguided_to_cond


def test_unguided_samples_get_cond_in_the_uncond_slot_never_zeros():
    cond, uncond = torch.ones(3, 2, 2, 2), torch.full((3, 2, 2, 2), 5.0)
    out = unguided_to_cond(cond, uncond, (True, False, True))
    assert out[0].eq(5).all() and out[1].eq(1).all() and out[2].eq(5).all()
    assert unguided_to_cond(cond, uncond, (True,) * 3) is uncond


def test_scale_is_a_float_when_shared_and_a_broadcastable_tensor_otherwise():
    like = torch.zeros(3, 4, 8, 8)
    assert scale_argument([7.0, 7.0, 1.0], (True, True, False), like) == 7.0
    assert scale_argument([1.0, 1.0, 1.0], (False,) * 3, like) == 1.0
    per_sample = scale_argument([2.0, 3.0, 1.0], (True, True, False), like)
    assert per_sample.shape == (3, 1, 1, 1)
    assert per_sample.flatten().tolist() == [2.0, 3.0, 2.0]


def test_record_describes_guided_steps_and_skipped_passes():
    record = RunRecord(steps=5)
    for step in range(5):
        ev = Evaluation(step=step, first_of_step=True, sigma=1.0, batch_size=1, cond_scale=5.0)
        guided = (1 <= step <= 3,)
        record.add(ev, guided, guided, [5.0], any(guided))
    assert record.guided_steps() == [1, 2, 3] and record.uncond_needed == [3]
    assert record.describe() == "guided steps 1-3 (3 of 5); unconditional pass skipped in 2 of 5 model evaluations"



def test_every_input_number_is_checked_by_one_rule():
    """A boolean (JSON true) is no number anywhere, nor NaN, nor a value out of range: the interval's bounds, AG's
    threshold, annealing's lambda and the cfg say so alike, naming the input."""
    import math
    import pytest
    from guidance_schedules.samplers.adaptive import check_threshold
    from guidance_schedules.samplers.annealing import check_lambda
    from guidance_schedules.samplers.interval import GuidanceInterval
    checks = {"threshold": check_threshold, "lambda": check_lambda,
              "sigma_hi": lambda v: GuidanceInterval(0.0, v), "sigma_lo": lambda v: GuidanceInterval(v, 10.0)}
    for name, check in checks.items():
        for bad in (True, False, math.nan, math.inf, "1", None):
            with pytest.raises(ValueError, match=f"^{name} must be a"):
                check(bad)


def test_the_driver_says_when_the_pass_runs_again_after_evaluations_without_it():
    """The glue runs such a pass as a new branch (caches keep a difference per branch, EasyCache): the driver tells
    it while the model is asked, at exactly the evaluations whose previous evaluation had no pass; the first
    evaluation of a run has no previous one. A whole-batch guided step after a gap is not a plain step then."""
    from guidance_schedules.samplers.schedule import GuidanceSchedule, RunInfo, ScheduleDriver, StepPlan, every
    wanted = [False, False, True, True, False, True, True, False, False, True]

    class Wanted(GuidanceSchedule):
        def plan_step(self, ev):
            return StepPlan(guided=every(ev.batch_size, wanted[ev.step]))

    driver = ScheduleDriver(Wanted(RunInfo(sigmas=tuple(range(len(wanted), -1, -1)))), RunRecord(steps=len(wanted)))
    returns, plain = [], []
    for step in range(len(wanted)):
        ev = Evaluation(step=step, first_of_step=True, sigma=1.0, batch_size=1, cond_scale=5.0)
        plain.append(driver.plain_step(ev))
        driver.evaluate(ev, lambda run_uncond: (returns.append(driver.pass_returns(run_uncond)),
                                             (torch.ones(1, 1), torch.zeros(1, 1)))[1])
    assert returns == [False, False, True, False, False, True, False, False, False, True]
    assert plain == [False, False, None, True, False, None, True, False, False, None]
