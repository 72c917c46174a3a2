"""The pack among other nodes that change sampling: a per-step cfg override chained before or after
its patch, and a third-party sampler the pack does not know."""
import logging

import pytest
import torch

import comfy.samplers
import tiny_models
from comfy.patcher_extension import WrappersMP
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from guidance_schedules.nodes.interval import GuidanceIntervalPatch
from host_sampling import EVERY_STEP, ksampler

POS, NEG = tiny_models.build_conditioning(1), tiny_models.build_conditioning(2)


def cfg_override(model, cfg, start_percent=0.0, end_percent=1.0):
    """What newer ComfyUI's core CFGOverride node does: a PREDICT_NOISE wrapper that sets guider.cfg while the
    sigma lies in a percent window of the run, and restores it afterwards."""
    m = model.clone()
    ms = m.get_model_object("model_sampling")
    sigma_start, sigma_end = ms.percent_to_sigma(start_percent), ms.percent_to_sigma(end_percent)

    def wrapper(executor, x, timestep, model_options={}, seed=None):
        guider = executor.class_obj
        before = guider.cfg
        if sigma_end <= float(timestep.max()) <= sigma_start:
            guider.cfg = cfg
        try:
            return executor(x, timestep, model_options, seed)
        finally:
            guider.cfg = before
    m.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, "test_cfg_override", wrapper)
    return m


def interval(model):
    return GuidanceIntervalPatch().patch(model, **EVERY_STEP)[0]


def adaptive(model):
    return AdaptiveGuidancePatch().patch(model, 2.0)[0]  # never stops: CFG


@pytest.mark.parametrize("pack", [interval, adaptive], ids=["interval", "adaptive"])
@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
@pytest.mark.parametrize("override", [(1.0, 0.0, 1.0), (3.0, 0.0, 1.0), (1.0, 0.3, 0.7), (3.0, 0.2, 0.5)],
                         ids=["cfg1-whole", "cfg3-whole", "cfg1-window", "cfg3-window"])
def test_a_cfg_override_composes_in_both_orders_as_in_stock_comfyui(pack, sampler, override):
    model = tiny_models.build_model("eps")
    stock, stock_counts = ksampler(cfg_override(model, *override), POS, NEG, sampler, "eps")
    after, after_counts = ksampler(cfg_override(pack(model), *override), POS, NEG, sampler, "eps")  # override chained after the pack
    before, before_counts = ksampler(pack(cfg_override(model, *override)), POS, NEG, sampler, "eps")  # ... and before it
    assert after_counts == before_counts == stock_counts
    assert (after - stock).abs().max().item() <= 1e-6 and (before - stock).abs().max().item() <= 1e-6
    if override[1:] == (0.0, 1.0) and override[0] == 1.0:
        assert stock_counts[1] == 0  # cfg 1 over the whole run: no unconditional pass at all


class ThirdPartySampler(comfy.samplers.Sampler):
    """A sampler that is no KSAMPLER (a custom node's own sample()): Heun, run through its own code path."""

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        return comfy.samplers.ksampler("heun").sample(model_wrap, sigmas, extra_args, callback, noise, latent_image,
                                                      denoise_mask, disable_pbar)


def test_a_sampler_the_pack_does_not_know_follows_the_documented_rule_and_is_named_once(caplog):
    model = tiny_models.build_model("eps")
    counter = tiny_models.counter(model)
    patched = GuidanceIntervalPatch().patch(model, sigma_hi=3.0, sigma_lo=0.3)[0]
    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(POS, NEG)
    guider.set_cfg(5.0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", 8).cpu()
    latent = torch.zeros(1, tiny_models.CHANNELS, 8, 8)
    with caplog.at_level(logging.WARNING, logger="guidance_schedules"):
        for _ in range(2):
            counter.reset()
            out = guider.sample(torch.randn(latent.shape, generator=torch.Generator().manual_seed(1)), latent,
                                ThirdPartySampler(), sigmas.clone(), seed=1)
    named = [r.getMessage() for r in caplog.records if "ThirdPartySampler" in r.getMessage()]
    assert len(named) == 1 and "recognised by sigma" in named[0]
    assert torch.isfinite(out).all()
    # The rule: an evaluation at the next grid sigma starts the next step. Heun's correction at sigmas[i + 1]
    # is therefore decided as step i + 1; the pass runs at exactly the evaluations whose sigma lies in the interval.
    timestep = model.get_model_object("model_sampling").timestep
    inside = {round(float(timestep(s)), 3) for s in sigmas[:-1] if 0.3 < round(float(s), 2) <= 3.0}
    with_pass = [round(t, 3) for t, chunks, _ in counter.calls if 1 in chunks]
    assert with_pass and set(with_pass) == inside
