"""The model types ComfyUI 0.33 added, through every method: CogVideoX's V_PREDICTION_DDPM, WAN FlowRVS's
IMG_TO_IMG_FLOW, audio-video flow sampling (ModelSamplingAV) and a flow model whose noise has its own scale.

Collected on hosts that have them (tests/host/conftest.py). The expected noise level of a step comes from the
model's own `noise_scaling` (x = a x0 + b n: the EDM sigma of equal signal-to-noise ratio is b / a), not from
the pack's table of model types.
"""
import math

import pytest
import torch

import comfy.model_sampling
import comfy.samplers
import nodes as comfy_nodes
import tiny_models
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from guidance_schedules.nodes.annealing import AnnealingGuidancePatch
from guidance_schedules.nodes.annealing_train import AnnealingGuidanceTrain
from guidance_schedules.nodes.host_facts import noise_scale_of, prediction_of, sigma_space_of
from guidance_schedules.samplers.annealing import load_scheduler
from guidance_schedules.samplers.spaces import edm_sigma
from host_sampling import STEPS, ksampler, patched, sigmas_of

NEWER = [t for t in tiny_models.NEWER_MODEL_TYPES if t in tiny_models.MODEL_TYPES]
# the pack's names for what each predicts (README, decision log): the new v-prediction and the image-to-image
# flow get names of their own, so that no LinearAG file or annealing network of another kind is taken for them
PREDICTIONS = {"v_ddpm": "v_ddpm", "img2img_flow": "x0_flow", "flow_av": "flow", "flow_noise_scale": "flow"}


def observed_scaling(model, sigma: float) -> tuple[float, float]:
    """(a, b) in ComfyUI's x = noise_scaling(sigma, n, x0) = a x0 + b n. IMG_TO_IMG_FLOW's noise_scaling returns
    the source image unchanged (it does not noise); its sampler steps are those of the flow it subclasses
    (CONST), whose noise_scaling is read instead."""
    ms = model.get_model_object("model_sampling")
    scaling = comfy.model_sampling.CONST.noise_scaling if isinstance(ms, comfy.model_sampling.IMG_TO_IMG_FLOW) \
        else type(ms).noise_scaling
    s, one, zero = torch.tensor([sigma]), torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    return float(scaling(ms, s, zero.clone(), one.clone())), float(scaling(ms, s, one.clone(), zero.clone()))


def observed_edm_sigma(model, sigma: float) -> float:
    a, b = observed_scaling(model, sigma)
    return math.inf if a <= 0 else b / a


@pytest.fixture(scope="module", params=NEWER)
def newer(request):
    return request.param, tiny_models.build_model(request.param), tiny_models.build_conditioning(1), \
        tiny_models.build_conditioning(2)


def test_the_sigma_space_follows_the_models_own_noise(newer):
    model_type, model, _, _ = newer
    ms = model.get_model_object("model_sampling")
    assert prediction_of(ms) == PREDICTIONS[model_type]
    for sigma in sigmas_of(model, model_type)[:-1].tolist():
        expected = observed_edm_sigma(model, sigma)
        ours = edm_sigma(sigma, sigma_space_of(ms), noise_scale_of(ms))
        assert ours == pytest.approx(expected, rel=1e-5) or (math.isinf(expected) and math.isinf(ours))


def test_the_interval_guides_the_steps_whose_noise_lies_inside(newer):
    model_type, model, pos, neg = newer
    sigmas = sigmas_of(model, model_type)
    levels = [observed_edm_sigma(model, s) for s in sigmas[:-1].tolist()]
    finite = sorted({v for v in levels if math.isfinite(v)}, reverse=True)
    assert len(finite) >= 4
    hi, lo = (finite[0] + finite[1]) / 2, (finite[-2] + finite[-1]) / 2  # between grid levels: no rounding question
    guided = [lo < v <= hi for v in levels]
    assert 0 < sum(guided) < STEPS
    _, (cond_evals, uncond_evals) = ksampler(patched(model, sigma_lo=lo, sigma_hi=hi), pos, neg, "euler", model_type)
    assert (cond_evals, uncond_evals) == (STEPS, sum(guided))


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_the_full_interval_and_adaptive_guidance_above_one_are_stock_cfg(newer, sampler):
    model_type, model, pos, neg = newer
    stock, stock_counts = ksampler(model, pos, neg, sampler, model_type)
    for guided in (patched(model, sigma_lo=0.0, sigma_hi=1000.0), AdaptiveGuidancePatch().patch(model, 1.5)[0]):
        ours, counts = ksampler(guided, pos, neg, sampler, model_type)
        assert counts == stock_counts and (ours - stock).abs().max().item() <= 1e-6


