"""What training an annealing guidance network costs inside ComfyUI: seconds per training image and the
memory a training step adds to sampling, without and with gradient checkpointing, next to one CFG sampling
step, for an SDXL-architecture (EPS) and an SD3-medium-architecture (flow) model with random weights (time and
memory do not depend on the weights). The training is the node's own code
(nodes/annealing_train.train_network), batch 1.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/training_cost.py [--arch sdxl sd3] [--size 64] [--images 3]

Memory: the bytes autograd keeps for the backward pass, the model's weights left out (exact on any device: the
activations a training step holds beyond a sampling step's), and on a GPU also torch's peak allocation above the
loaded model. Not a test:
it asserts nothing.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the pack's root, once (standalone keeps it behind ComfyUI)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import standalone  # noqa: E402  (at the pack's root)

def build(arch):
    """(ModelPatcher, positive, negative, latent channels), random weights, fp16 on a GPU: benchmark.py's."""
    from benchmark import build as build_model
    model, pos, neg = build_model(arch)
    return model, pos, neg, 16 if arch == "sd3" else 4


class SavedForBackward:
    """The bytes of the tensors autograd keeps for the backward pass (each storage once), the model's own
    weights left out (they are in memory for sampling too): the activations a training step adds to a sampling
    step, exact on any device (temporaries come and go within either)."""

    def __init__(self, module: torch.nn.Module):
        self.weights = {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}

    def __enter__(self):
        self.storages = {}

        def pack(t):
            try:
                storage = t.untyped_storage()
                if storage.data_ptr() not in self.weights:
                    self.storages[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):  # tensors without storage
                pass
            return t
        self.hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)
        self.bytes = sum(self.storages.values())


class CudaPeak:
    """torch's peak CUDA allocation above the level at entry (0 without CUDA)."""

    def __enter__(self):
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        self.above = 0
        if self.cuda:
            torch.cuda.synchronize()
            self.above = torch.cuda.max_memory_allocated() - self.base


def sampling_step(model, pos, neg, x):
    """One CFG evaluation (both branches, as KSampler runs it) through ComfyUI's guider."""
    import comfy.samplers
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(pos, neg)
    guider.set_cfg(5.0)

    class OneEvaluation(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            return model_wrap(noise * sigmas[0], sigmas[:1].expand(noise.shape[0]), **extra_args)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 10)
    with torch.no_grad():
        guider.sample(torch.randn_like(x), x, OneEvaluation(), sigmas, disable_pbar=True, seed=0)


def train_images(model, pos, neg, x0, grid, scheduler, checkpointing):
    """Seconds per image (median after a warm-up), bytes kept for the backward pass, CUDA peak above the model."""
    from guidance_schedules.nodes.annealing_train import train_network
    from guidance_schedules.samplers.annealing_training import TrainingSettings
    seconds, saved, peak = [], 0, 0
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode(False):
        for i in range(len(x0)):  # one training image a call: the first warms up
            settings = TrainingSettings(training_images=1, batch_size=1, gradient_accumulation=1, seed=i)
            start = time.perf_counter()
            with SavedForBackward(model.model) as kept, CudaPeak() as cuda:
                train_network(model, x0[i:i + 1], [pos], neg, grid, {"steps": 50, "scheduler": scheduler}, settings,
                              f"{folder}/net_{i}.safetensors", gradient_checkpointing=checkpointing)
            seconds.append(time.perf_counter() - start)
            saved, peak = max(saved, kept.bytes), max(peak, cuda.above)
    return statistics.median(seconds[1:]), (min(seconds[1:]), max(seconds[1:])), saved, peak


def measure(arch, built, size, images):
    from guidance_schedules.nodes.annealing_train import training_grid
    import comfy.model_management as mm
    model, pos, neg, channels = built
    mm.load_models_gpu([model])
    x0 = torch.randn(images + 1, channels, size // 8, size // 8)
    grid, scheduler = training_grid(model, 50, "auto")
    sampling_step(model, pos, neg, x0[:1])  # warm up
    with CudaPeak() as sampling_peak:
        start = time.perf_counter()
        sampling_step(model, pos, neg, x0[:1])
        sampling_seconds = time.perf_counter() - start
    plain = train_images(model, pos, neg, x0, grid, scheduler, checkpointing=False)
    checkpointed = train_images(model, pos, neg, x0, grid, scheduler, checkpointing=True)
    return {"arch": arch, "size": size, "sampling_seconds": sampling_seconds, "sampling_peak": sampling_peak.above,
            "plain": plain, "checkpointed": checkpointed, "device": str(mm.get_torch_device())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", choices=["sdxl", "sd3"], default=["sdxl", "sd3"])
    parser.add_argument("--size", type=int, nargs="+", default=[64], help="image sizes in pixels (latent: size / 8)")
    parser.add_argument("--images", type=int, default=3, help="timed training images per row (after one warm-up)")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    standalone.import_comfyui(cpu=not gpu, progress_bars=False)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmark.py's SDXL builder
    if not gpu:
        torch.set_num_threads(2)
    import comfy.model_management  # after standalone.import_comfyui
    rows = []
    for arch in args.arch:  # one model at a time: SDXL and SD3 in float32 need 10 and 8 GB each
        built = build(arch)
        rows += [measure(arch, built, size, args.images) for size in args.size]
        del built
        comfy.model_management.unload_all_models()
        gc.collect()
    print(f"\nAnnealing network training inside ComfyUI, batch 1, on {rows[0]['device']}; 'kept' is what autograd "
          "holds for the backward pass (the activations a training step adds), in the model's dtype")
    head = "| model (random weights) | image | s / CFG step | s / training image | kept | with gradient checkpointing: s | kept |"
    if gpu:
        head += " CUDA peak above the model: CFG step | training | checkpointed |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        name = {"sdxl": "SDXL architecture (EPS)", "sd3": "SD3-medium architecture (flow)"}[r["arch"]]
        (s_plain, _, kept_plain, peak_plain), (s_ckpt, _, kept_ckpt, peak_ckpt) = r["plain"], r["checkpointed"]
        line = (f"| {name} | {r['size']} px | {r['sampling_seconds']:.2f} | {s_plain:.2f} | {kept_plain / 2**20:.0f} MiB | "
                f"{s_ckpt:.2f} | {kept_ckpt / 2**20:.0f} MiB |")
        if gpu:
            line += f" {r['sampling_peak'] / 2**30:.2f} GiB | {peak_plain / 2**30:.2f} GiB | {peak_ckpt / 2**30:.2f} GiB |"
        print(line)


if __name__ == "__main__":
    main()
