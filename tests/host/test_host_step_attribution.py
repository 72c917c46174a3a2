"""Each model evaluation belongs to the solver step that made it, for every sampler of the host and the
options users set, checked by an oracle that shares nothing with the pack's step tracker.

The oracle: k-diffusion samplers call the callback of step i right after step i's first model
evaluation. Recording, in the real run, the order of the model's calls (at the counting model) and
of the callbacks attributes every call afterwards: the call just before callback i is step i's first,
the calls after it belong to step i until the next such call. The expected pattern comes from the
papers' rules written out here: the interval guides step i iff lo < sigma_i <= hi (EDM sigmas; a flow
time t is compared as t / (1 - t), the EDM sigma of equal signal-to-noise ratio), and Adaptive
Guidance runs the pass on every evaluation of the guided steps and on the first one only of the step
where it stops. Samplers with their own time grid (dpm_fast, dpm_adaptive) have no such callbacks and
are covered in test_host_every_sampler.py.
"""
import math

import pytest
import torch

import comfy.samplers
import tiny_models
from comfy.k_diffusion.sampling import get_sigmas_karras
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from guidance_schedules.nodes.interval import GuidanceIntervalPatch

STEPS = 14
OWN_TIME_GRID = {"dpm_fast", "dpm_adaptive"}
MODELS = {model_type: tiny_models.build_model(model_type) for model_type in ("eps", "flow")}
POS, NEG = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)


def samplers():
    """(label, SAMPLER) for every sampler KSampler offers, and the option settings where a stage of a step
    lands exactly on the next grid sigma (r = 1)."""
    out = [(name, lambda name=name: comfy.samplers.sampler_object(name))
           for name in comfy.samplers.KSampler.SAMPLERS if name not in OWN_TIME_GRID]
    out.append(("dpmpp_sde r=1", lambda: comfy.samplers.ksampler("dpmpp_sde", {"eta": 1.0, "s_noise": 1.0, "r": 1.0})))
    if "seeds_2" in comfy.samplers.KSAMPLER_NAMES:  # ComfyUI >= 0.8: SamplerSEEDS2
        out.append(("seeds_2 r=1", lambda: comfy.samplers.ksampler("seeds_2", {"eta": 1.0, "s_noise": 1.0, "r": 1.0})))
    return out


SAMPLERS = samplers()


def grid(model_type):
    if model_type == "eps":  # the grid: Karras, 14 steps, 14.61 -> 0.03, rho 7
        return get_sigmas_karras(STEPS, 0.03, 14.61, rho=7.0)
    ms = MODELS["flow"].get_model_object("model_sampling")
    return comfy.samplers.calculate_sigmas(ms, "simple", STEPS).cpu()


def edm(sigma, model_type):
    return sigma / (1.0 - sigma) if model_type == "flow" and sigma < 1.0 else (math.inf if model_type == "flow" else sigma)


def observed_run(model_type, patched, sampler):
    """Sample with `patched` and return, per model call in order, (step by the oracle, ran the pass)."""
    model = MODELS[model_type]
    counter = tiny_models.counter(model)
    counter.reset()
    callbacks = []  # per callback: (its step, the number of model calls made before it)
    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(POS, NEG)
    guider.set_cfg(5.0)
    latent = torch.zeros(2, tiny_models.CHANNELS, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(3))
    out = guider.sample(noise, latent, sampler, grid(model_type).clone(),
                        callback=lambda step, x0, x, total: callbacks.append((step, len(counter.calls))), seed=3)
    assert torch.isfinite(out).all()
    assert [step for step, _ in callbacks] == list(range(STEPS))
    step_of_call = []
    firsts = {calls - 1: step for step, calls in callbacks}
    step = 0
    for k in range(len(counter.calls)):
        step = firsts.get(k, step)
        step_of_call.append(step)
    return [(s, 1 in chunks) for s, (_, chunks, _) in zip(step_of_call, counter.calls)]


def interval_bounds(model_type, where):
    """(sigma_lo, sigma_hi) in EDM sigmas, and the steps the interval guides by its definition."""
    s = [edm(float(v), model_type) for v in grid(model_type)]
    if where == "between":  # half way (geometrically) between grid sigmas 3/4 and 10/11
        hi, lo = math.sqrt(s[3] * s[4]), math.sqrt(s[10] * s[11])
    else:  # exactly at grid sigmas 3 and 10
        hi, lo = s[3], s[10]
    return (lo, hi), {i for i in range(STEPS) if lo < s[i] <= hi}


@pytest.mark.parametrize("where", ["between", "at"])
@pytest.mark.parametrize("model_type", sorted(MODELS))
@pytest.mark.parametrize("label,make", SAMPLERS, ids=[label for label, _ in SAMPLERS])
def test_the_interval_runs_the_pass_on_every_evaluation_of_its_steps_and_no_other(label, make, model_type, where):
    (lo, hi), guided = interval_bounds(model_type, where)
    assert guided == (set(range(4, 11)) if where == "between" else set(range(3, 10)))
    patched = GuidanceIntervalPatch().patch(MODELS[model_type], sigma_hi=hi, sigma_lo=lo)[0]
    calls = observed_run(model_type, patched, make())
    wrong = [(k, step, ran) for k, (step, ran) in enumerate(calls) if ran != (step in guided)]
    assert not wrong, f"calls (index, step, ran the pass) against the interval's steps {sorted(guided)}: {wrong}"


@pytest.mark.parametrize("model_type", sorted(MODELS))
@pytest.mark.parametrize("label,make", SAMPLERS, ids=[label for label, _ in SAMPLERS])
def test_adaptive_guidance_decides_per_step(label, make, model_type):
    # thresholds the tiny models' similarity crosses part way through the run
    threshold = {"eps": 0.999, "flow": 0.97}[model_type]
    calls = observed_run(model_type, AdaptiveGuidancePatch().patch(MODELS[model_type], threshold)[0], make())
    by_step = {}
    for step, ran in calls:
        by_step.setdefault(step, []).append(ran)
    stop = max(s for s in range(STEPS) if any(by_step[s]))  # the step where the similarity crossed
    assert 0 < stop < STEPS - 1, by_step
    assert all(all(by_step[s]) for s in range(stop))  # guided steps: the pass on every evaluation
    assert by_step[stop] == [True] + [False] * (len(by_step[stop]) - 1)  # measured at its first, then stopped
    assert not any(ran for s in range(stop + 1, STEPS) for ran in by_step[s])
