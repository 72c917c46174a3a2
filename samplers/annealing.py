"""Annealing guidance scheduler (Yehezkel, Dahary, Voynov, Cohen-Or, 2025, arXiv 2506.24108).

A small MLP picks the guidance scale of every step and sample from the model's discrete
timestep t, the size of the guidance direction ||eps_uncond - eps_cond|| and a user trade-off
lambda (low: image quality, high: prompt alignment):

    w_t = w_scale * MLP([e(t / 1000), e(||delta|| / 5), e(lambda)]) + w_bias,   e(v) = [v, cos v, cos 2v, cos 3v]
    eps_hat = eps_u + w_t * (eps_c - eps_u)

and the sampler re-noises with eps_u (CFG++), not with eps_hat: the scales live in CFG++ units
(about 0.7 - 1.3). In ComfyUI's sampler space delta = eps_u - eps_c = (D_c - D_u) / sigma.

Files: the pack's format is safetensors with the network's configuration and what it was trained
for in the metadata; the official release (a torch.save dict) loads too, with weights_only.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .checks import number
from .files import FileRefused, checked_file, shown, write_new
from .schedule import Evaluation, Guidance, GuidanceSchedule, Mask, RunInfo, reduction_dtype
from .spaces import FLOW

FORMAT = "guidance_schedules/annealing_scheduler"
FORMAT_VERSION = "1"
DEFAULT_LAMBDA = 0.4


@dataclass(frozen=True)
class NetworkConfig:
    hidden_size: int = 128
    output_size: int = 1
    n_layers: int = 3
    t_embed_dim: int = 4
    delta_embed_dim: int = 4
    lambda_embed_dim: int = 4
    t_embed_normalization: float = 1000.0
    delta_embed_normalization: float = 5.0
    w_scale: float = 1.0
    w_bias: float = 1.0

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        sizes = [self.t_embed_dim + self.delta_embed_dim + self.lambda_embed_dim] + \
                [self.hidden_size] * (self.n_layers + 1) + [self.output_size]
        shapes = {}
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes[f"combined_head.{2 * i}.weight"] = (n_out, n_in)
            shapes[f"combined_head.{2 * i}.bias"] = (n_out,)
        return shapes


@dataclass(frozen=True)
class TrainedFor:
    """What a scheduler network was trained with; it only makes sense on such a model."""

    model_family: str = "sdxl"
    prediction: str = "eps"  # the network reads noise predictions
    latent_channels: int = 4
    timesteps: str = "discrete_1000"  # the model's own timestep, 0..999 (DDPM)
    source: str = ""


# The released network: SDXL base 1.0, eps prediction, 4 latent channels, DDPM timesteps.
OFFICIAL_SDXL = TrainedFor(source="annealing-guidance/annealing-guidance src/model/checkpoints/checkpoint.pt")


class AnnealingNetwork(torch.nn.Module):
    """The scheduler MLP, with the official parameter names (combined_head.N)."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        n_in = config.t_embed_dim + config.delta_embed_dim + config.lambda_embed_dim
        layers = [torch.nn.Linear(n_in, config.hidden_size), torch.nn.ReLU()]
        for _ in range(config.n_layers):
            layers += [torch.nn.Linear(config.hidden_size, config.hidden_size), torch.nn.ReLU()]
        layers.append(torch.nn.Linear(config.hidden_size, config.output_size))
        self.combined_head = torch.nn.Sequential(*layers)

    @staticmethod
    def embed(value: torch.Tensor, dims: int) -> torch.Tensor:
        """[v, cos(v), cos(2v), ...] per sample: (B,) -> (B, dims)."""
        k = torch.arange(1, dims, device=value.device, dtype=value.dtype)
        return torch.cat([value.unsqueeze(-1), torch.cos(value.unsqueeze(-1) * k)], dim=-1)

    def forward(self, timestep: torch.Tensor, delta_norm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Guidance scale per sample from (B,) timesteps, ||eps_u - eps_c|| and lambdas."""
        c = self.config
        dtype = self.combined_head[0].weight.dtype
        features = torch.cat([
            self.embed(timestep.to(dtype) / c.t_embed_normalization, c.t_embed_dim),
            self.embed(delta_norm.to(dtype) / c.delta_embed_normalization, c.delta_embed_dim),
            self.embed(lam.to(dtype), c.lambda_embed_dim),
        ], dim=-1)
        return (c.w_scale * self.combined_head(features) + c.w_bias)[:, 0]


@dataclass
class AnnealingScheduler:
    """A loaded scheduler file: the network and what it was trained for."""

    network: AnnealingNetwork
    trained_for: TrainedFor
    path: str = ""
    _cpu_float64: AnnealingNetwork | None = field(default=None, repr=False)
    _layers: list = field(default_factory=list, repr=False)  # [(W^T, b)] in float64 numpy, for `scales`

    def __post_init__(self):
        # made with the file's loading, so that no sampling run copies weights to the host
        linears = [m for m in self.network.combined_head if isinstance(m, torch.nn.Linear)]
        self._layers = [(m.weight.detach().to("cpu", torch.float64).numpy().T.copy(),
                         m.bias.detach().to("cpu", torch.float64).numpy().copy()) for m in linears]

    def cpu_float64_network(self) -> AnnealingNetwork:
        """The network as a torch module in float64 on the CPU, made once per loaded file: the reference
        `scales` (what sampling asks, in numpy) is held to, and what the parity tests run. float64 gives the
        official code's scales to 1e-6."""
        if self._cpu_float64 is None:
            net = AnnealingNetwork(self.network.config)
            net.load_state_dict(self.network.state_dict())
            self._cpu_float64 = net.to(dtype=torch.float64).eval().requires_grad_(False)
        return self._cpu_float64

    def scales(self, timestep: float, delta_norms: list[float], lam: float) -> list[float]:
        """The network's guidance scale per sample, in float64 on the CPU: what sampling asks at every step.

        The same arithmetic as AnnealingNetwork.forward in float64 (tests/test_annealing.py holds them equal), in
        numpy: the network is a few 128-wide layers fed a handful of numbers, where each torch operation would
        cost more host time than its arithmetic, and a step costs host time on a fast GPU."""
        c = self.network.config
        # the embedded inputs in plain Python (12 numbers a sample), then one matrix product a layer
        rows = [_embedded(timestep / c.t_embed_normalization, c.t_embed_dim)
                + _embedded(d / c.delta_embed_normalization, c.delta_embed_dim)
                + _embedded(lam, c.lambda_embed_dim) for d in delta_norms]
        x = np.array(rows, dtype=np.float64)
        for i, (weight_t, bias) in enumerate(self._layers):
            x = x @ weight_t
            x += bias
            if i + 1 < len(self._layers):
                np.maximum(x, 0.0, out=x)
        return (c.w_scale * x[:, 0] + c.w_bias).tolist()

    def check_compatible(self, prediction: str, latent_channels: int, timesteps: str, model_family: str = "") -> None:
        """Refuse a model the network was not trained for, saying why."""
        t = self.trained_for
        name = os.path.basename(self.path) or "the scheduler"
        if prediction != t.prediction:
            raise ValueError(
                f"{name} was trained for {t.model_family} ({t.prediction} prediction) and reads noise predictions of "
                f"that kind; this model is a {prediction} model. A scheduler network has to be trained for the model "
                "family it guides.")
        if latent_channels != t.latent_channels:
            raise ValueError(
                f"{name} was trained for {t.model_family} latents with {t.latent_channels} channels; this latent has "
                f"{latent_channels}. The size of the guidance direction, which the network reads, depends on the latent.")
        if timesteps != t.timesteps:
            raise ValueError(
                f"{name} expects {t.timesteps} timesteps; this model uses {timesteps}.")
        if model_family and t.model_family and model_family.lower() != t.model_family.lower():
            raise ValueError(
                f"{name} was trained for {t.model_family} models; this model is {model_family}. The guidance scales "
                "it learned belong to the model it was trained on: train a network for this model "
                "(Train Annealing Network).")


def _embedded(value: float, dims: int) -> list[float]:
    """AnnealingNetwork.embed of one number: [v, cos(v), cos(2v), ...]."""
    return [value] + [math.cos(k * value) for k in range(1, dims)]


# Bounds on a network's sizes, checked before anything is allocated: the released network has hidden 128,
# 3 hidden layers and 4-wide embeddings; a file asking for far more is broken or hostile.
SIZE_LIMITS = {"hidden_size": 4096, "n_layers": 64, "t_embed_dim": 64, "delta_embed_dim": 64, "lambda_embed_dim": 64,
               "output_size": 1}
NONZERO = {"t_embed_normalization", "delta_embed_normalization"}  # divided by


def _network_from(state: dict, config: NetworkConfig, name: str) -> AnnealingNetwork:
    expected = config.expected_shapes()
    missing = sorted(set(expected) - set(state))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FileRefused(f"{name} lacks the tensors {', '.join(missing[:3])}{more}: not an annealing scheduler "
                          "network of the configuration its metadata gives")
    weights = {}
    for key, shape in expected.items():
        if not isinstance(state[key], torch.Tensor):
            raise FileRefused(f"{name}: {key} is not a tensor")
        if tuple(state[key].shape) != shape:
            raise FileRefused(f"{name}: {key} has shape {tuple(state[key].shape)}, the configuration in the file "
                              f"needs {shape}")
        weights[key] = as_float32(state[key], f"{name}: {key}")
        if not torch.isfinite(weights[key]).all():
            raise FileRefused(f"{name}: {key} holds non-finite values")
    net = AnnealingNetwork(config)
    net.load_state_dict(weights)
    return net.eval().requires_grad_(False)


def as_float32(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """A file's weights in float32, whatever float dtype they were saved in (float16, bfloat16, the float8 kinds,
    float64); FileRefused naming the dtype for one that holds no floating point numbers."""
    if not tensor.is_floating_point():
        raise FileRefused(f"{what} is of dtype {str(tensor.dtype).removeprefix('torch.')}; weights are floating point "
                          "numbers")
    return tensor.to(torch.float32)


def _known_fields(values, fields_of, what: str, name: str) -> list[tuple[str, object]]:
    """The (key, value) pairs of a metadata object that the dataclass `fields_of` has; other keys were
    written by a later version of the pack and are not needed to use the network."""
    if not isinstance(values, dict):
        raise FileRefused(f"{name}: {what} must be a JSON object, got {shown(values)}")
    return [(k, v) for k, v in values.items() if k in fields_of.__dataclass_fields__]


def _config_from(values, name: str) -> NetworkConfig:
    """The network's configuration from a file, every field checked (type, finiteness, size) before use."""
    fields = {}
    for key, value in _known_fields(values, NetworkConfig, "the network configuration", name):
        if isinstance(getattr(NetworkConfig(), key), int):
            limit = SIZE_LIMITS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not float(value).is_integer() or not 1 <= value <= limit:
                raise FileRefused(f"{name}: network.{key} must be a whole number from 1 to {limit}, "
                                  f"got {shown(value)}")
            fields[key] = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or (key in NONZERO and value == 0):
                need = "a finite number other than 0" if key in NONZERO else "a finite number"
                raise FileRefused(f"{name}: network.{key} must be {need}, got {shown(value)}")
            fields[key] = float(value)
    return NetworkConfig(**fields)


def _trained_for_from(values, name: str) -> TrainedFor:
    """What the network was trained for, from a file: strings and a channel count, checked."""
    fields = {}
    for key, value in _known_fields(values, TrainedFor, "trained_for", name):
        if key == "latent_channels":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise FileRefused(f"{name}: trained_for.latent_channels must be a whole number from 1 to 1024, "
                                  f"got {shown(value)}")
        elif not isinstance(value, str):
            raise FileRefused(f"{name}: trained_for.{key} must be a string, got {shown(value)}")
        fields[key] = value
    return TrainedFor(**fields)


def load_scheduler(path: str) -> AnnealingScheduler:
    """Load a scheduler network: the pack's safetensors format, or the official torch.save file."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise FileRefused(f"scheduler file not found: {path}")
    if not path.endswith(".safetensors"):
        return load_official_checkpoint(path)
    with checked_file(path, FORMAT, FORMAT_VERSION,
                      "is not an annealing scheduler file of this pack; convert official checkpoints with "
                      "scripts/convert_annealing_checkpoint.py") as (meta, f):
        try:
            config = _config_from(json.loads(meta["network"]), name)
            trained = _trained_for_from(json.loads(meta["trained_for"]), name)
        except KeyError as e:
            raise FileRefused(f"{name}: the metadata lacks {e}") from None
        except json.JSONDecodeError as e:
            raise FileRefused(f"{name}: the metadata is not valid JSON ({e})") from None
        keys = set(f.keys())
        state = {k: f.get_tensor(k) for k in config.expected_shapes() if k in keys}
    return AnnealingScheduler(_network_from(state, config, name), trained, path)


def load_official_checkpoint(path: str) -> AnnealingScheduler:
    """The official release, a torch.save dict, loaded with weights_only (no arbitrary pickle)."""
    name = os.path.basename(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many kinds for a corrupt or unsafe pickle
        # not torch's own message: it advises weights_only=False, which would run the file's code
        raise FileRefused(f"{name} is not a plain weights checkpoint (unreadable, or holding objects whose "
                          "loading would run code) and is refused") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("guidance_scale_model"), dict):
        raise FileRefused(f"{name} is not an annealing guidance checkpoint (no 'guidance_scale_model' entry)")
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    model_config = config.get("guidance_scale_model") if isinstance(config.get("guidance_scale_model"), dict) else {}
    if model_config.get("type", "scalar_mlp") != "scalar_mlp":
        raise FileRefused(f"{name}: network type {shown(model_config.get('type'))} is not supported "
                          "(scalar_mlp is)")
    diffusion = config.get("diffusion") if isinstance(config.get("diffusion"), dict) else {}
    model_id = str(diffusion.get("model_id", ""))
    if model_id and "xl" not in model_id.lower():
        raise FileRefused(f"{name} was trained for {shown(model_id)}; only SDXL checkpoints are recognised")
    return AnnealingScheduler(_network_from(checkpoint["guidance_scale_model"], _config_from(model_config, name), name),
                              OFFICIAL_SDXL, path)


def save_scheduler(scheduler: AnnealingScheduler, path: str, training: dict | None = None) -> None:
    """Write the pack's safetensors format to a new file (FileExistsError where the name is taken): weights,
    configuration, what it was trained for, and how when `training` gives the settings (loading reads no more
    than the first three)."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "network": json.dumps(asdict(scheduler.network.config)),
            "trained_for": json.dumps(asdict(scheduler.trained_for))}
    if training is not None:
        meta["training"] = json.dumps(training)
    write_new(path, {k: v.to(torch.float32) for k, v in scheduler.network.state_dict().items()}, meta)


def convert_official_checkpoint(src: str, dst: str) -> AnnealingScheduler:
    """Official checkpoint.pt -> the pack's safetensors format. Refuses to overwrite dst."""
    if os.path.exists(dst):
        raise FileExistsError(f"{dst} exists; choose another name or remove it first")
    scheduler = load_official_checkpoint(src)
    save_scheduler(scheduler, dst)  # a fresh ComfyUI has no models/guidance_schedulers: it is made
    return scheduler


class AnnealingSchedule(GuidanceSchedule):
    """Per step and sample: w = network(t, ||eps_u - eps_c||, lambda). Every step is guided; refuses a
    sampler without CFG++ re-noising and a model the network was not trained for."""

    follows_cfg1_shortcut = False  # the network sets the scale; the sampler's cfg is not used
    reads_model_timestep = True  # the network reads the model's own timestep

    def __init__(self, run: RunInfo, scheduler: AnnealingScheduler, lam: float):
        super().__init__(run)
        if run.guider:
            raise ValueError(
                f"Annealing guidance sets one guidance weight per step and takes its own CFG++ step; {run.guider} "
                "combines its model passes its own way. Use the pack's Annealing Guidance Guider, or KSampler with "
                "the Annealing Guidance patch, instead.")
        sampler = run.sampler.removeprefix("sample_") or "an unknown sampler"
        if not run.renoises_with_uncond:
            raise ValueError(
                "Annealing guidance needs a sampler that re-noises with the unconditional prediction (CFG++): the "
                "network's scales are in CFG++ units. Use euler_cfg_pp (the paper's DDIM) or another CFG++ sampler "
                f"(dpmpp_2m_cfg_pp, res_multistep_cfg_pp, ...); got {sampler}.")
        if run.sigma_space == FLOW and not run.takes_flow_step:
            raise ValueError(
                "On a flow model annealing guidance takes the reference's step: x0 from the guided prediction, the "
                f"noise from the unconditional one. ComfyUI's euler_cfg_pp (or euler_ancestral_cfg_pp) takes it; got "
                f"{sampler}.")
        channels = run.latent_shape[1] if len(run.latent_shape) > 1 else scheduler.trained_for.latent_channels
        scheduler.check_compatible(run.prediction, channels, run.timesteps, run.model_family)
        self.scheduler = scheduler
        self.lam = check_lambda(lam)

    def guide(self, ev: Evaluation, cond: torch.Tensor, uncond: torch.Tensor, candidates: Mask) -> Guidance:
        # delta = eps_u - eps_c = (D_c - D_u) / sigma in ComfyUI's sampler space (EPS models). The norm is taken on
        # the predictions' device and only B numbers reach the network, on the CPU.
        delta_norms = [n / ev.sigma for n in guidance_norm(cond, uncond)]
        return Guidance(self.scheduler.scales(ev.model_timestep, delta_norms, self.lam), candidates)


def guidance_norm(cond: torch.Tensor, uncond: torch.Tensor, dtype: torch.dtype | None = None) -> list[float]:
    """||D_c - D_u|| per sample, on the predictions' device (the difference in their dtype, the norm in float64
    where the device has it; Apple's MPS has not: float32 there): B numbers reach the host."""
    dtype = dtype or reduction_dtype(cond.device)
    return torch.linalg.vector_norm((cond - uncond).reshape(cond.shape[0], -1), dim=1, dtype=dtype).tolist()


def check_lambda(lam: float) -> float:
    return number("lambda", lam, 0.0, 1.0, meaning="0: image quality, 1: prompt alignment")
