"""The schedules under ComfyUI's LazyCache, which answers some model evaluations itself (a PREDICT_NOISE wrapper
that returns a cached difference instead of running the model).

- A schedule that guides every step gives the cache's own result, whichever of the two nodes comes first.
- Where the cache answers evaluations itself, every evaluation the pack does see is still attributed to its own
  step: the unconditional pass runs at exactly the evaluations whose step's sigma lies in the interval. The
  expectation is read off the model's own calls (the sigma each was made at) and the interval's rule on the
  run's sigma grid, not off the pack's tracker.
"""
import pytest
import torch

import comfy.samplers
import nodes as comfy_nodes
import tiny_models
from comfy_extras.nodes_easycache import LazyCacheNode
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


def test_the_cache_really_answers_evaluations_itself(model):
    _, calls = sample(lazy_cache(model))
    assert 0 < len(calls) < STEPS


@pytest.mark.parametrize("order", ["cache, then interval", "interval, then cache"])
def test_a_schedule_that_guides_every_step_gives_the_caches_own_result(model, order):
    stock, stock_calls = sample(lazy_cache(model))
    patched = interval(lazy_cache(model)) if order.startswith("cache") else lazy_cache(interval(model))
    out, calls = sample(patched)
    assert torch.allclose(out, stock, rtol=1e-5, atol=1e-6)
    assert [(t, c) for t, c, _ in calls] == [(t, c) for t, c, _ in stock_calls]


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
