"""The schedules under ComfyUI's caches: LazyCache, which answers some model evaluations itself (a PREDICT_NOISE
wrapper that returns a cached difference instead of running the model), and EasyCache, which does so per branch
(a DIFFUSION_MODEL wrapper that keeps a difference per conditioning, by its uuid).

- A schedule that guides every step gives the cache's own result, whichever of the two nodes comes first.
- Where the cache answers evaluations itself, every evaluation the pack does see is still attributed to its own
  step: the unconditional pass runs at exactly the evaluations whose step's sigma lies in the interval. The
  expectation is read off the model's own calls (the sigma each was made at) and the interval's rule on the
  run's sigma grid, not off the pack's tracker.
- Under EasyCache, where the unconditional pass runs again after evaluations without it (LinearAG's real pass
  after an estimated step; the interval's first step), the model computes it: the cache never stands in for it
  with a difference kept before the gap. The steps that need the real pass are the paper's rule (LinearAG: every
  other guided step) and the interval's, read against the model's own calls.
"""
import pytest
import torch

import comfy.samplers
import nodes as comfy_nodes
import tiny_models
from comfy_extras.nodes_easycache import EasyCacheHolder, EasyCacheNode, LazyCacheNode
from guidance_schedules.nodes.interval import GuidanceIntervalPatch

STEPS, CFG, SEED = 20, 5.0, 3
CACHE = dict(reuse_threshold=0.5, start_percent=0.0, end_percent=1.0, verbose=False)


def lazy_cache(model):
    return LazyCacheNode.execute(model, **CACHE).args[0]


def interval(model, lo=0.0, hi=1000.0):
    return GuidanceIntervalPatch().patch(model, sigma_hi=hi, sigma_lo=lo)[0]


def sample(model):
    counter = tiny_models.counter(model)
    counter.reset()
    out = comfy_nodes.KSampler().sample(model, SEED, STEPS, CFG, "euler", "karras", tiny_models.build_conditioning(1),
                                        tiny_models.build_conditioning(2),
                                        {"samples": torch.zeros(1, tiny_models.CHANNELS, 8, 8)}, 1.0)[0]["samples"]
    return out, list(counter.calls)


@pytest.fixture(scope="module")
def model():
    return tiny_models.build_model("eps")


@pytest.mark.parametrize("order", ["cache, then interval", "interval, then cache"])
def test_under_the_cache_the_pass_runs_on_the_intervals_steps_only(model, order):
    lo, hi = 0.5, 4.0
    patched = interval(lazy_cache(model), lo, hi) if order.startswith("cache") else lazy_cache(interval(model, lo, hi))
    _, calls = sample(patched)
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", STEPS).tolist()
    timestep_of = {round(float(ms.timestep(torch.tensor([s]))), 3): s for s in sigmas[:-1]}
    made = [(timestep_of[round(t, 3)], 1 in chunks) for t, chunks, _ in calls]  # euler: one evaluation a step
    assert len(made) < STEPS  # the cache answered some
    assert all(with_uncond == (lo < round(sigma, 2) <= hi) for sigma, with_uncond in made), made


@pytest.mark.parametrize("order", ["cache, then interval", "interval, then cache"])
def test_the_packs_wrapper_sees_every_evaluation_before_the_cache_answers_it(model, order):
    """Wrappers run in the order of their keys: the pack's comes first whatever the order of the nodes, so an
    evaluation the cache answers is still counted."""
    import comfy.patcher_extension as extension
    from guidance_schedules.nodes.guidance import WRAPPER_KEY
    patched = interval(lazy_cache(model)) if order.startswith("cache") else lazy_cache(interval(model))
    keys = list(patched.wrappers[extension.WrappersMP.PREDICT_NOISE])
    assert keys[0] == WRAPPER_KEY and "lazycache" in keys


# EasyCache hooks the diffusion model's forward (DIFFUSION_MODEL wrappers): a stand-in whose forward goes through
# them, as ComfyUI's own models' does. A threshold at which it answers some evaluations of this model itself.
EASY_CACHE = dict(reuse_threshold=0.2, start_percent=0.0, end_percent=1.0, verbose=False)


def easy_cache(model):
    return EasyCacheNode.execute(model, **EASY_CACHE).args[0]


@pytest.fixture(scope="module")
def wrapped_model():
    return tiny_models.build_model("eps", tiny_models.WrappedDenoiser)


def step_timesteps(model):
    """The model timestep of each step of the run (euler: one evaluation a step), from ComfyUI's grid."""
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", STEPS).tolist()[:-1]
    return sigmas, [round(float(ms.timestep(torch.tensor([s]))), 3) for s in sigmas]


# each cache with the model it answers for: LazyCache wraps the prediction, EasyCache the diffusion model's forward
CACHES = {"LazyCache": (lazy_cache, "model"), "EasyCache": (easy_cache, "wrapped_model")}


