"""Speed of the guidance methods inside ComfyUI: model evaluations and seconds per image.

Builds a diffusion model of a real architecture with random weights inside ComfyUI (timing does
not depend on the weights), samples with the stock KSampler node for every method, and prints a
table. Methods run interleaved, run by run, and the table shows medians with their spread, since
single runs vary by 10% or more. "ideal" is what skipping would save if an evaluation without the
unconditional pass cost exactly the measured cond-only time: the gap to it is overhead.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/benchmark.py                 # CPU: SD1.5 at 256 px
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/benchmark.py --arch sdxl --size 1024 --batch 4

Not a test: it asserts nothing about time. Evaluation counts are exact (counted at the model).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the pack's root, once (standalone keeps it behind ComfyUI)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import standalone  # noqa: E402  (at the pack's root)

SD15 = {'use_checkpoint': False, 'image_size': 32, 'out_channels': 4, 'use_spatial_transformer': True, 'legacy': False,
        'adm_in_channels': None, 'in_channels': 4, 'model_channels': 320, 'num_res_blocks': [2, 2, 2, 2],
        'transformer_depth': [1, 1, 1, 1, 1, 1, 0, 0], 'channel_mult': [1, 2, 4, 4], 'transformer_depth_middle': 1,
        'use_linear_in_transformer': False, 'context_dim': 768, 'num_heads': 8,
        'transformer_depth_output': [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        'use_temporal_attention': False, 'use_temporal_resblock': False}
SDXL = {'use_checkpoint': False, 'image_size': 32, 'out_channels': 4, 'use_spatial_transformer': True, 'legacy': False,
        'num_classes': 'sequential', 'adm_in_channels': 2816, 'in_channels': 4, 'model_channels': 320,
        'num_res_blocks': [2, 2, 2], 'transformer_depth': [0, 0, 2, 2, 10, 10], 'channel_mult': [1, 2, 4],
        'transformer_depth_middle': 10, 'use_linear_in_transformer': True, 'context_dim': 2048, 'num_head_channels': 64,
        'transformer_depth_output': [0, 0, 0, 2, 2, 2, 10, 10, 10],
        'use_temporal_attention': False, 'use_temporal_resblock': False}


# SD3 medium as ComfyUI's model detection reads it from the checkpoint (MMDiT, 24 blocks of width 1536)
SD3_MEDIUM = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 24, "input_size": None,
              "adm_in_channels": 2048, "num_patches": 36864, "pos_embed_max_size": 192,
              "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096,
                                                                                  "out_features": 1536}},
              "pos_embed_scaling_factor": None, "x_block_self_attn_layers": []}


def build(arch):
    """(ModelPatcher, positive, negative) of the architecture (sd15, sdxl, sd3), random weights, fp16 on a GPU."""
    import torch
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    dtype = torch.float16 if mm.should_use_fp16() else torch.float32
    if arch == "sd15":
        config = comfy.supported_models.SD15({**SD15, "dtype": dtype})
        context, pooled = 768, None
    elif arch == "sdxl":
        config = comfy.supported_models.SDXL({**SDXL, "dtype": dtype})
        context, pooled = 2048, 1280
    else:
        config = comfy.supported_models.SD3({**SD3_MEDIUM, "dtype": dtype})
        context, pooled = 4096, 2048
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=mm.get_torch_device())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.dtype))
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())

    def conditioning(seed):
        g = torch.Generator().manual_seed(seed)
        extra = {"pooled_output": torch.randn(1, pooled, generator=g)} if pooled else {}
        return [[torch.randn(1, 154 if arch == "sd3" else 77, context, generator=g), extra]]
    return patcher, conditioning(1), conditioning(2)


def add_counter(model):
    """Count rows per branch at the diffusion model: (cond, uncond) evaluations per image."""
    import comfy.patcher_extension
    counts = {"cond": 0, "uncond": 0}

    def count(executor, *args, **kwargs):
        to = kwargs.get("transformer_options") or args[-1]
        chunks = to.get("cond_or_uncond", [])
        rows = args[0].shape[0] // max(len(chunks), 1)
        for c in chunks:
            counts["uncond" if c == 1 else "cond"] += rows
        return executor(*args, **kwargs)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "benchmark_counter", count)
    return counts


def adaptive_stopping_at(model, step):
    """Adaptive Guidance whose predictions 'agree' from `step` on: with random weights the real
    similarity means nothing, so the stop is forced where the paper's runs stop (about half way,
    a quarter of the evaluations saved). Everything else is the real AG code path."""
    from guidance_schedules.nodes.guidance import Schedule, patch_model
    from guidance_schedules.samplers.adaptive import AdaptiveSchedule

    class ForcedStop(AdaptiveSchedule):
        def similarity_of(self, ev, cond, uncond):
            return [1.0 if ev.step >= step else 0.0] * ev.batch_size
    return patch_model(model, Schedule(lambda run: ForcedStop(run, 0.995), f"Adaptive guidance (stop forced at step {step})"))


def linear_ag_model(model, sampler, scheduler, steps, cfg):
    """Adaptive Guidance that never stops, with LinearAG estimating every other unconditional pass.
    The coefficients are placeholders (a = 1: the estimate is the conditional prediction): the time
    of an estimate does not depend on their values, and a real fit needs trained weights."""
    import tempfile
    import torch
    import folder_paths
    from guidance_schedules.nodes.adaptive import LINEAR_AG_FOLDER, AdaptiveGuidancePatch
    from guidance_schedules.samplers import linear_ag
    folder = tempfile.mkdtemp(prefix="gs-bench-")
    coefficients = torch.zeros(steps, linear_ag.N_TERMS, dtype=torch.float64)
    coefficients[:, 0] = 1.0
    import comfy.samplers
    sigmas = comfy.samplers.KSampler(model, steps, "cpu", sampler, scheduler, 1.0).sigmas  # the grid KSampler samples
    fitted_for = linear_ag.FittedFor(sampler=f"sample_{sampler}", steps=steps, sigmas=tuple(sigmas.tolist()),
                                     model="benchmark", cfg=cfg, runs=1)
    linear_ag.save(linear_ag.Fit(coefficients, torch.zeros(steps, dtype=torch.float64)), fitted_for,
                   os.path.join(folder, "benchmark.safetensors"))
    folder_paths.add_model_folder_path(LINEAR_AG_FOLDER, folder)
    return AdaptiveGuidancePatch().patch(model, 2.0, linear_ag="benchmark.safetensors")[0]


def methods(model, cfg, sampler, scheduler, steps, guidance_network):
    """(name, model to sample with, cfg, sampler). The pack's other methods join this list."""
    from guidance_schedules.nodes.interval import GuidanceIntervalPatch
    interval = GuidanceIntervalPatch().patch(model, sigma_hi=5.42, sigma_lo=0.28)[0]
    stop = (steps - 1) // 2
    rows = [
        ("CFG", model, cfg, sampler),
        ("interval (0.28, 5.42]", interval, cfg, sampler),
        (f"AG, stop forced at step {stop}", adaptive_stopping_at(model, stop), cfg, sampler),
        ("LinearAG (AG never stops)", linear_ag_model(model, sampler, scheduler, steps, cfg), cfg, sampler),
        ("cond only (cfg 1)", model, 1.0, sampler),
    ]
    if guidance_network:
        import folder_paths
        from guidance_schedules.nodes.annealing import FOLDER, AnnealingGuidancePatch
        folder_paths.add_model_folder_path(FOLDER, os.path.dirname(os.path.abspath(guidance_network)))
        annealing = AnnealingGuidancePatch().patch(model, os.path.basename(guidance_network), **{"lambda": 0.4})[0]
        # The annealing network needs CFG++ re-noising: compare it with CFG on the same sampler.
        rows += [("CFG, euler_cfg_pp", model, cfg, "euler_cfg_pp"),
                 ("annealing 0.4, euler_cfg_pp", annealing, cfg, "euler_cfg_pp")]
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size / 8)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--scheduler", default="karras")
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--guidance-network", "--annealing-scheduler", default="",
                        help="an annealing guidance network file (.safetensors or the official .pt) to add its row "
                             "(SDXL arch only); --scheduler is the sigma scheduler")
    args = parser.parse_args()

    standalone.import_comfyui(progress_bars=False)
    import torch
    import nodes

    model, pos, neg = build(args.arch)
    counts = add_counter(model)
    rows = methods(model, args.cfg, args.sampler, args.scheduler, args.steps,
                   args.guidance_network if args.arch == "sdxl" else "")
    if args.guidance_network and args.arch != "sdxl":
        print("note: the annealing row needs --arch sdxl (the released network is trained for SDXL latents)")
    latent = {"samples": torch.zeros(args.batch, 4, args.size // 8, args.size // 8)}

    def run(m, cfg, sampler):
        counts.update(cond=0, uncond=0)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        nodes.KSampler().sample(m, 0, args.steps, cfg, sampler, args.scheduler, pos, neg, latent, 1.0)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start, dict(counts)

    for _, m, cfg, sampler in rows:  # warm-up: model load, kernels, allocator
        run(m, cfg, sampler)
    times = {name: [] for name, *_ in rows}
    evals = {}
    for _ in range(args.repeats):
        for name, m, cfg, sampler in rows:
            seconds, c = run(m, cfg, sampler)
            times[name].append(seconds / args.batch)
            evals[name] = c

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    print(f"\n{args.arch.upper()} architecture (random weights), {args.size}x{args.size}, batch {args.batch}, "
          f"{args.steps} {args.sampler} steps ({args.scheduler}), cfg {args.cfg}, {args.repeats} runs, "
          f"torch {torch.__version__}, device: {device}\n")
    # Each row is compared with the CFG row on the same sampler (the first row of that sampler).
    baseline = {}
    for name, _, _, sampler in rows:
        baseline.setdefault(sampler, name)
    cond_median = statistics.median(times["cond only (cfg 1)"])
    header = f"| {'method':<27} | evals/image (cond+uncond) | s/image median (min-max) | vs CFG | ideal vs CFG |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, _, _, sampler in rows:
        t, base = times[name], baseline[sampler]
        c, u = evals[name]["cond"] // args.batch, evals[name]["uncond"] // args.batch
        med, base_median = statistics.median(t), statistics.median(times[base])
        # ideal: a share u / u_CFG of the passes at the CFG cost, the rest at the cond-only cost
        share = evals[name]["uncond"] / (evals[base]["uncond"] or 1)
        ideal = (share * base_median + (1 - share) * cond_median) / base_median
        timing = f"{med:.3f} ({min(t):.3f}-{max(t):.3f})"
        print(f"| {name:<27} | {f'{c} + {u} = {c + u}':<25} | {timing:<24} | {med / base_median:6.2f} | {ideal:12.2f} |")


if __name__ == "__main__":
    main()