def test_adaptive_guidance_below_minus_one_is_cond_only_after_the_first_step(newer):
    model_type, model, pos, neg = newer
    cond_only, _ = ksampler(model, pos, pos, "euler", model_type)
    ours, (_, uncond_evals) = ksampler(AdaptiveGuidancePatch().patch(model, -1.0)[0], pos, neg, "euler", model_type)
    assert uncond_evals == 1 and (ours - cond_only).abs().max().item() <= 1e-6


# --- annealing: networks and training -------------------------------------------------------------------

def train(model, name, latents):
    inputs = dict(model=model, latents={"samples": latents}, positive=tiny_models.build_conditioning(1),
                  negative=tiny_models.build_conditioning(2), steps=10, scheduler="auto", training_images=4,
                  batch_size=2, gradient_accumulation=1, learning_rate=1e-3, weight_decay=0.01, seed=7,
                  delta_normalization=5.0, prompt_noise=False, name=name)
    with torch.inference_mode():  # as ComfyUI runs every node, each input as a list
        return AnnealingGuidanceTrain().train(**{k: [v] for k, v in inputs.items()})


def test_training_refuses_the_image_to_image_flow_by_name(scheduler_folder):
    with pytest.raises(ValueError, match="model: an image-to-image flow model .ComfyUI.s IMG_TO_IMG_FLOW"):
        train(tiny_models.build_model("img2img_flow"), "rvs", torch.zeros(2, 4, 8, 8))
    assert not list(scheduler_folder.iterdir())


@pytest.mark.parametrize("model_type", [t for t in NEWER if t != "img2img_flow"])
def test_a_network_trained_for_the_model_guides_it_and_no_other_kind(model_type, scheduler_folder):
    model = tiny_models.build_model(model_type)
    counter = tiny_models.counter(model)
    counter.reset()
    train(model, f"net_{model_type}", torch.zeros(2, 4, 8, 8))
    # Each training example evaluates the model at a grid sigma s (cond and uncond in one call), then at the
    # next one. From zero latents the input at s is b(s) n: its spread over s is the model's noise scale.
    ms = model.get_model_object("model_sampling")
    scheduler = "simple" if model_type.startswith("flow") else "ddim_uniform"  # the node's "auto"
    grid = comfy.samplers.calculate_sigmas(ms, scheduler, 10)
    sigma_at = {round(float(ms.timestep(s.reshape(1))), 3): float(s) for s in grid[:-1]}
    for (timestep, _, _), std in zip(counter.calls[0::2], counter.input_stds[0::2]):
        sigma = sigma_at[round(timestep, 3)]
        assert std == pytest.approx(observed_scaling(model, sigma)[1], rel=0.2)
    scheduler = load_scheduler(str(scheduler_folder / f"net_{model_type}.safetensors"))
    assert scheduler.trained_for.prediction == PREDICTIONS[model_type]
    guided = AnnealingGuidancePatch().patch(model, f"net_{model_type}.safetensors", **{"lambda": 0.5})[0]
    ksampler(guided, tiny_models.build_conditioning(1), tiny_models.build_conditioning(2), "euler_cfg_pp", model_type)
    other = "eps" if PREDICTIONS[model_type] == "v_ddpm" else "img2img_flow" if "img2img_flow" in NEWER else "eps"
    refused = AnnealingGuidancePatch().patch(tiny_models.build_model(other), f"net_{model_type}.safetensors",
                                             **{"lambda": 0.5})[0]
    with pytest.raises(ValueError, match=f"trained for .*{PREDICTIONS[model_type]} prediction.*this model is a"):
        comfy_nodes.KSampler().sample(refused, 1, 6, 7.0, "euler_cfg_pp", "karras", tiny_models.build_conditioning(1),
                                      tiny_models.build_conditioning(2), {"samples": torch.zeros(1, 4, 8, 8)}, 1.0)
