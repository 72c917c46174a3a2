"""Every model configuration the host supports (comfy.supported_models.models: image, video, audio and 3D latents),
each with ComfyUI's own model sampling and latent format of that configuration and a stand-in network of its
latent's shape:

- the full interval and AG that never stops give stock CFG's result, with its passes;
- the paper's interval (0.28, 5.42] runs the unconditional pass exactly on the steps whose EDM sigma lies in it,
  the EDM sigma read off the model's own noise_scaling (x = a x0 + b n: b / a), not off the pack's tables;
- AG that stops early gives a finite latent.

A configuration whose model sampling cannot be made without its weights is listed by name below; there is no
other way to leave one out."""
import math

import pytest
import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_patcher
import comfy.model_sampling
import comfy.samplers
import comfy.supported_models
import nodes as comfy_nodes
from guidance_schedules.nodes.adaptive import AdaptiveGuidancePatch
from guidance_schedules.nodes.interval import GuidanceIntervalPatch

STEPS, CFG, SEED, SIDE = 6, 5.0, 3, 4
LO, HI = 0.28, 5.42


class StandIn(torch.nn.Module):
    """A network of any latent rank: smooth in x and t, and the two conditionings give different predictions."""

    def __init__(self):
        super().__init__()
        self.dtype = torch.float32
        self.calls = []

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        chunks = list(transformer_options.get("cond_or_uncond", []))
        self.calls.append((float(timesteps.flatten()[0]), chunks))
        shape = (-1,) + (1,) * (x.ndim - 1)
        t = timesteps.float().reshape(shape) / 1000.0
        text = context.float().mean(dim=(1, 2)).reshape(shape)
        pattern = torch.linspace(-1, 1, x.shape[1]).reshape((1, -1) + (1,) * (x.ndim - 2))
        return torch.tanh(0.9 * x + (0.6 + t) * text * (1 + pattern))


def model_sampling_of(cls):
    """ComfyUI's model sampling of a configuration, as its own model class makes it (network creation off), or
    from its model type where the model class needs weights to be made."""
    config = cls(dict(cls.unet_config, disable_unet_model_creation=True))
    try:
        return config, config.get_model({}, "", device=torch.device("cpu")).model_sampling
    except Exception:
        pass
    return config, comfy.model_base.model_sampling(config, config.model_type({}, ""))


def configurations():
    made, without = [], []
    for cls in comfy.supported_models.models:
        try:
            made.append((cls, *model_sampling_of(cls)))
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


def build(config, sampling):
    base = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
    base.model_sampling = sampling
    base.diffusion_model = StandIn()
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


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
    model = build(config, sampling)
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

