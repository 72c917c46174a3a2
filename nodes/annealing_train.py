"""AnnealingGuidanceTrain: trains an annealing guidance network for the model it is given, inside ComfyUI,
in the manner of ComfyUI's own training nodes (comfy_extras/nodes_train.py): latents from VAE Encode,
one conditioning per latent (a captioned folder) or one for all, a loss map for LossGraphNode.

The objective, the loop, its checkpoints and CADS are samplers/annealing_training.py. Here, what touches
ComfyUI: the model's predictions through ComfyUI's own sampling machinery (a CFGGuider prepares the model and
the conditioning exactly as for sampling; a stand-in Sampler then runs one training example instead of a
sampling loop), a model autograd can pass through, per-block checkpointing of its layers, the grid from
ComfyUI's schedulers, the node's inputs and file, the progress bar and interruption.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import math
import os
from dataclasses import asdict, replace
from typing import NamedTuple

import torch

import comfy.model_management
import comfy.samplers
import comfy.utils

from ..samplers.annealing import AnnealingNetwork, AnnealingScheduler, NetworkConfig, TrainedFor, save_scheduler
from ..samplers.annealing_training import (Grid, Trainer, TrainingSettings, resume, run_training,
                                           tensor_fingerprint, write_checkpoint)
from ..samplers.files import claimed
from ..samplers.spaces import FLOW
from .annealing import FOLDER
from .files import new_output_path, output_file_key, write_under_a_free_name, written_file_key, wrote_file
from .guidance import history_of, plain_value_errors
from .method_nodes import CATEGORY, search_aliases
from .host_facts import model_facts

log = logging.getLogger("guidance_schedules")

AUTO = "auto"
DEFAULTS = TrainingSettings()


class _OneExample(comfy.samplers.Sampler):
    """Handed the guider's prepared model and conditioning by CFGGuider.sample, runs `work(denoise, x0)`
    instead of sampling: x0 is the latent in the model's space (after process_latent_in), and
    denoise(x, sigma) returns the conditional and unconditional predictions of the clean latent, with
    gradients through x (ComfyUI's calc_cond_batch, the function its samplers use)."""

    def __init__(self, work):
        self.work = work

    def sample(self, guider, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        model, model_options = guider.inner_model, extra_args.get("model_options", {})
        conds = [guider.conds["positive"], guider.conds["negative"]]

        def denoise(x, sigma):
            out = comfy.samplers.calc_cond_batch(model, conds, x, sigma.to(x.device), model_options)
            return out[0], out[1]
        self.work(denoise, latent_image)
        return latent_image


@contextlib.contextmanager
def checkpointed_blocks(diffusion_model: torch.nn.Module):
    """Activation checkpointing for the training step: each block of the diffusion model (the members of its
    outermost ModuleLists: an MMDiT's joint blocks, Flux's double and single blocks, the layers of a UNet's input
    and output blocks) keeps only its inputs and recomputes its activations in the backward pass. Results are
    unchanged; memory falls, time rises by about one forward pass. Undone on exit."""
    def called(block):
        # A UNet's blocks are Sequential containers whose layers the model calls one by one
        # (forward_timestep_embed), never the container itself: checkpoint those layers.
        if isinstance(block, torch.nn.Sequential):
            for layer in block:
                yield from called(layer)
        else:
            yield block

    patched, inside = [], []
    for name, module in diffusion_model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or any(name.startswith(p + ".") for p in inside):
            continue
        inside.extend(f"{name}.{index}" for index in range(len(module)))
        for block in (layer for member in module for layer in called(member)):
            forward = block.forward

            def checkpointed(*args, _forward=forward, **kwargs):
                if torch.is_grad_enabled():
                    return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False, **kwargs)
                return _forward(*args, **kwargs)
            patched.append((block, vars(block).get("forward")))  # a forward another patch set on the instance
            block.forward = checkpointed
    try:
        yield len(patched)
    finally:
        for block, own in patched:
            if own is None:
                del block.forward  # the class's forward again
            else:
                block.forward = own


def run_example(model, positive, negative, x0: torch.Tensor, grid_sigmas: torch.Tensor, work) -> None:
    """work(denoise, x0 in the model's space) inside ComfyUI's sampling preparation for `model` with this
    conditioning: the path the node takes for every training example."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(1.0)
    guider.sample(torch.zeros_like(x0), x0, _OneExample(work), grid_sigmas, disable_pbar=True, seed=0)


def training_space(facts) -> str:
    """The training loss's sampling space, the model's sigma space: flow for rectified-flow models, EDM sigmas
    (x = x0 + sigma n) for EPS, v-prediction, EDM, x0 and CogVideoX's V_PREDICTION_DDPM models."""
    if facts.prediction == "x0_flow":
        raise ValueError("model: an image-to-image flow model (ComfyUI's IMG_TO_IMG_FLOW) samples from a source image, "
                         "not from noise; the annealing objective trains on noised latents, so it cannot train for it")
    return facts.sigma_space


def training_grid(model, steps: int, scheduler: str) -> tuple[Grid, str]:
    """The sampling grid trained for, from ComfyUI's own scheduler (the final 0 left out): ddim_uniform for
    EPS-space models (the paper's DDIM grid), simple (the model's own schedule) for flow models."""
    model_sampling = model.get_model_object("model_sampling")
    if scheduler == AUTO:
        scheduler = "simple" if training_space(model_facts(model)) == FLOW else "ddim_uniform"
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, steps).double()
    sigmas = sigmas[sigmas > 0]
    if len(sigmas) < 2:
        raise ValueError(f"steps: {steps} steps of {scheduler} leave fewer than two noise levels to train between")
    timesteps = model_sampling.timestep(sigmas.float()).double()
    return Grid(tuple(sigmas.tolist()), tuple(timesteps.tolist())), scheduler


