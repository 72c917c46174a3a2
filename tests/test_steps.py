"""Step attribution: a rehearsal's order of evaluations and callbacks gives each evaluation its step.

The samplers below are written the way k-diffusion writes them (a loop over the grid, the model,
then the callback with the loop index right after the step's first evaluation). Each one also
notes, at every model call, the loop index it is in: that is the truth the plan is checked against.
"""
import math

import pytest

from guidance_schedules.samplers.steps import Called, Evaluated, StepTracker, plan_from_events

SIGMAS = [14.6, 9.0, 5.0, 2.5, 1.0, 0.4, 0.1, 0.0]


def euler_like(model, sigmas, callback):
    for i in range(len(sigmas) - 1):
        model(sigmas[i], i)
        callback(i, sigmas[i])


def heun(model, sigmas, callback):
    for i in range(len(sigmas) - 1):
        model(sigmas[i], i)
        callback(i, sigmas[i])
        if sigmas[i + 1] != 0:
            model(sigmas[i + 1], i)  # the correction, at the next grid sigma


def heunpp2(model, sigmas, callback):
    end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        model(sigmas[i], i)
        callback(i, sigmas[i])
        if sigmas[i + 1] == end:
            continue
        model(sigmas[i + 1], i)
        if sigmas[i + 2] != end:
            model(sigmas[i + 2], i)


def ancestral_midpoint(model, sigmas, callback):
    """dpm_2_ancestral / dpmpp_2s_ancestral: the midpoint towards sigma_down, which can lie below the
    next grid sigma (and even below the one after it)."""
    for i in range(len(sigmas) - 1):
        model(sigmas[i], i)
        callback(i, sigmas[i])
        sigma_down = sigmas[i + 1] ** 2 / sigmas[i] if sigmas[i + 1] else 0.0
        if sigma_down:
            model(math.sqrt(sigmas[i] * sigma_down), i)


def stage_at_next_sigma(model, sigmas, callback):
    """DPM++ SDE / SEEDS-2 with r = 1, exp_heun_2_x0: the second stage exactly at sigmas[i + 1]."""
    for i in range(len(sigmas) - 1):
        model(sigmas[i], i)
        callback(i, sigmas[i])
        if sigmas[i + 1]:
            model(sigmas[i + 1], i)


def pece(model, sigmas, callback):
    """sa_solver_pece: the corrected state evaluated again at the same sigma."""
    for i in range(len(sigmas) - 1):
        model(sigmas[i], i)
        callback(i, sigmas[i])
        if i > 0:
            model(sigmas[i], i)


def churn(model, sigmas, callback):
    """euler with s_churn: the step's evaluation above its grid sigma."""
    for i in range(len(sigmas) - 1):
        model(sigmas[i] * 1.2, i)
        callback(i, sigmas[i])


def unipc_like(model, sigmas, callback):
    """UniPC: the first evaluation before the loop's update, then the update to t_i and its evaluation
    there; the callback reports no sigma."""
    for i in range(len(sigmas) - 1):
        model(sigmas[i], i)
        callback(i, None)


SAMPLERS = [euler_like, heun, heunpp2, ancestral_midpoint, stage_at_next_sigma, pece, churn, unipc_like]


def rehearse(sampler, sigmas=SIGMAS):
    """The events a rehearsal records, and the truth: the loop index of every model call."""
    events, truth = [], []

    def model(sigma, i):
        events.append(Evaluated(sigma))
        truth.append(i)

    sampler(model, sigmas, lambda i, sigma: events.append(Called(i, sigma)))
    return events, truth


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda f: f.__name__)
def test_every_evaluation_is_attributed_to_the_step_that_made_it(sampler):
    events, truth = rehearse(sampler)
    plan = plan_from_events(events, SIGMAS)
    tracker = StepTracker(SIGMAS, plan)
    got = [tracker.locate(e.sigma) for e in events if isinstance(e, Evaluated)]
    assert [step for step, _ in got] == truth
    assert [first for _, first in got] == [k == 0 or truth[k - 1] != truth[k] for k in range(len(truth))]
    assert tracker.departed_at is None


def test_without_a_plan_evaluations_are_placed_by_sigma():
    tracker = StepTracker(SIGMAS)
    # the next grid sigma starts the next step; between the step's sigma and the next, the same step
    assert [tracker.locate(s) for s in (14.6, 12.0, 9.0, 9.0, 3.0)] == [
        (0, True), (0, False), (1, True), (1, False), (2, True)]
    # an off-grid sigma far below is placed by the grid (samplers with their own time grid)
    assert tracker.locate(0.05) == (6, True)


def test_a_run_that_leaves_its_plan_is_placed_by_sigma_from_there_on():
    events, truth = rehearse(heun)
    tracker = StepTracker(SIGMAS, plan_from_events(events, SIGMAS))
    assert tracker.locate(14.6) == (0, True) and tracker.locate(9.0) == (0, False)
    assert tracker.locate(7.0) == (1, True)  # the plan says 9.0 here: from now on, by sigma
    assert tracker.departed_at == 2
    assert tracker.locate(5.0) == (2, True)


def test_callbacks_that_do_not_count_the_runs_steps_give_no_plan():
    # dpm_fast: its own steps, fewer than the grid's
    assert plan_from_events([Evaluated(14.6), Called(0, 14.6), Evaluated(3.0), Called(1, 3.0)], SIGMAS) is None
    # a callback reporting a sigma off the run's grid (an own time grid with as many steps)
    events = [e for i, s in enumerate(SIGMAS[:-1]) for e in (Evaluated(s * 0.9), Called(i, s * 0.9))]
    assert plan_from_events(events, SIGMAS) is None
    # a callback with no evaluation before it
    events, _ = rehearse(euler_like)
    assert plan_from_events([Called(0, SIGMAS[0])] + events[1:], SIGMAS) is None


def test_a_new_tracker_starts_from_scratch():
    events, _ = rehearse(euler_like)
    plan = plan_from_events(events, SIGMAS)
    a, b = StepTracker(SIGMAS, plan), StepTracker(SIGMAS, plan)
    for e in events:
        if isinstance(e, Evaluated):
            a.locate(e.sigma)
    assert b.locate(SIGMAS[0]) == (0, True)


def test_too_short_a_grid_is_refused():
    with pytest.raises(ValueError, match="two sigmas"):
        StepTracker([1.0])


def test_a_plan_is_followed_without_reading_sigmas_and_checked_once_the_run_is_over():
    events, truth = rehearse(heun)
    plan = plan_from_events(events, SIGMAS)
    tracker = StepTracker(SIGMAS, plan)
    got = [tracker.next_planned() for _ in truth]
    assert [p.step for p in got] == truth
    assert tracker.departure(list(enumerate(p.sigma for p in plan))) is None
    seen = [p.sigma for p in plan]
    seen[3] *= 0.9  # the sampler evaluated elsewhere at its fourth evaluation
    assert tracker.departure(list(enumerate(seen))) == 3 and tracker.departed_at == 3


def test_evaluations_past_the_end_of_the_plan_are_placed_by_sigma():
    events, truth = rehearse(heun)
    tracker = StepTracker(SIGMAS, plan_from_events(events, SIGMAS))
    for _ in truth:
        tracker.next_planned()
    assert tracker.next_planned() is None and tracker.departed_at == len(truth)
    assert tracker.locate(SIGMAS[-2]) == (len(SIGMAS) - 2, False)
