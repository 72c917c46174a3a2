"""Every sampler ComfyUI's KSampler offers, through the shared mechanism: a schedule that guides every
step is stock CFG, one that guides none is the conditional prediction alone without the pass
(interval, and Adaptive Guidance stopping at once), and a partial interval runs the pass exactly
in the model evaluations inside its steps (midpoints, corrections and samplers with their own time
grid included)."""
import pytest
import torch

import comfy.samplers
import tiny_models
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from guidance_schedules.samplers.interval import GuidanceInterval
from guidance_schedules.samplers.schedule import RunInfo
from guidance_schedules.samplers.spaces import EDM_SIGMA, FLOW
from host_sampling import EVERY_STEP, NO_STEP, STEPS, ksampler, patched, scheduler_for

MODELS = {model_type: tiny_models.build_model(model_type) for model_type in ("eps", "flow")}
POS, NEG = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)


@pytest.mark.parametrize("model_type", sorted(MODELS))
@pytest.mark.parametrize("sampler", comfy.samplers.KSampler.SAMPLERS)
def test_every_sampler_keeps_stock_results_and_skips_the_pass(sampler, model_type):
    model = MODELS[model_type]
    stock, stock_counts = ksampler(model, POS, NEG, sampler, model_type, batch=2)
    ours, counts = ksampler(patched(model, **EVERY_STEP), POS, NEG, sampler, model_type, batch=2)
    assert counts == stock_counts
    assert torch.isfinite(ours).all() and (ours - stock).abs().max().item() <= 1e-5

    cond_only, (cond_evals, _) = ksampler(model, POS, POS, sampler, model_type, batch=2)
    ours, counts = ksampler(patched(model, **NO_STEP), POS, NEG, sampler, model_type, batch=2)
    assert counts == (cond_evals, 0)
    assert (ours - cond_only).abs().max().item() <= 1e-5



@pytest.mark.parametrize("model_type", sorted(MODELS))
@pytest.mark.parametrize("sampler", comfy.samplers.KSampler.SAMPLERS)
def test_every_sampler_with_adaptive_guidance_that_stops_at_once(sampler, model_type):
    # threshold -1: the first evaluation measures the similarity (one pass, for the batch of 2),
    # then every sample is conditional-only, the crossing step included
    model = MODELS[model_type]
    cond_only, (cond_evals, _) = ksampler(model, POS, POS, sampler, model_type, batch=2)
    ours, counts = ksampler(AdaptiveGuidancePatch().patch(model, -1.0)[0], POS, NEG, sampler, model_type, batch=2)
    assert counts == (cond_evals, 2)
    assert (ours - cond_only).abs().max().item() <= 1e-5


# bounds that leave steps out at both ends of every grid below (EDM sigmas; flow: t = s / (1 + s))
PARTIAL = {"eps": dict(sigma_lo=0.5, sigma_hi=3.0), "flow": dict(sigma_lo=1.0, sigma_hi=3.0)}
# k-diffusion's code, written out here rather than taken from the pack: sample_heunpp2 evaluates
# corrections at the next two grid sigmas; DPM-Solver fast and adaptive choose their own times.
GRID_POINTS_A_STEP_REACHES = {"heunpp2": 2}
OWN_TIME_GRID = {"dpm_fast", "dpm_adaptive"}


@pytest.mark.parametrize("model_type", sorted(MODELS))
@pytest.mark.parametrize("sampler", comfy.samplers.KSampler.SAMPLERS)
def test_every_sampler_runs_the_pass_inside_the_interval_only(sampler, model_type):
    model = MODELS[model_type]
    # the grid KSampler samples on (some samplers drop the penultimate sigma of a longer schedule)
    sigmas = comfy.samplers.KSampler(model, STEPS, "cpu", sampler, scheduler_for(model_type), 1.0).sigmas.tolist()
    run = RunInfo(sigmas=tuple(sigmas), sigma_space=FLOW if model_type == "flow" else EDM_SIGMA)
    guided = GuidanceInterval(**PARTIAL[model_type]).guided_steps(run)
    first, last = guided.index(True), len(guided) - 1 - guided[::-1].index(True)
    assert 0 < first and last < len(guided) - 1  # the interval leaves steps out at both ends
    timestep = model.get_model_object("model_sampling").timestep
    t = [float(timestep(torch.tensor(s))) for s in sigmas]
    reach = GRID_POINTS_A_STEP_REACHES.get(sampler, 1)
    top, bottom = t[first], t[min(last + reach, len(t) - 1)]

    out, (cond_evals, uncond_evals) = ksampler(patched(model, **PARTIAL[model_type]), POS, NEG, sampler, model_type, batch=2)
    assert torch.isfinite(out).all() and 0 < uncond_evals < cond_evals
    calls = tiny_models.counter(model).calls  # (model timestep, [0 = cond, 1 = uncond], rows) per call
    with_pass = [ts for ts, chunks, _ in calls if 1 in chunks]
    # the pass runs only within the guided steps' span of noise levels ...
    assert all(bottom - 1e-3 <= ts <= top + 1e-3 for ts in with_pass), (with_pass, bottom, top)
    # ... at the start of every guided step ...
    for k in range(first, last + 1) if sampler not in OWN_TIME_GRID else ():
        assert any(abs(ts - t[k]) < 1e-3 for ts in with_pass), f"step {k} (timestep {t[k]:.3f}) ran no pass"
    # ... and at every evaluation off the grid inside the guided steps (midpoints, own time grids)
    off_grid = [ts for ts, _, _ in calls if t[last + 1] + 1e-3 < ts < top - 1e-3 and min(abs(ts - g) for g in t) > 1e-3]
    assert all(ts in with_pass for ts in off_grid), (off_grid, with_pass)


def test_inpainting_and_img2img_keep_stock_results():
    """A noise mask (ComfyUI wraps the model for inpainting) and denoise < 1 (a shorter grid)."""
    import nodes as comfy_nodes
    model = MODELS["eps"]
    g = torch.Generator().manual_seed(3)
    image = {"samples": torch.randn(2, tiny_models.CHANNELS, 8, 8, generator=g),
             "noise_mask": (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()}

    def run(m, denoise):
        counter = tiny_models.counter(model)
        counter.reset()
        out = comfy_nodes.KSampler().sample(m, 5, STEPS, 5.0, "dpmpp_2m", "karras", POS, NEG, image, denoise)[0]
        return out["samples"], counter.evaluations()
    for denoise in (1.0, 0.6):
        stock, stock_counts = run(model, denoise)
        ours, counts = run(patched(model, **EVERY_STEP), denoise)
        assert counts == stock_counts and (ours - stock).abs().max().item() <= 1e-5
        keep = image["noise_mask"] == 0  # the unmasked part stays the input image: the mask was applied
        assert torch.allclose(ours.masked_select(keep), image["samples"].masked_select(keep), atol=1e-5)
        _, (cond_evals, uncond_evals) = run(patched(model, **NO_STEP), denoise)
        assert (cond_evals, uncond_evals) == (stock_counts[0], 0)
