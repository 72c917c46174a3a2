"""Training the annealing guidance network (Yehezkel et al. 2025, Algorithm 1) as the public reference
trainer does it (stated in ../shared/reference/annealing_training/README.md), for EPS-space models
(EPS, v-prediction, EDM) and flow models. Pure torch: the diffusion model is a function
`denoise(x, sigma) -> (D_cond, D_uncond)`, its predictions of the clean latent in ComfyUI's sampling
space, with gradients through x; its weights are the caller's to freeze.

Written in ComfyUI's sampling space, x = a(sigma) x0 + sigma noise with a = 1 (EPS space: ComfyUI's x
is the VP latent divided by sqrt(alpha_bar)) or a = 1 - sigma (flow). Per example, with lambda ~ U(0, 1):
- x at a grid sigma (never the grid's last nonzero one), from a data latent x0 and noise;
- both predictions at x without gradient; w = network(t, ||D_c - D_u|| / sigma, lambda), t the model's
  own timestep (DDPM index, or 1000 sigma for flow), ||D_c - D_u|| / sigma = ||eps_u - eps_c|| (EPS) or
  ||v_u - v_c|| (flow); the guided D_g = D_u + w (D_c - D_u);
- one step to the grid's next sigma that takes x0 from the guided prediction and the noise from the
  unconditional one: noise_u = (x - a(sigma) D_u) / sigma, x' = a(sigma') D_g + sigma' noise_u. For
  EPS this is the reference's DDIM step with `pred_sample_direction_with_null`, for flow its
  x0 = z - s v_g, eps_u = z + (1 - s) v_u, z' = (1 - s') x0 + s' eps_u;
- both predictions at x' WITH gradient: delta' = (D'_c - D'_u) / sigma' (eps or velocity units);
- per sample, eps = mean(((x0 - D_g) / sigma)^2), which is mean((guided - target)^2) with the target the
  noise (EPS) or noise - x0 (flow), and delta = mean(delta'^2); over the batch
  loss = mean((1 - lambda) eps) + r mean(lambda delta), r from `LossBalance`.

Measured against the reference's parity vectors: EPS to 1e-15 from the released network
(tests/test_annealing_training.py); through a ComfyUI model in tests/host/test_host_annealing_training.py.
`Trainer` adds what training needs around the loss (AdamW, gradient accumulation, clipping, the random
draws, a state that resumes exactly); nodes/annealing_train.py runs it inside ComfyUI.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from .annealing import AnnealingNetwork
from .checks import number, whole_number
from .files import FileRefused, checked_file, write_replacing
from .spaces import signal_scale

log = logging.getLogger("guidance_schedules")

Denoise = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LossBalance:
    """r = EMA(mean((1 - lambda) eps)) / EMA(mean(lambda delta)), as the reference's calc_loss: one update per
    batch, decay 0.999, starting at the first batch's values; the delta EMA floored at 1e-8, r capped at 1e4,
    and 1 while the eps EMA is below 1e-10 (lambda = 1 throughout). A plain number: no gradient through it."""

    decay: float = 0.999
    cap: float = 1e4
    eps_ema: float | None = None
    delta_ema: float | None = None

    def update(self, weighted_eps: float, weighted_delta: float) -> float:
        if self.eps_ema is None:
            self.eps_ema, self.delta_ema = weighted_eps, weighted_delta
        else:
            self.eps_ema = self.decay * self.eps_ema + (1 - self.decay) * weighted_eps
            self.delta_ema = self.decay * self.delta_ema + (1 - self.decay) * weighted_delta
        if self.eps_ema <= 1e-10:
            return 1.0
        return min(self.eps_ema / max(self.delta_ema, 1e-8), self.cap)


@dataclass(frozen=True)
class Example:
    """A batch of training examples; every tensor but x0 and noise is (B,)."""

    x0: torch.Tensor  # data latents in the model's sampling space (after ComfyUI's process_latent_in)
    noise: torch.Tensor
    sigma: torch.Tensor  # a grid sigma
    next_sigma: torch.Tensor  # the grid's following (smaller, nonzero) sigma
    timestep: torch.Tensor  # the model's own timestep at sigma: what the network reads
    lam: torch.Tensor


@dataclass
class Terms:
    eps: torch.Tensor  # (B,) mean((guided - target)^2) per sample, its gradient reaches the network through w
    delta: torch.Tensor  # (B,) mean(delta'^2) per sample, through w and the model's evaluation at x'


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class NonFiniteTraining(ValueError):
    """A value of the training was NaN or infinite: the training stops there and keeps nothing of it."""


def _finite(what: str, *tensors: torch.Tensor) -> None:
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise NonFiniteTraining(f"{what} are not finite (NaN or infinite); the training stopped there and wrote "
                                "nothing. Check the model (a model that returns NaN at this noise level), the "
                                "latents and the settings.")


def example_terms(network: AnnealingNetwork, denoise: Denoise, example: Example, space: str) -> Terms:
    x0, noise = example.x0, example.noise
    s, s_next = _per_sample(example.sigma, x0), _per_sample(example.next_sigma, x0)
    x = signal_scale(space, s) * x0 + s * noise
    with torch.no_grad():
        d_c, d_u = (d.to(x0.dtype) for d in denoise(x, example.sigma))
    _finite(f"the model's predictions at sigma {float(example.sigma[0]):.4g}", d_c, d_u)
    # The network is trained where it was made (the CPU: it is tiny), the model's evaluations stay on the
    # model's device: its three inputs go to the network, its weights come back (autograd follows both copies).
    net = next(network.parameters())
    w = network(example.timestep.to(net.device, net.dtype),
                ((d_c - d_u) / s).flatten(1).norm(dim=1).to(net.device, net.dtype),
                example.lam.to(net.device, net.dtype)).to(x0)
    _finite("the network's guidance weights", w)
    d_g = d_u + _per_sample(w, x0) * (d_c - d_u)
    noise_u = (x - signal_scale(space, s) * d_u) / s
    x_next = signal_scale(space, s_next) * d_g + s_next * noise_u
    d_c_next, d_u_next = (d.to(x0.dtype) for d in denoise(x_next, example.next_sigma))
    _finite(f"the model's predictions at sigma {float(example.next_sigma[0]):.4g}", d_c_next, d_u_next)
    delta_next = (d_c_next - d_u_next) / s_next
    eps = (((x0 - d_g) / s) ** 2).flatten(1).mean(dim=1)
    _finite("the loss terms", eps, delta_next)
    return Terms(eps, (delta_next ** 2).flatten(1).mean(dim=1))


def weighted_terms(terms: Terms, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's mean((1 - lambda) eps) and mean(lambda delta)."""
    lam = lam.to(terms.eps.dtype)
    return ((1 - lam) * terms.eps).mean(), (lam * terms.delta).mean()


