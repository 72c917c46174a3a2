"""Tiny ComfyUI models for the host tests: real ComfyUI model objects around a cheap denoiser.

They are built in process (no weights to download) and count every evaluation per branch
(conditional / unconditional), so tests can check exactly which passes a guidance method ran.
"""
import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_patcher
import comfy.model_sampling
import comfy.supported_models_base

MODEL_TYPES = {
    "eps": comfy.model_base.ModelType.EPS,
    "v_prediction": comfy.model_base.ModelType.V_PREDICTION,
    "flow": comfy.model_base.ModelType.FLOW,
    "edm": comfy.model_base.ModelType.EDM,
}
# Model types of newer hosts (ComfyUI 0.33): CogVideoX's v-prediction on the raw latent, the image-to-image flow
# of WAN FlowRVS, audio-video flow sampling, and a flow model whose noise has a scale of its own. Each entry is
# (ModelType name, sampling settings); only those the host has are offered.
NEWER_MODEL_TYPES = {
    "v_ddpm": ("V_PREDICTION_DDPM", {}),
    "img2img_flow": ("IMG_TO_IMG_FLOW", {}),
    "flow_av": ("FLOW_AV", {"shift": 3.0, "multiplier": 1000, "audio_shift": 1.5}),
    "flow_noise_scale": ("FLOW", {"shift": 3.0, "multiplier": 1000, "noise_scale": 8.0}),
}
for _name, (_type, _settings) in NEWER_MODEL_TYPES.items():
    if hasattr(comfy.model_base.ModelType, _type) and (
            _name != "flow_noise_scale" or hasattr(comfy.model_sampling.ModelSamplingDiscreteFlow, "set_noise_scale")):
        MODEL_TYPES[_name] = getattr(comfy.model_base.ModelType, _type)
SAMPLING_SETTINGS = {name: settings for name, (_, settings) in NEWER_MODEL_TYPES.items()}
SAMPLING_SETTINGS["flow"] = {"shift": 3.0, "multiplier": 1000}

CHANNELS = 4
CONTEXT_DIM = 8


class CountingDenoiser(torch.nn.Module):
    """A smooth, deterministic stand-in for a UNet that records what it is asked.

    The output depends on the input, the timestep and the text context, so the conditional
    and unconditional branches really differ and guidance changes the result.
    Each call appends (timestep, [0 = cond / 1 = uncond per chunk], rows per chunk) to `calls`.
    """

    def __init__(self):
        super().__init__()
        self.dtype = torch.float32
        g = torch.Generator().manual_seed(1234)
        self.register_buffer("pattern", torch.randn(1, CHANNELS, 1, 1, generator=g))
        self.register_buffer("mix", torch.randn(CONTEXT_DIM, CHANNELS, generator=g) / CONTEXT_DIM ** 0.5)
        self.calls = []
        self.input_stds = []  # the standard deviation of each call's input, as the model received it

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        chunks = list(transformer_options.get("cond_or_uncond", []))
        rows = x.shape[0] // max(len(chunks), 1)
        self.calls.append((float(timesteps.flatten()[0]), chunks, rows))
        self.input_stds.append(float(x.detach().float().std()))
        t = (timesteps.float() / 1000.0).view(-1, 1, 1, 1)
        text = (context.mean(dim=1) @ self.mix).view(x.shape[0], CHANNELS, 1, 1)
        spatial = torch.linspace(-1, 1, x.shape[-1], device=x.device).view(1, 1, 1, -1)
        return torch.tanh(0.9 * x + (0.6 + t) * text * (1 + spatial) + 0.1 * self.pattern)

    def reset(self):
        self.calls.clear()
        self.input_stds.clear()

    def evaluations(self):
        """(conditional, unconditional) row-evaluations counted since the last reset."""
        cond = sum(rows for _, chunks, rows in self.calls for c in chunks if c == 0)
        uncond = sum(rows for _, chunks, rows in self.calls for c in chunks if c == 1)
        return cond, uncond

    def uncond_timesteps(self):
        return [t for t, chunks, _ in self.calls if 1 in chunks]


class WrappedDenoiser(CountingDenoiser):
    """CountingDenoiser whose forward goes through the DIFFUSION_MODEL wrappers, as ComfyUI's own diffusion models'
    do (UNetModel.forward): what EasyCache hooks. A call its wrapper answers from its cache is not counted."""

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        import comfy.patcher_extension as extension
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, transformer_options)
        return extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timesteps, context, transformer_options, **kwargs)

    def _forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        return CountingDenoiser.forward(self, x, timesteps, context, transformer_options, **kwargs)