def _cloned(conditioning):
    """A copy of a CONDITIONING whose tensors autograd can use: node inputs are made under inference mode,
    and such tensors cannot take part in a graph."""
    return [[c.clone(), {k: v.clone() if torch.is_tensor(v) else v for k, v in extra.items()}]
            for c, extra in conditioning]


def _latents(latents: list) -> torch.Tensor:
    samples = [entry["samples"] for entry in latents if isinstance(entry, dict) and "samples" in entry]
    if not samples or len(samples) != len(latents):
        raise ValueError("latents: connect LATENT outputs (VAE Encode of the training images)")
    shapes = sorted({tuple(s.shape[1:]) for s in samples})
    if len(shapes) > 1:
        raise ValueError(f"latents: all training latents need one size; got {len(shapes)} sizes "
                         f"({', '.join('x'.join(map(str, s)) for s in shapes[:4])}). Resize the images to one size.")
    x0 = torch.cat([s.to(torch.float32) for s in samples])
    if len(x0) == 0:
        raise ValueError("latents: there are no training latents (a batch of 0); connect VAE Encode of your images")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("latents: the training latents hold NaN or infinite values; encode the images again")
    return x0


def _positives(positive: list, count: int) -> list:
    if any(len(p) == 0 for p in positive):
        log.warning("Annealing training: positive holds an empty conditioning; those examples train without a prompt")
    if len(positive) == 1 and count > 1 and len(positive[0]) == count:
        # one CONDITIONING holding one entry per image: what ComfyUI 0.3's LoadImageTextSetFromFolderNode gives,
        # and how its TrainLoraNode reads it
        return [[entry] for entry in positive[0]]
    if len(positive) == 1:
        if len(positive[0]) > 1:
            log.warning("Annealing training: positive is one conditioning of %d entries for %d latents, so every "
                        "image trains with all of them (ComfyUI combines a conditioning's entries); give one entry "
                        "per latent, or one conditioning per latent", len(positive[0]), count)
        return positive * count
    if len(positive) != count:
        raise ValueError(f"positive: give one conditioning for all {count} latents or one per latent; got "
                         f"{len(positive)}")
    return positive


