"""Guidance interval inside a real ComfyUI: KSampler and SamplerCustomAdvanced, counting models."""
import logging

import pytest
import torch

import tiny_models
from guidance_schedules.nodes.interval import GuidanceIntervalGuider, GuidanceIntervalPatch
from guidance_schedules.samplers.interval import GuidanceInterval
from guidance_schedules.samplers.schedule import RunInfo
from host_sampling import (CFG, DETERMINISTIC, EVERY_STEP, NO_STEP, SAMPLERS, STEPS, custom_advanced,
                           ksampler, latent, patched, sigmas_of)

def evaluations_per_step(sampler, sigmas):
    """Model evaluations each step of these samplers makes (written out, not taken from the pack)."""
    n = len(sigmas) - 1
    if sampler == "heun":
        return [2 if float(sigmas[i + 1]) != 0 else 1 for i in range(n)]
    return [1] * n


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_interval_over_every_step_is_stock_cfg(tiny_setup, sampler):
    model_type, model, pos, neg = tiny_setup
    stock, stock_counts = ksampler(model, pos, neg, sampler, model_type)
    ours, counts = ksampler(patched(model, **EVERY_STEP), pos, neg, sampler, model_type)
    assert counts == stock_counts
    assert (ours - stock).abs().max().item() <= 1e-6


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_interval_over_no_step_is_cond_only_with_no_uncond_pass(tiny_setup, sampler):
    model_type, model, pos, neg = tiny_setup
    # Reference: stock CFG whose negative is the positive, i.e. the conditional prediction in both
    # slots, which is also what the CFG++ samplers then re-noise with.
    cond_only, _ = ksampler(model, pos, pos, sampler, model_type)
    ours, (cond_evals, uncond_evals) = ksampler(patched(model, **NO_STEP), pos, neg, sampler, model_type)
    stock, (stock_cond_evals, _) = ksampler(model, pos, neg, sampler, model_type)
    assert uncond_evals == 0 and cond_evals == stock_cond_evals
    assert (ours - cond_only).abs().max().item() <= 1e-6
    assert (ours - stock).abs().max().item() > 1e-3  # guidance matters for this model


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_partial_interval_skips_exactly_the_unguided_steps(tiny_setup, sampler):
    model_type, model, pos, neg = tiny_setup
    sigmas = sigmas_of(model, model_type)
    lo, hi = (0.2, 0.7) if model_type == "flow" else (0.3, 3.0)
    run = RunInfo(sigmas=tuple(sigmas.tolist()), sigma_space="flow" if model_type == "flow" else "edm")
    guided = GuidanceInterval(lo, hi).guided_steps(run)
    assert 0 < sum(guided) < STEPS
    per_step = evaluations_per_step(sampler, sigmas)
    _, (cond_evals, uncond_evals) = ksampler(patched(model, sigma_lo=lo, sigma_hi=hi), pos, neg, sampler, model_type)
    assert cond_evals == sum(per_step)
    assert uncond_evals == sum(n for n, g in zip(per_step, guided) if g)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_guider_and_patch_agree_and_repeat(tiny_setup, sampler):
    model_type, model, pos, neg = tiny_setup
    bounds = dict(sigma_lo=0.2, sigma_hi=0.7) if model_type == "flow" else dict(sigma_lo=0.3, sigma_hi=3.0)
    via_patch, patch_counts = ksampler(patched(model, **bounds), pos, neg, sampler, model_type, batch=3)
    guider = GuidanceIntervalGuider().get_guider(model, pos, neg, CFG, **bounds)[0]
    sigmas = sigmas_of(model, model_type)
    via_guider, guider_counts = custom_advanced(guider, sampler, sigmas, batch=3)
    again, again_counts = custom_advanced(guider, sampler, sigmas, batch=3)  # a cached guider, queued again
    assert patch_counts == guider_counts == again_counts
    assert torch.equal(via_patch, via_guider) and torch.equal(via_guider, again)
    assert (via_guider[0] - via_guider[1]).abs().max() > 1e-3  # the batch's samples differ


@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_a_batch_gives_each_sample_its_solo_result(tiny_setup, sampler):
    model_type, model, pos, neg = tiny_setup
    m = patched(model, **(dict(sigma_lo=0.2, sigma_hi=0.7) if model_type == "flow" else dict(sigma_lo=0.3, sigma_hi=3.0)))
    batch, _ = ksampler(m, pos, neg, sampler, model_type, batch=3)
    for b in range(3):
        solo, _ = ksampler(m, pos, neg, sampler, model_type, image={**latent(1), "batch_index": [b]})
        assert (solo[0] - batch[b]).abs().max().item() <= 1e-5


def karras(n, sigma_min, sigma_max, rho):
    from comfy.k_diffusion.sampling import get_sigmas_karras
    return get_sigmas_karras(n, sigma_min, sigma_max, rho=rho)