# --- CADS prompt noise ------------------------------------------------------------------------------

def cads_gamma(timestep: float, t1: float = 0.0, t2: float = 1.0, num_timesteps: int = 1000) -> float:
    """CADS's linear schedule of the condition's share, on t / num_timesteps: 1 before t1, 0 after t2."""
    t = timestep / num_timesteps
    return min(max((t2 - t) / (t2 - t1), 0.0), 1.0)


def cads_noise(y: torch.Tensor, gamma: float, noise: torch.Tensor, noise_scale: float = 0.025,
               psi: float = 1.0, rescale: bool = True) -> torch.Tensor:
    """CADS (Sadat et al. 2024) on a conditioning tensor, as the reference's add_noise_to_prompt:
    sqrt(gamma) y + noise_scale sqrt(1 - gamma) noise, then per sample rescaled to y's mean and std."""
    y_noised = math.sqrt(gamma) * y + noise_scale * math.sqrt(1 - gamma) * noise
    if not rescale:
        return y_noised
    dims = tuple(range(1, y.ndim)) if y.ndim > 1 else ()
    y_mean, y_std = y.mean(dims, keepdim=True), y.std(dims, keepdim=True) + 1e-6
    yn_mean, yn_std = y_noised.mean(dims, keepdim=True), y_noised.std(dims, keepdim=True) + 1e-6
    y_scaled = (y_noised - yn_mean) / yn_std * y_std + y_mean
    return psi * y_scaled + (1 - psi) * y_noised


def conditioning_with_prompt_noise(conditioning: list, gamma: float, generator: torch.Generator) -> list:
    """CADS on a ComfyUI CONDITIONING ([[embeddings, extras]]): on the text embeddings and the pooled output,
    as the reference does it for the conditional prompt."""
    out = []
    for c, extra in conditioning:
        c = cads_noise(c, gamma, torch.randn(c.shape, generator=generator).to(c))
        extra = dict(extra)
        if torch.is_tensor(extra.get("pooled_output")):
            pooled = extra["pooled_output"]
            extra["pooled_output"] = cads_noise(pooled, gamma, torch.randn(pooled.shape, generator=generator).to(pooled))
        out.append([c, extra])
    return out


