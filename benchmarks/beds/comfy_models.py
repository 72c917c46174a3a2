"""The test beds as ComfyUI models (EDM model type), so that ComfyUI's own samplers and this pack's
nodes sample them exactly as they would sample SDXL.

ComfyUI's EDM model sampling hands the network c_in * x and c_noise = log(sigma) / 4 and forms
D = c_skip x + c_out F, the preconditioning both beds are written in. The class travels in the
CONDITIONING tensor as a one-hot row per sample; the null class is the unconditional prediction.
"""
from __future__ import annotations

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_patcher
import comfy.supported_models_base

from . import digits as digits_bed
from . import gmm as gmm_bed


def _edm_model(network, channels, sigma_data):
    config = comfy.supported_models_base.BASE({"disable_unet_model_creation": True})
    config.latent_format = comfy.latent_formats.LatentFormat()
    config.latent_format.latent_channels = channels
    config.sampling_settings = {"sigma_data": sigma_data, "sigma_min": 0.002, "sigma_max": 80.0}
    base = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EDM, device=torch.device("cpu"))
    base.diffusion_model = network
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def class_conditioning(labels, n_labels):
    """CONDITIONING carrying one class per sample (a list of ints), or the null class (None)."""
    labels = [n_labels - 1] if labels is None else list(labels)
    return [[torch.nn.functional.one_hot(torch.tensor(labels), n_labels).float().unsqueeze(1), {}]]


def _labels_of(context):
    return context[:, 0, :].argmax(dim=1)


class _CountingNetwork(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dtype = torch.float32
        self.rows = {"cond": 0, "uncond": 0}

    def count(self, transformer_options, batch):
        chunks = transformer_options.get("cond_or_uncond", [0])
        for c in chunks:
            self.rows["uncond" if c == 1 else "cond"] += batch // len(chunks)


class DigitsNetwork(_CountingNetwork):
    def __init__(self, model: digits_bed.DigitsDenoiser):
        super().__init__()
        self.model = model

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        self.count(transformer_options, x.shape[0])
        b = x.shape[0]
        shift = torch.full((b,), digits_bed.NO_SHIFT, dtype=torch.long)
        return self.model.raw(x.reshape(b, 64), timesteps.float(), _labels_of(context), shift).view(x.shape)


class GMMNetwork(_CountingNetwork):
    def __init__(self, mixture: gmm_bed.Mixture, sigma_data: float):
        super().__init__()
        self.mixture, self.sigma_data = mixture, sigma_data

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        self.count(transformer_options, x.shape[0])
        b, sd = x.shape[0], self.sigma_data
        sigma = (timesteps.double() * 4).exp().view(-1, 1)
        x_in = x.reshape(b, 2).double() * (sigma ** 2 + sd ** 2).sqrt()
        labels = _labels_of(context)
        d = torch.empty_like(x_in)
        for label in labels.unique().tolist():
            rows = labels == label
            d[rows] = self.mixture.denoise(x_in[rows], sigma[rows, 0], None if label == self.mixture.n_classes else label)
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        return ((d - c_skip * x_in) / c_out).float().view(x.shape)


class GMMFlowNetwork(_CountingNetwork):
    """The GMM bed's exact denoiser as a flow model (velocity prediction): x_s = (1 - s) x0 + s n is
    x0 + sigma n scaled by 1 - s, with sigma = s / (1 - s), so D = E[x0 | x_s / (1 - s)] and v = (x - D) / s."""

    def __init__(self, mixture: gmm_bed.Mixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        self.count(transformer_options, x.shape[0])
        b = x.shape[0]
        s = (timesteps.double() / 1000).clamp(1e-6, 1 - 1e-6).view(-1, 1)  # s = 1: sigma -> infinity, the prior mean
        x_flow = x.reshape(b, 2).double()
        labels = _labels_of(context)
        d = torch.empty_like(x_flow)
        for label in labels.unique().tolist():
            rows = labels == label
            d[rows] = self.mixture.denoise(x_flow[rows] / (1 - s[rows]), (s / (1 - s))[rows, 0],
                                           None if label == self.mixture.n_classes else label)
        return ((x_flow - d) / s).float().view(x.shape)


def gmm_flow_model(mixture=None, shift: float = 1.0):
    config = comfy.supported_models_base.BASE({"disable_unet_model_creation": True})
    config.latent_format = comfy.latent_formats.LatentFormat()
    config.latent_format.latent_channels = 2
    config.sampling_settings = {"shift": shift, "multiplier": 1000}
    base = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.FLOW, device=torch.device("cpu"))
    base.diffusion_model = GMMFlowNetwork(mixture or gmm_bed.default_mixture())
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def digits_model(variant: str):
    return _edm_model(DigitsNetwork(digits_bed.load(variant)), 1, digits_bed.SIGMA_DATA)


def gmm_model(mixture=None, sigma_data: float = 1.0):
    return _edm_model(GMMNetwork(mixture or gmm_bed.default_mixture(), sigma_data), 2, sigma_data)


def network_of(model_patcher):
    return model_patcher.model.diffusion_model
