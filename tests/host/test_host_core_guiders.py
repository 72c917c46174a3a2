"""The schedules under ComfyUI's own guiders that combine their passes their own way: PerpNegGuider, DualCFGGuider
and (ComfyUI 0.33) DualModelGuider, fed the patched model. Expectations come from the stock guiders (the full
interval), from the sigma grid (which steps a partial interval guides) and from the counting model (which passes
ran): on an unguided step only the positive pass runs, on a guided step the result is the guider's own."""
import logging
import math

import pytest
import torch

import comfy.samplers
import comfy_extras.nodes_custom_sampler as custom_sampler
import comfy_extras.nodes_perpneg as perpneg
import tiny_models
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from host_sampling import CFG, EVERY_STEP, NO_STEP, STEPS, custom_advanced, patched, sigmas_of

POS, NEG, OTHER = (tiny_models.build_conditioning(s) for s in (1, 2, 3))


class Built:
    """A core guider over `model` (with a second model for DualModel), and the counters of every model it runs."""

    def __init__(self, kind, model, positive=POS, negative=NEG, third=OTHER):
        self.counters = [tiny_models.counter(model)]
        if kind == "perpneg":  # the empty prompt is the third conditioning
            self.guider = perpneg.Guider_PerpNeg(model)
            self.guider.set_conds(positive, negative, third)
            self.guider.set_cfg(CFG, 1.0)
        elif kind == "dualcfg":  # the middle conditioning is the third
            self.guider = custom_sampler.Guider_DualCFG(model)
            self.guider.set_conds(positive, third, negative)
            self.guider.set_cfg(CFG, 2.0)
        else:  # dualmodel: the negative pass on a second model
            second = tiny_models.build_model("eps")
            self.counters.append(tiny_models.counter(second))
            self.guider = custom_sampler.Guider_DualModel(model, second)
            self.guider.set_conds(positive, negative)
            self.guider.set_cfg(CFG)

    def sample(self, sampler="euler"):
        for c in self.counters:
            c.reset()
        out, _ = custom_advanced(self.guider, sampler, sigmas_of(self.guider.model_patcher, "eps"))
        return out, [c.evaluations() for c in self.counters]


KINDS = ["perpneg", "dualcfg"] + (["dualmodel"] if hasattr(custom_sampler, "Guider_DualModel") else [])


