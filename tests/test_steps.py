"""StepTracker: every evaluation of the k-diffusion samplers lands in its own solver step."""
import pytest

from guidance_schedules.samplers.steps import StepTracker

SIGMAS = [14.6, 9.0, 5.0, 2.5, 1.0, 0.4, 0.1, 0.0]


def euler_like(sigmas):
    """One evaluation per step at the step's sigma (euler, dpmpp_2m, lms, ancestral, ...)."""
    return [(s, i) for i, s in enumerate(sigmas[:-1])]


def heun(sigmas):
    calls = []
    for i in range(len(sigmas) - 1):
        calls.append((sigmas[i], i))
        if sigmas[i + 1] != 0:
            calls.append((sigmas[i + 1], i))
    return calls


def heunpp2(sigmas):
    calls, end = [], sigmas[-1]
    for i in range(len(sigmas) - 1):
        calls.append((sigmas[i], i))
        if sigmas[i + 1] == end:
            continue
        calls.append((sigmas[i + 1], i))
        if sigmas[i + 2] != end:
            calls.append((sigmas[i + 2], i))
    return calls


def midpoint(sigmas):
    """dpm_2 / dpmpp_2s / dpmpp_sde: a second evaluation between sigma_i and sigma_i+1."""
    calls = []
    for i in range(len(sigmas) - 1):
        calls.append((sigmas[i], i))
        if sigmas[i + 1] != 0:
            calls.append(((sigmas[i] * sigmas[i + 1]) ** 0.5, i))
    return calls


def pece(sigmas):
    """sa_solver_pece: the corrected state is evaluated again at the same sigma."""
    calls = []
    for i in range(len(sigmas) - 1):
        calls.append((sigmas[i], i))
        if i > 0:
            calls.append((sigmas[i], i))
    return calls


@pytest.mark.parametrize("sampler,pattern", [
    ("sample_euler", euler_like), ("sample_dpmpp_2m", euler_like), ("sample_heun", heun),
    ("sample_heunpp2", heunpp2), ("sample_dpm_2", midpoint), ("sample_dpmpp_sde", midpoint),
    ("sample_sa_solver_pece", pece),
])
def test_each_evaluation_is_attributed_to_its_step(sampler, pattern):
    calls = pattern(SIGMAS)
    tracker = StepTracker(SIGMAS, sampler)
    got = [tracker.locate(sigma) for sigma, _ in calls]
    assert [step for step, _ in got] == [step for _, step in calls]
    firsts = [i for i, (_, first) in enumerate(got) if first]
    expected_firsts = [i for i, (_, step) in enumerate(calls) if i == 0 or calls[i - 1][1] != step]
    assert firsts == expected_firsts


def test_heun_correction_is_not_taken_for_the_next_step_with_a_nonzero_final_sigma():
    sigmas = [10.0, 3.0, 1.0, 0.3]
    tracker = StepTracker(sigmas, "sample_heun")
    assert [tracker.locate(s)[0] for s, _ in heun(sigmas)] == [0, 0, 1, 1, 2, 2]


def test_a_sampler_with_its_own_time_grid_is_placed_by_sigma():
    tracker = StepTracker(SIGMAS, "dpm_fast_function")
    assert tracker.locate(12.0) == (0, True)
    assert tracker.locate(3.0) == (2, True)
    assert tracker.locate(2.5) == (3, True)
    assert tracker.locate(0.05) == (6, True)


def test_a_new_tracker_starts_from_scratch():
    a, b = StepTracker(SIGMAS, "sample_euler"), StepTracker(SIGMAS, "sample_euler")
    for s, _ in euler_like(SIGMAS):
        a.locate(s)
    assert b.locate(SIGMAS[0]) == (0, True)


def test_too_short_a_grid_is_refused():
    with pytest.raises(ValueError, match="two sigmas"):
        StepTracker([1.0])