@pytest.fixture(params=list(CACHES))
def cache_and_model(request):
    cache, model_fixture = CACHES[request.param]
    return cache, request.getfixturevalue(model_fixture)


def test_the_cache_really_answers_evaluations_itself(cache_and_model):
    cache, model = cache_and_model
    _, calls = sample(cache(model))
    assert 0 < len(calls) < STEPS


@pytest.mark.parametrize("order", ["cache, then interval", "interval, then cache"])
def test_a_schedule_that_guides_every_step_gives_the_caches_own_result(cache_and_model, order):
    cache, model = cache_and_model
    stock, stock_calls = sample(cache(model))
    patched = interval(cache(model)) if order.startswith("cache") else cache(interval(model))
    out, calls = sample(patched)
    assert torch.allclose(out, stock, rtol=1e-5, atol=1e-6)
    assert [(t, c) for t, c, _ in calls] == [(t, c) for t, c, _ in stock_calls]


# EasyCache before ComfyUI 0.33 has no answer for a branch it kept nothing for (it stops with a KeyError): there
# the pack refuses, naming EasyCache, where the pass starts or returns mid-run
BRANCH_AWARE = hasattr(EasyCacheHolder, "can_apply_cache_diff")


def refused_by_name(run):
    with pytest.raises(ValueError, match="EasyCache: this ComfyUI's EasyCache cannot take"):
        run()


def test_under_easy_cache_the_intervals_first_step_runs_the_pass(wrapped_model):
    lo, hi = 0.5, 4.0
    if not BRANCH_AWARE:
        refused_by_name(lambda: sample(interval(easy_cache(wrapped_model), lo, hi)))
        return
    _, calls = sample(interval(easy_cache(wrapped_model), lo, hi))
    sigmas, timesteps = step_timesteps(wrapped_model)
    first = next(t for s, t in zip(sigmas, timesteps) if lo < round(s, 2) <= hi)
    assert (first, [1, 0]) in [(round(t, 3), c) for t, c, _ in calls]
    assert all(1 not in c or lo < round(sigmas[timesteps.index(round(t, 3))], 2) <= hi for t, c, _ in calls)


@pytest.fixture(scope="module")
def linear_ag_for_the_wrapped_model(wrapped_model, tmp_path_factory):
    """LinearAG coefficients for this model, sampler and grid, fitted by the calibration node into a folder of the
    test's own (listed after the others once written)."""
    import folder_paths
    from guidance_schedules.nodes.adaptive import LINEAR_AG_FOLDER, LinearAGCalibrate
    folder = str(tmp_path_factory.mktemp("models") / LINEAR_AG_FOLDER)
    folder_paths.add_model_folder_path(LINEAR_AG_FOLDER, folder, is_default=True)
    try:
        sigmas = comfy.samplers.calculate_sigmas(wrapped_model.get_model_object("model_sampling"), "karras", STEPS)
        LinearAGCalibrate().calibrate(wrapped_model, tiny_models.build_conditioning(1), tiny_models.build_conditioning(2),
                                      CFG, comfy.samplers.sampler_object("euler"), sigmas,
                                      {"samples": torch.zeros(2, tiny_models.CHANNELS, 8, 8)}, runs=2, seed=1,
                                      name="caches_euler_20")
    finally:
        paths = folder_paths.folder_names_and_paths[LINEAR_AG_FOLDER][0]
        paths.append(paths.pop(paths.index(folder)))
    return "caches_euler_20.safetensors"


def test_under_easy_cache_linear_ags_real_pass_after_an_estimated_step_is_the_models(wrapped_model,
                                                                                    linear_ag_for_the_wrapped_model):
    """LinearAG runs the real pass on every other guided step (the paper: even steps) and estimates it between:
    each real pass comes after a step without it. EasyCache, asked at such a step, would apply the difference it
    kept two steps before; the model computes it instead, at every one of them."""
    from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
    # a threshold at which the cache, left to itself, answers most of this run's steps (stock CFG: all but two)
    generous = EasyCacheNode.execute(wrapped_model, **{**EASY_CACHE, "reuse_threshold": 3.0}).args[0]
    assert len(sample(generous)[1]) < STEPS // 2
    patched = AdaptiveGuidancePatch().patch(generous, 2.0, linear_ag_for_the_wrapped_model)[0]
    if not BRANCH_AWARE:
        refused_by_name(lambda: sample(patched))
        return
    _, calls = sample(patched)
    _, timesteps = step_timesteps(wrapped_model)
    with_pass = {round(t, 3) for t, c, _ in calls if 1 in c}
    assert with_pass == set(timesteps[0::2])  # every even step: computed, none answered by the cache