# --- the trainer ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingSettings:
    """The reference's defaults (scripts/config.yaml, config_sd3.yaml): 20000 images, batch 1 with 16
    accumulation steps, AdamW lr 1e-3 and weight decay 0.01, gradient clip 1.0, CADS prompt noise on."""

    training_images: int = 20000
    batch_size: int = 1
    gradient_accumulation: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 42
    delta_normalization: float = 5.0
    prompt_noise: bool = True
    gradient_clip: float = 1.0

    def __post_init__(self):
        """Each setting checked by its name (the node's input): ComfyUI's API takes NaN and numbers outside a
        widget's range."""
        whole = {"training_images": 10_000_000, "batch_size": 256, "gradient_accumulation": 1024}
        for name, most in whole.items():
            whole_number(name, getattr(self, name), 1, most)
        # (lowest, whether the lowest itself is allowed, highest)
        numbers = {"learning_rate": (0.0, False, 1.0), "weight_decay": (0.0, True, 1.0),
                   "delta_normalization": (0.0, False, 1000.0), "gradient_clip": (0.0, False, math.inf)}
        for name, (low, low_allowed, high) in numbers.items():
            number(name, getattr(self, name), low, high, low_open=not low_allowed)

    @property
    def images_per_update(self) -> int:
        return self.batch_size * self.gradient_accumulation

    @property
    def updates(self) -> int:
        return math.ceil(self.training_images / self.images_per_update)


@dataclass(frozen=True)
class Grid:
    """The sampling grid trained for: sigmas (last 0 excluded) and the model's timestep at each."""

    sigmas: tuple[float, ...]
    timesteps: tuple[float, ...]

    def __post_init__(self):
        if len(self.sigmas) < 2 or len(self.sigmas) != len(self.timesteps):
            raise ValueError("the training grid needs at least two nonzero sigmas, each with its timestep")


@dataclass
class Draw:
    """The random choices of one example: which latent, which grid step, lambda, and the latent noise."""

    index: int
    position: int
    lam: float
    noise: torch.Tensor


@dataclass
class Progress:
    images: int = 0
    updates: int = 0
    losses: list[float] = field(default_factory=list)  # one per batch, as the reference logs them


