"""Adaptive Guidance and LinearAG as schedules, driven through the same per-evaluation protocol the
ComfyUI glue uses (samplers.schedule.ScheduleDriver), with predictions whose similarity is set
per step and per sample."""
import math

import pytest
import torch

from guidance_schedules.samplers import linear_ag
from guidance_schedules.samplers.files import FileRefused
from guidance_schedules.samplers.adaptive import AdaptiveSchedule
from guidance_schedules.samplers.schedule import Evaluation, RunInfo, RunRecord, ScheduleDriver

STEPS = 8
RUN = RunInfo(sigmas=tuple(float(s) for s in torch.linspace(10, 0, STEPS + 1)), sampler="sample_euler")


def predictions(gammas):
    """(cond, uncond) of a batch whose cosine similarity per sample is gammas[b]."""
    angles = torch.tensor([math.acos(g) for g in gammas], dtype=torch.float64)
    cond = torch.zeros(len(gammas), 4, dtype=torch.float64)
    cond[:, 0] = 1.0
    uncond = torch.stack([angles.cos(), angles.sin(), torch.zeros_like(angles), torch.zeros_like(angles)], dim=1)
    return cond, uncond


def sample(schedule, gamma_at, batch=2, cfg=5.0, evaluations_per_step=1, skip_at_one=True):
    """Runs every evaluation of a run; returns the record and, per evaluation, (step, ran_uncond, scale,
    the unconditional slot handed on to ComfyUI)."""
    record, calls = RunRecord(steps=STEPS), []
    driver = ScheduleDriver(schedule, record)
    for step in range(STEPS):
        for k in range(evaluations_per_step):
            ev = Evaluation(step=step, first_of_step=k == 0, sigma=RUN.sigmas[step], batch_size=batch,
                            cond_scale=cfg, skip_uncond_at_weight_one=skip_at_one)
            cond, uncond = predictions(gamma_at(step))
            out = driver.evaluate(ev, lambda run_uncond: (cond, uncond))
            calls.append((step, out.ran_uncond, out.cond_scale, out.uncond_slot))
    return record, calls


def rising(stop_steps):
    """Similarity that reaches 0.999 at each sample's step in stop_steps and falls back afterwards."""
    return lambda step: [0.999 if step == s else 0.9 for s in stop_steps]


def test_each_sample_stops_at_its_crossing_step_which_is_not_guided():
    schedule = AdaptiveSchedule(RUN, 0.995)
    record, calls = sample(schedule, rising([2, 5]))
    assert record.guided_steps(0) == [0, 1] and record.guided_steps(1) == [0, 1, 2, 3, 4]
    # one-way: the similarity falls again after the crossing, and the sample stays unguided
    assert schedule.stop_step == [2, 5]
    # the pass runs until the last sample has crossed (step 5 measures), then never again
    assert [ran for _, ran, *_ in calls] == [True] * 6 + [False] * 2
    assert record.uncond_needed == [3, 6]
    assert "sample 0: guided 2 of 8 steps; sample 1: guided 5 of 8 steps" == schedule.summary()


def test_threshold_above_one_never_stops_and_minus_one_stops_at_once():
    record, calls = sample(AdaptiveSchedule(RUN, 2.0), rising([2, 5]))
    assert record.guided_steps(0) == list(range(STEPS)) and all(ran for _, ran, *_ in calls)
    record, calls = sample(AdaptiveSchedule(RUN, -1.0), rising([2, 5]))
    assert record.guided_steps(0) == [] and [ran for _, ran, *_ in calls] == [True] + [False] * 7


def test_a_steps_later_evaluations_keep_its_decision():
    # Heun-like: two evaluations per step; the similarity is only measured at the first one
    record, calls = sample(AdaptiveSchedule(RUN, 0.995), rising([3, 3]), evaluations_per_step=2)
    assert record.guided_steps(0) == [0, 1, 2]
    assert [ran for step, ran, *_ in calls if step == 3] == [True, False]  # measured, then stopped
    assert record.evaluations == 16 and record.uncond_evaluations == 7


