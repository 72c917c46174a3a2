"""What training an annealing guidance network costs inside ComfyUI: seconds per training image and the
memory a training step needs above the loaded model, next to one CFG sampling step, for an SDXL-architecture
(EPS) and an SD3-medium-architecture (flow) model with random weights (time and memory do not depend on the
weights). The training is the node's own code (nodes/annealing_train.train_network), batch 1.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/training_cost.py [--arch sdxl sd3] [--size 64] [--images 3]

On a GPU the memory is torch's peak allocation; on the CPU it is the process's peak resident memory (sampled
every 10 ms), so there it includes the allocator's slack. Not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the pack's root, once (standalone keeps it behind ComfyUI)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import standalone  # noqa: E402  (at the pack's root)

# SD3 medium as ComfyUI's model detection reads it from the checkpoint (MMDiT, 24 blocks of width 1536)
SD3_MEDIUM = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 24, "input_size": None,
              "adm_in_channels": 2048, "num_patches": 36864, "pos_embed_max_size": 192,
              "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096,
                                                                                  "out_features": 1536}},
              "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [], "image_model": "mmdit"}


def build(arch):
    """(ModelPatcher, positive, negative, latent channels), random weights, fp16 on a GPU."""
    import torch
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    if arch == "sdxl":
        from benchmark import build as build_unet
        model, pos, neg = build_unet("sdxl")
        return model, pos, neg, 4
    dtype = torch.float16 if mm.should_use_fp16() else torch.float32
    config = comfy.supported_models.SD3({**SD3_MEDIUM, "dtype": dtype})
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=mm.get_torch_device())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.dtype))
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())

    def conditioning(seed):
        g = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, 154, 4096, generator=g), {"pooled_output": torch.randn(1, 2048, generator=g)}]]
    return patcher, conditioning(1), conditioning(2), 16


class PeakMemory:
    """Peak memory above the level at entry: torch's allocations on CUDA, resident memory on the CPU."""

    def __init__(self):
        import torch
        self.cuda = torch.cuda.is_available()

    def __enter__(self):
        import psutil
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.process, self.base, self.peak, self.running = psutil.Process(), psutil.Process().memory_info().rss, 0, True

        def sample():
            while self.running:
                self.peak = max(self.peak, self.process.memory_info().rss)
                time.sleep(0.01)
        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            self.above = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()
            self.above = max(self.peak - self.base, 0)


def sampling_step(model, pos, neg, x):
    """One CFG evaluation (both branches, as KSampler runs it) through ComfyUI's guider."""
    import torch
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


def measure(arch, size, images):
    import torch
    from guidance_schedules.nodes.annealing_train import train_network, training_grid
    from guidance_schedules.samplers.annealing_training import TrainingSettings
    model, pos, neg, channels = build(arch)
    import comfy.model_management as mm
    mm.load_models_gpu([model])
    x0 = torch.randn(images + 1, channels, size // 8, size // 8)
    grid, scheduler = training_grid(model.get_model_object("model_sampling"), 50, "auto")
    sampling_step(model, pos, neg, x0[:1])  # warm up
    with PeakMemory() as sampling_memory:
        start = time.perf_counter()
        sampling_step(model, pos, neg, x0[:1])
        sampling_seconds = time.perf_counter() - start
    seconds = []
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode(False), PeakMemory() as training_memory:
        for i in range(images + 1):  # the first image warms up
            settings = TrainingSettings(training_images=1, batch_size=1, gradient_accumulation=1, seed=i)
            start = time.perf_counter()
            train_network(model, x0[i:i + 1], [pos], neg, grid, {"steps": 50, "scheduler": scheduler}, settings,
                          f"{folder}/net_{i}.safetensors")
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    return {"arch": arch, "size": size, "seconds": statistics.median(seconds[1:]), "range": (min(seconds[1:]),
            max(seconds[1:])), "sampling_seconds": sampling_seconds, "training_memory": training_memory.above,
            "sampling_memory": sampling_memory.above, "device": str(mm.get_torch_device())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", choices=["sdxl", "sd3"], default=["sdxl", "sd3"])
    parser.add_argument("--size", type=int, nargs="+", default=[64], help="image sizes in pixels (latent: size / 8)")
    parser.add_argument("--images", type=int, default=3, help="timed training images per row (after one warm-up)")
    args = parser.parse_args()
    import torch
    gpu = torch.cuda.is_available()
    standalone.import_comfyui(cpu=not gpu, progress_bars=False)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmark.py's SDXL builder
    if not gpu:
        torch.set_num_threads(2)
    rows = [measure(arch, size, args.images) for arch in args.arch for size in args.size]
    print(f"\nAnnealing network training inside ComfyUI, batch 1, on {rows[0]['device']} "
          f"({'peak allocation' if gpu else 'peak resident memory'} above the loaded model)")
    print("| model (random weights) | image | s / training image | s / CFG step | training step memory | "
          "CFG step memory |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = {"sdxl": "SDXL architecture (EPS)", "sd3": "SD3-medium architecture (flow)"}[r["arch"]]
        print(f"| {name} | {r['size']} px | {r['seconds']:.2f} ({r['range'][0]:.2f}-{r['range'][1]:.2f}) | "
              f"{r['sampling_seconds']:.2f} | {r['training_memory'] / 2**30:.2f} GiB | "
              f"{r['sampling_memory'] / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