def cond_only(model):
    """The positive prediction alone at every step: stock CFGGuider at cfg 1 (ComfyUI then runs no other pass)."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(POS, NEG)
    guider.set_cfg(1.0)
    return custom_advanced(guider, "euler", sigmas_of(model, "eps"))[0]


@pytest.mark.parametrize("sampler", ["euler", "heun", "euler_ancestral"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_full_interval_is_the_guiders_own(kind, sampler):
    model = tiny_models.build_model("eps")
    stock, stock_counts = Built(kind, model).sample(sampler)
    ours, counts = Built(kind, patched(model, **EVERY_STEP)).sample(sampler)
    assert counts == stock_counts and (ours - stock).abs().max().item() <= 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_an_unguided_step_runs_the_positive_pass_alone(kind):
    model = tiny_models.build_model("eps")
    _, stock_counts = Built(kind, model).sample()
    # per euler step, the stock guider's rows: the positive (cond) and its other passes (uncond, second model)
    per_step = [tuple(n // STEPS for n in counts) for counts in stock_counts]
    sigmas = [float(s) for s in sigmas_of(model, "eps")[:-1]]
    lo, hi = math.sqrt(sigmas[6] * sigmas[5]), math.sqrt(sigmas[1] * sigmas[2])  # between grid sigmas
    guided = [lo < s <= hi for s in sigmas]
    assert 0 < sum(guided) < STEPS
    _, counts = Built(kind, patched(model, sigma_lo=lo, sigma_hi=hi)).sample()
    assert counts[0] == (STEPS * per_step[0][0], sum(guided) * per_step[0][1])  # the positive pass every step
    for second, (cond_rows, uncond_rows) in zip(counts[1:], per_step[1:]):  # DualModel's negative model
        assert second == (sum(guided) * cond_rows, sum(guided) * uncond_rows)
    # no step guided: the positive pass alone, as stock CFG at cfg 1 gives it
    ours, counts = Built(kind, patched(model, **NO_STEP)).sample()
    assert counts[0] == (STEPS * per_step[0][0], 0) and all(c == (0, 0) for c in counts[1:])
    assert (ours - cond_only(model)).abs().max().item() <= 1e-6


# Adaptive Guidance compares the positive prediction with the guider's unconditional one: PerpNeg's empty prompt,
# DualCFG's negative, DualModel's negative pass. Made equal to the positive, guidance stops at the first step;
# where only another conditioning equals the positive, it does not.
SAME_AS_POSITIVE = {"perpneg": (dict(third=POS), dict(negative=POS)),
                    "dualcfg": (dict(negative=POS), dict(third=POS)),
                    "dualmodel": (dict(negative=POS), None)}


@pytest.mark.parametrize("kind", KINDS)
def test_adaptive_guidance_compares_the_positive_with_the_guiders_unconditional(kind):
    model = tiny_models.build_model("eps")
    stops, goes_on = SAME_AS_POSITIVE[kind]
    _, stock_counts = Built(kind, model, **stops).sample()
    ag = AdaptiveGuidancePatch().patch(model, 0.999999)[0]
    ours, counts = Built(kind, ag, **stops).sample()
    # one evaluation measured (the guider's passes once, on every model it runs), then the positive pass alone:
    # the cond-only result
    assert counts[0] == (STEPS, stock_counts[0][1] // STEPS)
    assert counts[1:] == [(c // STEPS, u // STEPS) for c, u in stock_counts[1:]]
    assert (ours - cond_only(model)).abs().max().item() <= 1e-6
    if goes_on is not None:
        _, counts = Built(kind, ag, **goes_on).sample()
        assert counts[0][1] > stock_counts[0][1] // STEPS  # guided beyond the first step


@pytest.mark.parametrize("kind", KINDS)
def test_annealing_and_linear_ag_are_refused_with_what_to_use(kind):
    from guidance_schedules.nodes.guidance import Schedule, patch_model
    from guidance_schedules.samplers import linear_ag
    from guidance_schedules.samplers.adaptive import AdaptiveSchedule
    from guidance_schedules.samplers.annealing import (AnnealingNetwork, AnnealingSchedule, AnnealingScheduler,
                                                       NetworkConfig, TrainedFor)
    model = tiny_models.build_model("eps")
    network = AnnealingScheduler(AnnealingNetwork(NetworkConfig()), TrainedFor(model_family=""))
    annealed = patch_model(model, Schedule(lambda run: AnnealingSchedule(run, network, 0.4), "annealing"))
    with pytest.raises(ValueError, match="combines its model passes its own way. Use the pack's Annealing Guidance "
                                         "Guider"):
        Built(kind, annealed).sample("euler_cfg_pp")
    sigmas = tuple(float(s) for s in sigmas_of(model, "eps"))
    fitted = linear_ag.LinearAGFile("mine.safetensors", torch.zeros(STEPS, 4, dtype=torch.float64),
                                    linear_ag.FittedFor("sample_euler", STEPS, sigmas, "BASE EPS", CFG, 4, "eps"))
    estimated = patch_model(model, Schedule(lambda run: AdaptiveSchedule(run, 0.99, fitted), "LinearAG"))
    with pytest.raises(ValueError, match="linear_ag: LinearAG estimates the unconditional pass of plain CFG; "
                                         "[A-Za-z]+Guider combines its passes its own way"):
        Built(kind, estimated).sample()


def test_a_guider_the_pack_does_not_know_keeps_its_own_guidance_with_one_warning(caplog):
    class ThirdPartyGuider(comfy.samplers.CFGGuider):
        def predict_noise(self, x, timestep, model_options={}, seed=None):
            return comfy.samplers.sampling_function(self.inner_model, x, timestep, self.conds.get("negative"),
                                                    self.conds.get("positive"), 2.0 * self.cfg, model_options, seed)
    model = tiny_models.build_model("eps")
    results = []
    for m in (model, patched(model, **NO_STEP)):
        guider = ThirdPartyGuider(m)
        guider.set_conds(POS, NEG)
        guider.set_cfg(CFG)
        with caplog.at_level(logging.WARNING, logger="guidance_schedules"):
            results.append(custom_advanced(guider, "euler", sigmas_of(model, "eps")))
    assert torch.equal(results[0][0], results[1][0]) and results[0][1] == results[1][1]
    assert caplog.text.count("Guidance schedule inactive: the guider ThirdPartyGuider") == 1


def test_the_interval_under_perp_neg_through_the_api(comfy_server):
    """The example's path as a user queues it: the interval patch feeding PerpNegGuider and SamplerCustomAdvanced;
    the run record says which steps Perp-Neg guided and how many evaluations ran its other passes."""
    model = tiny_models.build_model("eps")
    sigmas = [float(s) for s in sigmas_of(model, "eps")[:-1]]
    lo, hi = math.sqrt(sigmas[6] * sigmas[5]), math.sqrt(sigmas[1] * sigmas[2])
    interval = {"class_type": "GuidanceIntervalPatch", "inputs": {"sigma_hi": hi, "sigma_lo": lo}}
    perpneg = {"class_type": "PerpNegGuider", "inputs": {"positive": ["1", 1], "negative": ["1", 2],
                                                         "empty_conditioning": ["1", 2], "cfg": CFG, "neg_scale": 1.0}}
    prompt_id, _ = comfy_server.run_prompt_with_events(guider_prompt(interval, perpneg, "gs_perpneg"))
    (record,) = comfy_server.get(f"/guidance_schedules/runs?prompt_id={prompt_id}")
    guided = [i for i, s in enumerate(sigmas) if lo < s <= hi]
    assert record["method"] == "interval" and record["guided_steps"] == [guided]
    assert (record["evaluations"], record["uncond_evaluations"]) == (STEPS, len(guided))


# --- guidance that perturbs attention and adds its own pass, on a real (tiny, random) SD1.5-style UNet -----------

def attention_guided(kind):
    """SelfAttentionGuidance, PerturbedAttentionGuidance or (ComfyUI 0.33) NAGuidance, core nodes, on a small SD1.5
    UNet with random weights."""
    from test_host_annealing_training import small_unet
    import comfy_extras.nodes_pag as pag
    import comfy_extras.nodes_sag as sag
    model = small_unet()
    if kind == "sag":
        out = sag.SelfAttentionGuidance.execute(model, 0.5, 2.0)
    elif kind == "pag":
        out = pag.PerturbedAttentionGuidance.execute(model, 3.0)
    else:
        import comfy_extras.nodes_nag as nag
        out = nag.NAGuidance.execute(model, 5.0, 0.5, 2.5)
    return out[0] if isinstance(out, tuple) else out.result[0]


def host_has_nag() -> bool:
    import importlib.util
    return importlib.util.find_spec("comfy_extras.nodes_nag") is not None


ATTENTION_KINDS = ["sag", "pag"] + (["nag"] if host_has_nag() else [])


def unet_sample(model, cfg=CFG, negative=NEG):
    import nodes as comfy_nodes
    return comfy_nodes.KSampler().sample(model, 0, STEPS, cfg, "euler", "karras", POS, negative,
                                         {"samples": torch.zeros(1, 4, 16, 16)}, 1.0)[0]["samples"]


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_attention_guidance_is_unchanged_under_the_full_interval(kind):
    model = attention_guided(kind)
    assert torch.equal(unet_sample(patched(model, **EVERY_STEP)), unet_sample(model))


def test_perturbed_attention_guidance_keeps_its_own_pass_on_unguided_steps():
    """PAG is its own guidance term on the conditional prediction: on a step without CFG it acts as stock ComfyUI
    has it act at cfg 1 (the unconditional pass skipped, PAG's perturbed pass run)."""
    model = attention_guided("pag")
    assert torch.equal(unet_sample(patched(model, **NO_STEP)), unet_sample(model, cfg=1.0))


@pytest.mark.parametrize("kind", [k for k in ATTENTION_KINDS if k != "pag"])
def test_attention_guidance_that_reads_the_unconditional_pass_keeps_it_on_unguided_steps(kind):
    """SAG blurs with the attention map it records during the unconditional pass, and only there; NAG mixes the
    negative's attention into the positive's within one batch. Both ask ComfyUI to run that pass even at cfg 1
    (disable_model_cfg1_optimization): on a step without CFG the pass still runs for them, and the step is stock
    ComfyUI's cfg-1 step with the patch. With the paper's bounds the first steps are unguided: SAG has its map
    from the start."""
    model = attention_guided(kind)
    assert torch.equal(unet_sample(patched(model, **NO_STEP)), unet_sample(attention_guided(kind), cfg=1.0))
    model = attention_guided(kind)
    sigmas = [float(s) for s in sigmas_of(model, "eps")[:-1]]
    lo, hi = math.sqrt(sigmas[6] * sigmas[5]), math.sqrt(sigmas[1] * sigmas[2])  # step 0 unguided
    assert torch.isfinite(unet_sample(patched(model, sigma_lo=lo, sigma_hi=hi))).all()


def small_dit():
    """A real ComfyUI SD3 MMDiT (its architecture scaled down: 2 joint blocks), random weights: blocks to skip."""
    import comfy.model_patcher
    import comfy.supported_models
    config = comfy.supported_models.SD3({
        "in_channels": 16, "out_channels": 16, "pos_embed_scaling_factor": None, "patch_size": 2, "depth": 2,
        "pos_embed_max_size": 16, "num_patches": 256, "adm_in_channels": 16, "dtype": torch.float32,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 8, "out_features": 128}}})
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in (*model.diffusion_model.parameters(), *model.diffusion_model.buffers()):
            t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def dit_conditioning(seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 3, 8, generator=g), {"pooled_output": torch.randn(1, 16, generator=g)}]]