class Trainer:
    """The network's training, batch by batch: `draw` the examples of a batch, `add` each example's
    gradients (evaluated one at a time, so memory holds one example's graph), `end_batch`; the optimizer
    steps after `gradient_accumulation` batches.

    The balance r of a batch is known only after its last example; the two terms' gradients are kept
    apart until then (g = g_eps + r g_delta), which gives exactly the gradient of the batch's loss."""

    def __init__(self, network: AnnealingNetwork, grid: Grid, space: str, settings: TrainingSettings,
                 dataset_size: int, noise_scale: float = 1.0):
        self.network, self.grid, self.space, self.settings = network, grid, space, settings
        self.dataset_size = dataset_size
        self.noise_scale = noise_scale  # std of the model's noise (a flow model's noise_scale; 1 for most)
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        self.balance = LossBalance()
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.progress = Progress()
        self._params = [p for p in network.parameters()]
        self._batch: list[tuple[list[torch.Tensor], list[torch.Tensor], float, float]] = []
        self._accumulated = [torch.zeros_like(p) for p in self._params]
        self._batches_in_update = 0
        self._at_update = self._snapshot()

    @property
    def done(self) -> bool:
        return self.progress.images >= self.settings.training_images

    def draw(self, latent_shape: tuple[int, ...]) -> Draw:
        """An example's random choices, in a fixed order from the trainer's generator (so a resumed run draws
        what the uninterrupted one would have). Grid positions as the reference's get_timestep: uniform over
        all but the last."""
        g = self.generator
        index = int(torch.randint(0, self.dataset_size, (1,), generator=g))
        position = int(torch.randint(0, len(self.grid.sigmas) - 1, (1,), generator=g))
        lam = float(torch.rand(1, generator=g, dtype=torch.float64))
        noise = torch.randn((1, *latent_shape[1:]), generator=g)
        return Draw(index, position, lam, noise)

    def example(self, draw: Draw, x0: torch.Tensor) -> Example:
        def one(v):
            return torch.tensor([v], dtype=torch.float64, device=x0.device)
        noise = self.noise_scale * draw.noise.to(device=x0.device, dtype=x0.dtype)
        return Example(x0, noise, one(self.grid.sigmas[draw.position]),
                       one(self.grid.sigmas[draw.position + 1]), one(self.grid.timesteps[draw.position]), one(draw.lam))

    def add(self, denoise: Denoise, example: Example) -> None:
        """One example of the current batch: its terms and their gradients, kept apart."""
        terms = example_terms(self.network, denoise, example, self.space)
        eps_loss, delta_loss = weighted_terms(terms, example.lam)
        b = self.settings.batch_size
        g_eps = torch.autograd.grad(eps_loss / b, self._params, retain_graph=True, allow_unused=True)
        g_delta = torch.autograd.grad(delta_loss / b, self._params, allow_unused=True)
        self._batch.append(([g if g is not None else torch.zeros_like(p) for g, p in zip(g_eps, self._params)],
                            [g if g is not None else torch.zeros_like(p) for g, p in zip(g_delta, self._params)],
                            eps_loss.item() / b, delta_loss.item() / b))
        self.progress.images += 1

    def batch_gradient(self) -> tuple[float, list[torch.Tensor]]:
        """Closes the batch's objective: its balance r (one update per batch), its loss and the loss's gradient
        for each network parameter, g = g_eps + r g_delta over the batch's examples."""
        eps_loss = sum(e for _, _, e, _ in self._batch)
        delta_loss = sum(d for _, _, _, d in self._batch)
        r = self.balance.update(eps_loss, delta_loss)
        n = len(self._batch)
        gradient = [sum(grads[:n]) + r * sum(grads[n:])
                    for grads in zip(*(e for e, _, _, _ in self._batch), *(d for _, d, _, _ in self._batch))]
        self._batch = []
        return eps_loss + r * delta_loss, gradient

    def end_batch(self) -> float:
        """Closes the batch (batch_gradient) and accumulates its gradient; an optimizer step when the
        accumulation is full or the training ends. Returns the batch's loss."""
        loss, gradient = self.batch_gradient()
        for acc, g in zip(self._accumulated, gradient):
            acc += g / self.settings.gradient_accumulation
        self._batches_in_update += 1
        self.progress.losses.append(loss)
        if self._batches_in_update == self.settings.gradient_accumulation or self.done:
            self._step()
        return loss

    def _step(self) -> None:
        for p, g in zip(self._params, self._accumulated):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(self._params, self.settings.gradient_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for g in self._accumulated:
            g.zero_()
        self._batches_in_update = 0
        self.progress.updates += 1
        self._at_update = self._snapshot()

    # --- checkpoints: the state at the last optimizer step (an interrupted update is redone on resume) ---

    def _snapshot(self) -> dict:
        return {"generator": self.generator.get_state().clone(), "balance": asdict(self.balance),
                "progress": {"images": self.progress.images, "updates": self.progress.updates,
                             "losses": list(self.progress.losses)}}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, plain values) of the state at the last optimizer step, for a checkpoint file."""
        snap = self._at_update
        tensors = {f"network.{k}": v.detach().clone() for k, v in self.network.state_dict().items()}
        tensors["generator_state"] = snap["generator"]
        optimizer = self.optimizer.state_dict()
        for i, state in optimizer["state"].items():
            for k, v in state.items():
                tensors[f"optimizer.{i}.{k}"] = v.detach().clone() if torch.is_tensor(v) else torch.tensor(v)
        return tensors, {"balance": snap["balance"], "progress": snap["progress"]}

    def load_state(self, tensors: dict[str, torch.Tensor], values: dict) -> None:
        self.network.load_state_dict({k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")})
        optimizer = self.optimizer.state_dict()
        state: dict[int, dict] = {}
        for key, v in tensors.items():
            if key.startswith("optimizer."):
                _, i, name = key.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        optimizer["state"] = state
        self.optimizer.load_state_dict(optimizer)
        self.generator.set_state(tensors["generator_state"])
        self.balance = LossBalance(**values["balance"])
        self.progress = Progress(**values["progress"])
        self._at_update = self._snapshot()


def tensor_fingerprint(tensors) -> str:
    """A short digest of tensors' shapes and values (the conditioning a training ran on, a sample of a model's
    weights), recorded with a training so that a resume on other ones is refused."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu", torch.float32).contiguous()
        digest.update(repr(tuple(t.shape)).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:16]


# --- checkpoints and the loop -------------------------------------------------------------------------

CHECKPOINT_FORMAT = "guidance_schedules/annealing_training_state"
FINGERPRINTS = ("positive", "negative", "model")  # what a record identifies by a digest (tensor_fingerprint)
CHECKPOINT_EVERY = 50  # optimizer steps between checkpoints written while training (about 800 images by default)


def write_checkpoint(trainer: Trainer, path: str, record: dict) -> None:
    """The trainer's state at its last optimizer step, with the training's `record` (settings, grid, data), in
    place of the previous checkpoint: atomically, so a crash never leaves a broken one."""
    tensors, values = trainer.state()
    write_replacing(path, tensors, {"format": CHECKPOINT_FORMAT, "settings": json.dumps(record),
                                    "values": json.dumps(values)})


