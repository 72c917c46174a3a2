"""Sampling helpers the host tests share: the tiny models through KSampler and SamplerCustomAdvanced,
counting every model evaluation per branch."""
import torch

import comfy.samplers
import nodes as comfy_nodes
import tiny_models
from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
from guidance_schedules.nodes.interval import GuidanceIntervalPatch

SAMPLERS = ["euler", "heun", "dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde", "euler_cfg_pp"]
DETERMINISTIC = ["euler", "heun", "dpmpp_2m", "euler_cfg_pp"]
MODEL_TYPES = ["eps", "v_prediction", "flow"]
STEPS, CFG, SEED = 8, 5.0, 42
EVERY_STEP = dict(sigma_lo=0.0, sigma_hi=1000.0)
NO_STEP = dict(sigma_lo=500.0, sigma_hi=900.0)


def scheduler_for(model_type):
    return "simple" if model_type.startswith("flow") else "karras"


def latent(batch=1):
    return {"samples": torch.zeros(batch, tiny_models.CHANNELS, 8, 8)}


def ksampler(model, pos, neg, sampler, model_type, cfg=CFG, batch=1, image=None):
    counter = tiny_models.counter(model)
    counter.reset()
    out = comfy_nodes.KSampler().sample(model, SEED, STEPS, cfg, sampler, scheduler_for(model_type), pos, neg,
                                        image or latent(batch), 1.0)[0]["samples"]
    return out, counter.evaluations()


def custom_advanced(guider, sampler, sigmas, batch=1):
    counter = tiny_models.counter(guider.model_patcher)
    counter.reset()
    out = SamplerCustomAdvanced().sample(Noise_RandomNoise(SEED), guider, comfy.samplers.sampler_object(sampler),
                                         sigmas, latent(batch))[0]["samples"]
    return out, counter.evaluations()


def patched(model, **bounds):
    return GuidanceIntervalPatch().patch(model, **bounds)[0]


def sigmas_of(model, model_type, steps=STEPS):
    ms = model.get_model_object("model_sampling")
    return comfy.samplers.calculate_sigmas(ms, scheduler_for(model_type), steps).cpu()