@pytest.mark.parametrize("grid,lo,hi,steps,model_type", [
    ((32, 0.03, 14.61, 3), 0.28, 5.42, range(10, 26), "eps"),  # the paper's SDXL setting
    ((32, 0.002, 80.0, 7), 0.19, 1.61, range(17, 23), "edm"),  # EDM2-XXL
    ((32, 0.002, 80.0, 7), 0.60, 5.00, range(13, 20), "edm"),  # EDM2-XXL, FD_DINOv2 setting
])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_paper_settings_guide_exactly_the_papers_steps(grid, lo, hi, steps, model_type, sampler):
    model = tiny_models.build_model(model_type)
    pos, neg = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    sigmas = karras(*grid)
    guider = GuidanceIntervalGuider().get_guider(model, pos, neg, CFG, sigma_hi=hi, sigma_lo=lo)[0]
    counter = tiny_models.counter(model)
    _, (cond_evals, uncond_evals) = custom_advanced(guider, sampler, sigmas)
    per_step = evaluations_per_step(sampler, sigmas)
    assert cond_evals == sum(per_step)
    assert uncond_evals == sum(per_step[i] for i in steps)
    # ... and the unconditional passes ran at exactly those steps' evaluation sigmas.
    ms = model.get_model_object("model_sampling")
    expected = []
    for i in steps:
        expected.append(float(ms.timestep(sigmas[i])))
        if per_step[i] == 2:
            expected.append(float(ms.timestep(sigmas[i + 1])))
    assert counter.uncond_timesteps() == pytest.approx(expected, rel=1e-5)


def test_hooks_see_the_conditional_prediction_in_the_uncond_slot_on_skipped_steps():
    model = tiny_models.build_model("eps")
    pos, neg = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    seen = []

    def post_cfg(args):
        seen.append((float(args["sigma"].max()), args["cond_denoised"].clone(), args["uncond_denoised"].clone()))
        return args["denoised"]

    def pre_cfg(args):
        assert len(args["conds_out"]) == 2
        return args["conds_out"]

    m = patched(model, sigma_lo=0.3, sigma_hi=3.0)
    m.set_model_sampler_post_cfg_function(post_cfg)
    m.set_model_sampler_pre_cfg_function(pre_cfg)
    ksampler(m, pos, neg, "euler", "eps")
    outside = [(c, u) for s, c, u in seen if not (0.3 < round(s, 2) <= 3.0)]
    inside = [(c, u) for s, c, u in seen if 0.3 < round(s, 2) <= 3.0]
    assert outside and inside
    assert all(torch.equal(c, u) and u.abs().max() > 0 for c, u in outside)
    assert all(not torch.equal(c, u) for c, u in inside)


def test_other_cfg_patches_compose_with_the_interval():
    from comfy_extras.nodes_model_advanced import RescaleCFG
    model = tiny_models.build_model("v_prediction")
    pos, neg = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    rescaled = RescaleCFG().patch(model, 0.7)[0]
    stock, _ = ksampler(rescaled, pos, neg, "dpmpp_2m", "v_prediction")
    ours, _ = ksampler(patched(rescaled, **EVERY_STEP), pos, neg, "dpmpp_2m", "v_prediction")
    assert (ours - stock).abs().max().item() <= 1e-6


def test_patching_twice_replaces_the_schedule(caplog):
    model = tiny_models.build_model("eps")
    pos, neg = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    with caplog.at_level(logging.WARNING, logger="guidance_schedules"):
        twice = patched(patched(model, **NO_STEP), **EVERY_STEP)
    assert "Guidance interval (0, 1000] replaces Guidance interval (500, 900] on this model" in caplog.text
    stock, stock_counts = ksampler(model, pos, neg, "euler", "eps")
    ours, counts = ksampler(twice, pos, neg, "euler", "eps")
    assert counts == stock_counts and torch.equal(ours, stock)


def test_bad_bounds_raise_a_clear_error_naming_the_inputs():
    model = tiny_models.build_model("eps")
    with pytest.raises(ValueError, match=r"sigma_lo \(5\) must be smaller than sigma_hi \(1\)"):
        GuidanceIntervalPatch().patch(model, sigma_hi=1.0, sigma_lo=5.0)
    with pytest.raises(ValueError, match="sigma_hi must be a finite number"):
        GuidanceIntervalGuider().get_guider(model, [], [], 5.0, sigma_hi=float("nan"), sigma_lo=0.1)


def test_the_run_summary_is_logged(caplog):
    model = tiny_models.build_model("eps")
    pos, neg = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    with caplog.at_level(logging.INFO, logger="guidance_schedules"):
        ksampler(patched(model, sigma_lo=0.3, sigma_hi=3.0), pos, neg, "euler", "eps")
    assert "Guidance interval (0.3, 3]" in caplog.text and "unconditional pass skipped in" in caplog.text


@pytest.mark.parametrize("cfg", [float("nan"), float("inf"), -2.0])
def test_a_cfg_that_is_no_number_from_zero_up_is_refused_by_name(cfg):
    """NaN or a negative cfg reaches a sampler through a link or the API (the widget's range is not checked
    there): the pack's guiders and the KSampler through its patch refuse it instead of sampling nonsense."""
    model = tiny_models.build_model("eps")
    pos, neg = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)
    with pytest.raises(ValueError, match=r"cfg must be a finite number >= 0"):
        ksampler(patched(model, **EVERY_STEP), pos, neg, "euler", "eps", cfg=cfg)
    with pytest.raises(ValueError, match=r"cfg must be a finite number >= 0"):
        GuidanceIntervalGuider().get_guider(model, pos, neg, cfg, **EVERY_STEP)