def _negative(negative: list):
    if len(negative) > 1:
        log.warning("Annealing training: %d negative conditionings were given; the first is the null prompt of "
                    "every example", len(negative))
    if len(negative[0]) == 0:
        log.warning("Annealing training: negative is an empty conditioning; connect CLIP Text Encode of an empty "
                    "prompt")
    return negative[0]


def _warn_about_the_images(settings: TrainingSettings) -> None:
    trained = math.ceil(settings.training_images / settings.batch_size) * settings.batch_size
    if trained != settings.training_images:
        log.warning("Annealing training: training_images %d is not a whole number of batches of %d; %d images are "
                    "trained", settings.training_images, settings.batch_size, trained)
    if settings.training_images < settings.images_per_update:
        log.warning("Annealing training: training_images %d is fewer than one optimizer step (batch_size x "
                    "gradient_accumulation = %d): the network takes one step", settings.training_images,
                    settings.images_per_update)


def _conditioning_tensors(conditionings: list):
    for conditioning in conditionings:
        for c, extra in conditioning:
            yield c
            if torch.is_tensor(extra.get("pooled_output")):
                yield extra["pooled_output"]


def model_fingerprint(model) -> str:
    """The model's identity for a resume: a sample of its diffusion model's weights (the first values of up to
    16 tensors spread over its state) and the weight patches on it (LoRAs: their keys and strengths)."""
    state = model.model.diffusion_model.state_dict()
    keys = sorted(state)
    sample = [state[k].flatten()[:4096] for k in keys[::max(1, len(keys) // 16)]]
    patches = sorted((k, float(p[0]), float(p[2])) for k, entries in getattr(model, "patches", {}).items()
                     for p in entries if len(p) > 2 and isinstance(p[0], (int, float)) and isinstance(p[2], (int, float)))
    # a digest, not hash(): Python salts str hashes per process, and a resume comes in another process
    return tensor_fingerprint(sample) + ":" + hashlib.sha256(repr(patches).encode()).hexdigest()[:16]


class AnnealingGuidanceTrain:
    """Trains an annealing guidance network for this model (the paper's objective, the reference trainer's
    settings) and writes it to models/guidance_schedulers."""

    CATEGORY = CATEGORY + "/training"
    FUNCTION = "train"
    RETURN_TYPES = ("STRING", "LOSS_MAP")
    RETURN_NAMES = ("scheduler", "loss")
    OUTPUT_TOOLTIPS = ("The file written in models/guidance_schedulers: choose it in the annealing nodes' "
                       "scheduler (after the node list refreshes, R).",
                       "The loss of every batch, for LossGraphNode.")
    OUTPUT_NODE = True
    INPUT_IS_LIST = True  # the folder loaders give a list of latents and conditionings, as for TrainLoraNode
    DESCRIPTION = ("Trains an annealing guidance network (Yehezkel et al. 2025) for this model: the objective of "
                   "the paper, the reference trainer's defaults. Works for EPS, v-prediction and flow models. The "
                   "model's weights stay frozen. Interrupting keeps a checkpoint; queue the same settings again to "
                   "resume.")
    SEARCH_ALIASES = search_aliases("annealing guidance", "train guidance scheduler", "guidance network training")

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model to train the network for (its weights stay frozen)."}),
            "latents": ("LATENT", {"tooltip": "Training images through VAE Encode, all of one size."}),
            "positive": ("CONDITIONING", {"tooltip": "One conditioning per latent (captions), or one for all."}),
            "negative": ("CONDITIONING", {"tooltip": "The null prompt's conditioning (an empty prompt)."}),
            "steps": ("INT", {"default": 50, "min": 2, "max": 1000,
                              "tooltip": "Steps of the sampling grid the network is trained for (the paper: 50)."}),
            "scheduler": ([AUTO] + list(comfy.samplers.SCHEDULER_NAMES), {
                "default": AUTO,
                "tooltip": "The grid's scheduler. auto: ddim_uniform for EPS and v models (the paper's DDIM "
                           "grid), simple (the model's own schedule) for flow models."}),
            "training_images": ("INT", {"default": d.training_images, "min": 1, "max": 10_000_000,
                                        "tooltip": "Training examples in all (the reference: 20000)."}),
            "batch_size": ("INT", {"default": d.batch_size, "min": 1, "max": 256,
                                   "tooltip": "Examples per batch. Each is evaluated on its own, so memory does "
                                              "not grow with it."}),
            "gradient_accumulation": ("INT", {"default": d.gradient_accumulation, "min": 1, "max": 1024,
                                              "tooltip": "Batches per optimizer step (the reference: 16)."}),
            "learning_rate": ("FLOAT", {"default": d.learning_rate, "min": 1e-7, "max": 1.0, "step": 1e-5,
                                        "round": 1e-7, "tooltip": "AdamW's learning rate."}),
            "weight_decay": ("FLOAT", {"default": d.weight_decay, "min": 0.0, "max": 1.0, "step": 0.001,
                                       "tooltip": "AdamW's weight decay."}),
            "seed": ("INT", {"default": d.seed, "min": 0, "max": 0xffffffffffffffff,
                             "tooltip": "The network's initial weights and every random draw of the training."}),
            "delta_normalization": ("FLOAT", {"default": d.delta_normalization, "min": 0.01, "max": 1000.0,
                                              "step": 0.1, "tooltip": "The network reads ||guidance direction|| "
                                                                      "divided by this (the reference: 5)."}),
            "prompt_noise": ("BOOLEAN", {"default": d.prompt_noise,
                                         "tooltip": "CADS noise on the conditioning while training, as the "
                                                    "reference (scale 0.025, rescaled)."}),
            "name": ("STRING", {"default": "my_model_annealing",
                                "tooltip": "File name (without .safetensors) in models/guidance_schedulers. "
                                           "Never overwritten."}),
        }, "optional": {
            "gradient_checkpointing": ("BOOLEAN", {
                "default": False,
                "tooltip": "Recompute the model's activations in the backward pass instead of keeping them: less "
                           "memory for a 1024-pixel training step, about a third more time. Same result."}),
        }}

    @classmethod
    def IS_CHANGED(cls, name, **kwargs):
        # the result is a file: the same inputs run again once it was removed (to train again) or replaced
        return output_file_key(FOLDER, name)

    def train(self, model, latents, positive, negative, steps, scheduler, training_images, batch_size,
              gradient_accumulation, learning_rate, weight_decay, seed, delta_normalization, prompt_noise, name,
              gradient_checkpointing=(False,)):
        negative = _negative(negative)
        (model, steps, scheduler, training_images, batch_size, gradient_accumulation, learning_rate,
         weight_decay, seed, delta_normalization, prompt_noise, name) = (
            v[0] for v in (model, steps, scheduler, training_images, batch_size, gradient_accumulation,
                           learning_rate, weight_decay, seed, delta_normalization, prompt_noise, name))
        settings = TrainingSettings(training_images, batch_size, gradient_accumulation, learning_rate, weight_decay,
                                    seed, delta_normalization, bool(prompt_noise))
        path = new_output_path(FOLDER, name)
        cache_key = written_file_key(path)
        if history_of(model) is not None:
            raise ValueError("model: this model carries a guidance schedule of this pack; train on the model "
                             "itself (before any guidance node)")
        grid, scheduler = training_grid(model, steps, scheduler)
        x0 = _latents(latents)
        positives = _positives(positive, len(x0))
        _warn_about_the_images(settings)
        with torch.inference_mode(False), plain_value_errors():
            trained = train_network(model, x0.clone(), [_cloned(p) for p in positives], _cloned(negative), grid,
                                    {"steps": steps, "scheduler": scheduler}, settings, path,
                                    gradient_checkpointing=bool(gradient_checkpointing[0]))
        if trained.path == path:
            wrote_file(path, cache_key)
        name = os.path.basename(trained.path)
        return {"ui": {"text": [f"wrote {name}" + ("" if trained.path == path else
                                                   f" ({os.path.basename(path)} appeared meanwhile and was kept)")]},
                "result": (name, {"loss": list(trained.trainer.progress.losses)})}


def timestep_scale(model) -> float:
    """The network reads t / this. DDPM timesteps and flow's 1000 sigma run over 0..1000, as in the paper; other
    models' own timesteps (EDM's log(sigma) / 4) are already of order 1."""
    facts = model_facts(model)
    on_1000 = facts.timesteps == "discrete_1000" or training_space(facts) == FLOW
    return 1000.0 if on_1000 else 1.0


def trainable(model):
    """The model to train through: one whose weights autograd can save for the backward pass (the gradient
    reaches the network through the model's evaluation at x'). ComfyUI runs loader nodes under inference mode,
    so a loaded model's weights are inference tensors, which autograd refuses to save. As core training does
    (comfy_extras/nodes_train.py), a model that carries its loader's factory (ComfyUI 0.33's
    cached_patcher_init, which also makes a dynamic-VRAM model a plain one) is loaded afresh outside inference
    mode with clone(force_deepcopy=True); any other model's inference-mode weights are replaced in place by
    ordinary tensors of the same values, as ComfyUI itself does when it moves such a model to a device
    (comfy/ops.py). The model's values never change."""
    if getattr(model, "cached_patcher_init", None) is not None and \
            "force_deepcopy" in inspect.signature(model.clone).parameters:
        return model.clone(force_deepcopy=True)
    for module in model.model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_inference():
                module._parameters[name] = torch.nn.Parameter(param.clone(), requires_grad=param.requires_grad)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_inference():
                module._buffers[name] = buffer.clone()
    return model


@contextlib.contextmanager
def outputs_with_gradient(diffusion_model: torch.nn.Module):
    """Refuses a model whose output carries no gradient where its input does (it runs without autograd, or
    detaches its output): the loss's delta term reaches the network only through the model's evaluation at x',
    so the network would learn half its objective. Watched at every evaluation; costs a flag check."""
    def check(module, args, output):
        x = args[0] if args else None
        if torch.is_tensor(x) and x.requires_grad and torch.is_tensor(output) and not output.requires_grad:
            raise ValueError("model: its predictions carry no gradient (it runs without autograd, or detaches its "
                             "output), so the network would train on half its objective; train on the model as "
                             "ComfyUI loads it")
    handle = diffusion_model.register_forward_hook(check)
    try:
        yield
    finally:
        handle.remove()


class Trained(NamedTuple):
    trainer: Trainer
    path: str  # the file written: the path asked for, or a free name beside it where a file took it meanwhile


def train_network(model, x0: torch.Tensor, positives: list, negative, grid: Grid, grid_settings: dict,
                  settings: TrainingSettings, path: str, after_update=None,
                  gradient_checkpointing: bool = False) -> Trained:
    """The node's work: trains on latents x0 (one conditioning per latent) for the sampling grid `grid`
    (described by grid_settings in the file), checkpoints to PATH.resume (resuming from it when its settings
    match) and writes the network to `path` (never over a file that appeared there meanwhile: then under a free name
    beside it; where the write fails, the trained state stays in the checkpoint). Tensors must not be inference
    tensors. after_update(trainer), if
    given, runs after every optimizer step (the test beds measure a held-out loss there); gradient_checkpointing
    recomputes the model's activations per block in the backward pass.

    The checkpoint is claimed for the training's time (a lock beside it: samplers.files.claimed): a training of
    another process under the same name, into a models folder two servers share, is refused while it runs, never
    resumed from its live checkpoint."""
    checkpoint = path.removesuffix(".safetensors") + ".resume"
    with claimed(checkpoint):
        return _train_network(model, x0, positives, negative, grid, grid_settings, settings, path, checkpoint,
                              after_update, gradient_checkpointing)


def _train_network(model, x0: torch.Tensor, positives: list, negative, grid: Grid, grid_settings: dict,
                   settings: TrainingSettings, path: str, checkpoint: str, after_update, gradient_checkpointing: bool
                   ) -> Trained:
    model = trainable(model)
    facts = model_facts(model)
    space = training_space(facts)
    trained_for = TrainedFor(model_family=facts.family, prediction=facts.prediction,
                             latent_channels=int(x0.shape[1]), timesteps=facts.timesteps,
                             source=f"AnnealingGuidanceTrain ({os.path.basename(path)})")
    fingerprint = {"latents": list(x0.shape), "latent_sum": round(float(x0.double().sum()), 6),
                   "conditionings": len(positives)}
    record = {**asdict(settings), **grid_settings, "trained_for": asdict(trained_for), "data": fingerprint,
              "positive": tensor_fingerprint(_conditioning_tensors(positives)),
              "negative": tensor_fingerprint(_conditioning_tensors([negative])), "model": model_fingerprint(model)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        network = AnnealingNetwork(NetworkConfig(delta_embed_normalization=settings.delta_normalization,
                                                 t_embed_normalization=timestep_scale(model)))
    noise_scale = facts.noise_scale
    if noise_scale != 1.0:  # recorded only where it differs, so checkpoints of earlier versions still resume
        record["noise_scale"] = noise_scale
    trainer = Trainer(network.train(), grid, space, settings, dataset_size=len(x0), noise_scale=noise_scale)
    if os.path.exists(checkpoint):
        resume(trainer, checkpoint, record)
    bar = comfy.utils.ProgressBar(settings.training_images)

    def before_example(trainer: Trainer) -> None:
        bar.update_absolute(trainer.progress.images, settings.training_images)
        comfy.model_management.throw_exception_if_processing_interrupted()

    def evaluate(positive, negative, latent, work) -> None:
        run_example(model, positive, negative, latent, grid_sigmas, work)
    grid_sigmas = torch.tensor((*grid.sigmas, 0.0))
    blocks = checkpointed_blocks(model.model.diffusion_model) if gradient_checkpointing else contextlib.nullcontext()
    with blocks, outputs_with_gradient(model.model.diffusion_model):
        run_training(trainer, x0, positives, negative, evaluate, checkpoint, record, before_example, after_update)
    bar.update_absolute(trainer.progress.images, settings.training_images)
    network = AnnealingNetwork(trainer.network.config)
    network.load_state_dict(trainer.network.state_dict())
    network = network.float().eval()
    training = {**record, "final_loss": trainer.progress.losses[-1]}

    def write(p: str) -> None:
        save_scheduler(AnnealingScheduler(network, replace(trained_for, source=f"AnnealingGuidanceTrain "
                                                                               f"({os.path.basename(p)})"), p),
                       p, training=training)
    try:
        path = write_under_a_free_name(path, write)
    except OSError as e:  # a full disk, a file system that refuses the name: the work stays in the checkpoint
        write_checkpoint(trainer, checkpoint, record)
        raise ValueError(f"name: could not write {os.path.basename(path)} ({e.strerror or e}); the trained network "
                         f"is kept in {os.path.basename(checkpoint)}: queue the same settings again to write it") from None
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    log.info("Annealing training: wrote %s (%d images, %d optimizer steps, last batch loss %.4g)", path,
             trainer.progress.images, trainer.progress.updates, trainer.progress.losses[-1])
    return Trained(trainer, path)
