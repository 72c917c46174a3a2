"""The guidance interval schedule: the paper's step selections, flow conversion, bad input."""
import math

import pytest
import torch

from guidance_schedules.samplers.interval import GuidanceInterval, IntervalSchedule, written_decimals
from guidance_schedules.samplers.schedule import Evaluation, RunInfo, RunRecord, ScheduleDriver
from guidance_schedules.samplers.spaces import FLOW


def karras(n, sigma_min, sigma_max, rho):
    ramp = [i / (n - 1) for i in range(n)]
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + r * (lo - hi)) ** rho for r in ramp] + [0.0]


def guided(interval, sigmas, space="edm"):
    run = RunInfo(sigmas=tuple(sigmas), sigma_space=space)
    return [i for i, g in enumerate(interval.guided_steps(run)) if g]


def test_paper_sdxl_setting_guides_steps_10_to_25_of_32():
    # 32-step Heun EDM sampler, sigma 14.61 -> 0.03, rho 3; (0.28, 5.42] guides 16 of 32 steps.
    # The grid sigma 0.2809 is printed as 0.28 and must not count as above it.
    sigmas = karras(32, 0.03, 14.61, 3)
    assert guided(GuidanceInterval(0.28, 5.42), sigmas) == list(range(10, 26))


@pytest.mark.parametrize("lo,hi,steps", [(0.19, 1.61, range(17, 23)), (0.60, 5.00, range(13, 20))])
def test_edm2_settings_match_the_official_code(lo, hi, steps):
    sigmas = karras(32, 0.002, 80, 7)
    assert guided(GuidanceInterval(lo, hi), sigmas) == list(steps)


def test_bounds_typed_with_more_decimals_compare_more_finely():
    sigmas = karras(32, 0.03, 14.61, 3)  # step 26 starts at 0.28094...
    assert 26 in guided(GuidanceInterval(0.2805, 5.42), sigmas)
    assert 26 not in guided(GuidanceInterval(0.281, 5.42), sigmas)


def test_ui_float_noise_does_not_change_the_precision():
    assert written_decimals(0.28000000000000003) == 2
    sigmas = karras(32, 0.03, 14.61, 3)
    assert guided(GuidanceInterval(0.28000000000000003, 5.419999999999999), sigmas) == list(range(10, 26))


def test_flow_bounds_use_the_flow_time_of_equal_signal_to_noise():
    # (0.28, 5.42] in EDM sigma is t in (0.219, 0.844] for a flow model.
    ts = [1.0, 0.95, 0.9, 0.845, 0.843, 0.6, 0.3, 0.225, 0.218, 0.1, 0.0]
    assert guided(GuidanceInterval(0.28, 5.42), ts, FLOW) == [4, 5, 6, 7]


def test_the_first_flow_step_is_guided_only_without_an_upper_bound():
    ts = [1.0, 0.5, 0.0]
    assert guided(GuidanceInterval(0.0, 999.0), ts, FLOW) == [1]
    assert guided(GuidanceInterval(0.0, 1000.0), ts, FLOW) == [0, 1]


@pytest.mark.parametrize("lo,hi,message", [
    (1.0, 1.0, "sigma_lo .* must be smaller than sigma_hi"),
    (5.0, 1.0, "sigma_lo .* must be smaller than sigma_hi"),
    (math.nan, 1.0, "sigma_lo must be a finite number"),
    (0.1, math.inf, "sigma_hi must be a finite number"),
    (-0.5, 1.0, "sigma_lo must be a finite number >= 0"),
])
def test_bad_bounds_are_refused_by_name(lo, hi, message):
    with pytest.raises(ValueError, match=message):
        GuidanceInterval(lo, hi)


def test_an_interval_that_selects_no_step_warns(caplog):
    run = RunInfo(sigmas=(14.6, 7.0, 3.0, 0.0))
    with caplog.at_level("WARNING"):
        IntervalSchedule(run, GuidanceInterval(20.0, 30.0))
    assert "sigma_lo=20, sigma_hi=30 select none" in caplog.text


def evaluation(step, batch=3, cfg=7.0, skip_at_one=True):
    return Evaluation(step=step, first_of_step=True, sigma=0.0, batch_size=batch, cond_scale=cfg,
                      skip_uncond_at_weight_one=skip_at_one)


def driven(schedule, ev):
    """One evaluation through the driver the glue uses: (ran the pass, the scale handed on, weight recorded)."""
    cond, uncond = torch.zeros(ev.batch_size, 4, 2, 2), torch.ones(ev.batch_size, 4, 2, 2)
    record = RunRecord(steps=schedule.run.steps)
    out = ScheduleDriver(schedule, record).evaluate(ev, lambda run_uncond: (cond, uncond))
    return out.ran_uncond, out.cond_scale, record.weight[ev.step]


def test_schedule_asks_for_the_uncond_only_inside_the_interval():
    schedule = IntervalSchedule(RunInfo(sigmas=(14.6, 7.0, 3.0, 0.5, 0.0)), GuidanceInterval(1.0, 8.0))
    needs = [driven(schedule, evaluation(i))[0] for i in range(4)]
    assert needs == [False, True, True, False]
    assert driven(schedule, evaluation(1))[2] == [7.0] * 3
    assert driven(schedule, evaluation(3))[2] == [1.0] * 3


def test_cfg_one_skips_the_uncond_like_comfyui_unless_the_sampler_needs_it():
    schedule = IntervalSchedule(RunInfo(sigmas=(14.6, 7.0, 0.0)), GuidanceInterval(0.0, 20.0))
    assert not driven(schedule, evaluation(0, cfg=1.0))[0]
    assert driven(schedule, evaluation(0, cfg=1.0, skip_at_one=False))[0]


def test_a_step_decided_by_its_plan_alone_is_recorded_as_the_general_path_records_it():
    """ScheduleDriver.plain_step: the interval decides every step by its plan (the glue then runs ComfyUI's own
    sampling_function at the cfg or at 1); its record equals the one the general path makes."""
    run = RunInfo(sigmas=(14.6, 7.0, 3.0, 0.5, 0.0))
    general, plain = RunRecord(steps=run.steps), RunRecord(steps=run.steps)
    schedule = IntervalSchedule(run, GuidanceInterval(1.0, 8.0))
    cond, uncond = torch.zeros(2, 4, 2, 2), torch.ones(2, 4, 2, 2)
    for cfg in (7.0, 1.0):
        for step in range(run.steps):
            ev = evaluation(step, batch=2, cfg=cfg)
            ScheduleDriver(schedule, general).evaluate(ev, lambda run_uncond: (cond, uncond))
            driver = ScheduleDriver(schedule, plain)
            whole_batch = driver.plain_step(ev)
            assert whole_batch is (1.0 < [14.6, 7.0, 3.0, 0.5][step] <= 8.0)
            driver.record_plain(ev, whole_batch)
    assert plain == general


def test_sigma_lo_zero_guides_to_the_end_also_below_the_bounds_precision():
    """EDM models such as SVD and Cosmos end their grid at sigma 0.002, which rounds to 0.00 at the precision of
    0 written with two decimals: it is still above 0 (found by tests/host/test_host_every_model.py)."""
    run = RunInfo(sigmas=(80.0, 3.0, 0.04, 0.002, 0.0))
    assert GuidanceInterval(0.0, 1000.0).guided_steps(run) == [True] * 4
    assert GuidanceInterval(0.01, 1000.0).guided_steps(run) == [True, True, True, False]