def test_cfg_one_runs_no_unconditional_pass_unless_the_sampler_needs_it():
    _, calls = sample(AdaptiveSchedule(RUN, 0.995), rising([5, 5]), cfg=1.0)
    assert not any(ran for _, ran, *_ in calls)
    _, calls = sample(AdaptiveSchedule(RUN, 0.995), rising([5, 5]), cfg=1.0, skip_at_one=False)
    assert [ran for _, ran, *_ in calls] == [True] * 6 + [False] * 2


def linear(coefficients):
    fitted_for = linear_ag.FittedFor(sampler="sample_euler", steps=STEPS, sigmas=RUN.sigmas, model="test", cfg=5.0, runs=1)
    return linear_ag.LinearAGFile("test.safetensors", torch.tensor(coefficients, dtype=torch.float64).expand(
        STEPS, linear_ag.N_TERMS).clone(), fitted_for)


def test_linear_ag_estimates_odd_steps_from_the_previous_real_step():
    # a = 0, b = 0, c = 1, d = 0: the estimate is the previous step's real unconditional prediction
    schedule = AdaptiveSchedule(RUN, 2.0, linear([0.0, 0.0, 1.0, 0.0]))
    record, calls = sample(schedule, lambda step: [0.9 - 0.1 * step, 0.5])
    assert [ran for _, ran, *_ in calls] == [True, False] * 4
    assert record.guided_steps(0) == list(range(STEPS))  # estimated steps are guided
    assert schedule.summary().endswith("LinearAG estimated the unconditional pass at 4 steps")
    for step in (1, 3, 5, 7):
        _, previous_uncond = predictions([0.9 - 0.1 * (step - 1), 0.5])
        assert torch.allclose(calls[step][3], previous_uncond)


def test_linear_ag_for_another_run_is_refused():
    with pytest.raises(FileRefused, match="fitted for 8 steps; this run has 4"):
        AdaptiveSchedule(RunInfo(sigmas=(3.0, 2.0, 1.0, 0.5, 0.0), sampler="sample_euler"), 0.995, linear([1, 0, 0, 0]))


def test_the_similarity_is_torchs_cosine_per_sample_from_a_few_numbers():
    """Taken on the predictions' device from three norms per sample: torch's own cosine similarity (float64),
    near 1 too; in float32 (devices without float64) the crossing of the default threshold does not move."""
    from guidance_schedules.samplers.adaptive import cosine_per_sample
    torch.manual_seed(0)
    a = torch.randn(4, 4, 16, 16)
    b = torch.stack([a[0] + 1e-3 * torch.randn(4, 16, 16), -a[1], torch.randn(4, 16, 16), a[3] * 2.0])
    expected = torch.nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)
    got = torch.tensor(cosine_per_sample(a, b), dtype=torch.float64)
    # a - b is taken in the predictions' dtype: exact near 1 (where thresholds lie), 1e-9 off near 0
    assert torch.allclose(got, expected, rtol=0, atol=1e-8)
    assert abs(got[0] - expected[0]) <= 1e-12
    assert cosine_per_sample(torch.zeros(1, 8), torch.zeros(1, 8)) == [0.0]  # as torch's: 0 for a zero vector
    for gamma in (0.99, 0.994, 0.996, 0.9999):
        x = torch.randn(2, 4, 32, 32)
        noise = torch.randn(2, 4, 32, 32)
        noise -= (noise * x).sum(dim=(1, 2, 3), keepdim=True) / (x * x).sum(dim=(1, 2, 3), keepdim=True) * x
        y = gamma * x / x.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + (1 - gamma ** 2) ** 0.5 * noise / \
            noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        in64, in32 = cosine_per_sample(x, y), cosine_per_sample(x, y, dtype=torch.float32)
        assert all(abs(p - q) <= 1e-5 for p, q in zip(in64, in32))
        assert [v >= 0.995 for v in in64] == [v >= 0.995 for v in in32]