def skip_layer_guided(kind):
    """SkipLayerGuidanceDiT (its second joint block skipped, the whole run) or SkipLayerGuidanceSD3 on the small
    MMDiT."""
    import comfy_extras.nodes_sd3 as sd3
    import comfy_extras.nodes_slg as slg
    model = small_dit()
    out = slg.SkipLayerGuidanceDiT.execute(model, 3.0, 0.0, 1.0, double_layers="1") if kind == "dit" else \
        sd3.SkipLayerGuidanceSD3.execute(model, "1", 3.0, 0.0, 1.0)
    return out[0] if isinstance(out, tuple) else out.result[0]


def dit_sample(model, cfg=CFG):
    import nodes as comfy_nodes
    return comfy_nodes.KSampler().sample(model, 0, 6, cfg, "euler", "simple", dit_conditioning(1), dit_conditioning(2),
                                         {"samples": torch.zeros(1, 16, 16, 16)}, 1.0)[0]["samples"]


@pytest.mark.parametrize("kind", ["dit", "sd3"])
def test_skip_layer_guidance_is_unchanged_under_the_full_interval_and_keeps_its_pass_where_cfg_is_off(kind):
    """Skip-layer guidance is its own term on the conditional prediction (an extra pass with layers skipped): the
    full interval leaves it as it is, and a step without CFG is stock ComfyUI's cfg-1 step with it."""
    model = skip_layer_guided(kind)
    stock = dit_sample(model)
    assert torch.isfinite(stock).all()
    assert torch.equal(dit_sample(patched(model, **EVERY_STEP)), stock)
    assert torch.equal(dit_sample(patched(model, sigma_lo=500.0, sigma_hi=900.0)), dit_sample(model, cfg=1.0))


