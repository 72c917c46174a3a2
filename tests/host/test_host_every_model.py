"""Every model configuration the host supports (comfy.supported_models.models: image, video, audio and 3D latents),
each with ComfyUI's own model sampling and latent format of that configuration and a stand-in network of its
latent's shape (tiny_models.build_configured_model):

- the full interval and AG that never stops give stock CFG's result, with its passes;
- the paper's interval (0.28, 5.42] runs the unconditional pass exactly on the steps whose EDM sigma lies in it,
  the EDM sigma read off the model's own noise_scaling (x = a x0 + b n: b / a), not off the pack's tables;
- AG that stops early gives a finite latent;
- the trainer and the calibration on a video (3-D) and an audio (1-D) latent, through the API.

A configuration whose model sampling cannot be made without its weights is listed by name below; there is no
other way to leave one out."""
import math

import pytest
import torch

import comfy.model_sampling
import comfy.samplers
import comfy.supported_models
import nodes as comfy_nodes
import tiny_models
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from guidance_schedules.nodes.interval import GuidanceIntervalPatch

STEPS, CFG, SEED, SIDE = 6, 5.0, 3, 4
LO, HI = 0.28, 5.42


def configurations():
    made, without = [], []
    for cls in comfy.supported_models.models:
        try:
            made.append((cls, *tiny_models.configured_sampling(cls)))
        except Exception:
            without.append(cls.__name__)
    return made, without


MADE, WITHOUT_WEIGHTS = configurations()


def test_every_configuration_is_made_but_those_that_need_their_weights():
    # the configurations whose sampling ComfyUI only makes from their weights (their unet_config leaves out what
    # their model class needs); everything else is run below
    assert set(WITHOUT_WEIGHTS) <= {"Flux2", "StableAudio", "StableAudio3", "Stable_Zero123", "SD20", "SD21UnclipL",
                                    "SD21UnclipH"}, WITHOUT_WEIGHTS
    assert len(MADE) >= len(comfy.supported_models.models) - 7


def latent_of(config):
    fmt = config.latent_format
    dims = getattr(fmt, "latent_dimensions", 2)
    return torch.zeros((1, fmt.latent_channels) + (SIDE,) * dims)


def scheduler_of(sampling):
    return "simple" if isinstance(sampling, comfy.model_sampling.CONST) else "karras"


def conditioning(seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 3, 8, generator=g), {}]]


def sample(model, config, sampling, cfg=CFG):
    net = model.model.diffusion_model
    net.calls.clear()
    out = comfy_nodes.KSampler().sample(model, SEED, STEPS, cfg, "euler", scheduler_of(sampling), conditioning(1),
                                        conditioning(2), {"samples": latent_of(config)}, 1.0)[0]["samples"]
    if getattr(out, "is_nested", False):  # a configuration whose latent is several tensors (MiniMax's)
        out = torch.cat([t.flatten() for t in out.unbind()])
    return out, list(net.calls)


def edm_sigma_observed(sampling, sigma: float) -> float:
    """b / a in the model's own x = noise_scaling(sigma, n, x0) = a x0 + b n."""
    scaling = comfy.model_sampling.CONST.noise_scaling if hasattr(comfy.model_sampling, "IMG_TO_IMG_FLOW") and \
        isinstance(sampling, comfy.model_sampling.IMG_TO_IMG_FLOW) else type(sampling).noise_scaling
    s, one, zero = torch.tensor([sigma]), torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    a = float(scaling(sampling, s, zero.clone(), one.clone()))
    b = float(scaling(sampling, s, one.clone(), zero.clone()))
    return math.inf if a <= 0 else b / a


def test_every_configurations_prediction_has_a_name_of_the_packs():
    """What each model predicts is named by the pack (run records, LinearAG files and annealing networks say it),
    never left as ComfyUI's class name."""
    from guidance_schedules.nodes.host_facts import prediction_of
    from guidance_schedules.samplers.spaces import PREDICTION_SPACE
    unnamed = {cls.__name__: prediction_of(sampling) for cls, _, sampling in MADE
               if prediction_of(sampling) not in PREDICTION_SPACE}
    assert not unnamed


@pytest.mark.parametrize("cls, config, sampling", MADE, ids=[c.__name__ for c, _, _ in MADE])
def test_the_methods_on_every_configuration(cls, config, sampling):
    model = tiny_models.build_configured_model(cls)
    stock, stock_calls = sample(model, config, sampling)
    assert torch.isfinite(stock).all()
    for patched in (GuidanceIntervalPatch().patch(model, sigma_hi=1000.0, sigma_lo=0.0)[0],
                    AdaptiveGuidancePatch().patch(model, 2.0)[0]):
        out, calls = sample(patched, config, sampling)
        assert calls == stock_calls and torch.allclose(out, stock, rtol=1e-5, atol=1e-6)
    sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler_of(sampling), STEPS).tolist()
    _, calls = sample(GuidanceIntervalPatch().patch(model, sigma_hi=HI, sigma_lo=LO)[0], config, sampling)
    assert len(calls) == STEPS  # euler: one evaluation a step
    with_uncond = [1 in chunks for _, chunks in calls]
    expected = [LO < round(edm_sigma_observed(sampling, s), 2) <= HI for s in sigmas[:-1]]
    assert with_uncond == expected, (sigmas, with_uncond)
    out, _ = sample(AdaptiveGuidancePatch().patch(model, 0.5)[0], config, sampling)
    assert torch.isfinite(out).all()



@pytest.mark.parametrize("configuration", ["WAN21_T2V", "StableAudio"])
def test_the_trainer_and_the_calibration_on_video_and_audio_latents_through_the_api(comfy_server, configuration):
    """A 3-D (B, C, T, H, W) video latent and a 1-D (B, C, L) audio latent, each with its configuration's own model
    sampling, queued as a user does: the annealing trainer writes a network and LinearAG calibration its
    coefficients."""
    name = f"gs_rank_{configuration.lower()}"
    prompt = {
        "1": {"class_type": "GSTestConfiguredModel", "inputs": {"configuration": configuration}},
        "2": {"class_type": "AnnealingGuidanceTrain", "inputs": {
            "model": ["1", 0], "latents": ["1", 3], "positive": ["1", 1], "negative": ["1", 2], "steps": 6,
            "scheduler": "auto", "training_images": 4, "batch_size": 2, "gradient_accumulation": 1,
            "learning_rate": 1e-3, "weight_decay": 0.01, "seed": 1, "delta_normalization": 5.0, "prompt_noise": False,
            "name": name}},
        "3": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "4": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 6,
                                                          "denoise": 1.0}},
        "5": {"class_type": "LinearAGCalibrate", "inputs": {
            "model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2], "cfg": 5.0, "sampler": ["3", 0],
            "sigmas": ["4", 0], "latent_image": ["1", 3], "runs": 2, "seed": 0, "name": name}},
    }
    written = [comfy_server.base / "models" / folder / f"{name}.safetensors" for folder in ("guidance_schedulers",
                                                                                            "linear_ag")]
    try:
        history = comfy_server.run_prompt(prompt)
        assert history["status"]["status_str"] == "success", history["status"]
        assert history["outputs"]["2"]["text"] == [f"wrote {name}.safetensors"]
        assert "4 trajectories (2 runs of 2 latents), 6 steps" in history["outputs"]["5"]["text"][0]
        assert all(path.is_file() for path in written)
    finally:  # the server is shared: other tests list these folders
        for path in written:
            path.unlink(missing_ok=True)