def resume(trainer: Trainer, path: str, record: dict) -> None:
    """Continue from a checkpoint of the same training: refused by name, with the settings that differ, when
    its record differs from `record` but for the seed, which is the checkpoint's (the graph editor randomizes
    a seed widget after each queue by default, and the interrupted training's own draws are what its state
    continues): `record["seed"]` is set to it."""
    name = os.path.basename(path)
    try:
        with checked_file(path, CHECKPOINT_FORMAT, None, "is not a training state of this pack") as (meta, f):
            saved, values = json.loads(meta["settings"]), json.loads(meta["values"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (FileRefused, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"name: {name} is not a readable training checkpoint ({str(e)[:120]}); remove it or "
                         "choose another name") from None
    # a checkpoint of an earlier version of the pack lacks the fingerprints of the conditioning and the model
    unchecked = [k for k in FINGERPRINTS if k in record and k not in saved]
    if unchecked:
        log.warning("Annealing training: %s was written by an earlier version of the pack and does not record its "
                    "%s; resuming without checking them", name, " or ".join(unchecked))
    differing = sorted(k for k in set(saved) | set(record)
                       if saved.get(k) != record.get(k) and k != "seed" and k not in unchecked)
    if saved.get("seed") != record.get("seed"):
        log.info("Annealing training: resuming %s with its own seed %s (not %s)", name, saved.get("seed"),
                 record.get("seed"))
        record["seed"] = saved.get("seed")
    if differing:
        raise ValueError(f"name: {name} is the checkpoint of a training with other {', '.join(differing)}; queue "
                         "it with the same inputs to resume it, or choose another name")
    trainer.load_state(tensors, values)
    log.info("Annealing training: resuming from %s at %d images (optimizer step %d)", name,
             trainer.progress.images, trainer.progress.updates)


# evaluate(positive, negative, latent, work): runs work(denoise, latent in the model's space) with the model's
# predictions for this conditioning (the glue's way to the model)
Evaluate = Callable[[list, list, torch.Tensor, Callable[[Denoise, torch.Tensor], None]], None]


def run_training(trainer: Trainer, x0: torch.Tensor, positives: list, negative: list, evaluate: Evaluate,
                 checkpoint: str, record: dict, before_example: Callable[[Trainer], None] = lambda trainer: None,
                 after_update: Callable[[Trainer], None] | None = None) -> None:
    """Trains until the trainer is done: batch by batch, one example at a time (latent x0[i] with positives[i],
    CADS prompt noise where the settings say so), a checkpoint every CHECKPOINT_EVERY optimizer steps. However
    the loop stops (interrupted: before_example(trainer), called before each example, raises; out of memory; a
    fault), the state at the last optimizer step is kept in `checkpoint`, and the same call resumes from it."""
    settings, grid = trainer.settings, trainer.grid
    written_at = trainer.progress.updates
    try:
        while not trainer.done:
            for _ in range(settings.batch_size):
                before_example(trainer)
                draw = trainer.draw(tuple(x0.shape))
                positive = positives[draw.index]
                if settings.prompt_noise:  # CADS's gamma on t / 1000: the DDPM index, or 1000 sigma for flow
                    positive = conditioning_with_prompt_noise(positive, cads_gamma(grid.timesteps[draw.position]),
                                                              trainer.generator)

                def work(denoise, latent, draw=draw):
                    trainer.add(denoise, trainer.example(draw, latent))
                evaluate(positive, negative, x0[draw.index:draw.index + 1], work)
            updates = trainer.progress.updates
            trainer.end_batch()
            if after_update is not None and trainer.progress.updates > updates:
                after_update(trainer)
            if trainer.progress.updates - written_at >= CHECKPOINT_EVERY and not trainer.done:
                write_checkpoint(trainer, checkpoint, record)
                written_at = trainer.progress.updates
    except NonFiniteTraining:
        raise  # nothing of a training that went non-finite is kept (an earlier checkpoint stays as it was)
    except BaseException:  # interrupted (ComfyUI raises its own exception), out of memory, ...: keep the work
        if trainer.progress.updates > 0:
            write_checkpoint(trainer, checkpoint, record)
            log.warning("Annealing training stopped after %d of %d images; %s keeps the state at optimizer step %d. "
                        "Queue the same settings again to resume.", trainer.progress.images,
                        settings.training_images, os.path.basename(checkpoint), trainer.progress.updates)
        raise