def dual_cfg_prompt(method_node: dict, cfg_conds, cfg_cond2_negative, middle=("1", 2), style="regular"):
    """Tiny model -> a method node -> DualCFGGuider -> SamplerCustomAdvanced, as a user queues it."""
    dual = {"class_type": "DualCFGGuider", "inputs": {"cond1": ["1", 1], "cond2": list(middle), "negative": ["1", 2],
                                                       "cfg_conds": cfg_conds, "cfg_cond2_negative": cfg_cond2_negative,
                                                       "style": style}}
    return guider_prompt(method_node, dual, "gs_dualcfg")


def guider_prompt(method_node: dict, guider_node: dict, prefix: str) -> dict:
    """Tiny model (node 1: model, positive, negative) -> a method node (2) -> a core guider (3) ->
    SamplerCustomAdvanced (8, euler, karras) -> SaveLatent: the nodes' own inputs given without their model."""
    return {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "2": {**method_node, "inputs": {"model": ["1", 0], **method_node["inputs"]}},
        "3": {**guider_node, "inputs": {"model": ["2", 0], **guider_node["inputs"]}},
        "4": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}},
        "5": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "6": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "karras", "steps": STEPS,
                                                          "denoise": 1.0}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["4", 0], "guider": ["3", 0], "sampler": ["5", 0],
                                                                 "sigmas": ["6", 0], "latent_image": ["7", 0]}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": prefix}},
    }