def build_model(model_type="eps", denoiser=CountingDenoiser):
    """A ModelPatcher around CountingDenoiser (or `denoiser`) with the given prediction type."""
    config = comfy.supported_models_base.BASE({"disable_unet_model_creation": True})
    config.latent_format = comfy.latent_formats.SD15()
    if model_type in SAMPLING_SETTINGS:
        config.sampling_settings = dict(SAMPLING_SETTINGS[model_type])
    base = comfy.model_base.BaseModel(config, model_type=MODEL_TYPES[model_type], device=torch.device("cpu"))
    base.diffusion_model = denoiser()
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def build_conditioning(seed, tokens=3):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, CONTEXT_DIM, generator=g), {}]]


def counter(model_patcher):
    return model_patcher.model.diffusion_model


class PatternDenoiser(torch.nn.Module):
    """The annealing reference's toy model, in the DDPM scale:
    eps(z_t, t) = tanh(0.9 * z_t + 0.6 * pattern * (t / 1000)), one pattern per branch and sample.
    ComfyUI hands an EPS model z_t = x / sqrt(1 + sigma^2) and the discrete timestep, as here."""

    def __init__(self, pattern_cond, pattern_uncond):
        super().__init__()
        self.dtype = torch.float32
        self.register_buffer("patterns", torch.stack([pattern_cond, pattern_uncond]).float())  # (2, B, C, H, W)
        self.calls = []

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        chunks = list(transformer_options.get("cond_or_uncond", [0]))
        rows = x.shape[0] // len(chunks)
        self.calls.append((float(timesteps.flatten()[0]), chunks, rows))
        pattern = torch.cat([self.patterns[c, :rows] for c in chunks])
        t = timesteps.float().view(-1, 1, 1, 1) / 1000.0
        return torch.tanh(0.9 * x + 0.6 * pattern * t)

    def evaluations(self):
        return CountingDenoiser.evaluations(self)


def build_pattern_model(pattern_cond, pattern_uncond):
    """An SD/SDXL-style EPS model (discrete DDPM schedule, scaled_linear 0.00085..0.012) around
    PatternDenoiser, with a latent format that leaves latents unscaled."""
    config = comfy.supported_models_base.BASE({"disable_unet_model_creation": True})
    config.latent_format = comfy.latent_formats.LatentFormat()
    base = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS, device=torch.device("cpu"))
    base.diffusion_model = PatternDenoiser(pattern_cond, pattern_uncond)
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


class FaultyDenoiser(CountingDenoiser):
    """CountingDenoiser with a fault: "returns_nan" (every output NaN) or "no_gradient" (its output detached, as a
    model run without autograd gives it)."""

    def __init__(self, fault):
        super().__init__()
        self.fault = fault

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        out = super().forward(x, timesteps, context, transformer_options, **kwargs)
        if self.fault == "returns_nan":
            return out * float("nan")
        return out.detach()


def build_faulty_model(fault, model_type="eps"):
    model = build_model(model_type)
    model.model.diffusion_model = FaultyDenoiser(fault)
    return model


class AnyRankDenoiser(torch.nn.Module):
    """A stand-in network for a latent of any rank (image, video, audio): smooth in x and t, the two conditionings
    give different predictions, one weight so that the trainer's gradient has somewhere to go. Records each call
    as (timestep, [0 = cond / 1 = uncond per chunk])."""

    def __init__(self):
        super().__init__()
        self.dtype = torch.float32
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        chunks = list(transformer_options.get("cond_or_uncond", []))
        self.calls.append((float(timesteps.flatten()[0]), chunks))
        shape = (-1,) + (1,) * (x.ndim - 1)
        t = timesteps.float().reshape(shape) / 1000.0
        text = context.float().mean(dim=(1, 2)).reshape(shape)
        pattern = torch.linspace(-1, 1, x.shape[1], device=x.device).reshape((1, -1) + (1,) * (x.ndim - 2))
        return torch.tanh(0.9 * x + (0.6 + t) * text * (1 + pattern)) * self.scale


def configured_sampling(configuration):
    """(model config, ComfyUI's model sampling) of a class of comfy.supported_models (given or by name), as its own
    model class makes it with network creation off, or from its model type where that class needs its weights.
    Raises where neither can be made without weights."""
    import comfy.model_base
    import comfy.supported_models
    cls = configuration if isinstance(configuration, type) else getattr(comfy.supported_models, configuration)
    config = cls(dict(cls.unet_config, disable_unet_model_creation=True))
    try:
        return config, config.get_model({}, "", device=torch.device("cpu")).model_sampling
    except Exception:
        pass
    return config, comfy.model_base.model_sampling(config, config.model_type({}, ""))


def build_configured_model(configuration):
    """A ModelPatcher with the model sampling and latent format of a supported configuration and AnyRankDenoiser."""
    config, sampling = configured_sampling(configuration)
    base = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
    base.model_sampling = sampling
    base.diffusion_model = AnyRankDenoiser()
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def latent_shape_of(model, batch=1, side=4):
    """(batch, channels, side, ...) of the model's latent format, of its rank (latent_dimensions, 2 where a host
    does not say)."""
    fmt = model.model.latent_format
    return (batch, fmt.latent_channels) + (side,) * getattr(fmt, "latent_dimensions", 2)