INTERVAL_EVERY_STEP = {"class_type": "GuidanceIntervalPatch", "inputs": {"sigma_hi": 1000.0, "sigma_lo": 0.0}}


def test_dual_cfg_runs_are_recorded_with_the_guiders_own_scales(comfy_server):
    prompt_id, _ = comfy_server.run_prompt_with_events(dual_cfg_prompt(INTERVAL_EVERY_STEP, 5.0, 2.0))
    (record,) = comfy_server.get(f"/guidance_schedules/runs?prompt_id={prompt_id}")
    assert record["guider_scales"] == {"cfg_conds": 5.0, "cfg_cond2_negative": 2.0} and record["cfg"] == 5.0
    assert record["guided_steps"] == [list(range(STEPS))] and record["weights"] == [[5.0] * STEPS]


def test_adaptive_guidance_under_dual_cfg_without_a_negative_pass_compares_with_the_middle(comfy_server):
    """cfg_cond2_negative 1: DualCFG passes no negative (ComfyUI fills that slot with zeros) and combines middle +
    cfg_conds (positive - middle). AG compares the positive with the middle: made the same conditioning as the
    positive, guidance stops at the first step (against zeros it never stopped)."""
    ag = {"class_type": "AdaptiveGuidancePatch", "inputs": {"threshold": 0.999999}}
    prompt_id, _ = comfy_server.run_prompt_with_events(dual_cfg_prompt(ag, 5.0, 1.0, middle=("1", 1)))
    (record,) = comfy_server.get(f"/guidance_schedules/runs?prompt_id={prompt_id}")
    assert record["guided_steps"] == [[]] and record["uncond_evaluations"] == 1  # measured once, then stopped


@pytest.mark.parametrize("scale", ["cfg_conds", "cfg_cond2_negative"])
def test_a_non_finite_scale_of_a_guided_guider_fails_the_prompt_naming_it(comfy_server, scale):
    scales = {"cfg_conds": 5.0, "cfg_cond2_negative": 2.0, scale: float("nan")}
    history = comfy_server.run_prompt(dual_cfg_prompt(INTERVAL_EVERY_STEP, **scales))
    assert history["status"]["status_str"] == "error"
    errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert errors and f"DualCFGGuider: {scale} must be a finite number, got nan" in errors[0]["exception_message"]
